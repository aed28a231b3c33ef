"""``fast_lstm.forward`` computes what the plain Keras model computes, forward and backward."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from generator.models import fast_lstm
from generator.config import RunConfig
from generator.models import build_model


def tiny(dropout=0.0, layers=2):
    keras.utils.set_random_seed(3)
    return build_model(RunConfig(layers=layers, units=12, embedding=6, vocab_size=20, dropout=dropout))


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 20, (3, 9)).astype("int32"), rng.integers(0, 20, (3, 9)).astype("int32")


def loss_and_grads(model, forward, x, y):
    with tf.GradientTape() as tape:
        logits = forward(x)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("jit", [False, True])
def test_same_logits_and_gradients_as_keras(jit):
    model, (x, y) = tiny(), batch()
    ours = tf.function(
        lambda x, y: loss_and_grads(model, lambda t: fast_lstm.forward(model, t, training=True), x, y), jit_compile=jit
    )
    loss, grads = ours(x, y)
    ref_loss, ref_grads = loss_and_grads(model, lambda t: model(t, training=True), x, y)
    np.testing.assert_allclose(loss.numpy(), ref_loss.numpy(), rtol=1e-6)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    np.testing.assert_allclose(fast_lstm.forward(tiny(0.3), x).numpy(), tiny(0.3)(x).numpy(), atol=1e-6)


def test_one_adam_step_gives_the_same_weights():
    x, y = batch(1)
    results = []
    for use_fast in (False, True):
        model = tiny()
        optimizer = keras.optimizers.Adam(0.01, global_clipnorm=1.0)
        forward = (
            (lambda t, model=model: fast_lstm.forward(model, t, training=True))
            if use_fast
            else (lambda t, model=model: model(t, training=True))
        )
        _, grads = loss_and_grads(model, forward, x, y)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        results.append(model.get_weights())
    for a, b in zip(*results):  # Adam's first step is lr * g / (|g| + eps): rounding in tiny gradients shows
        np.testing.assert_allclose(a, b, atol=1e-5)  # 1e-5 is a thousandth of the step (lr 0.01)


def test_the_first_layer_looks_its_projection_up_and_the_embedding_keeps_a_gradient_per_token(monkeypatch):
    model, (x, y) = tiny(), batch(2)

    def grads(table_projection):
        monkeypatch.setattr(fast_lstm, "TABLE_PROJECTION", table_projection)
        with tf.GradientTape() as tape:
            logits = fast_lstm.forward(model, x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return tape.gradient(loss, model.trainable_variables)

    looked_up, projected = grads(True), grads(False)
    assert isinstance(looked_up[0], tf.IndexedSlices) and isinstance(projected[0], tf.IndexedSlices)
    assert looked_up[0].values.shape == projected[0].values.shape == (x.size, 6)  # one row per token, as before
    np.testing.assert_array_equal(looked_up[0].indices.numpy(), projected[0].indices.numpy())
    for got, want in zip(looked_up, projected):
        np.testing.assert_allclose(tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(want).numpy(), atol=1e-6)


def test_unsupported_layers_run_as_themselves():
    model = tiny()
    assert all(fast_lstm.supported(layer) for layer in model.layers if isinstance(layer, keras.layers.LSTM))
    odd = keras.layers.LSTM(4, return_sequences=True, recurrent_dropout=0.1)
    assert not fast_lstm.supported(odd)


def test_dropout_keeps_the_rate_and_the_mean_and_draws_a_new_mask_each_call():
    layer = keras.layers.Dropout(0.3, seed=5)
    x = tf.ones([200, 50, 40])
    first, second = fast_lstm.dropout(layer, x).numpy(), fast_lstm.dropout(layer, x).numpy()
    kept = first != 0
    assert abs(kept.mean() - 0.7) < 0.005 and abs(first.mean() - 1.0) < 0.01
    np.testing.assert_allclose(first[kept], 65536 / (65536 - round(0.3 * 65536)))
    assert (kept != (second != 0)).mean() > 0.3  # a fresh mask, not the same one again
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fast_lstm.dropout(layer, x)
    assert np.array_equal(tape.gradient(y, x).numpy() != 0, y.numpy() != 0)  # gradients pass where values do
    compiled = tf.function(lambda t: fast_lstm.dropout(layer, t), jit_compile=True)
    assert abs((compiled(x).numpy() != 0).mean() - 0.7) < 0.005


def test_the_trainer_uses_it_by_default_on_cpus_and_steps_agree_with_keras_layers():
    from generator.training import steps

    assert not tf.config.list_logical_devices("GPU")
    assert steps.use_jit(RunConfig()) and not steps.use_jit(RunConfig(jit=False)) and steps.use_jit(RunConfig(jit=True))
    x, y = batch(2)
    weights = []
    for jit in (None, False):  # XLA + fast_lstm (the default here), then Keras's own layers without XLA
        config = RunConfig(layers=2, units=12, embedding=6, vocab_size=20, dropout=0.0, jit=jit)
        keras.utils.set_random_seed(3)
        strategy = tf.distribute.get_strategy()
        model, optimizer = steps.build(config, strategy)
        train_step = steps.make_train_step(strategy, model, optimizer, config)
        for _ in range(3):
            train_step((tf.constant(x), tf.constant(y)), tf.constant(float(x.size)))
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-4)  # three Adam steps of lr 2e-3 (see above)


def test_a_run_trained_this_way_loads_as_an_ordinary_keras_model(tiny_run):
    code = (
        "import sys, keras, numpy as np; m = keras.saving.load_model(sys.argv[1], compile=False); "
        "assert 'generator' not in sys.modules; "
        "print([type(l).__name__ for l in m.layers]); np.save(sys.argv[2], m.predict(np.array([[1, 2, 3]]), verbose=0))"
    )
    import subprocess
    import sys

    out = tiny_run.parent / "plain.npy"
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_run / "model.keras"), str(out)],
        capture_output=True,
        text=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'LSTM'" in done.stdout
    from generator import api

    model = api.load(tiny_run).run.model
    np.testing.assert_allclose(np.load(out), model(np.array([[1, 2, 3]])).numpy(), atol=1e-6)
