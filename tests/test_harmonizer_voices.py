"""The shared-versus-per-voice harmonizer measurement (benchmarks.harmonizer_voices), on a tiny corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import harmonizer_voices as hv

TINY = [
    "--steps",
    "4",
    "--layers",
    "1",
    "--units",
    "16",
    "--embedding",
    "4",
    "--dropout",
    "0",
    "--seq-len",
    "16",
    "--batch-size",
    "4",
]


@pytest.fixture(scope="module")
def jsb_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    chorales = []
    for _ in range(3):
        grid = np.array([72, 64, 57, 48]) + rng.integers(-3, 4, (16, 4)).repeat(4, axis=0)
        chorales.append(grid.tolist())
    path = tmp_path_factory.mktemp("jsb") / "tiny.json"
    path.write_text(json.dumps({"train": chorales, "valid": chorales[:1], "test": chorales[:1]}))
    return path


def test_voice_only_keeps_the_targets_of_one_voice():
    targets = np.arange(2 * 12).reshape(2, 12)  # two rows of three steps, cells S A T B
    out = hv.voice_only(targets, 2)
    assert (out[:, 2::4] == targets[:, 2::4]).all()
    others = np.ones(12, bool)
    others[2::4] = False
    assert (out[:, others] == -1).all()
    assert (targets >= 0).all()  # the input is left alone


def test_each_design_is_scored_per_voice_on_the_same_hidden_cells(jsb_file):
    args = hv.parser().parse_args(["--corpus", str(jsb_file), "--output", "unused", "--no-jit"] + TINY)
    train_ids, val_ids, tokenizer = hv.load_splits(str(jsb_file))
    config = hv.make_config(args, tokenizer.vocab_size)
    alto = hv.train_one("alto", config, train_ids, val_ids, 4, {1, 4}, tokenizer.augment, lambda m: None)
    assert [p["step"] for p in alto["curve"]] == [1, 4]
    for point in alto["curve"]:
        assert all(c > 0 for c in point["cells"]) and all(np.isfinite(point["sums"]))
    assert alto["parameters_one_head"] < alto["parameters"]
    # an untrained model of the same seed is scored on the same validation cells, and the alto model has moved
    # away from it on the alto most of all (its loss saw alto cells only)
    import keras

    from generator.models import build_model
    from generator.models.harmonizer import WindowSampler

    keras.utils.set_random_seed(config.seed)
    val = WindowSampler(
        val_ids, config.seq_len, config.batch_size, shuffle=False, drop_remainder=False, vocab_size=config.vocab_size
    )
    start = hv.evaluate(build_model(config), val, jit=False)
    assert start["cells"] == alto["curve"][-1]["cells"]
    change = np.abs(np.array(alto["curve"][-1]["sums"]) - start["sums"]) / np.array(start["cells"])
    assert change.argmax() == 1


def synthetic_results(settings):
    """Curves with known figures: per-voice nats 1, 2, 3, 4 (shared) and 1.5 (every per-voice model) at the end."""
    cells = [10, 20, 30, 40]

    def curve(sums_at_4, sums_at_1):
        return [
            {"step": 1, "sums": sums_at_1, "cells": cells, "train_loss": 3.0},
            {"step": 4, "sums": sums_at_4, "cells": cells, "train_loss": 2.0},
        ]

    models = {
        "shared": {"curve": curve([10.0, 40.0, 90.0, 160.0], [30.0] * 4), "parameters": 100, "parameters_one_head": 70}
    }
    for voice in hv.VOICE_NAMES:
        models[voice] = {
            "curve": curve([1.5 * c for c in cells], [4.0 * c for c in cells]),
            "parameters": 100,
            "parameters_one_head": 70,
        }
    return {"settings": settings, "models": models}


def test_tables_from_saved_results_and_nothing_trained_again(jsb_file, tmp_path, capsys):
    out = tmp_path / "voices"
    out.mkdir()
    argv = ["--corpus", str(jsb_file), "--output", str(out), "--no-jit"] + TINY
    args = hv.parser().parse_args(argv)
    settings = {k: getattr(args, k) for k in hv.SETTING_KEYS}
    settings["corpus"] = str(jsb_file.resolve())
    for name, result in synthetic_results(settings)["models"].items():
        if name != "bass":
            (out / f"{name}.json").write_text(json.dumps({"settings": settings, "result": result}))
    assert hv.main(argv[: -len(TINY)] + TINY + ["--models", "soprano,alto"]) == 0  # nothing to train; bass missing
    captured = capsys.readouterr()
    assert captured.err.count("already measured") == 2
    assert "still to train: bass" in captured.out and not (out / "results.json").exists()
    bass = synthetic_results(settings)["models"]["bass"]
    (out / "bass.json").write_text(json.dumps({"settings": settings, "result": bass}))
    assert hv.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.count("already measured") == 5
    assert "| equal total training steps | shared | 4 | 1.0000 | 2.0000 | 3.0000 | 4.0000 | 3.0000 |" in captured.out
    assert "| equal total training steps | per-voice | 1 | 4.0000 | 4.0000 | 4.0000 | 4.0000 | 4.0000 |" in captured.out
    assert "| equal steps per model | per-voice | 4 | 1.5000 | 1.5000 | 1.5000 | 1.5000 | 1.5000 |" in captured.out
    assert "| per voice harmonizing a melody | 3 | 210 | 210 |" in captured.out
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["sampling_cost"]["shared"] == {
        "forward_passes_per_iteration": 1,
        "parameters_read_per_iteration": 100,
        "parameters_stored": 100,
    }


def test_bad_input_exits_2_with_one_line(jsb_file, tmp_path, capsys):
    assert hv.main(["--corpus", str(tmp_path / "missing.json"), "--output", str(tmp_path / "o")] + TINY) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json" in err
    out = tmp_path / "o2"
    out.mkdir()
    (out / "alto.json").write_text(json.dumps({"settings": {"steps": 99}, "result": {}}))
    assert hv.main(["--corpus", str(jsb_file), "--output", str(out), "--no-jit"] + TINY) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings" in err
    assert hv.main(["--corpus", str(jsb_file), "--output", str(out), "--models", "alto,viola"] + TINY) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "viola" in err
    with pytest.raises(SystemExit) as e:
        hv.main(["--corpus", str(jsb_file), "--output", str(out), "--steps", "0"])
    assert e.value.code == 2


@pytest.mark.slow
def test_whole_measurement_under_xla(jsb_file, tmp_path, capsys):
    """The whole command with XLA (the default on a CPU): five models, tables, results.json, and each per-voice
    model scores its own voice better than a uniform guess (the tiny random corpus has nothing more to learn)."""
    out = tmp_path / "voices"
    args = [
        "--corpus",
        str(jsb_file),
        "--output",
        str(out),
        "--steps",
        "40",
        "--eval-every",
        "10",
        "--layers",
        "1",
        "--units",
        "16",
        "--embedding",
        "4",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--learning-rate",
        "0.01",
    ]
    assert hv.main(args) == 0
    printed = capsys.readouterr().out
    assert "| equal total training steps | per-voice | 10 |" in printed
    assert "| equal steps per model | per-voice | 40 |" in printed
    report = json.loads((out / "results.json").read_text())
    assert set(report["models"]) == set(hv.MODELS)
    for i, voice in enumerate(hv.VOICE_NAMES):
        curve = report["models"][voice]["curve"]
        assert [p["step"] for p in curve] == [10, 20, 30, 40]
        last = curve[-1]["sums"][i] / curve[-1]["cells"][i]
        assert last < math.log(48)  # below the uniform guess over the voices vocabulary on its own voice
