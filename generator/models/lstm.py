"""The model: Embedding -> N x LSTM -> Dense logits, and the stateful decoder used to sample.

Regularization (all off at inference, all optional, see ``build``): dropout on each LSTM
layer's output and on the embedding output, optionally locked (one mask per sequence, shared
across time steps: variational dropout); embedding dropout (whole rows of the table); DropConnect on the
recurrent weights (``WeightDropLSTM``); weight tying (the output layer reuses the embedding table). Weight decay lives in the optimizer.

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


@keras.saving.register_keras_serializable(package="generator")
class TokenEmbedding(keras.layers.Embedding):
    """An Embedding with embedding dropout and an optional tied output layer.

    ``row_dropout``: in training, each row of the table (one token) is zeroed with this
    probability for the whole batch and the kept rows are scaled by ``1 / (1 - row_dropout)``,
    so every occurrence of a dropped token loses its vector at once (AWD-LSTM's embedding
    dropout). ``tied``: the layer also owns a bias of ``input_dim`` entries, and
    ``layer(h, reverse=True)`` gives float32 logits ``h @ table^T + bias`` (weight tying: the
    output layer reuses the table). Both are off at inference.
    """

    def __init__(self, input_dim, output_dim, row_dropout: float = 0.0, tied: bool = False, seed=None, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.row_dropout, self.tied, self.seed = float(row_dropout), bool(tied), seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.row_dropout > 0 else None

    def build(self, input_shape=None):
        super().build(input_shape)
        if self.tied:
            self.output_bias = self.add_weight(shape=(self.input_dim,), initializer="zeros", name="output_bias")

    def table(self, training=None):
        """The embedding table, with embedding dropout applied when ``training``."""
        table = self.embeddings
        if training and self.row_dropout > 0:
            keep = keras.random.uniform((self.input_dim, 1), seed=self.seed_generator) >= self.row_dropout
            table = table * keras.ops.cast(keep, table.dtype) / (1.0 - self.row_dropout)
        return table

    def call(self, inputs, training=None, reverse=False):
        if reverse:
            table = keras.ops.cast(self.embeddings, "float32")
            return keras.ops.matmul(keras.ops.cast(inputs, "float32"), keras.ops.transpose(table)) + self.output_bias
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = keras.ops.cast(inputs, "int32")
        return keras.ops.cast(keras.ops.take(self.table(training), inputs, axis=0), self.compute_dtype)

    def compute_output_spec(self, inputs, training=None, reverse=False):
        if reverse:
            return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype="float32")
        return keras.KerasTensor((*inputs.shape, self.output_dim), dtype=self.compute_dtype)

    def save_own_variables(self, store):  # the table and the output bias (Embedding's own saves only the table)
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {**super().get_config(), "row_dropout": self.row_dropout, "tied": self.tied, "seed": self.seed}


@keras.saving.register_keras_serializable(package="generator")
class WeightDropLSTM(keras.layers.LSTM):
    """An LSTM layer with DropConnect on its recurrent weights (AWD-LSTM's weight drop, Merity et al. 2017).

    In training, each entry of the recurrent kernel is zeroed with probability ``weight_drop``
    (the rest scaled by ``1 / (1 - weight_drop)``), one mask per batch shared by every time step;
    at inference the layer is a plain LSTM. The dropped kernel goes to Keras's fused LSTM op, so
    on a GPU training keeps the cuDNN kernel; the trainer's CPU path (``fast_lstm``) takes the same
    dropped kernel. Where the fused op is unavailable, a step function with the dropped kernel runs.
    """

    def __init__(self, units, weight_drop: float = 0.0, seed=None, **kwargs):
        super().__init__(units, **kwargs)
        self.weight_drop, self.seed = float(weight_drop), seed
        self.drop_seeds = keras.random.SeedGenerator(seed)

    def dropped_recurrent_kernel(self):
        """The recurrent kernel with a fresh DropConnect mask (a new one at each call)."""
        from generator.models.fast_lstm import hashed_dropout

        return hashed_dropout(self.cell.recurrent_kernel, self.weight_drop, self.drop_seeds)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not (training and self.weight_drop > 0):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        recurrent = self.dropped_recurrent_kernel()
        try:
            return keras.src.backend.lstm(
                sequences,
                initial_state[0],
                initial_state[1],
                mask,
                kernel=cell.kernel,
                recurrent_kernel=recurrent,
                bias=cell.bias,
                activation=cell.activation,
                recurrent_activation=cell.recurrent_activation,
                return_sequences=self.return_sequences,
                go_backwards=self.go_backwards,
                unroll=self.unroll,
            )
        except NotImplementedError:  # no fused kernel here: the same step, written out
            pass

        def step(x, states):
            h, c = states
            z = keras.ops.matmul(x, cell.kernel) + keras.ops.matmul(h, recurrent) + cell.bias
            i, f, g, o = keras.ops.split(z, 4, axis=-1)
            c = cell.recurrent_activation(f) * c + cell.recurrent_activation(i) * cell.activation(g)
            h = cell.recurrent_activation(o) * cell.activation(c)
            return h, [h, c]

        return keras.src.backend.rnn(
            step,
            sequences,
            list(initial_state),
            go_backwards=self.go_backwards,
            mask=mask,
            unroll=self.unroll,
            return_all_outputs=self.return_sequences,
        )

    def get_config(self):
        return {**super().get_config(), "weight_drop": self.weight_drop, "seed": self.seed}


def lstm_layer(config: RunConfig, name: str):
    """One stacked LSTM layer of ``config``: a ``WeightDropLSTM`` with ``weight_drop``, else a plain one."""
    if config.weight_drop > 0:
        return WeightDropLSTM(
            config.units, weight_drop=config.weight_drop, seed=config.random_seed, return_sequences=True, name=name
        )
    return keras.layers.LSTM(config.units, return_sequences=True, name=name)


def dropout_layer(rate: float, width: int, locked: bool, name: str):
    """Dropout on ``[batch, time, width]``; ``locked``: one mask per sequence, shared by all its time steps."""
    return keras.layers.Dropout(rate, noise_shape=(None, 1, width) if locked else None, name=name)


def build(config: RunConfig) -> keras.Model:
    """The training model: int token ids ``[batch, time]`` -> logits ``[batch, time, vocab]``.

    Embedding (optionally ``TokenEmbedding`` with embedding dropout or a tied output) -> input
    dropout -> N x (LSTM -> dropout) -> Dense logits, or with ``tie_weights`` a linear projection
    to the embedding width (when it differs from ``units``) and the embedding table transposed.
    """
    if config.vocab_size < 2:
        raise ValueError("vocab_size must be set before building the model")
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    if config.embedding_dropout > 0 or config.tie_weights:
        embedding = TokenEmbedding(
            config.vocab_size,
            config.embedding,
            row_dropout=config.embedding_dropout,
            tied=config.tie_weights,
            seed=config.random_seed,
            name="embedding",
        )
    else:
        embedding = keras.layers.Embedding(config.vocab_size, config.embedding, name="embedding")
    x = embedding(tokens)
    if config.input_dropout > 0:
        x = dropout_layer(config.input_dropout, config.embedding, config.locked_dropout, "input_dropout")(x)
    for i in range(config.layers):
        x = lstm_layer(config, f"lstm_{i + 1}")(x)
        if config.dropout > 0:
            x = dropout_layer(config.dropout, config.units, config.locked_dropout, f"dropout_{i + 1}")(x)
    if config.tie_weights:
        if config.units != config.embedding:
            x = keras.layers.Dense(config.embedding, name="projection")(x)
        logits = embedding(x, reverse=True)
    else:
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


def doubled_gates(a, units: int):
    """The gates ``(i, f, g, o)`` in ``a = sigmoid(z)``, ``z``'s cell-gate columns doubled (``g = 2 a - 1`` = tanh)."""
    return a[:, :units], a[:, units : 2 * units], 2 * a[:, 2 * units : 3 * units] - 1, a[:, 3 * units :]


def doubled_gate_step(a, c, units: int):
    """``(h, c)`` of one LSTM step from ``a = sigmoid(z)``, ``z``'s cell-gate columns doubled."""
    i, f, g, o = doubled_gates(a, units)
    c = f * c + i * g
    return o * tf.tanh(c), c


class LSTMStack:
    """The LSTM layers of a trained model, run incrementally: the part of the decoder that ``lstm`` and
    ``lstm-attention`` share.

    States are a tuple ``((h1, c1), (h2, c2), ...)`` of ``[batch, units]`` float32 tensors.
    Keras stores LSTM gates in the order input, forget, cell, output; the stack keeps its weights
    with the cell gate doubled (``double_cell_gate``). The first layer's input projection of every
    vocabulary entry is computed once (``embedding @ kernel + bias``, one row per token), so a
    token's projection is a row lookup instead of a matmul. (Multiplying ``[x, h]`` by the stacked
    kernels ``[K; R]`` in one matmul measured slower than two: the concatenation costs more than the
    second call saves.) ``step`` runs one token through every layer; ``chunk`` runs a chunk layer by
    layer, each layer's input projection for all time steps in one multiply, which is what makes
    priming and scoring fast, so the two are kept apart and share the cell (``doubled_gate_step``).
    """

    def __init__(self, model: keras.Model):
        embedding = tf.convert_to_tensor(model.get_layer("embedding").embeddings, tf.float32)
        self.cells = [
            tuple(double_cell_gate(w) for w in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias))
            for layer in lstm_layers(model)
        ]
        kernel, _, bias = self.cells[0]
        self.input_table = tf.matmul(embedding, kernel) + bias  # [vocab, 4 * units]: layer 1's projection
        self.units = [int(r.shape[0]) for _, r, _ in self.cells]

    def zero_states(self, batch_size):
        def zeros(units):
            return tf.zeros(tf.stack([batch_size, units]) if isinstance(batch_size, tf.Tensor) else [batch_size, units])

        return tuple((zeros(u), zeros(u)) for u in self.units)

    @staticmethod
    def _cell(z, c):
        """One LSTM step from pre-activations whose cell-gate columns are doubled (``double_cell_gate``)."""
        return doubled_gate_step(tf.sigmoid(z), c, c.shape[-1])

    def step(self, tokens, states):
        """tokens ``[batch]`` -> (the top layer's output ``[batch, units]``, new states)."""
        (h, c), rest = states[0], states[1:]
        h, c = self._cell(tf.gather(self.input_table, tokens) + tf.matmul(h, self.cells[0][1]), c)
        new_states = [(h, c)]
        for (kernel, recurrent, bias), (h_l, c_l) in zip(self.cells[1:], rest):
            h, c = self._cell(tf.matmul(h, kernel) + tf.matmul(h_l, recurrent) + bias, c_l)
            new_states.append((h, c))
        return h, tuple(new_states)

    def chunk(self, tokens, states):
        """tokens ``[batch, time]`` -> (the top layer's outputs ``[time, batch, units]``, time major; the
        states after the last step)."""
        projected = tf.gather(self.input_table, tf.transpose(tokens))  # [T, B, 4U], time major
        new_states, x = [], None  # x: the previous layer's outputs [T, B, U]
        for layer, ((kernel, recurrent, bias), (h, c)) in enumerate(zip(self.cells, states)):
            if layer:  # all time steps' input projection in one multiply
                projected = tf.einsum("tbu,ug->tbg", x, kernel) + bias

            def body(carry, z_t, recurrent=recurrent):
                h, c = carry
                return self._cell(z_t + tf.matmul(h, recurrent), c)

            hs, cs = tf.scan(body, projected, initializer=(h, c))
            new_states.append((hs[-1], cs[-1]))
            x = hs
        return x, tuple(new_states)


