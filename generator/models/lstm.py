"""The model: Embedding -> N x LSTM -> Dense logits, and the stateful decoder used to sample.

``build_model`` gives an ordinary Keras model (what is trained and saved). ``Decoder`` reads
that model's weights and runs the same network one step or one chunk at a time while
carrying the LSTM states, which is what sampling, prompting and ``evaluate`` need. The first
layer's input projection is a row lookup in a per-token table; deeper layers project every time
step in one matrix multiply before the recurrence. The training model uses plain ``keras.layers.LSTM`` with no recurrent dropout,
so on a GPU Keras runs it with the cuDNN kernel.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from generator.config import RunConfig

NAME = "lstm_generator"


def build(config: RunConfig) -> keras.Model:
    """The training model: int token ids ``[batch, time]`` -> logits ``[batch, time, vocab]``."""
    if config.vocab_size < 2:
        raise ValueError("vocab_size must be set before building the model")
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(config.vocab_size, config.embedding, name="embedding")(tokens)
    for i in range(config.layers):
        x = keras.layers.LSTM(config.units, return_sequences=True, name=f"lstm_{i + 1}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    logits = keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(tokens, logits, name=NAME)


def training_forward(model: keras.Model, tokens, training: bool = False):
    """The trainer's XLA forward pass: the LSTM layers run by ``fast_lstm`` (same numbers, faster)."""
    from generator.models import fast_lstm

    return fast_lstm.forward(model, tokens, training=training)


def lstm_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def double_cell_gate(weights) -> tf.Tensor:
    """A float32 copy of an LSTM kernel or bias (gates i, f, g, o) with the cell gate's columns doubled.

    Then one sigmoid gives every gate, since tanh(z) = 2 sigmoid(2z) - 1: under XLA on a CPU one
    activation over all gates, sliced afterwards, measured five times faster than ``tf.split``
    followed by four activations.
    """
    weights = tf.convert_to_tensor(weights, tf.float32)
    return weights * cell_gate_doubling(weights.shape[-1] // 4)


def cell_gate_doubling(units: int, dtype=tf.float32) -> tf.Tensor:
    """``[4 * units]``: 2 over the cell gate's columns, 1 over the others."""
    return tf.concat([tf.ones([2 * units], dtype), tf.fill([units], tf.constant(2, dtype)), tf.ones([units], dtype)], 0)


def doubled_gate_step(a, c, units: int):
    """``(h, c)`` of one LSTM step from ``a = sigmoid(z)``, ``z``'s cell-gate columns doubled."""
    c = a[:, units:2 * units] * c + a[:, :units] * (2 * a[:, 2 * units:3 * units] - 1)
    return a[:, 3 * units:] * tf.tanh(c), c


class Decoder:
    """Runs a trained model incrementally: ``step`` for one token, ``forward`` for a chunk.

    States are a tuple ``((h1, c1), (h2, c2), ...)`` of ``[batch, units]`` float32 tensors.
    Keras stores LSTM gates in the order input, forget, cell, output; the decoder keeps its
    weights with the cell gate doubled (``double_cell_gate``). The first layer's input
    projection of every vocabulary entry is computed once (``embedding @ kernel + bias``, one
    row per token), so a token's projection is a row lookup instead of a matmul. (Multiplying
    ``[x, h]`` by the stacked kernels ``[K; R]`` in one matmul measured slower than two: the
    concatenation costs more than the second call saves.)
    """

    def __init__(self, model: keras.Model):
        embedding = tf.convert_to_tensor(model.get_layer("embedding").embeddings, tf.float32)
        self.cells = [tuple(double_cell_gate(w) for w in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias))
                      for layer in lstm_layers(model)]
        kernel, _, bias = self.cells[0]
        self.input_table = tf.matmul(embedding, kernel) + bias  # [vocab, 4 * units]: layer 1's projection
        dense = model.get_layer("logits")
        self.out_kernel = tf.convert_to_tensor(dense.kernel, tf.float32)
        self.out_bias = tf.convert_to_tensor(dense.bias, tf.float32)
        self.units = [int(r.shape[0]) for _, r, _ in self.cells]
        self.vocab_size = int(self.out_kernel.shape[1])

    def zero_states(self, batch_size: int):
        return tuple((tf.zeros([batch_size, u]), tf.zeros([batch_size, u])) for u in self.units)

    @staticmethod
    def _cell(z, c):
        """One LSTM step from pre-activations whose cell-gate columns are doubled (``double_cell_gate``)."""
        return doubled_gate_step(tf.sigmoid(z), c, c.shape[-1])

    def step(self, tokens, states):
        """tokens ``[batch]`` -> (logits ``[batch, vocab]``, new states)."""
        (h, c), rest = states[0], states[1:]
        h, c = self._cell(tf.gather(self.input_table, tokens) + tf.matmul(h, self.cells[0][1]), c)
        new_states = [(h, c)]
        for (kernel, recurrent, bias), (h_l, c_l) in zip(self.cells[1:], rest):
            h, c = self._cell(tf.matmul(h, kernel) + tf.matmul(h_l, recurrent) + bias, c_l)
            new_states.append((h, c))
        return tf.matmul(h, self.out_kernel) + self.out_bias, tuple(new_states)

    def forward(self, tokens, states):
        """tokens ``[batch, time]`` -> (logits ``[batch, time, vocab]``, states after the last step)."""
        projected = tf.gather(self.input_table, tf.transpose(tokens))  # [T, B, 4U], time major
        new_states = []
        for layer, ((kernel, recurrent, bias), (h, c)) in enumerate(zip(self.cells, states)):
            if layer:  # all time steps' input projection in one multiply
                projected = tf.einsum("tbu,ug->tbg", x, kernel) + bias

            def body(carry, z_t, recurrent=recurrent):
                h, c = carry
                return self._cell(z_t + tf.matmul(h, recurrent), c)

            hs, cs = tf.scan(body, projected, initializer=(h, c))
            new_states.append((hs[-1], cs[-1]))
            x = hs
        logits = tf.einsum("tbu,uv->btv", x, self.out_kernel) + self.out_bias
        return logits, tuple(new_states)
