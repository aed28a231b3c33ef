"""``lstm-attention``: a stacked LSTM whose top-layer outputs attend over the previous W outputs.

The model is Embedding -> N x LSTM -> causal multi-head self-attention over a window of the last
W top-layer outputs (the output itself included) -> residual connection and layer normalization
-> logits (a Dense layer, or the embedding table with ``tie_weights``; ``embedding_dropout`` as the
LSTM's); Magenta's attention_rnn is the precedent (it attends over the last n outputs
of its cell). The LSTM carries order, so the attention has no position encoding of its own.

Decoding is incremental with constant memory per sample: the decode state is the LSTM states
plus a ring buffer of the last W keys and values and a position counter (``RingCache``). Slot
``s`` of the buffer holds the most recent position ``p`` with ``p mod W == s``; a new position
overwrites the oldest. ``ring_attention`` attends a chunk of queries over buffer and chunk with
the same band mask the training pass uses, so step-by-step, chunked and full passes agree.

``CausalSelfAttention`` is also the Transformer's attention layer (``generator.models.transformer``),
with rotary positions there.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from generator.config import RunConfig
from generator.errors import GeneratorError
from generator.models.lstm import LSTMStack, TokenEmbedding, lstm_layer, lstm_layers  # registers TokenEmbedding

NAME = "lstm_attention_generator"
NEG_INF = -1e9


# -- the attention layer (training model) ---------------------------------------------------------------------


def rotary(x, positions):
    """Rotary position embedding of ``x`` ``[B, T, H, D]`` at integer ``positions`` ``[T]`` (RoFormer, Su et al. 2021).

    Pairs (i, i + D/2) are rotated by ``position * 10000^(-2i/D)``, so a query-key product depends
    only on the distance between their positions.
    """
    half = x.shape[-1] // 2
    inverse = tf.pow(10000.0, -tf.range(half, dtype=tf.float32) / half)
    angles = tf.cast(positions, tf.float32)[:, None] * inverse[None, :]  # [T, D/2]
    cos = tf.cast(tf.cos(angles), x.dtype)[None, :, None, :]
    sin = tf.cast(tf.sin(angles), x.dtype)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return tf.concat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def band_mask(query_positions, key_positions, window: int):
    """``[Tq, Tk]`` bool: key position within the last ``window`` positions up to the query's (and not negative)."""
    q, k = query_positions[:, None], key_positions[None, :]
    return (k <= q) & (k > q - window) & (k >= 0)


def attend(q, k, v, mask):
    """Softmax attention ``[B, Tq, H, D]`` of queries over keys/values ``[B, Tk, H, D]``, scores in float32."""
    scores = tf.einsum("bqhd,bkhd->bhqk", tf.cast(q, tf.float32), tf.cast(k, tf.float32)) / math.sqrt(q.shape[-1])
    scores = tf.where(mask[None, None], scores, NEG_INF)
    weights = tf.cast(tf.nn.softmax(scores, axis=-1), v.dtype)
    return tf.einsum("bhqk,bkhd->bqhd", weights, v)


@keras.saving.register_keras_serializable(package="generator")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention over a band of the last ``window`` positions.

    ``[B, T, U]`` -> ``[B, T, U]``; the head width is ``U / heads``. Query, key and value come from
    one ``[U, 3, heads, U / heads]`` kernel; ``rotary`` applies rotary positions to queries and keys.
    """

    def __init__(self, heads: int, window: int, rotary: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.window, self.rotary = int(heads), int(window), bool(rotary)

    def build(self, input_shape):
        units = int(input_shape[-1])
        if units % self.heads:
            raise ValueError(f"the attention width {units} must be a multiple of the number of heads {self.heads}")
        d = units // self.heads
        if self.rotary and d % 2:
            raise ValueError(f"rotary positions need an even head width, not {d}")
        self.qkv_kernel = self.add_weight(
            name="qkv_kernel", shape=(units, 3, self.heads, d), initializer="glorot_uniform"
        )
        self.qkv_bias = self.add_weight(name="qkv_bias", shape=(3, self.heads, d), initializer="zeros")
        self.out_kernel = self.add_weight(name="out_kernel", shape=(self.heads, d, units), initializer="glorot_uniform")
        self.out_bias = self.add_weight(name="out_bias", shape=(units,), initializer="zeros")

    def call(self, x):
        weights = [tf.cast(w, x.dtype) for w in (self.qkv_kernel, self.qkv_bias, self.out_kernel, self.out_bias)]
        positions = tf.range(tf.shape(x)[1])
        q, k, v = project(x, weights, positions, self.rotary)
        out = attend(q, k, v, band_mask(positions, positions, self.window))
        return output(out, weights)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "window": self.window, "rotary": self.rotary}


def project(x, weights, positions, use_rotary: bool):
    """Queries, keys and values ``[B, T, H, D]`` of ``x`` ``[B, T, U]`` (rotated when ``use_rotary``)."""
    kernel, bias = weights[0], weights[1]
    qkv = tf.einsum("btu,uchd->btchd", x, kernel) + bias
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if use_rotary:
        q, k = rotary(q, positions), rotary(k, positions)
    return q, k, v


def output(heads_out, weights):
    """The output projection of attended values ``[B, T, H, D]`` -> ``[B, T, U]``."""
    return tf.einsum("bthd,hdu->btu", heads_out, weights[2]) + weights[3]


def float_weights(layer: CausalSelfAttention):
    """The layer's weights as float32 tensors (what the decoders compute with)."""
    return [
        tf.convert_to_tensor(w, tf.float32)
        for w in (layer.qkv_kernel, layer.qkv_bias, layer.out_kernel, layer.out_bias)
    ]


