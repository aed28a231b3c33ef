"""The training forward pass the trainer runs under XLA on CPUs, with the model's own variables.

``forward(model, tokens, training)`` computes what ``model(tokens, training=training)`` computes,
to float rounding (dropout draws its own masks). Each LSTM layer's input projection for all time
steps is one matmul, and the recurrence (``lstm_recurrence``) has a hand-written backward pass:
one ``dz @ R^T`` matmul per step, and the recurrent kernel's gradient as one matmul after the
loop. Keras's loop differentiates each step on its own: two matmuls forward and four backward.

What mattered under XLA on a CPU (2 x LSTM(256), batch 64, sequences of 100):

- one sigmoid over all four gates, with the cell gate's columns doubled (tanh(z) = 2 sigmoid(2z) - 1),
  sliced afterwards: five times faster than ``tf.split`` followed by four activations;
- matmuls over all steps written on 2-D arrays: as 3-D einsums summing over time and batch,
  XLA transposed their operands in full (about 9 % of a step);
- the first layer's input projection as a row lookup in ``embedding @ kernel + bias``
  (``first_projection``) where the layer reads the embedding directly: 8 % more tokens per
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

from generator.models.lstm import TokenEmbedding, WeightDropLSTM, cell_gate_doubling, doubled_gate_step


def lstm_recurrence(projected, recurrent):
    """Input projections ``[T, B, 4U]`` (``x @ kernel + bias``) -> hidden states ``[T, B, U]``.

    Zero initial states, gates in Keras order (input, forget, cell, output); differentiable in
    both arguments. The backward pass is written by hand: one ``[B, 4U] x [4U, U]`` matmul per
    step, and the recurrent kernel's gradient as one matmul over all steps afterwards.
    """

    @tf.custom_gradient
    def run(projected, recurrent):
        n_steps, batch = tf.shape(projected)[0], tf.shape(projected)[1]
        u = recurrent.shape[0]
        # The cell gate's columns are doubled so that one sigmoid gives every gate: tanh(z) = 2 sigmoid(2z) - 1.
        # (Slicing one activation measured five times faster under XLA than tf.split and four activations.)
        doubling = cell_gate_doubling(u, projected.dtype)
        recurrent_doubled = recurrent * doubling
        zeros = tf.zeros(tf.stack([batch, u]), projected.dtype)

        def arrays():
            return tf.TensorArray(projected.dtype, size=n_steps)

        def step(t, h, c, hs, cs, acts):
            a = tf.sigmoid(projected[t] * doubling + tf.matmul(h, recurrent_doubled))
            h, c = doubled_gate_step(a, c, u)
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), acts.write(t, a)

        _, _, _, hs, cs, acts = tf.while_loop(
            lambda t, *_: t < n_steps, step, (0, zeros, zeros, arrays(), arrays(), arrays())
        )
        hs, cs, acts = hs.stack(), cs.stack(), acts.stack()

        def grad(dhs):
            recurrent_t = tf.transpose(recurrent)  # once, not in every step's matmul

            def back(t, dh_next, dc_next, dzs):
                a = acts[t]
                i, f, g, o = a[:, :u], a[:, u : 2 * u], 2 * a[:, 2 * u : 3 * u] - 1, a[:, 3 * u :]
                c_prev = cs[tf.maximum(t - 1, 0)] * tf.cast(t > 0, projected.dtype)
                dh = dhs[t] + dh_next
                tanh_c = tf.tanh(cs[t])
                dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
                # the pre-activations' gradient: sigmoid' = a (1 - a), and tanh'(z) = 1 - g^2 = 4 a (1 - a)
                dz = tf.concat([dc * g, dc * c_prev, 4 * dc * i, dh * tanh_c], -1) * a * (1 - a)
                return t - 1, tf.matmul(dz, recurrent_t), dc * f, dzs.write(t, dz)

            _, _, _, dzs = tf.while_loop(lambda t, *_: t >= 0, back, (n_steps - 1, zeros, zeros, arrays()))
            dz = dzs.stack()
            h_prev = tf.concat([zeros[None], hs[:-1]], 0)
            return dz, tf.matmul(flat(h_prev), flat(dz), transpose_a=True)

        return hs, grad

    return run(projected, recurrent)


def lstm_sequence(x, kernel, recurrent, bias):
    """Time-major inputs ``[T, B, In]`` -> hidden states ``[T, B, U]``: every step's input
    projection in one matmul, then ``lstm_recurrence``."""
    projected = tf.matmul(flat(x), kernel) + bias
    return lstm_recurrence(tf.reshape(projected, tf.concat([tf.shape(x)[:2], [-1]], 0)), recurrent)


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


def first_projection(tokens, table, kernel, bias):
    """``table[tokens] @ kernel + bias`` for time-major ``tokens`` ``[T, B]``, as a row lookup in
    ``table @ kernel + bias`` (one row per vocabulary entry, computed once per call).

    The backward pass gives ``table`` the gradient a plain lookup followed by the matmul gives
    (``tf.IndexedSlices``, one row per token), so that clipping and Adam see what they saw before;
    the kernel's gradient is ``table^T`` times the per-entry sums of the projections' gradients.
    """
    tokens = tokens if tokens.dtype in (tf.int32, tf.int64) else tf.cast(tokens, tf.int32)
    flat_tokens = tf.reshape(tokens, [-1])

    @tf.custom_gradient
    def run(table, kernel, bias):
        def grad(d_projected):
            d_flat = flat(d_projected)
            d_table = tf.IndexedSlices(
                tf.matmul(d_flat, kernel, transpose_b=True), flat_tokens, tf.shape(table, out_type=tf.int64)
            )
            per_entry = tf.math.unsorted_segment_sum(d_flat, flat_tokens, tf.shape(table)[0])
            return d_table, tf.matmul(table, per_entry, transpose_a=True), tf.reduce_sum(per_entry, 0)

        return tf.gather(tf.matmul(table, kernel) + bias, tokens), grad

    return run(table, kernel, bias)


def table_lookup(embedding) -> bool:
    """Whether ``embedding`` is a plain table lookup (a Keras Embedding or ``TokenEmbedding``, no mask)."""
    return type(embedding) in (keras.layers.Embedding, TokenEmbedding) and not embedding.mask_zero


def forward(model: keras.Model, tokens, training: bool = False):
    """``model(tokens, training=training)`` for ``build_model``'s layer chain, LSTMs by ``lstm_recurrence``."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if tf.config.list_logical_devices("GPU") or not any(supported(layer) for layer in layers):
        return model(tokens, training=training)
    embedding, rest = layers[0], layers[1:]
    if TABLE_PROJECTION and rest and supported(rest[0]) and table_lookup(embedding):
        table = embedding.table(training) if isinstance(embedding, TokenEmbedding) else embedding.embeddings
        kernel, recurrent, bias = lstm_weights(rest[0], training)
        dtype = embedding.compute_dtype
        cast = [tf.cast(w, dtype) for w in (table, kernel, bias)]
        x = lstm_recurrence(first_projection(tf.transpose(tokens), *cast), tf.cast(recurrent, dtype))
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
