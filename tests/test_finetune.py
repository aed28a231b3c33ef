"""Fine-tuning (--init-from, --freeze, --warmup-steps, --time-limit) and short documents (--documents
lines, --column): what each promises, checked on tiny models and corpora."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import music21
import numpy as np
import pytest

from generator import api
from generator.errors import ArgumentError
from generator.training import checkpoints, finetune
from tests.conftest import TINY_SETTINGS, TINY_TEXT, call, one_line_error

TEST_MIDI = sorted((Path(music21.__file__).parent / "midi" / "testPrimitive").glob("*.mid"))
QUIET = dict(log=lambda *_: None, progress=False)
SMALL_RUN = dict(seq_len=32, batch_size=8, epochs=1)  # data settings a fine-tuning run may choose


@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory, tiny_corpus) -> Path:
    """A two-layer tiny run (for --freeze 1)."""
    out = tmp_path_factory.mktemp("runs") / "two"
    api.train(str(tiny_corpus), out, **QUIET, **{**TINY_SETTINGS, "layers": 2})
    return out


@pytest.fixture(scope="module")
def new_chars_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "accents.txt"
    path.write_text(TINY_TEXT.replace("o", "ö") + "Zéro, ¡hola!\n" * 10, encoding="utf-8")
    return path


def last_weights(run_dir: Path, model) -> dict[str, list[np.ndarray]]:
    """The weights the run ended with (its resume checkpoint), per layer of ``model`` (same architecture)."""
    with np.load(run_dir / "resume.npz") as data:
        model.set_weights([data[f"w{i}"] for i in range(len(model.weights))])
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def test_new_characters_grow_the_vocabulary_and_the_run_generates(tiny_run, new_chars_corpus, tmp_path):
    lines = []
    out = tmp_path / "ft"
    api.train(str(new_chars_corpus), out, log=lines.append, progress=False, init_from=str(tiny_run), **SMALL_RUN)
    old, new = checkpoints.load_run(tiny_run), checkpoints.load_run(out)
    added = [c for c in new.tokenizer.chars if c not in old.tokenizer.chars]
    assert sorted(added) == sorted("Z!¡éö") and new.tokenizer.chars.startswith(old.tokenizer.chars)
    assert any(line.startswith("added 5 new characters to the vocabulary") for line in lines), lines
    config = json.loads((out / "config.json").read_text())
    assert (config["units"], config["vocab_size"], config["init_from"]) == (
        16,
        old.tokenizer.vocab_size + 5,
        str(tiny_run),
    )
    text = api.load(out).generate("Zé", length=20, random_seed=1)
    assert text.startswith("Zé") and len(text) == 22


def test_grown_rows_leave_the_old_predictions_unchanged(tiny_run):
    from generator.models import build_model

    source = checkpoints.load_run(tiny_run)
    grown = build_model(source.config.replace(vocab_size=source.config.vocab_size + 3))
    finetune.init_weights(grown, source, "tiny", log=lambda *_: None)
    x = np.random.default_rng(0).integers(1, source.config.vocab_size, (2, 30)).astype("int32")
    p_old = np.exp(source.model(x) - np.log(np.exp(source.model(x)).sum(-1, keepdims=True)))
    logits = np.asarray(grown(x))
    p_new = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(p_new[..., : source.config.vocab_size], p_old, rtol=1e-3)
    assert p_new[..., source.config.vocab_size :].max() < 1e-4


def test_flags_that_contradict_the_checkpoint_are_one_error(tiny_run, tiny_corpus, tmp_path, capsys):
    from generator.cli.main import generator_main

    code, _, err = call(
        generator_main,
        [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(tmp_path / "r"),
            "--init-from",
            str(tiny_run),
            "--units",
            "32",
            "--layers",
            "1",
        ],
        capsys,
    )
    one_line_error(code, err, "--init-from", "--units 32 (it has 16)")
    assert "--layers" not in err  # agreeing flags are not conflicts
    code, _, err = call(
        generator_main,
        [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(tmp_path / "r"),
            "--init-from",
            str(tiny_run),
            "--arch",
            "transformer",
        ],
        capsys,
    )
    one_line_error(code, err, "--arch transformer (it is lstm)")
    code, _, err = call(
        generator_main,
        [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(tmp_path / "r"),
            "--init-from",
            str(tmp_path / "missing"),
        ],
        capsys,
    )
    one_line_error(code, err, "missing")
    code, _, err = call(
        generator_main,
        ["train", "text", "--corpus", str(tiny_corpus), "--output", str(tmp_path / "r"), "--freeze", "1"],
        capsys,
    )
    one_line_error(code, err, "--freeze", "--init-from")
    code, _, err = call(
        generator_main,
        [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(tmp_path / "r"),
            "--init-from",
            str(tiny_run),
            "--freeze",
            "1",
        ],
        capsys,
    )
    one_line_error(code, err, "--freeze 1", "every one of the 1 layers")


def test_fine_tuning_defaults(tiny_run):
    source = checkpoints.load_run(tiny_run)
    config = finetune.fine_tune_config(source, "tiny", "text", {})
    assert config.learning_rate == pytest.approx(source.config.learning_rate / 4)
    assert (config.warmup_steps, config.patience, config.init_from) == (50, 2, "tiny")
    assert (config.layers, config.units, config.embedding) == (1, 16, 8)
    assert config.corpus == "" and config.split == ""


def test_freeze_keeps_the_lower_layers_and_trains_the_upper_ones(two_layer_run, tiny_corpus, tmp_path):
    out = tmp_path / "frozen"
    api.train(
        str(tiny_corpus),
        out,
        **QUIET,
        init_from=str(two_layer_run),
        freeze=1,
        learning_rate=0.05,
        warmup_steps=0,
        **SMALL_RUN,
    )
    source = checkpoints.load_run(two_layer_run).model
    trained = last_weights(out, checkpoints.load_run(out).model)
    for name in ("embedding", "lstm_1"):
        for a, b in zip(source.get_layer(name).get_weights(), trained[name]):
            np.testing.assert_array_equal(a, b)
    for name in ("lstm_2", "logits"):
        assert any(not np.array_equal(a, b) for a, b in zip(source.get_layer(name).get_weights(), trained[name])), name


def test_warm_up_ramps_the_learning_rate():
    assert [finetune.warm_up_rate(1.0, s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert finetune.warm_up_rate(0.3, 0, 0) == 0.3


@pytest.mark.slow  # two runs
def test_warm_up_moves_the_weights_less_in_the_first_steps(tiny_run, tiny_corpus, tmp_path):
    source = checkpoints.load_run(tiny_run).model
    moved = {}
    for warmup in (0, 1000):
        out = tmp_path / f"w{warmup}"
        api.train(
            str(tiny_corpus),
            out,
            **QUIET,
            init_from=str(tiny_run),
            learning_rate=0.01,
            warmup_steps=warmup,
            **SMALL_RUN,
        )
        trained = last_weights(out, checkpoints.load_run(out).model)
        moved[warmup] = sum(
            float(np.abs(a - b).sum()) for a, b in zip(source.get_layer("lstm_1").get_weights(), trained["lstm_1"])
        )
    assert 0 < moved[1000] < moved[0] / 5, moved


def test_the_start_weights_are_kept_unless_an_epoch_beats_them(tiny_run, tiny_corpus, tmp_path):
    out = tmp_path / "kept"
    lines = []
    metrics = api.train(
        str(tiny_corpus),
        out,
        log=lines.append,
        progress=False,
        init_from=str(tiny_run),
        learning_rate=1e-9,
        **SMALL_RUN,
    )
    assert metrics["kept_start_weights"] and metrics["best_epoch"] == 0
    assert metrics["val_loss_nats"] == metrics["start_val_loss_nats"]
    assert any(line.startswith("no epoch beat the starting weights") for line in lines)
    kept, source = checkpoints.load_run(out).model, checkpoints.load_run(tiny_run).model
    for a, b in zip(source.get_weights(), kept.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_time_limit_cuts_the_run_short(tiny_corpus, tmp_path):
    metrics = api.train(str(tiny_corpus), tmp_path / "t", **QUIET, **{**TINY_SETTINGS, "epochs": 50}, time_limit=0.001)
    assert metrics["stopped_by_time_limit"] and metrics["epochs_run"] == 1 and metrics["complete"]
    assert not metrics["stopped_early"]  # the limit stopped it, not the validation loss


def test_a_run_stopped_by_its_time_limit_resumes_when_the_limit_is_raised(tiny_corpus, tmp_path, capsys):
    out, settings = tmp_path / "t", {**TINY_SETTINGS, "epochs": 3, "patience": 5}
    api.train(str(tiny_corpus), out, progress=False, **settings, time_limit=0.001)
    again = api.train(
        str(tiny_corpus), out, progress=False, **settings, time_limit=0.001
    )  # the same limit: nothing to do
    assert again["epochs_run"] == 1 and "already trained" in capsys.readouterr().out
    metrics = api.train(str(tiny_corpus), out, progress=False, **settings)  # no limit: trains on to the epoch cap
    assert metrics["epochs_run"] == 3 and metrics["complete"] and not metrics["stopped_by_time_limit"]
    assert "stopped at its time limit after 1 epochs" in capsys.readouterr().out


def test_music_keeps_the_checkpoints_vocabulary(music_run, tmp_path):
    corpus = tmp_path / "songs"
    corpus.mkdir()
    for path in TEST_MIDI[:4]:
        shutil.copy(path, corpus)
    out = tmp_path / "ft"
    api.train(
        str(corpus),
        out,
        modality="music",
        **QUIET,
        init_from=str(music_run),
        seq_len=16,
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
    )
    assert (out / "tokenizer.json").read_text().strip() == (music_run / "tokenizer.json").read_text().strip()
    piece = api.load(out).generate(length=20, random_seed=1)
    assert piece.sequence is not None


def test_a_text_run_from_a_music_checkpoint_is_one_error(tiny_corpus, music_run, tmp_path, capsys):
    from generator.cli.main import generator_main

    code, _, err = call(
        generator_main,
        ["train", "text", "--corpus", str(tiny_corpus), "--output", str(tmp_path / "r"), "--init-from", str(music_run)],
        capsys,
    )
    one_line_error(code, err, "--init-from", "is a music model", "generator train music")


def test_library_errors_name_arguments_and_the_cli_names_flags(tiny_corpus, tiny_run, music_run, tmp_path, capsys):
    """A contradiction with the checkpoint is an ArgumentError that names init_from and the settings as
    train() takes them; the command line says the same sentence with the flags."""
    from generator import api
    from generator.cli.main import generator_main

    with pytest.raises(ArgumentError, match=r"^init_from .* contradict units 32 \(it has 16\)") as caught:
        api.train(str(tiny_corpus), tmp_path / "r", init_from=str(tiny_run), units=32, log=lambda m: None)
    assert caught.value.argument == "init_from" and "--" not in str(caught.value)
    with pytest.raises(ArgumentError, match="^init_from .* is a music model, not a text one: .* modality music"):
        api.train(str(tiny_corpus), tmp_path / "r", init_from=str(music_run), log=lambda m: None)
    config = tmp_path / "best.json"
    config.write_text(checkpoints.read_config(tiny_run).replace(units=24).to_json(), encoding="utf-8")
    with pytest.raises(ArgumentError, match=rf"units 24 in {re.escape(str(config))} \(it has 16\)") as caught:
        api.train(str(tiny_corpus), tmp_path / "r", init_from=str(tiny_run), config=str(config), log=lambda m: None)
    assert "--" not in str(caught.value)
    code, _, err = call(
        generator_main,
        ["train", "text", "--corpus", str(tiny_corpus), "--output", str(tmp_path / "r"), "--init-from", str(tiny_run)]
        + ["--config", str(config)],
        capsys,
    )
    one_line_error(code, err, "--init-from", f"units 24 in {config} (it has 16)")


# -- short documents -------------------------------------------------------------------------


def test_lines_csv_and_jsonl_columns_are_short_documents(tmp_path):
    from generator.data import corpora

    (tmp_path / "t.txt").write_text("First title\n\n  Second title \nThird\n", encoding="utf-8")
    (tmp_path / "t.csv").write_text('id,title\n1,First title\n2,"Two\nlines"\n3,\n', encoding="utf-8")
    (tmp_path / "t.jsonl").write_text(
        '{"title": "First title"}\n{"other": 1}\n\n{"title": "Third"}\n', encoding="utf-8"
    )
    assert corpora.open_text(tmp_path / "t.txt", documents="lines").documents() == [
        "First title\n",
        "Second title\n",
        "Third\n",
    ]
    assert corpora.open_text(tmp_path / "t.csv", column="title").documents() == ["First title\n", "Two lines\n"]
    assert corpora.open_text(tmp_path / "t.jsonl", column="title").documents() == ["First title\n", "Third\n"]
    with pytest.raises(Exception, match="no column 'name'; its columns are id, title"):
        corpora.open_text(tmp_path / "t.csv", column="name").documents()
    with pytest.raises(ArgumentError, match="give column, the header") as caught:
        corpora.open_text(tmp_path / "t.csv")
    assert caught.value.argument == "column" and "--" not in str(caught.value)


def test_a_lines_model_gives_one_line_per_sample(tmp_path, capsys):
    from generator.cli.main import generate_text_main

    titles = tmp_path / "titles.txt"
    titles.write_text(
        "".join(f"The {w} of the night\n" for w in ("king", "queen", "fool", "ghost", "sea")) * 8, encoding="utf-8"
    )
    out = tmp_path / "lines"
    metrics = api.train(str(titles), out, **QUIET, **TINY_SETTINGS, documents="lines")
    assert metrics["holdout"]["method"] == "documents"  # 40 documents, some held out whole
    code, printed, _ = call(
        generate_text_main,
        ["--checkpoint", str(out), "--num-samples", "10", "--length", "60", "--random-seed", "3"],
        capsys,
    )
    assert code == 0 and len(printed.splitlines()) == 10 and "-----" not in printed
    samples = api.load(out).generate(length=60, num_samples=3, random_seed=3)
    assert all("\n" not in s for s in samples)


# -- the bundled checkpoints -----------------------------------------------------------------


def _corpus_for(name: str, folder: Path) -> tuple[str, str]:
    """A tiny corpus each bundled checkpoint can fine-tune on: (spec, modality)."""
    if name == "shakespeare":
        path = folder / "letters.txt"
        path.write_text(TINY_TEXT + "Zéro «quotes» (1)\n" * 5, encoding="utf-8")
        return str(path), "text"
    if name == "jsb-chorales":
        rng = np.random.default_rng(0)
        chorale = lambda n: (rng.integers(0, 3, (n, 1)) + np.array([[72, 67, 64, 48]])).tolist()  # noqa: E731
        path = folder / "chorales.json"
        path.write_text(json.dumps({"train": [chorale(64) for _ in range(4)], "valid": [chorale(32)]}))
        return str(path), "music"
    songs = folder / "songs"
    songs.mkdir()
    for path in TEST_MIDI[:3]:
        shutil.copy(path, songs)
    return str(songs), "music"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shakespeare", "pop-piano", "bach", "jsb-chorales", "band"])
def test_every_bundled_checkpoint_fine_tunes_and_the_run_generates(name, tmp_path):
    spec, modality = _corpus_for(name, tmp_path)
    out = tmp_path / "ft"
    lines = []
    api.train(
        spec,
        out,
        modality=modality,
        log=lines.append,
        progress=False,
        init_from=name,
        seq_len=16,
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
    )
    source, run = checkpoints.load_run(name), checkpoints.load_run(out)
    assert (run.config.layers, run.config.units, run.config.arch) == (
        source.config.layers,
        source.config.units,
        source.config.arch,
    )
    if modality == "text":
        assert run.tokenizer.chars.startswith(source.tokenizer.chars) and any("added 6 new" in x for x in lines), lines
        assert api.load(out).generate("Zé", length=10, random_seed=1).startswith("Zé")
    else:
        assert run.tokenizer.to_json() == source.tokenizer.to_json()
        if name != "jsb-chorales":
            assert api.load(out).generate(length=30, random_seed=1).sequence is not None