# -- incremental attention with a ring buffer -----------------------------------------------------------------


def ring_zeros(batch, window: int, heads: int, head_width: int):
    """An empty ring buffer of keys and values ``[batch, window, heads, head_width]`` each."""
    shape = (
        tf.stack([batch, window, heads, head_width])
        if isinstance(batch, tf.Tensor)
        else [batch, window, heads, head_width]
    )
    return tf.zeros(shape), tf.zeros(shape)


def ring_attention(q, k, v, cache_k, cache_v, position, window: int):
    """Attend a chunk's queries ``[B, T, H, D]`` (positions ``position ... position + T - 1``) over the
    ring buffers ``[B, W, H, D]`` and the chunk's own keys; returns (attended ``[B, T, H, D]``, new buffers).

    Slot ``s`` holds the latest position ``p < position`` with ``p mod W == s`` (negative: empty).
    """
    t = tf.shape(q)[1]
    slots = tf.range(window)
    slot_positions = position - 1 - tf.math.floormod(position - 1 - slots, window)
    chunk_positions = position + tf.range(t)
    keys, values = tf.concat([cache_k, k], 1), tf.concat([cache_v, v], 1)
    out = attend(q, keys, values, band_mask(chunk_positions, tf.concat([slot_positions, chunk_positions], 0), window))
    end = position + t
    latest = end - 1 - tf.math.floormod(end - 1 - slots, window)  # each slot's position after the chunk
    index = tf.where(latest >= position, window + latest - position, slots)
    return out, tf.gather(keys, index, axis=1), tf.gather(values, index, axis=1)


def ring_step(q, k, v, cache_k, cache_v, position, window: int):
    """``ring_attention`` for one token (``q``, ``k``, ``v`` ``[B, 1, H, D]`` at ``position``): its key and
    value are written into slot ``position mod W`` in place (a scatter, which XLA updates in place inside
    the sampler's compiled loop) and it attends over the ring, itself included."""
    batch = tf.shape(k)[0]
    rows = tf.stack([tf.range(batch), tf.fill([batch], tf.math.floormod(position, window))], 1)  # (b, slot)
    keys = tf.tensor_scatter_nd_update(cache_k, rows, k[:, 0])
    values = tf.tensor_scatter_nd_update(cache_v, rows, v[:, 0])
    # after the write, slot s holds position - ((position - s) mod W): filled once that is >= 0
    filled = (tf.range(window) <= position)[None]  # [1 query, W keys]
    return attend(q, keys, values, filled), keys, values


# -- the architecture ------------------------------------------------------------------------------------------


