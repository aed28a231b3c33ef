"""``transformer``: a decoder-only Transformer (GPT-style, pre-norm) over token ids.

Embedding (projected to the model width when ``embedding != units``) -> dropout -> ``layers`` blocks of
[LayerNorm -> causal multi-head self-attention with rotary positions -> dropout -> residual,
LayerNorm -> Dense(4 units, GELU) -> Dense(units) -> dropout -> residual] -> LayerNorm -> logits,
untied (a Dense layer) or, with ``tie_weights``, the embedding table transposed plus a bias (the LSTM's
``TokenEmbedding``, which also gives ``embedding_dropout``: whole embedding rows dropped per batch).

Positions are rotary (RoFormer): a query-key score depends only on the distance between the two
positions, which is what lets generation run past the training context with a rolling cache.
``positions="learned"`` (a ``RunConfig`` field) adds a learned absolute position vector to each token
instead (GPT-2's way); past the context its positions wrap around (position ``p`` uses row ``p mod
seq_len``) so the cache still slides without re-encoding, but the model never saw wrapped positions
in training. Measured against rotary at equal steps (docs/results.md, "Rotary or learned positions"): rotary
is ahead in context (0.22 nats on tiny-shakespeare, 0.80 on JSB at 240 steps) and its rolling cache
matches re-encoded windows past the context, so rotary stays the default.

Decoding carries, per block, a key/value cache of fixed size ``context = seq_len`` and one position
counter: ``[batch, context, heads, units / heads]`` per tensor, so shapes stay static inside the
compiled decode loop. The cache is a ring buffer (see ``generator.models.attention.ring_attention``):
once ``context`` tokens have been read, each new key and value overwrites the oldest, and every
token attends to the last ``context`` tokens (itself included) - a sliding window. The training pass
uses the same band mask, so the full forward pass over any length (``model(tokens)``) equals
step-by-step or chunked decoding; within ``seq_len`` tokens that band is the ordinary causal mask.
Nothing is ever re-encoded, so the cost of a step and the state's memory are constant once the
cache is full. (Beyond the context, a token's deeper layers still carry information from earlier
tokens through the window's keys: the receptive field is ``layers x context``.)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from generator.config import RunConfig
from generator.errors import GeneratorError
from generator.models import POSITIONS
from generator.models.attention import (
    CausalSelfAttention,
    float_weights,
    logits_of,
    optional_layer,
    output,
    output_head,
    output_weights,
    project,
    ring_attention,
    ring_step,
    ring_zeros,
)
from generator.models.lstm import TokenEmbedding

NAME = "transformer_generator"


@keras.saving.register_keras_serializable(package="generator")
class LearnedPositions(keras.layers.Layer):
    """Adds a learned vector per position to ``[B, T, U]``: position ``p`` uses row ``p mod context``
    (within the context that is the plain absolute position; past it, the positions wrap around)."""

    def __init__(self, context: int, **kwargs):
        super().__init__(**kwargs)
        self.context = int(context)

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table",
            shape=(self.context, int(input_shape[-1])),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, x):
        rows = tf.math.floormod(tf.range(tf.shape(x)[1]), self.context)
        return x + tf.cast(tf.gather(self.table, rows), x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "context": self.context}


def build(config: RunConfig) -> keras.Model:
    """The training model: int token ids ``[batch, time]`` -> logits ``[batch, time, vocab]``."""
    if config.vocab_size < 2:
        raise ValueError("vocab_size must be set before building the model")
    if config.positions not in POSITIONS:
        raise GeneratorError(f"unknown positions {config.positions!r}; choose one of {', '.join(POSITIONS)}")
    rotary = config.positions == "rotary"
    if config.units % (2 * config.heads if rotary else config.heads):
        raise GeneratorError(
            f"the Transformer width (units {config.units}) must be a multiple of twice the heads "
            f"({2 * config.heads}): rotary positions need an even width per head"
            if rotary
            else f"the Transformer width (units {config.units}) must be a multiple of the heads ({config.heads})"
        )
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    tie = config.tie_weights
    embedding = TokenEmbedding(
        config.vocab_size,
        config.embedding,
        row_dropout=config.embedding_dropout,
        tied=tie,
        seed=config.random_seed,
        name="embedding",
    )
    x = embedding(tokens)
    if config.embedding != config.units:
        x = keras.layers.Dense(config.units, use_bias=False, name="embedding_projection")(x)
    if not rotary:
        x = LearnedPositions(config.seq_len, name="positions")(x)

    def dropout(h, name):
        return keras.layers.Dropout(config.dropout, name=name)(h) if config.dropout > 0 else h

    x = dropout(x, "input_dropout")
    for i in range(1, config.layers + 1):
        h = keras.layers.LayerNormalization(name=f"block_{i}_attention_norm")(x)
        h = CausalSelfAttention(config.heads, config.seq_len, rotary=rotary, name=f"block_{i}_attention")(h)
        x = keras.layers.Add(name=f"block_{i}_attention_residual")([x, dropout(h, f"block_{i}_attention_dropout")])
        h = keras.layers.LayerNormalization(name=f"block_{i}_mlp_norm")(x)
        h = keras.layers.Dense(4 * config.units, activation="gelu", name=f"block_{i}_mlp_in")(h)
        h = keras.layers.Dense(config.units, name=f"block_{i}_mlp_out")(h)
        x = keras.layers.Add(name=f"block_{i}_mlp_residual")([x, dropout(h, f"block_{i}_mlp_dropout")])
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    return keras.Model(tokens, output_head(x, embedding, config, tie), name=NAME)


def _blocks(model) -> int:
    return sum(1 for layer in model.layers if isinstance(layer, CausalSelfAttention))


def training_forward(model: keras.Model, tokens, training: bool = False):
    """The model's forward pass, dropout masks drawn by ``fast_lstm.dropout`` (cheap under XLA on a CPU)."""
    from generator.models import fast_lstm

    def dropout(h, name):
        layer = optional_layer(model, name)
        if layer is None or not training:
            return h
        return layer(h, training=True) if tf.config.list_logical_devices("GPU") else fast_lstm.dropout(layer, h)

    x = model.get_layer("embedding")(tokens, training=training)
    if optional_layer(model, "embedding_projection") is not None:
        x = model.get_layer("embedding_projection")(x)
    if optional_layer(model, "positions") is not None:
        x = model.get_layer("positions")(x)
    x = dropout(x, "input_dropout")
    for i in range(1, _blocks(model) + 1):
        h = model.get_layer(f"block_{i}_attention")(model.get_layer(f"block_{i}_attention_norm")(x))
        x = x + dropout(h, f"block_{i}_attention_dropout")
        h = model.get_layer(f"block_{i}_mlp_in")(model.get_layer(f"block_{i}_mlp_norm")(x))
        x = x + dropout(model.get_layer(f"block_{i}_mlp_out")(h), f"block_{i}_mlp_dropout")
    return logits_of(model, model.get_layer("final_norm")(x))


