import csv

import numpy as np
import pytest

from generator import api
from generator.generation.native import library
from generator.training import checkpoints
from tests.conftest import TINY_SETTINGS, interrupt_after_first_epoch


def test_training_lowers_validation_loss(tiny_run):
    with open(tiny_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])
    metrics = checkpoints.read_metrics(tiny_run)
    assert metrics["complete"] and metrics["epochs_run"] == 2
    assert metrics["val_bits_per_token"] == pytest.approx(metrics["val_loss_nats"] / np.log(2))
    for name in ("config.json", "tokenizer.json", "model.keras", "metrics.json", "history.csv"):
        assert (tiny_run / name).exists()
    assert any((tiny_run / "logs" / "validation").iterdir())  # TensorBoard events


def test_save_load_sample_gives_the_same_text(tiny_run):
    g = api.load(tiny_run)
    before = g.generate("To be", length=80, random_seed=5)
    again = api.load(str(tiny_run)).generate("To be", length=80, random_seed=5)
    assert before == again and before.startswith("To be") and len(before) == 85
    # the in-memory model that was trained samples the same as the reloaded one
    from generator.training.checkpoints import load_run

    run = load_run(tiny_run)
    run.model.set_weights(g.run.model.get_weights())
    assert api.Generator(run).generate("To be", length=80, random_seed=5) == before


@pytest.mark.parametrize("native", ["1", "0"])
def test_later_calls_reuse_the_compiled_decode_loop(tiny_run, native, monkeypatch):
    monkeypatch.setenv("GENERATOR_NATIVE", native)  # batch 1 in C where it was built, or XLA's loop
    g = api.load(tiny_run)
    ids = g.encode_prompt("To be")
    first = g.stream(ids, 300, random_seed=1, temperature=0.8)
    tokens = np.concatenate(list(first), axis=1)
    in_c = first.loop._native_lstm
    second = g.stream(ids, 300, options=api.SamplingOptions(random_seed=1, temperature=0.8))
    assert second.loop is first.loop and (np.concatenate(list(second), axis=1) == tokens).all()
    if in_c:  # the weights packed for C once, on the first call
        assert second.loop._native_lstm is in_c
    else:
        assert native == "0" or library() is None  # asked for C, but it was not built
        assert first.loop._chunk.experimental_get_tracing_count() == 1  # 300 tokens: two chunks, one trace
    assert g.stream(ids, 20, random_seed=1, temperature=0.5).loop is not first.loop  # another sampler, another loop


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path, tiny_corpus):
    out = tmp_path / "run"
    settings = dict(TINY_SETTINGS, epochs=3)

    with pytest.raises(KeyboardInterrupt):
        api.train(str(tiny_corpus), out, log=interrupt_after_first_epoch, progress=False, **settings)
    assert (out / "resume.npz").exists() and not (out / "metrics.json").exists()
    messages = []
    metrics = api.train(str(tiny_corpus), out, log=messages.append, progress=False, **settings)
    assert any(m.startswith("resuming") and "epoch 2" in m for m in messages)
    assert not any(m.startswith("epoch 1/") for m in messages)
    assert metrics["epochs_run"] == 3
    with open(out / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    # a finished run is not retrained by accident
    messages.clear()
    api.train(str(tiny_corpus), out, log=messages.append, progress=False, **settings)
    assert any("already trained" in m for m in messages)
    # ... but one that reached its epoch cap trains on when asked for more epochs
    messages.clear()
    metrics = api.train(str(tiny_corpus), out, log=messages.append, progress=False, **dict(settings, epochs=4))
    assert any("continuing to 4" in m for m in messages) and metrics["epochs_run"] == 4
    with open(out / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_an_interrupted_run_closed_at_its_last_epoch_is_complete(tmp_path, tiny_corpus):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        api.train(
            str(tiny_corpus), out, log=interrupt_after_first_epoch, progress=False, **dict(TINY_SETTINGS, epochs=3)
        )
    messages = []
    metrics = api.train(str(tiny_corpus), out, log=messages.append, progress=False, **dict(TINY_SETTINGS, epochs=1))
    assert not any(m.startswith("epoch ") for m in messages)  # nothing left to train
    assert metrics["epochs_run"] == 1 and metrics["complete"] and not metrics["stopped_early"]


def test_a_run_saved_with_an_absolute_corpus_path_resumes_from_a_relative_one(tmp_path, tiny_corpus, monkeypatch):
    out = tmp_path / "run"
    settings = dict(TINY_SETTINGS, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        api.train(str(tiny_corpus.resolve()), out, log=interrupt_after_first_epoch, progress=False, **settings)
    monkeypatch.chdir(tiny_corpus.parent)
    messages = []
    api.train(tiny_corpus.name, out, log=messages.append, progress=False, **settings)
    assert any(m.startswith("resuming") for m in messages)


@pytest.mark.parametrize("drop", [{}, {"weight_drop": 0.3}])
def test_a_resumed_run_with_dropout_ends_where_an_uninterrupted_one_does(tmp_path, tiny_corpus, drop):
    settings = dict(TINY_SETTINGS, layers=2, dropout=0.3, epochs=2, steps_per_epoch=5, **drop)

    api.train(str(tiny_corpus), tmp_path / "whole", log=lambda *_: None, progress=False, **settings)
    with pytest.raises(KeyboardInterrupt):
        api.train(str(tiny_corpus), tmp_path / "resumed", log=interrupt_after_first_epoch, progress=False, **settings)
    api.train(str(tiny_corpus), tmp_path / "resumed", log=lambda *_: None, progress=False, **settings)
    whole, resumed = (api.load(tmp_path / name).run.model.get_weights() for name in ("whole", "resumed"))
    for a, b in zip(whole, resumed):  # the dropout masks of epoch 2 are the same draws
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_different_settings_in_an_existing_run_directory_are_refused(tiny_run, tiny_corpus):
    from generator.errors import GeneratorError

    with pytest.raises(GeneratorError, match="different settings"):
        api.train(str(tiny_corpus), tiny_run, log=lambda *_: None, progress=False, **dict(TINY_SETTINGS, units=32))


def test_evaluate_scores_every_token_from_the_document_start(tiny_run, tiny_corpus):
    import tensorflow as tf

    g = api.load(tiny_run)
    result = g.evaluate(str(tiny_corpus))
    ids = [0] + g.tokenizer.encode(tiny_corpus.read_text())
    logits = g.run.model(np.array([ids[:-1]], np.int32), training=False)
    expected = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(np.array([ids[1:]]), logits)))
    assert result["tokens"] == len(ids) - 1
    assert result["nll_per_token"] == pytest.approx(expected, rel=1e-4)
    assert result["bits_per_token"] == pytest.approx(expected / np.log(2), rel=1e-4)
