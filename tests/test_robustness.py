"""Broken and odd input at every entry point: one clear line and exit 2, or a sensible result."""

import json
import shutil

import pytest

from generator.cli.main import generate_text_main, generator_main
from tests.conftest import call


def one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_argv(corpus, out, *extra):
    return [
        "train",
        "text",
        "--corpus",
        str(corpus),
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
        "16",
        "--batch-size",
        "4",
        *extra,
    ]


@pytest.mark.parametrize(
    "name,data,fragment",
    [
        ("binary.txt", bytes(range(256)) * 4, "not valid utf-8"),
        ("utf16.txt", "hello world, utf-16 text".encode("utf-16"), "--encoding"),
        ("latin1.txt", "naïve café".encode("latin-1") * 10, "--encoding"),
        ("nul.txt", b"abc\x00def" * 10, "binary"),
    ],
)
def test_undecodable_text_corpora(tmp_path, capsys, name, data, fragment):
    path = tmp_path / name
    path.write_bytes(data)
    code, _, err = call(generator_main, train_argv(path, tmp_path / "run"), capsys)
    assert code == 2
    line = one_line(err)
    assert name in line and fragment.lower() in line.lower()
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("text", ["x", "😀🎵 漢字かな 한국어 " * 20])
def test_odd_but_valid_text_corpora_train(tmp_path, capsys, text):
    path = tmp_path / "odd.txt"
    path.write_text(text, encoding="utf-8")
    code, out, err = call(generator_main, train_argv(path, tmp_path / "run"), capsys)
    assert code == 0, err
    code, out, err = call(
        generate_text_main,
        ["--checkpoint", str(tmp_path / "run"), "--prompt", text[:1], "--length", "20", "--random-seed", "1"],
        capsys,
    )
    assert code == 0, err
    assert out.startswith(text[:1])


def test_utf16_corpus_with_encoding_flag_trains(tmp_path, capsys):
    path = tmp_path / "utf16.txt"
    path.write_bytes(("hello world, this is utf-16 text. " * 10).encode("utf-16"))
    code, _, err = call(generator_main, train_argv(path, tmp_path / "run", "--encoding", "utf-16"), capsys)
    assert code == 0, err


def test_unknown_encoding(tmp_path, capsys):
    path = tmp_path / "a.txt"
    path.write_text("abc")
    code, _, err = call(generator_main, train_argv(path, tmp_path / "run", "--encoding", "klingon"), capsys)
    assert code == 2 and "klingon" in one_line(err)


@pytest.fixture
def broken_run(tmp_path, tiny_run):
    target = tmp_path / "broken"
    shutil.copytree(tiny_run, target)
    return target


@pytest.mark.parametrize(
    "damage",
    [
        "missing model",
        "corrupt model",
        "missing tokenizer",
        "corrupt tokenizer",
        "corrupt config",
        "future version",
        "tokenizer mismatch",
    ],
)
def test_damaged_checkpoints_are_refused(capsys, broken_run, damage):
    if damage == "missing model":
        (broken_run / "model.keras").unlink()
    elif damage == "corrupt model":
        data = (broken_run / "model.keras").read_bytes()
        (broken_run / "model.keras").write_bytes(data[: len(data) // 2])
    elif damage == "missing tokenizer":
        (broken_run / "tokenizer.json").unlink()
    elif damage == "corrupt tokenizer":
        (broken_run / "tokenizer.json").write_text("{not json")
    elif damage == "corrupt config":
        (broken_run / "config.json").write_text('{"units": "many", "colour": 3}')
    elif damage == "future version":
        config = json.loads((broken_run / "config.json").read_text())
        config["format_version"] = 99
        (broken_run / "config.json").write_text(json.dumps(config))
    elif damage == "tokenizer mismatch":
        (broken_run / "tokenizer.json").write_text(json.dumps({"kind": "chars", "chars": "abc"}))
    code, out, err = call(generate_text_main, ["--checkpoint", str(broken_run), "--length", "5"], capsys)
    assert code == 2 and out == ""
    assert str(broken_run) in one_line(err)


def test_checkpoint_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK junk")
    code, _, err = call(generate_text_main, ["--checkpoint", str(path)], capsys)
    assert code == 2 and "model.keras" in one_line(err)


def test_failed_generation_writes_nothing(tmp_path, capsys, tiny_run):
    out = tmp_path / "never.txt"
    code, _, err = call(
        generate_text_main, ["--checkpoint", str(tiny_run), "--prompt", "ZZZ", "--output", str(out)], capsys
    )
    assert code == 2 and not out.exists() and not list(tmp_path.iterdir())


def test_output_in_missing_folder(tmp_path, capsys, tiny_run):
    code, _, err = call(
        generate_text_main, ["--checkpoint", str(tiny_run), "--output", str(tmp_path / "no" / "x.txt")], capsys
    )
    assert code == 2 and "does not exist" in one_line(err)


def test_train_output_that_is_not_a_run_directory_is_never_deleted(tmp_path, capsys, tiny_corpus):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    code, _, err = call(generator_main, train_argv(tiny_corpus, precious, "--force"), capsys)
    assert code == 2 and "refusing" in one_line(err)
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_prompt_file_problems(tmp_path, capsys, tiny_run):
    code, _, err = call(
        generate_text_main, ["--checkpoint", str(tiny_run), "--prompt-file", str(tmp_path / "none.txt")], capsys
    )
    assert code == 2 and "none.txt" in one_line(err)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    code, _, err = call(generate_text_main, ["--checkpoint", str(tiny_run), "--prompt-file", str(bad)], capsys)
    assert code == 2 and "bad.txt" in one_line(err)
