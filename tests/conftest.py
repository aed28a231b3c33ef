"""Shared fixtures: a private cache folder, a tiny text corpus and a tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

TINY_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
    "And by opposing end them. To die: to sleep;\n"
) * 12


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Keep tokenized-corpus caches out of the user's home."""
    os.environ["GENERATOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "hamlet.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


# No regularization, the text preset's included: these runs test other things (the strategies'
# exact agreement, plain Keras loading); tests/test_regularization.py tests the flags.
TINY_SETTINGS = dict(
    layers=1,
    units=16,
    embedding=8,
    dropout=0.0,
    locked_dropout=False,
    input_dropout=0.0,
    embedding_dropout=0.0,
    weight_drop=0.0,
    weight_decay=0.0,
    seq_len=32,
    batch_size=8,
    epochs=2,
    learning_rate=0.01,
    patience=5,
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_corpus) -> Path:
    """A run directory trained for two epochs on the tiny corpus (a few seconds)."""
    from generator import api

    out = tmp_path_factory.mktemp("runs") / "tiny"
    api.train(str(tiny_corpus), out, log=lambda *_: None, progress=False, **TINY_SETTINGS)
    return out


def untrained_run(folder: Path, tokenizer, kind: str) -> Path:
    """An untrained one-layer music model over ``tokenizer`` saved as a run directory."""
    from generator.config import RunConfig
    from generator.models import build_model
    from generator.training.checkpoints import save_run

    config = RunConfig(
        modality="music", tokenizer=kind, layers=1, units=16, embedding=8, vocab_size=tokenizer.vocab_size
    )
    return save_run(folder, build_model(config), tokenizer, config)


@pytest.fixture(scope="session")
def music_run(tmp_path_factory) -> Path:
    """An untrained events model saved as a run directory."""
    from generator.data.tokenizers.events import EventTokenizer

    return untrained_run(tmp_path_factory.mktemp("runs") / "music", EventTokenizer(), "events")


@pytest.fixture(scope="session")
def text_run(tmp_path_factory) -> Path:
    """An untrained one-layer character model saved as a run directory (folder name: text)."""
    from generator.config import RunConfig
    from generator.data.tokenizers.chars import CharTokenizer
    from generator.models import build_model
    from generator.training.checkpoints import save_run

    tokenizer = CharTokenizer.fit([TINY_TEXT])
    config = RunConfig(
        modality="text", tokenizer="chars", layers=1, units=16, embedding=8, vocab_size=tokenizer.vocab_size
    )
    return save_run(tmp_path_factory.mktemp("runs") / "text", build_model(config), tokenizer, config)


def call(main, argv, capsys):
    """Run a command-line entry point the way the console script does: (exit code, stdout, stderr)."""
    from generator.cli.main import run

    code = run(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    """The contract for bad input: exit status 2 and one line on stderr naming the problem."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(f in lines[0] for f in fragments), lines[0]


def interrupt_after_first_epoch(message):
    """A training ``log`` that stops the run (like Ctrl-C) once the first epoch is reported."""
    if message.startswith("epoch 1/"):
        raise KeyboardInterrupt


@pytest.fixture(scope="session")
def band_run(tmp_path_factory) -> Path:
    """An untrained band model saved as a run directory."""
    from generator.data.tokenizers.band import BandTokenizer

    return untrained_run(tmp_path_factory.mktemp("runs") / "band", BandTokenizer(), "band")
