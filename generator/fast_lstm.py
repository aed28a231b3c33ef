"""A faster CPU training forward pass for ``build_model``'s models, with the same variables.

``forward(model, tokens, training)`` computes exactly what ``model(tokens, training=training)``
computes, with every LSTM layer run by ``lstm_sequence``: the input projection of all time
steps is one matrix multiply before the recurrence, and the backward pass is written by hand
so that each time step costs one matmul (``dz @ R^T``) while the weight gradients are single
large matmuls over all steps after the loop (the scheme of PyTorch's CPU LSTM). Keras's own
loop differentiates each step separately: two matmuls forward and four backward per step.
Under XLA (``jit_compile=True``) the loops compile to tight code.

The variables are the model's own, so what is trained and saved stays an ordinary Keras model.
On a GPU ``forward`` calls the model itself, which keeps the cuDNN kernel. Layers other than
plain LSTMs (tanh/sigmoid, bias, no dropout inside the layer, full sequences out) also run as
themselves.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def lstm_sequence(x, kernel, recurrent, bias):
    """Time-major inputs ``[T, B, In]`` -> hidden states ``[T, B, U]`` from zero initial states.

    Gates in Keras order (input, forget, cell, output); differentiable in every argument.
    """

    @tf.custom_gradient
    def run(x, kernel, recurrent, bias):
        n_steps, batch, units = tf.shape(x)[0], tf.shape(x)[1], tf.shape(recurrent)[0]
        projected = tf.einsum("tbi,ig->tbg", x, kernel) + bias  # every step's input projection at once
        zeros = tf.zeros(tf.stack([batch, units]), x.dtype)

        def arrays():
            return tf.TensorArray(x.dtype, size=n_steps)

        def step(t, h, c, hs, cs, gates):
            i, f, g, o = tf.split(projected[t] + tf.matmul(h, recurrent), 4, axis=-1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            c = f * c + i * g
            h = o * tf.tanh(c)
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, tf.concat([i, f, g, o], -1))

        _, _, _, hs, cs, gates = tf.while_loop(lambda t, *_: t < n_steps, step,
                                               (0, zeros, zeros, arrays(), arrays(), arrays()))
        hs, cs, gates = hs.stack(), cs.stack(), gates.stack()

        def grad(dhs):
            c_prev = tf.concat([zeros[None], cs[:-1]], 0)
            h_prev = tf.concat([zeros[None], hs[:-1]], 0)

            def back(t, dh_next, dc_next, dzs):
                i, f, g, o = tf.split(gates[t], 4, axis=-1)
                dh = dhs[t] + dh_next
                tanh_c = tf.tanh(cs[t])
                dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
                dz = tf.concat([dc * g * i * (1 - i), dc * c_prev[t] * f * (1 - f), dc * i * (1 - g * g),
                                dh * tanh_c * o * (1 - o)], -1)  # gradient of the pre-activations
                return t - 1, tf.matmul(dz, recurrent, transpose_b=True), dc * f, dzs.write(t, dz)

            _, _, _, dzs = tf.while_loop(lambda t, *_: t >= 0, back, (n_steps - 1, zeros, zeros, arrays()))
            dz = dzs.stack()  # [T, B, 4U]: every weight gradient below is one large matmul
            return (tf.einsum("tbg,ig->tbi", dz, kernel), tf.einsum("tbi,tbg->ig", x, dz),
                    tf.einsum("tbu,tbg->ug", h_prev, dz), tf.reduce_sum(dz, [0, 1]))

        return hs, grad

    return run(x, kernel, recurrent, bias)


def supported(layer) -> bool:
    """Whether ``lstm_sequence`` computes exactly what this Keras LSTM layer computes."""
    cell = getattr(layer, "cell", None)
    return (isinstance(layer, keras.layers.LSTM) and layer.return_sequences and not layer.go_backwards
            and not layer.stateful and cell.use_bias and cell.dropout == 0 and cell.recurrent_dropout == 0
            and cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid)


def forward(model: keras.Model, tokens, training: bool = False):
    """``model(tokens, training=training)`` for ``build_model``'s layer chain, LSTMs by ``lstm_sequence``."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if tf.config.list_logical_devices("GPU") or not any(supported(layer) for layer in layers):
        return model(tokens, training=training)
    x = layers[0](tf.transpose(tokens))  # the embedding, time major from here on
    for layer in layers[1:]:
        if supported(layer):
            cell = layer.cell
            x = lstm_sequence(x, *(tf.cast(w, x.dtype) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)))
        elif isinstance(layer, keras.layers.Dropout):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return tf.transpose(x, [1, 0, 2])
