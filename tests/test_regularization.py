"""Regularization flags: each changes the training step as documented and is off at inference;
tied weights stay tied through save and load; a run trained with every flag loads with
safe_mode=True and samples the same text after loading as before saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from generator import models
from generator.config import RunConfig
from generator.models import fast_lstm
from generator.models.lstm import TokenEmbedding
from generator.training import steps

VOCAB = 13
SMALL = dict(vocab_size=VOCAB, layers=1, units=16, embedding=8, dropout=0.0)


def tokens(batch=4, time=9, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, time)).astype("int32")


@pytest.mark.parametrize("locked", [True, False])
def test_locked_dropout_shares_one_mask_across_time_steps(locked):
    model = models.build_model(RunConfig(**{**SMALL, "dropout": 0.5, "locked_dropout": locked}))
    layer = model.get_layer("dropout_1")
    x = tf.ones([3, 50, 16])  # batch major, as the Keras layer sees it
    for zeros in (
        layer(x, training=True).numpy() == 0,  # the Keras path (GPU, cuDNN)
        np.transpose(fast_lstm.dropout(layer, tf.transpose(x, [1, 0, 2])).numpy(), [1, 0, 2]) == 0,
    ):  # XLA
        same_over_time = (zeros == zeros[:, :1]).all()
        assert same_over_time == locked
        assert 0.3 < zeros.mean() < 0.7
        assert not (zeros == zeros[:1]).all()  # one mask per sequence, not one per batch


def test_input_dropout_is_locked_too():
    model = models.build_model(RunConfig(**{**SMALL, "input_dropout": 0.4, "locked_dropout": True}))
    layer = model.get_layer("input_dropout")
    zeros = fast_lstm.dropout(layer, tf.ones([40, 3, 8])).numpy() == 0  # time major
    assert (zeros == zeros[:1]).all() and zeros.any()


def test_embedding_dropout_zeroes_whole_rows():
    layer = TokenEmbedding(VOCAB, 8, row_dropout=0.5, seed=3)
    ids = np.tile(np.arange(VOCAB, dtype="int32"), 3)[None]  # every token three times
    layer.build(ids.shape)
    out = layer(ids, training=True).numpy()[0]
    table = layer.embeddings.numpy()
    dropped = np.all(out[:VOCAB] == 0, axis=1)
    assert dropped.any() and not dropped.all()
    for k in range(3):  # the same token loses its vector at every position
        np.testing.assert_array_equal(out[k * VOCAB : (k + 1) * VOCAB], out[:VOCAB])
    np.testing.assert_allclose(out[:VOCAB][~dropped], table[~dropped] * 2, rtol=1e-6)  # kept rows scaled by 1/(1-p)
    np.testing.assert_array_equal(layer(ids, training=False).numpy()[0][:VOCAB], table)  # off at inference


def test_weight_decay_shrinks_kernels_apart_from_the_gradient():
    config = RunConfig(**SMALL, learning_rate=0.01, weight_decay=0.5)
    model = models.build_model(config)
    optimizer = steps.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])  # Adam's own step is 0
    for v in model.trainable_variables:
        expected = before[v.path] * (1 if "bias" in v.path else 1 - 0.01 * 0.5)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)
    plain = steps.make_optimizer(config.replace(weight_decay=0.0))
    assert not plain.weight_decay


def test_weight_drop_zeroes_recurrent_weights_with_one_mask_for_every_time_step(monkeypatch):
    model = models.build_model(RunConfig(**{**SMALL, "weight_drop": 0.5}))
    layer = model.get_layer("lstm_1")
    kernel = layer.cell.recurrent_kernel.numpy()
    first, second = layer.dropped_recurrent_kernel().numpy(), layer.dropped_recurrent_kernel().numpy()
    assert 0.4 < (first == 0).mean() < 0.6 and not np.array_equal(first == 0, second == 0)  # a fresh mask per batch
    np.testing.assert_allclose(first[first != 0], 2 * kernel[first != 0], rtol=1e-6)  # the rest scaled by 1 / (1 - p)
    # one dropped kernel serves every time step: the training pass equals a plain LSTM holding that kernel,
    # both on the trainer's CPU path and in Keras's own loop
    monkeypatch.setattr(type(layer), "dropped_recurrent_kernel", lambda self: tf.constant(first))
    plain = models.build_model(RunConfig(**SMALL))
    plain.set_weights([first if w is layer.cell.recurrent_kernel else w.numpy() for w in model.weights])
    x = tf.constant(tokens(time=30))
    expected = plain(x, training=False).numpy()
    np.testing.assert_allclose(fast_lstm.forward(model, x, training=True).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(model(x, training=True).numpy(), expected, atol=1e-5)
    assert not np.allclose(model(x, training=False).numpy(), expected, atol=1e-5)  # off at inference


ALL_FLAGS = dict(
    dropout=0.3, locked_dropout=True, input_dropout=0.2, embedding_dropout=0.2, weight_drop=0.3, tie_weights=True
)


@pytest.mark.parametrize(
    "flags",
    [
        dict(dropout=0.3),
        dict(dropout=0.3, locked_dropout=True),
        dict(input_dropout=0.3),
        dict(embedding_dropout=0.3),
        dict(weight_drop=0.3),
        dict(tie_weights=True),
        ALL_FLAGS,
    ],
)
def test_flags_change_training_only(flags):
    model = models.build_model(RunConfig(**{**SMALL, "layers": 2, **flags}))
    x = tf.constant(tokens())
    reference = model(x, training=False).numpy()
    np.testing.assert_allclose(fast_lstm.forward(model, x, training=False).numpy(), reference, atol=1e-5)
    decoder = models.decoder(model)
    logits, _ = decoder.forward(x, decoder.zero_states(4))
    np.testing.assert_allclose(logits.numpy(), reference, atol=1e-5)  # the decoder has no dropout
    if flags != dict(tie_weights=True):
        assert not np.allclose(fast_lstm.forward(model, x, training=True).numpy(), reference, atol=1e-5)


@pytest.mark.parametrize("units", [8, 16])  # equal widths, or through a projection
def test_tied_weights_stay_tied_after_save_and_load(tmp_path, units):
    model = models.build_model(RunConfig(**{**SMALL, "units": units, "tie_weights": True}))
    assert "logits" not in [layer.name for layer in model.layers]
    table = model.get_layer("embedding").embeddings
    table.assign(np.random.default_rng(1).normal(size=table.shape).astype("float32"))
    model.get_layer("embedding").output_bias.assign(np.linspace(-1, 1, VOCAB).astype("float32"))
    path = tmp_path / "tied.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    x = tokens()
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    new_table = loaded.get_layer("embedding").embeddings
    new_table.assign(new_table * 2)  # one table: changing it changes the outputs' weights too
    decoder = models.decoder(loaded)
    np.testing.assert_allclose(decoder.out_kernel.numpy(), new_table.numpy().T)
    logits, _ = decoder.forward(tf.constant(x), decoder.zero_states(4))
    np.testing.assert_allclose(logits.numpy(), loaded(x).numpy(), atol=1e-5)


def test_a_run_trained_with_every_flag_loads_safely_and_samples_the_same(tiny_corpus, tmp_path):
    from generator.api import Generator, TokenizerFactory
    from generator.data.corpora import open_corpus
    from generator.training import checkpoints
    from generator.training.trainer import Trainer

    config = RunConfig(
        layers=1,
        units=16,
        embedding=8,
        seq_len=16,
        batch_size=8,
        epochs=1,
        steps_per_epoch=4,
        weight_decay=0.1,
        corpus=str(tiny_corpus),
        holdout="blocks",
        holdout_block=100,
        val_fraction=0.2,
        **ALL_FLAGS,
    )
    lines = []
    trainer = Trainer(config, tmp_path / "run", log=lines.append, progress=False)
    metrics = trainer.train(open_corpus(str(tiny_corpus), "text"), TokenizerFactory("chars"))
    # the split is recorded, the summary printed, the curve drawn (the CLI's version: test_holdout, slow)
    assert metrics["holdout"]["method"] == "blocks" and metrics["holdout"]["held_out"] >= 2
    assert any(line.startswith("best epoch 1 of 1") for line in lines)
    assert (tmp_path / "run" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    run = checkpoints.load_run(tmp_path / "run")  # model.keras, loaded with safe_mode=True
    before = Generator(checkpoints.Run(run.path, run.config, run.tokenizer, trainer.model, {}))
    saved = checkpoints.save_run(tmp_path / "copy", trainer.model, run.tokenizer, run.config)
    after = Generator(checkpoints.load_run(saved))
    assert after.run.model.get_layer("embedding").tied
    assert before.generate("To be", length=60, random_seed=7) == after.generate("To be", length=60, random_seed=7)


def test_init_from_an_lstm_run_warm_starts_the_lstm_layers_of_lstm_attention(tiny_corpus, tiny_run, tmp_path):
    from generator import api
    from generator.training import checkpoints
    from tests.conftest import TINY_SETTINGS

    lines = []
    api.train(
        str(tiny_corpus),
        tmp_path / "att",
        log=lines.append,
        progress=False,
        **{**TINY_SETTINGS, "epochs": 1, "learning_rate": 0.0},
        arch="lstm-attention",
        heads=2,
        attention_window=16,
        init_from=str(tiny_run),
    )
    source, warm = checkpoints.load_run(tiny_run).model, checkpoints.load_run(tmp_path / "att").model
    for name in ("embedding", "lstm_1", "logits"):  # copied, and unchanged by a step of learning rate 0
        for a, b in zip(source.get_layer(name).get_weights(), warm.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert any("new layers: attention, attention_norm" in line for line in lines)
