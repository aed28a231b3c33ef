"""JSB Chorales: the paper's measure (mean NLL per token, each chorale from its first token)."""

import json
import math

import numpy as np
import pytest

from generator.cli.main import generator_main, run
from generator.config import RunConfig
from generator.data.tokenizers.voices import VoicesTokenizer

TOY = {
    "train": [[[67, 64, 60, 48], [67, 64, 60, 48], [69, 65, 60, 53]]],
    "valid": [
        [[72, 67, 64, 48], [72, 67, 64, 48], [71, 67, 62, 55], [72, 67, 64, 48]],
        [[60, 55, 52, 48], [62, -1, 53, 47], [64, 55, 55, 48]],
    ],
}


@pytest.fixture(scope="module")
def voices_run(tmp_path_factory):
    from generator.training.checkpoints import save_run
    from generator.models import build_model

    tokenizer = VoicesTokenizer()
    config = RunConfig(
        modality="music", tokenizer="voices", layers=1, units=12, embedding=6, vocab_size=tokenizer.vocab_size
    )
    model = build_model(config)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return save_run(tmp_path_factory.mktemp("runs") / "voices", model, tokenizer, config)


def test_evaluate_equals_a_hand_computation(tmp_path, capsys, voices_run):
    from generator import api

    path = tmp_path / "toy.json"
    path.write_text(json.dumps(TOY))
    code = run(
        generator_main,
        ["evaluate", "--checkpoint", str(voices_run), "--corpus", str(path), "--split", "valid", "--json"],
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)

    g = api.load(voices_run)
    total, count = 0.0, 0
    for chorale in TOY["valid"]:
        ids = [0] + g.tokenizer.encode(np.array(chorale))  # BOS, then S A T B per step
        logits = g.run.model(np.array([ids], np.int32), training=False).numpy()[0].astype(np.float64)
        for t in range(1, len(ids)):  # every token, from the first, given all before it
            row = logits[t - 1]
            log_z = row.max() + math.log(np.exp(row - row.max()).sum())
            total += log_z - row[ids[t]]
            count += 1
    assert count == 4 * 4 + 3 * 4
    assert result["tokens"] == count
    assert result["nll_per_token"] == pytest.approx(total / count, rel=1e-5)


def test_missing_split_is_named(tmp_path, capsys, voices_run):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(TOY))
    code = run(generator_main, ["evaluate", "--checkpoint", str(voices_run), "--corpus", str(path), "--split", "test"])
    _, err = capsys.readouterr()
    assert code == 2 and "test" in err and "valid" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("seed_format", [None, "musicxml", "midi"])
def test_generate_music_writes_a_four_voice_chorale(tmp_path, capsys, voices_run, seed_format):
    import music21
    import pretty_midi

    from generator.cli.main import generate_music_main

    argv = [
        "--checkpoint",
        str(voices_run),
        "--output",
        str(tmp_path / "chorale.mid"),
        "--length",
        "64",
        "--random-seed",
        "4",
    ]
    if seed_format:
        seed = tmp_path / ("seed.musicxml" if seed_format == "musicxml" else "seed.mid")
        music21.corpus.parse("bach/bwv66.6").parts.stream().write(seed_format, fp=str(seed))
        argv += ["--seed", str(seed)]
    code = run(generate_music_main, argv)
    _, err = capsys.readouterr()
    assert code == 0, err
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "chorale.mid"))
    voiced = [i for i in pm.instruments if i.notes]
    assert 1 <= len(voiced) <= 4 and len(pm.instruments) >= 4
    if seed_format:
        seed_pm = pretty_midi.PrettyMIDI(str(seed)) if seed_format == "midi" else None
        end = max(n.end for i in pm.instruments for n in i.notes)
        if seed_pm is not None:
            assert end > seed_pm.get_end_time()


def test_training_on_a_json_split_validates_on_its_valid_split(tmp_path, capsys):
    from generator.training import checkpoints

    path = tmp_path / "toy.json"
    path.write_text(json.dumps(TOY))
    out = tmp_path / "run"
    code = run(
        generator_main,
        [
            "train",
            "music",
            "--corpus",
            str(path),
            "--output",
            str(out),
            "--layers",
            "1",
            "--units",
            "8",
            "--embedding",
            "4",
            "--epochs",
            "1",
            "--seq-len",
            "8",
            "--batch-size",
            "2",
        ],
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    config = checkpoints.read_config(out)
    assert (config.tokenizer, config.split, config.val_split) == ("voices", "train", "valid")
    metrics = checkpoints.read_metrics(out)
    assert metrics["validation_split"] == "split 'valid'"
    assert metrics["tokens"] == {"train": 1 + 3 * 4, "validation": 2 + 7 * 4}
