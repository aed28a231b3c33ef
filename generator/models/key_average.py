"""Key-averaged prediction: a music model's next-token distribution averaged over transpositions.

A model trained with transposition augmentation has seen every piece in several keys, but its
prediction for a passage in one key is not exactly its prediction for the same passage moved up a
tone. ``KeyAveraged`` wraps any incremental decoder (``generator.models.decoder``): it runs each
sequence at ``2K + 1`` shifts, -K..+K semitones, side by side as rows of one batch, maps every
copy's distribution back to the original pitches and averages the probabilities. A copy whose
input so far left the tokenizer's pitch range (a high soprano moved up) drops out of the average
from that token on; the untransposed copy never does.

The average is a proper next-token distribution that depends only on the tokens before it, so it
is scored (``generator evaluate --key-average K``) and sampled (``generate-music --key-average K``)
exactly like the plain model's: it is the model the tool then uses, not a change of the measure.
It costs ``2K + 1`` times the work per token; on a CPU at batch size 1 the extra rows are nearly free.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

FAR = -1e9  # the log-probability of a pitch a copy cannot express (finite: no inf - inf downstream)


def shifts(semitones: int) -> list[int]:
    """The transpositions averaged for ``semitones`` = K: -K..+K."""
    return list(range(-int(semitones), int(semitones) + 1))


class KeyAveraged:
    """The decoder interface (``zero_states``, ``step``, ``forward``, ``vocab_size``) over ``decoder``
    with its predictions averaged over ``tokenizer``'s transpositions by -K..+K semitones.

    States are ``(inner states over batch x copies rows, live [batch, copies])``; ``live`` is 1 while
    a copy's input has stayed in range. The logits returned are the mixture's log-probabilities.
    """

    def __init__(self, decoder, tokenizer, semitones: int):
        if int(semitones) < 1:
            raise ValueError(f"key averaging needs at least 1 semitone either way, not {semitones}")
        tables = [tokenizer.transposition(s) for s in shifts(semitones)]
        if tables[0] is None:
            raise ValueError(f"the {tokenizer.kind} tokenizer's tokens do not transpose")
        tables = np.stack(tables)  # [copies, vocab]: original id -> the copy's id, -1 out of range
        self.inner = decoder
        self.copies = len(tables)
        self.vocab_size = decoder.vocab_size
        # a copy reads original id j as table[j], and its probability of table[j] is j's
        self.table = tf.constant(np.maximum(tables, 0), tf.int32)
        self.in_range = tf.constant(tables >= 0, tf.float32)  # 1.0 where the copy can express the id

    def zero_states(self, batch_size):
        return self.inner.zero_states(batch_size * self.copies), tf.ones(tf.stack([batch_size, self.copies]))

    def _mixture(self, logits, live):
        """``logits`` ``[batch, copies, ..., vocab]`` of the copies, ``live`` ``[batch, copies, ...]``:
        the log of the live copies' average distribution over the original ids, ``[batch, ..., vocab]``."""
        logp = tf.nn.log_softmax(logits)
        rank = len(logp.shape)
        to_front = [1, 0] + list(range(2, rank))
        per_copy = tf.transpose(logp, to_front)  # [copies, batch, ..., vocab]
        # a copy's log-probability of original id j is its log-probability of j transposed
        picked = tf.gather(per_copy, self.table, axis=rank - 1, batch_dims=1)
        mask = tf.reshape(self.in_range, [self.copies] + [1] * (rank - 2) + [self.vocab_size])
        picked = tf.where(mask > 0, picked, FAR)
        picked -= tf.reduce_logsumexp(picked, axis=-1, keepdims=True)  # each copy over what it can express
        weights = tf.transpose(live, to_front[:-1])  # [copies, batch, ...]
        log_w = tf.where(weights > 0, 0.0, FAR)  # equal weights over the live copies
        log_w -= tf.reduce_logsumexp(log_w, axis=0, keepdims=True)
        return tf.reduce_logsumexp(picked + log_w[..., None], axis=0)

    def step(self, tokens, states):
        """tokens ``[batch]`` -> (log-probabilities ``[batch, vocab]``, new states)."""
        inner_states, live = states
        copied = tf.transpose(tf.gather(self.table, tokens, axis=1))  # [batch, copies]
        live = live * tf.transpose(tf.gather(self.in_range, tokens, axis=1))
        logits, inner_states = self.inner.step(tf.reshape(copied, [-1]), inner_states)
        logits = tf.reshape(logits, [-1, self.copies, self.vocab_size])
        return self._mixture(logits, live), (inner_states, live)

    def forward(self, tokens, states):
        """tokens ``[batch, time]`` -> (log-probabilities ``[batch, time, vocab]``, states after the last)."""
        inner_states, live = states
        tokens = tf.convert_to_tensor(tokens)
        copied = tf.transpose(tf.gather(self.table, tokens, axis=1), [1, 0, 2])  # [batch, copies, time]
        ok = tf.transpose(tf.gather(self.in_range, tokens, axis=1), [1, 0, 2])
        live = live[:, :, None] * tf.math.cumprod(ok, axis=2)  # live after each token
        width = tf.shape(tokens)[1]
        logits, inner_states = self.inner.forward(tf.reshape(copied, tf.stack([-1, width])), inner_states)
        logits = tf.reshape(logits, tf.stack([-1, self.copies, width, self.vocab_size]))
        return self._mixture(logits, live), (inner_states, live[:, :, -1])


def rows_per_sequence(decoder) -> int:
    """How many batch rows ``decoder`` runs for each sequence: 2K+1 when key-averaged, else 1."""
    return decoder.copies if isinstance(decoder, KeyAveraged) else 1
