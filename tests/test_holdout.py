"""The validation split: seeded blocks spread over few long documents, whole documents for many,
the tail as an option; training windows never touch held-out tokens; the split is recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from generator.data import dataset
from generator.data.dataset import TokenizedCorpus, WindowSampler, split_segments
from generator.data.tokenizers.chars import CharTokenizer


def positions(lengths):
    """A corpus whose every id is its own position, so split pieces tell where they came from."""
    ids = np.arange(sum(lengths), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return TokenizedCorpus(ids, starts, CharTokenizer.fit(["ab"]))


def held_positions(split) -> set:
    return set(split.val_ids.tolist())


@pytest.mark.parametrize("lengths", [[50_000], [30_000, 12_000, 9_000]])
def test_blocks_are_spread_over_the_corpus_and_add_up_to_the_fraction(lengths):
    corpus = positions(lengths)
    split = split_segments(corpus, 0.1, seed=5, holdout="blocks", block=1_000)
    n = sum(lengths)
    assert split.method == "blocks" and split.blocks == round(n * 0.1 / 1_000)
    assert abs(len(split.val_ids) - n * 0.1) <= split.blocks  # rounding of the block length only
    assert len(split.train_ids) + len(split.val_ids) == n
    assert not held_positions(split) & set(split.train_ids.tolist())
    # one block in each of `blocks` equal stretches of the corpus: spread from start to end
    stretch = n / split.blocks
    firsts = split.val_ids[split.val_segments]
    assert sorted((firsts // stretch).astype(int).tolist()) == list(range(split.blocks))


def test_auto_takes_blocks_for_few_documents_and_whole_documents_for_many():
    assert split_segments(positions([20_000]), 0.1, holdout="auto").method == "blocks"
    many = positions([100] * dataset.WHOLE_DOCUMENT_THRESHOLD)
    split = split_segments(many, 0.1, seed=1)
    assert split.method == "documents" and split.blocks == 2 and len(split.val_ids) == 200
    assert set(split.val_ids[::100] % 100) == {0}  # whole documents, from their first token


def test_same_seed_same_blocks_other_seed_other_blocks():
    corpus = positions([40_000])
    a, b = (split_segments(corpus, 0.1, seed=3, holdout="blocks", block=500) for _ in range(2))
    np.testing.assert_array_equal(a.val_ids, b.val_ids)
    np.testing.assert_array_equal(a.train_segments, b.train_segments)
    c = split_segments(corpus, 0.1, seed=4, holdout="blocks", block=500)
    assert not np.array_equal(a.val_ids, c.val_ids)


@pytest.mark.parametrize("seq_len", [7, 100, 499])
def test_no_training_window_touches_a_validation_block(seq_len):
    corpus = positions([20_000, 7_000])
    split = split_segments(corpus, 0.15, seed=9, holdout="blocks", block=600)
    held = held_positions(split)
    sampler = WindowSampler(split.train_ids, seq_len, 16, seed=2, segments=split.train_segments)
    seen = 0
    for epoch in range(3):
        for x, y in sampler.batches(epoch):
            windows = np.concatenate([x, y[:, -1:]], 1)
            # contiguous stretches of the original corpus: no jump over a held-out block
            assert (np.diff(windows, axis=1) == 1).all()
            assert not held & set(windows.ravel().tolist())
            seen += len(windows)
    assert seen > 0
    # validation windows stay inside one block too
    val = WindowSampler(split.val_ids, seq_len, 16, shuffle=False, drop_remainder=False, segments=split.val_segments)
    for x, y in val.batches(0):
        assert (np.diff(np.concatenate([x, y[:, -1:]], 1), axis=1) == 1).all()


def test_tail_option_keeps_the_old_split():
    corpus = positions([1_000, 500])
    train, val = split_segments(corpus, 0.1, holdout="tail")
    assert val.tolist() == list(range(900, 1_000)) + list(range(1_450, 1_500))
    assert len(train) == 1_350


def test_unknown_holdout_is_refused():
    with pytest.raises(dataset.GeneratorError, match="unknown holdout"):
        split_segments(positions([100]), 0.1, holdout="middle")


@pytest.mark.slow  # a real training run through the CLI; test_regularization trains once with the Trainer by default
def test_training_records_the_split_and_prints_the_summary(tiny_corpus, tmp_path, capsys):
    from generator.cli.main import generator_main as main
    from tests.conftest import call

    out = tmp_path / "run"
    code, stdout, err = call(
        main,
        [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(out),
            "--layers",
            "1",
            "--units",
            "16",
            "--embedding",
            "8",
            "--seq-len",
            "16",
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--holdout",
            "blocks",
            "--holdout-block",
            "100",
            "--val-fraction",
            "0.2",
        ],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["holdout"]["method"] == "blocks" and metrics["holdout"]["held_out"] >= 2
    assert "seeded blocks" in metrics["validation_split"]
    assert "best epoch" in stdout and "gap" in stdout
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"  # the training curve
    config = json.loads((out / "config.json").read_text())
    assert config["holdout"] == "blocks" and config["holdout_block"] == 100


def test_summary_warns_when_validation_is_well_above_training():
    from generator.training.trainer import summary

    history = [
        {"epoch": 1, "train_loss": 1.5, "val_loss": 1.6},
        {"epoch": 2, "train_loss": 1.2, "val_loss": 1.45},
        {"epoch": 3, "train_loss": 1.1, "val_loss": 1.5},
    ]
    lines = summary(history, 2)
    assert lines[0].startswith("best epoch 2 of 3") and "+0.2500 nats" in lines[0]
    assert "overfits" in lines[1] and "--weight-decay" in lines[1] and "--locked-dropout" in lines[1]
    calm = [{"epoch": 1, "train_loss": 1.5, "val_loss": 1.45}]
    assert len(summary(calm, 1)) == 1
