"""Samplers and the compiled, stateful, batched decode loop.

Temperature is applied in exactly one place (``Sampler.__call__``); a subclass only says how
the next token is chosen (greedy, random, top-k, top-p), after keras-hub's samplers. The loop
calls a step function ``step(tokens, states) -> (logits, states)``, so samplers never touch
the model. It runs inside ``tf.function``, carries the LSTM states from token to token and
samples a whole batch of sequences at once. Randomness is stateless and derived from the
seed and the step number, so the same seed always gives the same output.

When the tokenizer has a constraint (music: no NOTE_OFF for a silent note, a polyphony cap,
...), the loop asks it for the allowed tokens before every step; otherwise it decodes chunks
of tokens per compiled call.

With ``repetition`` above 0 (a music checkpoint's recommendation, or asked for), each prediction
is mixed with a copy of what followed earlier occurrences of the latest tokens in the prompt
(``repeat_mix``): songs repeat their own bars, which an LSTM's states keep only faintly.

Prompts of any length prime the model in chunks (``DecodeLoop.prime``): each chunk runs through
the decoder's ``forward`` with the states the previous one left, so memory grows with the chunk
(``PRIME_TOKENS`` tokens over the whole batch), never with the prompt. Full-width chunks run
XLA-compiled (one compilation per width, and a long prompt is mostly full chunks); the shorter
last chunk, and short prompts, run as an ordinary graph, which costs no compilation. How much of a long prompt
primes the model at all is the caller's choice (``generator.data.limits``, ``prompt_tokens``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from generator.models.key_average import rows_per_sequence

NEG_INF = -1e9
PRIME_TOKENS = 16384  # tokens (rows x columns) per priming chunk: bounds the logits and states computed at once
PRIME_COLUMNS = 1024  # the most columns of one priming chunk
REPEAT_HISTORY = 2048  # tokens (the prompt's end, then the output) that repetition looks back over
REPEAT_MIN_MATCH = 4  # the shortest run of latest tokens an earlier occurrence must share to be copied
REPEAT_MAX_MATCH = 32  # longer shared runs count as this long


def repeat_mix(logits, history, weight: float, generated=0):
    """Mix the model's next-token distribution with a copy of the history's own continuations.

    ``history`` ``[batch, REPEAT_HISTORY]`` holds the latest tokens, the newest last (-1 where
    empty), of which the last ``generated`` are output and the rest prompt. Every earlier position
    of the prompt whose tokens match the newest ones (output included) for at least
    ``REPEAT_MIN_MATCH`` tokens proposes the token that followed it there, weighted by the square
    of how far the match reaches (``(length - REPEAT_MIN_MATCH + 1) ** 2``, the length counted up
    to ``REPEAT_MAX_MATCH``), so that a long repeat outweighs many chance matches of a few tokens;
    the proposals, normalised, get ``weight`` of the probability and the model ``1 - weight``. Rows
    with no match keep the model's distribution. Returns log-probabilities ``[batch, vocab]``.
    Only the prompt proposes: copying from the output as well let a sparse pattern the output had
    played twice repeat itself for good (the band model lost its drums that way).
    """
    k = REPEAT_MAX_MATCH
    width = history.shape[1]
    vocab = logits.shape[-1]
    newest = history[:, width - k :]  # the latest k tokens, oldest first
    same = tf.stack(
        [tf.equal(history[:, k - 1 - m : width - 1 - m], newest[:, k - 1 - m : k - m]) for m in range(k)], axis=1
    )  # [batch, k, positions]: position j's m-th token back equals the newest m-th token back
    reach = tf.reduce_sum(tf.math.cumprod(tf.cast(same, tf.float32), axis=1), axis=1)  # the match length at j
    following = history[:, k:]  # the token after each position j
    prompt_end = width - k - tf.cast(generated, tf.int32)  # the followers before this index are the prompt's
    following = tf.where(tf.range(width - k)[None] < prompt_end, following, -1)  # only the prompt proposes
    votes = tf.where((reach >= REPEAT_MIN_MATCH) & (following >= 0), tf.square(reach - (REPEAT_MIN_MATCH - 1)), 0.0)
    rows = tf.shape(history)[0]
    segments = tf.maximum(following, 0) + vocab * tf.range(rows)[:, None]
    copied = tf.reshape(tf.math.unsorted_segment_sum(votes, segments, rows * vocab), (rows, vocab))
    total = tf.reduce_sum(copied, axis=-1, keepdims=True)
    model = tf.nn.softmax(tf.cast(logits, tf.float32))
    share = tf.where(total > 0, weight, 0.0)
    mixed = (1.0 - share) * model + share * copied / tf.maximum(total, 1e-9)
    return tf.math.log(tf.maximum(mixed, 1e-30))


def _remember(history, token):
    """The history with ``token`` ``[batch]`` appended and its oldest entry dropped."""
    return tf.concat([history[:, 1:], token[:, None]], axis=1)


class Sampler:
    """Chooses the next token from logits; subclasses override ``filter`` or ``choose``."""

    def __init__(self, temperature: float = 1.0):
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number greater than 0, not {temperature}")
        self.temperature = float(temperature)

    def __call__(self, logits, seed):
        """logits ``[batch, vocab]`` float32, seed ``[2]`` int32 -> token ids ``[batch]`` int32."""
        logits = tf.cast(logits, tf.float32) / self.temperature  # the one place temperature is applied
        return self.choose(self.filter(logits), seed)

    def filter(self, logits):
        """Mask the logits of tokens this sampler never picks (default: none)."""
        return logits

    def choose(self, logits, seed):
        """Inverse-CDF sampling: one Philox uniform per row against the cumulative probabilities.

        Tokens whose logits were masked have probability 0 and are never chosen. (Under XLA on
        a CPU, ``tf.random.stateless_categorical`` cost a sixth of a batch-1 decoding step.)
        """
        cumulative = tf.cumsum(tf.nn.softmax(logits), axis=-1)
        u = tf.random.stateless_uniform(tf.shape(logits)[:1], seed, alg="philox")
        threshold = u[:, None] * cumulative[:, -1:]
        return tf.reduce_sum(tf.cast(cumulative <= threshold, tf.int32), axis=-1)


class GreedySampler(Sampler):
    """Always the most likely token."""

    def choose(self, logits, seed):
        return tf.cast(tf.argmax(logits, axis=-1), tf.int32)


class TopKSampler(Sampler):
    """Random among the ``k`` most likely tokens."""

    def __init__(self, k: int, temperature: float = 1.0):
        super().__init__(temperature)
        if int(k) < 1:
            raise ValueError(f"top-k must be at least 1, not {k}")
        self.k = int(k)

    def filter(self, logits):
        k = tf.minimum(self.k, tf.shape(logits)[-1])
        kth = tf.math.top_k(logits, k=k).values[:, -1:]
        return tf.where(logits < kth, NEG_INF, logits)


class TopPSampler(Sampler):
    """Random among the smallest set of most likely tokens whose probability reaches ``p``."""

    def __init__(self, p: float, temperature: float = 1.0):
        super().__init__(temperature)
        if not (0 < float(p) <= 1):
            raise ValueError(f"top-p must be in (0, 1], not {p}")
        self.p = float(p)

    def filter(self, logits):
        order = tf.argsort(logits, axis=-1, direction="DESCENDING")
        sorted_logits = tf.gather(logits, order, batch_dims=1)
        probs = tf.nn.softmax(sorted_logits)
        before = tf.cumsum(probs, axis=-1, exclusive=True)  # mass of strictly more likely tokens
        keep_sorted = before < self.p
        keep = tf.scatter_nd(
            tf.stack([tf.repeat(tf.range(tf.shape(order)[0]), tf.shape(order)[1]), tf.reshape(order, [-1])], 1),
            tf.reshape(keep_sorted, [-1]),
            tf.shape(logits),
        )
        return tf.where(keep, logits, NEG_INF)


class TopKTopPSampler(TopPSampler):
    """Top-k first, then top-p among what remains."""

    def __init__(self, k: int, p: float, temperature: float = 1.0):
        super().__init__(p, temperature)
        self.top_k = TopKSampler(k, temperature)

    def filter(self, logits):
        return super().filter(self.top_k.filter(logits))


def get(
    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, greedy: bool = False
) -> Sampler:
    """The sampler for a set of command-line style options."""
    if greedy:
        return GreedySampler(temperature)
    if top_k is not None and top_p is not None:
        return TopKTopPSampler(top_k, top_p, temperature)
    if top_k is not None:
        return TopKSampler(top_k, temperature)
    if top_p is not None:
        return TopPSampler(top_p, temperature)
    return Sampler(temperature)


@dataclass
class Constraint:
    """A tokenizer with ``has_constraint`` and its state over the sequences of one sampling call."""

    tokenizer: object
    state: object


class DecodeLoop:
    """Compiled incremental decoding for one decoder (see ``generator.models``) and sampler.

    ``repetition`` > 0 mixes every prediction with ``repeat_mix`` over the last ``REPEAT_HISTORY``
    tokens (the prompt's end, then the output; the prompt's proposing). Unconstrained decoding
    runs ``chunk`` tokens per call of one XLA-compiled ``tf.while_loop`` (``jit=True``; compiled once per loop and batch size, whatever the length asked for);
    constrained decoding runs one XLA-compiled step per token, the mask coming from Python.
    Unconstrained batch-1 decoding of an ``lstm`` checkpoint, its prompt included, runs in C
    instead, on every core (``generator.generation.native``), when that library was built
    (``native=False`` or ``GENERATOR_NATIVE=0``: XLA's loop at batch 1 too). Where
    XLA cannot compile a step, the loop falls back to an ordinary ``tf.function`` (whose random
    draws differ from XLA's: a seed reproduces its output on the same path and machine kind).
    """

    def __init__(
        self,
        decoder,
        sampler: Sampler,
        chunk: int = 256,
        jit: bool = True,
        repetition: float = 0.0,
        native: bool = True,
    ):
        self.decoder, self.sampler, self.chunk, self.jit, self.native = decoder, sampler, int(chunk), jit, native
        if not 0 <= repetition < 1:
            raise ValueError(f"repetition must be at least 0 and below 1, not {repetition}")
        self.repetition = float(repetition)
        self._native_lstm = None  # the C decoder for batch 1 (``_native``): not built yet
        self._prime = tf.function(self._prime_impl, reduce_retracing=True)
        self._prime_full = tf.function(self._prime_impl, jit_compile=jit, reduce_retracing=True)
        self._chunk = tf.function(self._chunk_impl, jit_compile=jit, reduce_retracing=True)
        self._masked = tf.function(self._masked_impl, jit_compile=jit, reduce_retracing=True)

    def _prime_impl(self, tokens, states=None):
        if states is None:
            states = self.decoder.zero_states(tf.shape(tokens)[0])
        logits, states = self.decoder.forward(tokens, states)
        return logits[:, -1], states

    def prime(self, prompts):
        """Run ``prompts`` ``[batch, time]`` through the model in chunks, the states carried from one
        chunk to the next; returns the logits after the last token and the states.

        ``prompts`` may be a read-only broadcast view (the same prompt for every row): only one
        chunk at a time is copied.
        """
        prompts = np.asarray(prompts)
        batch, width = prompts.shape
        if width < 1:
            raise ValueError("a prompt needs at least one token (BOS)")
        rows = batch * rows_per_sequence(self.decoder)  # a key-averaged decoder runs 2K+1 rows per prompt
        columns = max(1, min(PRIME_COLUMNS, PRIME_TOKENS // max(rows, 1)))
        states = self.decoder.zero_states(batch)
        for start in range(0, width, columns):
            chunk = tf.constant(np.ascontiguousarray(prompts[:, start : start + columns], dtype=np.int32))
            if chunk.shape[1] == columns and width > columns:  # full chunks of a long prompt: compiled
                logits, states = self._compiled("_prime_full", self._prime_impl, chunk, states)
            else:
                logits, states = self._prime(chunk, states)
        return logits, states

    def _draw(self, logits, history, seed, step, allowed=None):
        """The next token of each row (of the tokens ``allowed``, when given), and the history with it
        appended (when repetition is on). The mixture comes before the mask, so that a copied token
        the constraint forbids is dropped."""
        if self.repetition:
            logits = repeat_mix(logits, history, self.repetition, step)
        if allowed is not None:
            logits = tf.where(allowed, logits, NEG_INF)
        token = self.sampler(logits, tf.random.experimental.stateless_fold_in(seed, step))
        return token, (_remember(history, token) if self.repetition else history)

    def _chunk_impl(self, logits, states, history, seed, first_step, n_steps):
        """``n_steps`` (at most ``chunk``) tokens; the output always has ``chunk`` columns."""
        out = tf.TensorArray(tf.int32, size=self.chunk, element_shape=logits.shape[:1])

        def body(i, logits, states, history, out):
            token, history = self._draw(logits, history, seed, first_step + i)
            logits, states = self.decoder.step(token, states)
            return i + 1, logits, states, history, out.write(i, token)

        _, logits, states, history, out = tf.while_loop(
            lambda i, *_: i < n_steps, body, (0, logits, states, history, out), maximum_iterations=self.chunk
        )
        return tf.transpose(out.stack()), logits, states, history

    def _compiled(self, name: str, impl, *args):
        """Call the compiled function ``self.<name>``; where XLA cannot compile it, swap in an
        ordinary ``tf.function`` of ``impl`` for good and call that."""
        try:
            return getattr(self, name)(*args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            if not self.jit:
                raise
            setattr(self, name, tf.function(impl, reduce_retracing=True))  # an op XLA cannot compile
            return getattr(self, name)(*args)

    def _run_chunk(self, *args):
        return self._compiled("_chunk", self._chunk_impl, *args)

    def _masked_impl(self, logits, states, history, seed, step, allowed):
        token, history = self._draw(logits, history, seed, step, allowed)
        logits, states = self.decoder.step(token, states)
        return token, logits, states, history

    @property
    def native_threads(self) -> int:
        """The threads of the C decoder this loop has run (0 where it has not)."""
        return self._native_lstm.threads if self._native_lstm else 0

    def _native(self, prompts, constraint):
        """The C decoder (``generator.generation.native``) for unconstrained batch-1 decoding of an
        ``lstm`` checkpoint without repetition, built on first use; None where it does not apply."""
        if not self.native or constraint is not None or self.repetition or np.shape(prompts)[0] != 1:
            return None
        if self._native_lstm is None:
            from generator.generation import native

            self._native_lstm = (
                native.NativeLSTM(self.decoder) if native.supports(self.decoder, self.sampler) else False
            )
        return self._native_lstm or None

    def _history(self, prompts):
        """What repetition looks back over at the start: the prompts' last ``REPEAT_HISTORY`` tokens,
        -1 before them (no columns when repetition is off)."""
        prompts = np.asarray(prompts)
        if not self.repetition:
            return tf.zeros((prompts.shape[0], 0), tf.int32)
        tail = prompts[:, -REPEAT_HISTORY:]
        history = np.full((prompts.shape[0], REPEAT_HISTORY), -1, np.int32)
        history[:, REPEAT_HISTORY - tail.shape[1] :] = tail
        return tf.constant(history)

    def generate(self, prompts: np.ndarray, length: int, seed: int, constraint=None):
        """Yield chunks ``[batch, n]`` of new token ids, ``length`` in all.

        ``prompts`` is ``[batch, time]`` (BOS first) and primes the states chunk by chunk
        (``prime``). ``constraint`` (a ``Constraint``, already advanced over the prompts by the
        caller) masks each step to the tokens its tokenizer allows and is advanced over every token
        drawn, so that the caller reads the state at the end from it.
        """
        native_loop = self._native(prompts, constraint)
        if native_loop is not None:  # batch 1 in C, the prompt too
            logits, states = native_loop.prime(prompts)
            for done in range(0, length, self.chunk):
                tokens, logits, states = native_loop.generate(
                    logits, states, min(self.chunk, length - done), seed, done, self.sampler
                )
                yield tokens[None, :]
            return
        logits, states = self.prime(prompts)
        history = self._history(prompts)
        seed_t = tf.constant([seed % (2**31 - 1), (seed // (2**31 - 1)) % (2**31 - 1)], tf.int32)
        done = 0
        if constraint is None:
            while done < length:
                n = min(self.chunk, length - done)
                tokens, logits, states, history = self._run_chunk(
                    logits, states, history, seed_t, tf.constant(done), tf.constant(n)
                )
                done += n
                yield tokens.numpy()[:, :n]
            return
        while done < length:
            allowed = tf.constant(constraint.tokenizer.allowed(constraint.state))
            token, logits, states, history = self._compiled(
                "_masked", self._masked_impl, logits, states, history, seed_t, tf.constant(done), allowed
            )
            token = token.numpy()
            constraint.state = constraint.tokenizer.advance(constraint.state, token)
            done += 1
            yield token[:, None]
