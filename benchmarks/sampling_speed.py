"""Sampling speed for ``generator bench``: the compiled decode loop against what a Keras user writes.

Baselines, each measured in the same process on the same weights:

- the one-step stateful loop of TensorFlow's text-generation tutorial: a Keras model whose
  recurrent layers take and return their states, called one step at a time from Python through
  a ``tf.function`` that also draws the next token (written here after the tutorial's
  description, with the project's LSTM stack in place of its GRU), at batch 1 and at batch 64;
- the window loop of keras.io's character example and Classical-Piano-Composer: ``model.predict``
  on the last ``seq_len`` tokens for every new token (batch 1 only);
- the peak: TensorFlow's own matmul on the shapes of one decoding step (each layer's input and
  recurrent kernels and the output layer at the batch size measured), run back to back in one
  XLA-compiled loop. The fraction of peak is the model's matmul FLOPs per second while sampling
  divided by that rate.

``model_rates`` measures the decode loop of any loaded run (the band model's, for instance) at
batch 1 and 64 with its own peak.
"""

from __future__ import annotations

import time

import numpy as np


# -- the peak -------------------------------------------------------------------------------------


def step_shapes(layers: int, units: int, embedding: int, vocab: int, batch: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of every matmul of one token through the model at ``batch``: per LSTM layer the
    input kernel and the recurrent kernel, then the output layer."""
    shapes, width = [], embedding
    for _ in range(layers):
        shapes += [(batch, width, 4 * units), (batch, units, 4 * units)]
        width = units
    return shapes + [(batch, units, vocab)]


def flops(shapes) -> float:
    return float(sum(2 * m * k * n for m, k, n in shapes))


def tf_matmul_peak(shapes, seconds: float = 0.25):
    """A timer: ``() -> FLOP/s`` of TensorFlow's matmul on ``shapes``, all of them once per iteration of
    a ``tf.while_loop`` (compiled when this is called, timed at each call of the timer).

    The loop runs both XLA-compiled and as an ordinary graph (TensorFlow's oneDNN MatMul), and the
    faster counts: the peak is the best TensorFlow's matmul does at these shapes. Each iteration
    scales the left operands by a constant so that the products cannot be hoisted out of the loop;
    that and the accumulation add under 1 % to the arithmetic.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    lhs = [tf.constant(rng.standard_normal((m, k), np.float32)) for m, k, _ in shapes]
    rhs = [tf.constant(rng.standard_normal((k, n), np.float32) * 0.01) for _, k, n in shapes]

    def loop(n_iter):
        def body(i, xs, acc):
            xs = [x * 1.0000001 for x in xs]
            return i + 1, xs, [a + tf.matmul(x, w) for a, x, w in zip(acc, xs, rhs)]

        acc = [tf.zeros([m, n]) for m, _, n in shapes]
        _, _, acc = tf.while_loop(lambda i, *_: i < n_iter, body, (0, lhs, acc))
        return tf.add_n([tf.reduce_sum(a) for a in acc])

    per_iter, runs = flops(shapes), []
    for jit in (True, False):
        compiled = tf.function(loop, jit_compile=jit, autograph=False)
        compiled(tf.constant(20)).numpy()  # traces and compiles, then sizes the timed loop
        start = time.perf_counter()
        compiled(tf.constant(20)).numpy()
        runs.append((compiled, max(20, int(20 * seconds / max(time.perf_counter() - start, 1e-9)))))

    def once() -> float:
        best = 0.0
        for compiled, n_iter in runs:
            start = time.perf_counter()
            compiled(tf.constant(n_iter)).numpy()
            best = max(best, n_iter * per_iter / (time.perf_counter() - start))
        return best

    return once


def interleaved_best(timers: dict, repeats: int) -> dict:
    """``{name: best of repeats}`` for ``timers`` (``name -> () -> rate``), run in turn ``repeats``
    times: on a shared machine a slow spell then falls on every measurement, not on one."""
    best = dict.fromkeys(timers, 0.0)
    for _ in range(max(1, repeats)):
        for name, timer in timers.items():
            best[name] = max(best[name], timer())
    return best


# -- the baselines ---------------------------------------------------------------------------------


def tutorial_model(model, layers: int, units: int, embedding: int, vocab: int):
    """The tutorial's model (Embedding -> recurrent layers with ``return_state`` -> Dense), here with
    ``layers`` LSTMs, carrying ``model``'s weights."""
    import keras

    class StatefulStack(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = keras.layers.Embedding(vocab, embedding)
            self.rnns = [keras.layers.LSTM(units, return_sequences=True, return_state=True) for _ in range(layers)]
            self.dense = keras.layers.Dense(vocab)

        def call(self, inputs, states=None, return_state=False, training=False):
            x = self.embedding(inputs, training=training)
            carried = []
            for i, rnn in enumerate(self.rnns):
                x, h, c = rnn(x, initial_state=None if states is None else states[i], training=training)
                carried.append([h, c])
            x = self.dense(x, training=training)
            return (x, carried) if return_state else x

    stack = StatefulStack()
    stack(np.zeros((1, 1), np.int32))
    stack.set_weights(model.get_weights())  # same layers in the same order
    return stack


class TutorialOneStep:
    """The tutorial's sampling step: one ``tf.function`` that runs the model on the last tokens with
    the carried states and draws the next token with ``tf.random.categorical``."""

    def __init__(self, stack, temperature: float = 1.0):
        import tensorflow as tf

        self.stack, self.temperature = stack, temperature
        self.step = tf.function(self._step)

    def _step(self, inputs, states):
        import tensorflow as tf

        logits, states = self.stack(inputs, states=states, return_state=True)
        logits = logits[:, -1, :] / self.temperature
        return tf.cast(tf.random.categorical(logits, num_samples=1), tf.int32), states


def tutorial_rate(stack, vocab: int, seq_len: int, batch: int, tokens: int):
    """A timer: ``() -> tokens per second`` of the tutorial's loop, ``tokens`` steps after a ``seq_len``
    prompt (one call primes it, untimed); the traces are made when this is called."""
    import tensorflow as tf

    one_step = TutorialOneStep(stack)
    prompt = tf.constant(np.random.default_rng(1).integers(0, vocab, (batch, seq_len)), tf.int32)
    zeros = [[tf.zeros([batch, stack.rnns[0].units])] * 2 for _ in stack.rnns]
    token, states = one_step.step(prompt, zeros)
    for _ in range(3):
        token, states = one_step.step(token, states)

    def once() -> float:
        token, states = one_step.step(prompt, zeros)
        start = time.perf_counter()
        for _ in range(tokens):
            token, states = one_step.step(token, states)
        token.numpy()
        return batch * tokens / (time.perf_counter() - start)

    return once


def window_loop_rate(model, vocab: int, seq_len: int, tokens: int, repeats: int) -> float:
    """Tokens per second of the window loop: predict on the last ``seq_len`` tokens, sample, slide."""
    rng = np.random.default_rng(0)
    window = rng.integers(0, vocab, seq_len).astype(np.int32)
    model.predict(window[None], verbose=0)  # the first call traces the predict function
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(tokens):
            logits = model.predict(window[None], verbose=0)[0, -1].astype(np.float64)
            probs = np.exp(logits - logits.max())
            token = rng.choice(len(probs), p=probs / probs.sum())
            window = np.append(window[1:], token).astype(np.int32)
        best = max(best, tokens / (time.perf_counter() - start))
    return best


# -- the project's loop ----------------------------------------------------------------------------


def decode_rate(decoder, vocab: int, prompt_len: int, batch: int, length: int, native: bool = True):
    """(timer ``() -> tokens per second``, seconds of the first call, the loop) of ``DecodeLoop``
    generating ``length`` tokens after a ``prompt_len`` prompt; ``native=False``: the XLA loop even
    at batch 1."""
    from generator.generation import sampling

    loop = sampling.DecodeLoop(decoder, sampling.get(temperature=1.0), native=native)
    prompts = np.random.default_rng(1).integers(0, vocab, (batch, prompt_len)).astype(np.int32)
    start = time.perf_counter()
    for _ in loop.generate(prompts, 8, seed=0):  # traces and compiles
        pass
    first = time.perf_counter() - start
    seeds = iter(range(1, 1 << 30))

    def once() -> float:
        start = time.perf_counter()
        for _ in loop.generate(prompts, length, seed=next(seeds)):
            pass
        return batch * length / (time.perf_counter() - start)

    return once, first, loop


def sizes_of(model) -> dict:
    """layers, units, embedding and vocab of a ``build_model`` LSTM model."""
    from generator.models.lstm import lstm_layers

    lstms = lstm_layers(model)
    return dict(
        layers=len(lstms),
        units=lstms[0].units,
        embedding=model.get_layer("embedding").output_dim,
        vocab=int(model.output_shape[-1]),
    )


def model_rates(model, prefix: str, prompt_len: int, b1_tokens: int, b64_tokens: int, repeats: int) -> dict:
    """``{prefix}_b1_tokens_per_s``, ``..._b64_...`` and each one's fraction of the peak at its shapes."""
    from generator.models import decoder as make_decoder

    s = sizes_of(model)
    decoder = make_decoder(model)
    out = {}
    for batch, length in ((1, b1_tokens), (64, b64_tokens)):
        shapes = step_shapes(**s, batch=batch)
        best = interleaved_best(
            {"peak": tf_matmul_peak(shapes), "rate": decode_rate(decoder, s["vocab"], prompt_len, batch, length)[0]},
            repeats,
        )
        out[f"{prefix}_b{batch}_tokens_per_s"] = best["rate"]
        out[f"{prefix}_b{batch}_tf_peak_gflops"] = best["peak"] / 1e9
        out[f"{prefix}_b{batch}_fraction_of_tf_peak"] = best["rate"] / batch * flops(shapes) / best["peak"]
    return out