class Decoder:
    """Runs a trained model incrementally: ``step`` for one token, ``forward`` for a chunk.

    The LSTM layers are an ``LSTMStack`` (its states are the decoder's); the output layer (or the
    tied embedding table, through the projection when the widths differ) follows.
    """

    def __init__(self, model: keras.Model):
        self.lstm = LSTMStack(model)
        embedding = tf.convert_to_tensor(model.get_layer("embedding").embeddings, tf.float32)
        self.projection = None  # (kernel, bias) of a tied model's projection to the embedding width
        names = {layer.name for layer in model.layers}
        if "logits" in names:
            dense = model.get_layer("logits")
            self.out_kernel = tf.convert_to_tensor(dense.kernel, tf.float32)
            self.out_bias = tf.convert_to_tensor(dense.bias, tf.float32)
        else:  # tied: the embedding table, transposed
            self.out_kernel = tf.transpose(embedding)
            self.out_bias = tf.convert_to_tensor(model.get_layer("embedding").output_bias, tf.float32)
            if "projection" in names:
                dense = model.get_layer("projection")
                self.projection = (
                    tf.convert_to_tensor(dense.kernel, tf.float32),
                    tf.convert_to_tensor(dense.bias, tf.float32),
                )
        self.units = self.lstm.units
        self.vocab_size = int(self.out_kernel.shape[1])

    def zero_states(self, batch_size: int):
        return self.lstm.zero_states(batch_size)

    def step(self, tokens, states):
        """tokens ``[batch]`` -> (logits ``[batch, vocab]``, new states)."""
        h, states = self.lstm.step(tokens, states)
        if self.projection is not None:
            h = tf.matmul(h, self.projection[0]) + self.projection[1]
        return tf.matmul(h, self.out_kernel) + self.out_bias, states

    def forward(self, tokens, states):
        """tokens ``[batch, time]`` -> (logits ``[batch, time, vocab]``, states after the last step)."""
        x, states = self.lstm.chunk(tokens, states)
        if self.projection is not None:
            x = tf.einsum("tbu,ue->tbe", x, self.projection[0]) + self.projection[1]
        return tf.einsum("tbu,uv->btv", x, self.out_kernel) + self.out_bias, states
