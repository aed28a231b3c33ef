"""Explicit state: sampling options are one frozen value passed to each call; the Generator keeps no
sampling state; library errors name arguments and the command line names flags."""

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from generator import ArgumentError, SamplingOptions, options
from generator.cli.main import MUSIC_FLAGS, SAMPLING_FLAGS, flag_name, music_parser, run, text_parser


def test_options_are_frozen_and_changed_copies_are_checked():
    calm = SamplingOptions(temperature=0.7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        calm.temperature = 2.0
    assert calm.replace(top_k=5) == SamplingOptions(temperature=0.7, top_k=5) and calm.top_k is None
    with pytest.raises(ArgumentError, match="^top_k must be at least 1, not 0$") as caught:
        calm.replace(top_k=0)
    assert caught.value.argument == "top_k" and isinstance(caught.value, ValueError)
    with pytest.raises(ArgumentError, match="colour is not a SamplingOptions setting"):
        calm.replace(colour="blue")


def test_every_sampling_field_is_a_flag_of_generate_music_and_the_common_ones_of_generate_text():
    def dests(parser):
        return {a.dest for a in parser._actions if isinstance(a, argparse.Action)}

    fields = set(options.fields(SamplingOptions))
    assert fields == set(SAMPLING_FLAGS) | set(MUSIC_FLAGS)
    assert fields <= dests(music_parser())
    assert set(SAMPLING_FLAGS) <= dests(text_parser()) and not set(MUSIC_FLAGS) & dests(text_parser())
    args = music_parser().parse_args(["--no-voice-leading", "--no-note-limit", "--top-k", "3"])
    assert (args.voice_leading, args.note_limit, args.top_k) == (False, False, 3)


def test_an_argument_error_speaks_of_flags_on_the_command_line(capsys):
    error = ArgumentError("freeze", "keeps layers at their init_from weights: give init_from too", "init_from")
    assert str(error) == "freeze keeps layers at their init_from weights: give init_from too"
    assert error.worded(flag_name) == "--freeze keeps layers at their --init-from weights: give --init-from too"

    def main(argv):
        raise ArgumentError("num_samples", "must be at least 1, not 0")

    assert run(main, []) == 2
    assert capsys.readouterr().err == "error: --num-samples must be at least 1, not 0\n"


def test_the_generator_keeps_no_sampling_state(music_run):
    from generator import api

    g = api.load(music_run)
    with pytest.raises(AttributeError):
        g.key_average = 2  # read only: give key_average to the call
    first = g.stream([], 24, num_samples=3, options=SamplingOptions(random_seed=4, temperature=1.5))
    tokens = np.concatenate(list(first), axis=1)
    other = g.stream([], 8, num_samples=2, random_seed=1)  # another call does not touch the first one's state
    np.concatenate(list(other), axis=1)
    rows = [list(row) + g.tokenizer.closing_ids(first.constraint_state, i) for i, row in enumerate(tokens)]
    assert first.constraint_state.shape[0] == 3 and sum(g.tokenizer.count_invalid_events(r) for r in rows) == 0
    assert not hasattr(g, "last_loop") and not hasattr(g, "last_constraint_state")
    assert g.tokenizer is g.run.tokenizer
    with pytest.raises(ArgumentError, match="^num_samples must"):
        g.stream([], 8, num_samples=0)


def test_shared_code_never_asks_for_the_harmonizer():
    """Shared code asks a model's task (``generator.models.tasks``) what it trains on and how it is
    sampled; only the harmonizer's own modules (and the registry, the config's preset, the CLI's
    --harmonize and the studio's harmonize job, which name the bundled checkpoint) name it."""
    root = Path(__file__).resolve().parents[1] / "generator"
    shared = [
        *(root / "training").glob("*.py"),
        *(root / "evaluation").glob("*.py"),
        *(root / "data").rglob("*.py"),
        *(root / "cli").glob("*.py"),
        *(root / "studio").glob("*.py"),
        root / "studio" / "static" / "studio.js",
        root / "api.py",
        root / "generation" / "sampling.py",
        root / "generation" / "compose.py",
        root / "models" / "lstm.py",
        root / "models" / "attention.py",
        root / "models" / "transformer.py",
        root / "models" / "fast_lstm.py",
        root / "models" / "key_average.py",
    ]
    for path in shared:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""[!=]==?\s*["']harmonizer["']|["']harmonizer["']\s*[!=]==?""", text), path.name
        assert not re.search(r"""\barch\b["'\]]*\s*[!=]==?\s*["']|["']harmonizer["']\s+(not\s+)?in\b""", text), (
            path.name
        )


def test_an_error_inside_a_sentence_names_flags_on_the_command_line_only():
    error = ArgumentError.sentence(
        "runs/split.json is a JSON corpus: choose one with split and index; pass force=True to overwrite it.",
        "split",
        "index",
        "force",
    )
    assert error.argument == "split" and str(error).startswith("runs/split.json is")
    assert error.worded(flag_name) == (
        "runs/split.json is a JSON corpus: choose one with --split and --index; pass --force to overwrite it."
    )  # a name inside a path stays, a boolean given as True is the bare flag
    assert ArgumentError("init_from", "x is a music model: use modality music", "modality").worded(flag_name) == (
        "--init-from x is a music model: use generator train music"
    )


def test_no_library_error_names_a_flag():
    """Outside generator/cli, the messages of raised errors name arguments and settings, never flags."""
    import ast

    root = Path(__file__).resolve().parents[1] / "generator"
    found = []
    for path in root.rglob("*.py"):
        if "cli" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) or (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")).endswith("Error")
            ):
                for part in ast.walk(node):
                    if (
                        isinstance(part, ast.Constant)
                        and isinstance(part.value, str)
                        and re.search(r"(?<![\w-])--[a-z]", part.value)
                    ):
                        found.append(f"{path.name}:{part.lineno}")
    assert not found
