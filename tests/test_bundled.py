"""The bundled checkpoints load, validate and sample (what the quick start runs)."""

import pytest

from generator import api, checkpoints


@pytest.mark.parametrize("name", ["shakespeare", "bach"])
def test_bundled_checkpoint_is_found_and_complete(name):
    assert name in checkpoints.bundled_names()
    run = checkpoints.load_run(name)
    assert run.metrics["complete"] and run.metrics["val_loss_nats"] > 0
    assert (run.path / "model.keras").stat().st_size < 25 * 1024 * 1024
    assert not (run.path / "resume.npz").exists()


def test_shakespeare_meets_its_target_and_writes_english():
    g = api.load("shakespeare")
    assert g.run.metrics["val_loss_nats"] <= 1.45
    text = g.generate("ROMEO:", length=200, temperature=0.5, random_seed=3)
    assert text.startswith("ROMEO:") and len(text) == 206
    assert sum(word in text.lower().split() for word in ("the", "and", "i", "to", "of", "a", "my", "you")) >= 2


def test_bach_composes_from_scratch():
    piece = api.load("bach").generate(length=300, random_seed=1)
    assert len(piece.notes) > 5
