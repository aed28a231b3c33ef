"""The command line as a user meets it: exit codes, one-line errors, files written."""

import subprocess
import sys

import pytest

from generator.cli.main import generate_text_main, generator_main
from tests.conftest import call, one_line_error


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
        "--epochs",
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        *extra,
    ]


def test_missing_corpus(tmp_path, capsys):
    code, _, err = call(generator_main, train_argv(tmp_path / "nope.txt", tmp_path / "run"), capsys)
    one_line_error(code, err, "nope.txt", "not found")
    assert not (tmp_path / "run").exists()


def test_empty_corpus(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = call(generator_main, train_argv(empty, tmp_path / "run"), capsys)
    one_line_error(code, err, "empty")


def test_non_utf8_corpus_offers_encoding(tmp_path, capsys):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café crème brûlée, à la carte ".encode("latin-1") * 20)
    code, _, err = call(generator_main, train_argv(latin, tmp_path / "run"), capsys)
    one_line_error(code, err, "latin.txt", "--encoding")
    code, out, _ = call(generator_main, train_argv(latin, tmp_path / "run", "--encoding", "latin-1"), capsys)
    assert code == 0 and "best validation loss" in out


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf", "hot"])
def test_bad_temperature(value, capsys, tiny_run):
    code, _, err = call(generate_text_main, ["--checkpoint", str(tiny_run), "--temperature", value], capsys)
    one_line_error(code, err, "--temperature")


@pytest.mark.parametrize(
    "flag,value",
    [("--top-p", "0"), ("--top-p", "1.5"), ("--top-k", "0"), ("--length", "-5"), ("--length", "10000000000")],
)
def test_bad_sampling_flags(flag, value, capsys, tiny_run):
    code, _, err = call(generate_text_main, ["--checkpoint", str(tiny_run), flag, value], capsys)
    one_line_error(code, err, flag)


def test_unknown_prompt_characters_are_named(capsys, tiny_run):
    code, out, err = call(generate_text_main, ["--checkpoint", str(tiny_run), "--prompt", "Zebra ☃"], capsys)
    one_line_error(code, err, "'Z'", "'☃'")
    assert out == ""


def test_unknown_checkpoint(capsys):
    code, _, err = call(generate_text_main, ["--checkpoint", "no-such-model"], capsys)
    one_line_error(code, err, "no-such-model")


def test_generate_is_reproducible_and_writes_files(tmp_path, capsys, tiny_run):
    argv = ["--checkpoint", str(tiny_run), "--prompt", "To be", "--length", "60", "--random-seed", "9"]
    code, first, _ = call(generate_text_main, argv, capsys)
    code2, second, _ = call(generate_text_main, argv, capsys)
    assert code == code2 == 0 and first == second and first.startswith("To be")
    out = tmp_path / "sample.txt"
    code, printed, _ = call(generate_text_main, argv + ["--output", str(out)], capsys)
    assert code == 0 and printed == "" and out.read_text() == first.rstrip("\n")
    code, _, err = call(generate_text_main, argv + ["--output", str(out)], capsys)
    one_line_error(code, err, "already exists", "--force")
    code, _, _ = call(generate_text_main, argv + ["--output", str(out), "--force", "--num-samples", "3"], capsys)
    assert code == 0 and all((tmp_path / f"sample-{i}.txt").exists() for i in (1, 2, 3))


def test_evaluate_json(capsys, tiny_run, tiny_corpus):
    import json

    code, out, _ = call(
        generator_main, ["evaluate", "--checkpoint", str(tiny_run), "--corpus", str(tiny_corpus), "--json"], capsys
    )
    result = json.loads(out)
    assert code == 0 and result["tokens"] > 0 and result["bits_per_token"] > 0 and result["nll_per_token"] > 0


def test_corpora_list(capsys):
    code, out, _ = call(generator_main, ["corpora", "list"], capsys)
    assert code == 0 and "austen" in out and "KiB" in out


def test_installed_entry_point_prints_only_the_text(tiny_run):
    """A real process: no TensorFlow start-up lines on stderr, text on stdout."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from generator.cli.main import generate_text; generate_text()",
            "--checkpoint",
            str(tiny_run),
            "--prompt",
            "To",
            "--length",
            "40",
            "--random-seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("To") and len(result.stdout) == 2 + 40 + 1