def _f32(w):
    return tf.convert_to_tensor(w, tf.float32)


def _norm(layer):
    return _f32(layer.gamma), _f32(layer.beta), layer.epsilon


def layer_norm(x, norm):
    gamma, beta, epsilon = norm
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + epsilon) * gamma + beta


class Decoder:
    """Incremental decoding: states ``(((keys, values) per block), position)``.

    Keys and values are ring buffers ``[batch, context, heads, units / heads]`` (rotary keys, so a
    slot never needs re-encoding when the window slides); ``position`` counts the tokens read.
    ``step`` writes its token's key and value into the ring in place (``ring_step``, shared with
    lstm-attention); ``forward`` (priming, chunks) goes through ``ring_attention``.
    """

    def __init__(self, model: keras.Model):
        table = _f32(model.get_layer("embedding").embeddings)
        self.table = table
        projection = optional_layer(model, "embedding_projection")
        self.input_table = table if projection is None else tf.matmul(table, _f32(projection.kernel))
        positions = optional_layer(model, "positions")
        self.position_table = None if positions is None else _f32(positions.table)  # learned positions
        self.blocks = []
        for i in range(1, _blocks(model) + 1):
            attention = model.get_layer(f"block_{i}_attention")
            mlp_in, mlp_out = model.get_layer(f"block_{i}_mlp_in"), model.get_layer(f"block_{i}_mlp_out")
            self.blocks.append(
                dict(
                    norm1=_norm(model.get_layer(f"block_{i}_attention_norm")),
                    attention=float_weights(attention),
                    norm2=_norm(model.get_layer(f"block_{i}_mlp_norm")),
                    mlp=(_f32(mlp_in.kernel), _f32(mlp_in.bias), _f32(mlp_out.kernel), _f32(mlp_out.bias)),
                )
            )
            self.context, self.heads, self.rotary = attention.window, attention.heads, attention.rotary
        self.final_norm = _norm(model.get_layer("final_norm"))
        self.out_kernel, self.out_bias = output_weights(model)
        self.width = int(self.input_table.shape[1])
        self.vocab_size = int(self.out_kernel.shape[1])

    def zero_states(self, batch_size):
        caches = tuple(ring_zeros(batch_size, self.context, self.heads, self.width // self.heads) for _ in self.blocks)
        return caches, tf.constant(0, tf.int32)

    def _embed(self, tokens, positions):
        x = tf.gather(self.input_table, tokens)
        if self.position_table is not None:
            x = x + tf.gather(self.position_table, tf.math.floormod(positions, self.context))
        return x

    def _mlp_and_residual(self, x, out, block):
        x = x + output(out, block["attention"])
        w_in, b_in, w_out, b_out = block["mlp"]
        h = tf.nn.gelu(tf.einsum("btu,uv->btv", layer_norm(x, block["norm2"]), w_in) + b_in, approximate=False)
        return x + tf.einsum("btv,vu->btu", h, w_out) + b_out

    def _logits(self, x):
        return tf.einsum("btu,uv->btv", layer_norm(x, self.final_norm), self.out_kernel) + self.out_bias

    def _run(self, tokens, states, one_token: bool):
        """tokens ``[batch, time]`` -> (logits ``[batch, time, vocab]``, states after the last token);
        ``one_token`` (time 1) writes the token's key and value into each ring in place."""
        caches, position = states
        positions = position[None] if one_token else position + tf.range(tf.shape(tokens)[1])
        x = self._embed(tokens, positions)
        new_caches = []
        for block, (keys, values) in zip(self.blocks, caches):
            q, k, v = project(layer_norm(x, block["norm1"]), block["attention"], positions, self.rotary)
            attend = ring_step if one_token else ring_attention
            out, keys, values = attend(q, k, v, keys, values, position, self.context)
            x = self._mlp_and_residual(x, out, block)
            new_caches.append((keys, values))
        return self._logits(x), (tuple(new_caches), position + (1 if one_token else tf.shape(tokens)[1]))

    def forward(self, tokens, states):
        """tokens ``[batch, time]`` -> (logits ``[batch, time, vocab]``, states after the last token)."""
        return self._run(tokens, states, one_token=False)

    def step(self, tokens, states):
        """tokens ``[batch]`` -> (logits ``[batch, vocab]``, new states): ``forward`` on one token."""
        logits, states = self._run(tokens[:, None], states, one_token=True)
        return logits[:, 0], states