def build(config: RunConfig) -> keras.Model:
    """The training model: int token ids ``[batch, time]`` -> logits ``[batch, time, vocab]``."""
    if config.vocab_size < 2:
        raise ValueError("vocab_size must be set before building the model")
    if config.units % config.heads:
        raise GeneratorError(
            f"the attention width (units {config.units}) must be a multiple of the heads ({config.heads})"
        )
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedding = TokenEmbedding(
        config.vocab_size,
        config.embedding,
        row_dropout=config.embedding_dropout,
        tied=config.tie_weights,
        seed=config.random_seed,
        name="embedding",
    )
    x = embedding(tokens)
    for i in range(config.layers):
        x = lstm_layer(config, f"lstm_{i + 1}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    attended = CausalSelfAttention(config.heads, config.attention_window, name="attention")(x)
    if config.dropout > 0:
        attended = keras.layers.Dropout(config.dropout, name="attention_dropout")(attended)
    x = keras.layers.LayerNormalization(name="attention_norm")(keras.layers.Add(name="residual")([x, attended]))
    return keras.Model(tokens, output_head(x, embedding, config, config.tie_weights), name=NAME)


def output_head(x, embedding, config: RunConfig, tie: bool):
    """Logits from ``x``: a Dense layer, or with ``tie`` the embedding table (through a projection when widths differ)."""
    if not tie:
        return keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    if x.shape[-1] != config.embedding:
        x = keras.layers.Dense(config.embedding, use_bias=False, name="logits_projection")(x)
    return embedding(x, reverse=True)


def optional_layer(model, name):
    """The model's layer called ``name``, or None."""
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def training_forward(model: keras.Model, tokens, training: bool = False):
    """The trainer's XLA forward pass: the LSTM layers run by ``fast_lstm``, the rest by the model's layers."""
    from generator.models import fast_lstm

    if tf.config.list_logical_devices("GPU"):
        return model(tokens, training=training)
    x = model.get_layer("embedding")(tf.transpose(tokens), training=training)  # time major through the LSTMs
    for i, layer in enumerate(lstm_layers(model)):
        x = fast_lstm.lstm_sequence(x, *(tf.cast(w, x.dtype) for w in fast_lstm.lstm_weights(layer, training)))
        drop = optional_layer(model, f"dropout_{i + 1}")
        if drop is not None and training:
            x = fast_lstm.dropout(drop, x)
    x = tf.transpose(x, [1, 0, 2])
    attended = model.get_layer("attention")(x)
    drop = optional_layer(model, "attention_dropout")
    if drop is not None and training:
        attended = fast_lstm.dropout(drop, attended)
    x = model.get_layer("attention_norm")(x + attended)
    return logits_of(model, x)


def logits_of(model, x):
    """The model's output layer on ``x``: a Dense layer, or the tied embedding table."""
    if optional_layer(model, "logits") is not None:
        return model.get_layer("logits")(x)
    if optional_layer(model, "logits_projection") is not None:
        x = model.get_layer("logits_projection")(x)
    return model.get_layer("embedding")(x, reverse=True)


def output_weights(model):
    """float32 ``(kernel [width, vocab], bias [vocab])`` of the output layer, tied or not."""
    dense = optional_layer(model, "logits")
    if dense is not None:
        return tf.convert_to_tensor(dense.kernel, tf.float32), tf.convert_to_tensor(dense.bias, tf.float32)
    embedding = model.get_layer("embedding")
    kernel = tf.transpose(tf.convert_to_tensor(embedding.embeddings, tf.float32))
    projection = optional_layer(model, "logits_projection")
    if projection is not None:
        kernel = tf.matmul(tf.convert_to_tensor(projection.kernel, tf.float32), kernel)
    return kernel, tf.convert_to_tensor(embedding.output_bias, tf.float32)


class Decoder:
    """Incremental decoding: states ``(lstm_states, (keys, values, position))``.

    ``lstm_states`` is ``((h1, c1), ...)`` as in ``generator.models.lstm``; keys and values are ring
    buffers ``[batch, W, heads, units / heads]`` and ``position`` the number of tokens read so far
    (an int32 scalar): memory per sample is constant in the generated length.
    """

    def __init__(self, model: keras.Model):
        self.lstm = LSTMStack(model)  # shared with generator.models.lstm's decoder
        self.units = self.lstm.units
        attention = model.get_layer("attention")
        self.window, self.heads = attention.window, attention.heads
        self.attention = float_weights(attention)
        norm = model.get_layer("attention_norm")
        self.gamma, self.beta, self.epsilon = (
            tf.convert_to_tensor(norm.gamma, tf.float32),
            tf.convert_to_tensor(norm.beta, tf.float32),
            norm.epsilon,
        )
        self.out_kernel, self.out_bias = output_weights(model)
        self.vocab_size = int(self.out_kernel.shape[1])

    def zero_states(self, batch_size):
        keys, values = ring_zeros(batch_size, self.window, self.heads, self.units[-1] // self.heads)
        return self.lstm.zero_states(batch_size), (keys, values, tf.constant(0, tf.int32))

    def _head(self, x, ring, one_token: bool = False):
        """Attention, residual, normalization and logits of LSTM outputs ``x`` ``[B, T, U]`` (``T`` = 1
        with ``one_token``: the ring is written in place)."""
        keys, values, position = ring
        q, k, v = project(x, self.attention, None, False)
        out, keys, values = (ring_step if one_token else ring_attention)(q, k, v, keys, values, position, self.window)
        y = x + output(out, self.attention)
        mean, var = tf.nn.moments(y, axes=[-1], keepdims=True)
        y = (y - mean) * tf.math.rsqrt(var + self.epsilon) * self.gamma + self.beta
        logits = tf.einsum("btu,uv->btv", y, self.out_kernel) + self.out_bias
        return logits, (keys, values, position + tf.shape(x)[1])

    def step(self, tokens, states):
        """tokens ``[batch]`` -> (logits ``[batch, vocab]``, new states)."""
        h, lstm_states = self.lstm.step(tokens, states[0])
        logits, ring = self._head(h[:, None], states[1], one_token=True)
        return logits[:, 0], (lstm_states, ring)

    def forward(self, tokens, states):
        """tokens ``[batch, time]`` -> (logits ``[batch, time, vocab]``, states after the last token)."""
        x, lstm_states = self.lstm.chunk(tokens, states[0])
        logits, ring = self._head(tf.transpose(x, [1, 0, 2]), states[1])
        return logits, (lstm_states, ring)
