"""The training forward pass the trainer runs under XLA on CPUs, with the model's own variables.

``forward(model, tokens, training)`` computes what ``model(tokens, training=training)`` computes,
to float rounding (dropout draws its own masks). Each LSTM layer's input projection for all time
steps is one matmul, and the recurrence (``recurrence``) has a hand-written backward pass:
one ``dz @ R^T`` matmul per step, and the recurrent kernel's gradient as one matmul after the
loop. Keras's loop differentiates each step on its own: two matmuls forward and four backward.

What mattered under XLA on a CPU (2 x LSTM(256), batch 64, sequences of 100):

- one sigmoid over all four gates, with the cell gate's columns doubled (tanh(z) = 2 sigmoid(2z) - 1),
  sliced afterwards: five times faster than ``tf.split`` followed by four activations;
- matmuls over all steps written on 2-D arrays: as 3-D einsums summing over time and batch,
  XLA transposed their operands in full (about 9 % of a step);
- the first layer's input projection as a row lookup in ``embedding @ kernel`` inside the step
  (``lstm_from_table``) where the layer reads the embedding directly: 8 % more tokens per
  CPU-second, the embedding's gradient unchanged (``tf.IndexedSlices``, which Keras's clipping
  and Adam treat differently from a dense gradient; a dense one made the loss fall more slowly);
- dropout masks from a hash of each element's index (``dropout``): TensorFlow's own choice of
  generator took 250 ms per mask. Locked dropout (``noise_shape`` (None, 1, units)) hashes one
  ``[batch, units]`` mask and broadcasts it over time.

What is trained and saved stays an ordinary Keras model. On a GPU ``forward`` calls the model
itself, which keeps the cuDNN kernel. Layers other than plain LSTMs (tanh/sigmoid, bias, no
dropout inside the layer, full sequences out) also run as themselves.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from generator.models.lstm import TokenEmbedding, WeightDropLSTM, cell_gate_doubling, doubled_gate_step, doubled_gates


def recurrence(input_at, n_steps, batch, recurrent, bias):
    """The LSTM loop over ``n_steps`` steps: ``input_at(t)`` gives step ``t``'s input projection
    ``[B, 4U]`` (``x_t @ kernel``, without the bias, which is added in the step).

    Returns the hidden states ``[T, B, U]`` (zero initial states, gates in Keras order: input,
    forget, cell, output) and ``backward(dhs) -> dz``, the pre-activations' gradient ``[T, B, 4U]``
    from the hidden states' gradient: one ``[B, 4U] x [4U, U]`` matmul per step. The weights'
    gradients are left to the callers, as one matmul over all steps each. The forward steps
    store what the backward steps multiply by (``backward_factors``), so that a backward step is
    three multiply-adds around its matmul.
    """
    u = recurrent.shape[0]
    dtype = recurrent.dtype
    # The cell gate's columns are doubled so that one sigmoid gives every gate: tanh(z) = 2 sigmoid(2z) - 1.
    # (Slicing one activation measured five times faster under XLA than tf.split and four activations.)
    doubling = cell_gate_doubling(u, dtype)
    recurrent_doubled, bias_doubled = recurrent * doubling, bias * doubling
    zeros = tf.zeros(tf.stack([batch, u]), dtype)

    def arrays():
        return tf.TensorArray(dtype, size=n_steps)

    def step(t, h, c, hs, factors):
        a = tf.sigmoid(input_at(t) * doubling + bias_doubled + tf.matmul(h, recurrent_doubled))
        h, c_next = doubled_gate_step(a, c, u)
        return t + 1, h, c_next, hs.write(t, h), factors.write(t, backward_factors(a, c, c_next, u))

    _, _, _, hs, factors = tf.while_loop(lambda t, *_: t < n_steps, step, (0, zeros, zeros, arrays(), arrays()))
    hs, factors = hs.stack(), factors.stack()

    def backward(dhs):
        recurrent_t = tf.transpose(recurrent)  # once, not in every step's matmul

        def back(t, dh_next, dc_next, dzs):
            k = factors[t]
            dh = dhs[t] + dh_next
            dc = dc_next + dh * k[:, 4 * u : 5 * u]
            dz = tf.concat([dc, dc, dc, dh], -1) * k[:, : 4 * u]
            return t - 1, tf.matmul(dz, recurrent_t), dc * k[:, 5 * u :], dzs.write(t, dz)

        return tf.while_loop(lambda t, *_: t >= 0, back, (n_steps - 1, zeros, zeros, arrays()))[3].stack()

    return hs, backward


def backward_factors(a, c_prev, c, u: int):
    """``[B, 6U]``: what one backward step multiplies by, from the step's gates ``a`` (sigmoids, the
    cell gate's pre-activation doubled) and its cell states before and after.

    With ``dh`` the gradient reaching the step's output and ``dc = dc_next + dh * through``, the
    pre-activations' gradient is ``[dc, dc, dc, dh] * gate`` and ``dc * forget`` goes on to the
    step before. ``gate`` is ``[g, c_prev, 4 i, tanh(c)] * a (1 - a)`` (sigmoid' = a (1 - a), and
    for the doubled cell gate tanh'(z) = 1 - g^2 = 4 a (1 - a)), ``through`` is ``o (1 - tanh(c)^2)``.
    Written by the forward step, where every input is at hand, they leave the backward step
    three multiply-adds; computed in the backward step, XLA recomputed ``dc`` in five fusions.
    """
    i, f, g, o = doubled_gates(a, u)
    tanh_c = tf.tanh(c)
    gate = tf.concat([g, c_prev, 4 * i, tanh_c], -1) * a * (1 - a)
    return tf.concat([gate, o * (1 - tanh_c * tanh_c), f], -1)


def previous_states(hs):
    """``[T, B, U]`` -> ``[T * B, U]``: each step's incoming hidden state (zeros for the first)."""
    return flat(tf.concat([tf.zeros_like(hs[:1]), hs[:-1]], 0))


def lstm_sequence(x, kernel, recurrent, bias):
    """Time-major inputs ``[T, B, In]`` -> hidden states ``[T, B, U]``, differentiable in all four.

    Every step's input projection is one matmul before the loop (``recurrence``); after the
    backward loop the kernel's and the recurrent kernel's gradients are one matmul together
    (``[x, h_prev]^T dz``, about 15 % faster than two), the input's gradient one more.
    """

    @tf.custom_gradient
    def run(x, kernel, recurrent, bias):
        projected = tf.reshape(tf.matmul(flat(x), kernel), tf.concat([tf.shape(x)[:2], [-1]], 0))
        hs, backward = recurrence(lambda t: projected[t], tf.shape(x)[0], tf.shape(x)[1], recurrent, bias)

        def grad(dhs):
            dz = flat(backward(dhs))
            weights = tf.matmul(tf.concat([flat(x), previous_states(hs)], 1), dz, transpose_a=True)
            d_x = tf.reshape(tf.matmul(dz, kernel, transpose_b=True), tf.shape(x))
            return d_x, weights[: kernel.shape[0]], weights[kernel.shape[0] :], tf.reduce_sum(dz, 0)

        return hs, grad

    return run(x, kernel, recurrent, bias)


def flat(x):
    """``[T, B, N]`` -> ``[T * B, N]``. Matmuls over every time step are written on 2-D arrays: XLA
    turned 3-D einsums that sum over time and batch into full transposes of their operands."""
    return tf.reshape(x, [-1, x.shape[-1]])


def supported(layer) -> bool:
    """Whether ``lstm_sequence`` computes exactly what this Keras LSTM layer computes."""
    cell = getattr(layer, "cell", None)
    return (
        isinstance(layer, keras.layers.LSTM)
        and layer.return_sequences
        and not layer.go_backwards
        and not layer.stateful
        and cell.use_bias
        and cell.dropout == 0
        and cell.recurrent_dropout == 0
        and cell.activation is keras.activations.tanh
        and cell.recurrent_activation is keras.activations.sigmoid
    )


def _mix(h):
    """MurmurHash3's 32-bit finalizer: every input bit flips each output bit with probability about 1/2."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16)) * tf.constant(0x85EBCA6B, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13)) * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def dropout(layer, x):
    """``layer(x, training=True)`` for a Keras Dropout layer, with a mask XLA computes almost for free
    (``hashed_dropout``; locked dropout, ``noise_shape`` (None, 1, units), shares one mask over time)."""
    return hashed_dropout(x, layer.rate, layer.seed_generator, locked=layer.noise_shape is not None)


def hashed_dropout(x, rate: float, seed_generator, locked: bool = False):
    """Dropout on ``x`` with a mask from a hash of each element's index (``locked``: one mask over axis 0).

    Each element's 16 random bits are half of a hash of its index and a key drawn from
    ``seed_generator`` (a counter-based generator, like Philox but with fewer rounds), so the mask
    fuses into the multiply. Keras leaves the generator to TensorFlow's automatic choice, which
    under XLA on a CPU took 250 ms for a [100, 64, 256] mask; Philox took 6 ms (2 ms with 16-bit
    halves), this hash 0.1 ms. The rate is rounded to a multiple of 1/65536, and kept values are
    scaled by the exact inverse of the kept fraction.
    """
    threshold = round(rate * 65536)
    if threshold == 0:
        return x
    seed = tf.cast(seed_generator.next(), tf.uint32)
    key = _mix(tf.bitwise.bitwise_xor(seed[0], _mix(seed[1] + tf.constant(0x9E3779B9, tf.uint32))))
    shape = tf.shape(x)
    if locked:  # one mask per sequence, broadcast over time (axis 0, time major)
        shape = tf.concat([[1], shape[1:]], 0)
    index = tf.reshape(tf.range(tf.reduce_prod(shape)), shape)
    bits = _mix(tf.cast(tf.bitwise.right_shift(index, 1), tf.uint32) * tf.constant(0x9E3779B9, tf.uint32) + key)
    halves = tf.where(
        tf.bitwise.bitwise_and(index, 1) == 0, tf.bitwise.bitwise_and(bits, 0xFFFF), tf.bitwise.right_shift(bits, 16)
    )
    return tf.where(halves >= threshold, x * tf.cast(65536 / (65536 - threshold), x.dtype), tf.zeros_like(x))


def lstm_weights(layer, training: bool):
    """An LSTM layer's (kernel, recurrent kernel, bias), the recurrent kernel with DropConnect applied
    when ``training`` and the layer is a ``WeightDropLSTM``."""
    cell = layer.cell
    dropped = training and isinstance(layer, WeightDropLSTM) and layer.weight_drop > 0
    recurrent = layer.dropped_recurrent_kernel() if dropped else cell.recurrent_kernel
    return cell.kernel, recurrent, cell.bias


TABLE_PROJECTION = True  # False: the first layer projects the looked-up embeddings like the others (measurements)


def lstm_from_table(tokens, table, kernel, recurrent, bias):
    """``lstm_sequence(table[tokens], kernel, recurrent, bias)`` for time-major ``tokens`` ``[T, B]``,
    each step's input projection a row of ``table @ kernel`` (one row per vocabulary entry,
    computed once per call) looked up inside the step.

    The backward pass gives ``table`` the gradient a plain lookup followed by the matmul gives
    (``tf.IndexedSlices``, one row per token), so that clipping and Adam see what they saw before;
    the kernel's gradient is ``table^T`` times the per-entry sums of the pre-activations' gradients.
    """
    tokens = tokens if tokens.dtype in (tf.int32, tf.int64) else tf.cast(tokens, tf.int32)
    flat_tokens = tf.reshape(tokens, [-1])

    @tf.custom_gradient
    def run(table, kernel, recurrent, bias):
        rows = tf.matmul(table, kernel)
        hs, backward = recurrence(
            lambda t: tf.gather(rows, tokens[t]), tf.shape(tokens)[0], tf.shape(tokens)[1], recurrent, bias
        )

        def grad(dhs):
            dz = flat(backward(dhs))
            d_table = tf.IndexedSlices(
                tf.matmul(dz, kernel, transpose_b=True), flat_tokens, tf.shape(table, out_type=tf.int64)
            )
            per_entry = tf.math.unsorted_segment_sum(dz, flat_tokens, tf.shape(table)[0])
            d_recurrent = tf.matmul(previous_states(hs), dz, transpose_a=True)
            return d_table, tf.matmul(table, per_entry, transpose_a=True), d_recurrent, tf.reduce_sum(per_entry, 0)

        return hs, grad

    return run(table, kernel, recurrent, bias)


def table_lookup(embedding) -> bool:
    """Whether ``embedding`` is a plain table lookup (a Keras Embedding or ``TokenEmbedding``, no mask)."""
    return type(embedding) in (keras.layers.Embedding, TokenEmbedding) and not embedding.mask_zero


def forward(model: keras.Model, tokens, training: bool = False):
    """``model(tokens, training=training)`` for ``build_model``'s layer chain, LSTMs by ``lstm_sequence``."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if tf.config.list_logical_devices("GPU") or not any(supported(layer) for layer in layers):
        return model(tokens, training=training)
    embedding, rest = layers[0], layers[1:]
    if TABLE_PROJECTION and rest and supported(rest[0]) and table_lookup(embedding):
        table = embedding.table(training) if isinstance(embedding, TokenEmbedding) else embedding.embeddings
        dtype = embedding.compute_dtype
        weights = [tf.cast(w, dtype) for w in (table, *lstm_weights(rest[0], training))]
        x = lstm_from_table(tf.transpose(tokens), *weights)
        rest = rest[1:]
    else:
        x = embedding(tf.transpose(tokens), training=training)  # time major from here on
    for layer in rest:
        if supported(layer):
            x = lstm_sequence(x, *(tf.cast(w, x.dtype) for w in lstm_weights(layer, training)))
        elif isinstance(layer, keras.layers.Dropout):
            x = dropout(layer, x) if training else x
        else:
            x = layer(x)
    if getattr(embedding, "tied", False):  # the output layer is the embedding table, transposed
        x = embedding(x, reverse=True)
    return tf.transpose(x, [1, 0, 2])
