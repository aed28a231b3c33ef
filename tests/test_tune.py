"""generator tune: a tiny KerasTuner search, its best_config.json, and `generator train --config`."""

import json
import math

import pytest

from generator.cli.main import generator_main, run
from generator.config import RunConfig
from tests.conftest import call as run_cli
from tests.conftest import one_line_error

SEARCH = [
    "--trials",
    "2",
    "--epochs",
    "1",
    "--layers",
    "1",
    "--units",
    "8,16",
    "--dropout",
    "0,0.2",
    "--learning-rate",
    "0.001,0.02",
    "--embedding",
    "8",
    "--seq-len",
    "16",
    "--batch-size",
    "8",
]


def call(argv, capsys):
    return run_cli(generator_main, argv, capsys)


@pytest.fixture(scope="module")
def search(tmp_path_factory, tiny_corpus):
    out = tmp_path_factory.mktemp("tuning")
    code = run(generator_main, ["tune", "--corpus", str(tiny_corpus), "--output", str(out), *SEARCH])
    assert code == 0
    return out


def test_tune_writes_the_best_config_and_its_validation_loss(search, tiny_corpus):
    config = RunConfig.from_dict(json.loads((search / "best_config.json").read_text()))
    assert config.layers == 1 and config.units in (8, 16) and 0 <= config.dropout <= 0.2
    assert 0.001 <= config.learning_rate <= 0.02
    assert config.corpus == str(tiny_corpus) and config.seq_len == 16 and config.embedding == 8
    result = json.loads((search / "tuning.json").read_text())
    assert math.isfinite(result["val_loss_nats"]) and result["val_loss_nats"] > 0
    assert result["val_bits_per_token"] == pytest.approx(result["val_loss_nats"] / math.log(2))
    assert len(result["trials"]) == 2 and result["trials"][0]["val_loss_nats"] == result["val_loss_nats"]
    assert result["best_hyperparameters"]["units"] == config.units
    assert any((search / "logs").iterdir()), "TensorBoard logs of the trials"


def test_train_accepts_the_config_and_explicit_flags_override_it(search, tmp_path, capsys):
    best = RunConfig.from_dict(json.loads((search / "best_config.json").read_text()))
    out = tmp_path / "run"
    # no --corpus: the configuration names it; --units and --epochs given explicitly win over the file
    code, printed, err = call(
        [
            "train",
            "text",
            "--config",
            str(search / "best_config.json"),
            "--output",
            str(out),
            "--units",
            "4",
            "--epochs",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert "best validation loss" in printed
    trained = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert trained.units == 4 and trained.epochs == 1
    assert (trained.layers, trained.dropout, trained.learning_rate, trained.seq_len) == (
        best.layers,
        best.dropout,
        best.learning_rate,
        best.seq_len,
    )


def test_hyperband_keeps_to_the_trial_budget(tmp_path, tiny_corpus):
    from generator.training.tune import SearchSpace, tune

    result = tune(
        str(tiny_corpus),
        tmp_path,
        trials=2,
        epochs=1,
        algorithm="hyperband",
        log=lambda *_: None,
        space=SearchSpace(layers=(1,), units=(8,), dropout=(0.0,), learning_rate=(0.001, 0.01)),
        seq_len=16,
        batch_size=8,
        embedding=8,
    )
    assert len(result["trials"]) <= 2 and (tmp_path / "best_config.json").exists()


def test_existing_results_need_force(search, tiny_corpus, capsys):
    code, _, err = call(["tune", "--corpus", str(tiny_corpus), "--output", str(search), *SEARCH], capsys)
    one_line_error(code, err, "--force")


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--trials", "0"], "--trials"),
        (["--layers", "0"], "--layers"),
        (["--units", "many"], "--units"),
        (["--dropout", "0.1,0.2,0.3"], "MIN,MAX"),
        (["--learning-rate", "0.1,0.01"], "learning_rate"),
        (["--algorithm", "grid"], "--algorithm"),
    ],
)
def test_bad_search_flags_exit_2(tmp_path, tiny_corpus, capsys, flags, fragment):
    code, _, err = call(["tune", "--corpus", str(tiny_corpus), "--output", str(tmp_path / "t"), *flags], capsys)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "t" / "best_config.json").exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "not found"),
        ("{not json", "not a JSON configuration"),
        ('{"modality": "music", "tokenizer": "events"}', "music"),
        ('{"units": "many"}', "units"),
        ('{"colour": "blue"}', "colour"),
        ('{"jit": "yes"}', "jit must be true, false or null"),
        ('{"modality": "text"}', "--corpus"),
    ],
)
def test_bad_config_files_exit_2(tmp_path, capsys, content, fragment):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    code, _, err = call(["train", "text", "--config", str(path), "--output", str(tmp_path / "run")], capsys)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_a_config_file_may_set_jit_either_way(tmp_path):
    from generator.api import load_config

    path = tmp_path / "config.json"
    for value in (True, False, None):  # a run's own config.json after --jit, --no-jit or neither
        path.write_text(json.dumps({"jit": value}))
        assert load_config(path).jit is value
