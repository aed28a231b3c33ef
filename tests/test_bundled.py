"""The bundled checkpoints load, validate and sample (what the quick start runs)."""

from pathlib import Path

import pytest

from generator import api
from generator.training import checkpoints


@pytest.mark.parametrize(
    "name", ["shakespeare", "bach", "jsb-chorales", "pop-piano", "harmonizer", "shakespeare-attention", "band"]
)
def test_bundled_checkpoint_is_found_and_complete(name):
    assert name in checkpoints.bundled_names()
    run = checkpoints.load_run(name)
    assert run.metrics["val_loss_nats"] > 0 and run.metrics["best_epoch"] >= 1
    if (
        name != "shakespeare-attention"
    ):  # the architecture comparison's fixed-budget run (docs/models/shakespeare-attention.md)
        assert run.metrics["complete"] and run.metrics["stopped_early"]  # trained until validation stopped improving
    assert (run.path / "model.keras").stat().st_size < 25 * 1024 * 1024
    assert not (run.path / "resume.npz").exists()


def test_shakespeare_meets_its_target_and_writes_english():
    g = api.load("shakespeare")
    assert g.run.metrics["val_loss_nats"] <= 1.38  # issue #13's target, on the block split
    assert g.run.metrics["holdout"]["method"] == "blocks"
    text = g.generate("ROMEO:", length=200, temperature=0.5, random_seed=3)
    assert text.startswith("ROMEO:") and len(text) == 206
    assert sum(word in text.lower().split() for word in ("the", "and", "i", "to", "of", "a", "my", "you")) >= 2


def test_bach_composes_from_scratch():
    piece = api.load("bach").generate(length=300, random_seed=1)
    assert len(piece.notes) > 5


def test_a_plain_install_ships_the_checkpoints_and_corpora(tmp_path):
    """`pip install .` (not editable) must carry checkpoints/ and corpora/ inside the package."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(repo)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    probe = (
        "import generator.training.checkpoints as c, generator.data.corpora as k; "
        "print(c.bundled_dir()); print(sorted(c.bundled_names())); print(sorted(k.builtin_definitions()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    folder, names, corpora = result.stdout.splitlines()
    assert folder.startswith(str(target))
    assert "'shakespeare'" in names and "'bach'" in names
    assert "'austen'" in corpora and "'bach'" in corpora
    bench = subprocess.run(
        [sys.executable, "-c", "from generator.cli.main import generator; generator()", "bench"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        timeout=120,
    )
    assert bench.returncode == 2 and bench.stderr.count("\n") == 1, bench.stderr  # no benchmarks/ in a plain install
    assert "source checkout" in bench.stderr
    shipped = {f.suffix for f in Path(folder).rglob("*") if f.is_file()}
    assert shipped == {".json", ".keras"}, shipped  # weights and configuration; no notes, histories or logs


def test_jsb_chorales_checkpoint_writes_four_voices():
    g = api.load("jsb-chorales")
    assert g.tokenizer.kind == "voices"
    piece = g.generate(length=256, random_seed=5)
    assert len({n.track for n in piece.notes}) == 4


@pytest.mark.parametrize("name", ["jsb-chorales", "bach", "pop-piano"])
def test_bundled_music_models_average_over_seven_keys(name):
    assert api.load(name).key_average == 3  # recommended in config.json (docs/music.md, "Key averaging")
    assert api.load(name, key_average=0).key_average == 0


def test_key_averaging_lowers_jsb_loss_on_chorales_never_trained_on(tmp_path):
    import json

    from conftest import SHARED

    path = SHARED / "corpora" / "jsb-chorales" / "Jsb16thSeparated.train-valid.json"
    if not path.exists():
        pytest.skip("../shared/corpora/jsb-chorales is not here")
    valid = {"valid": json.loads(path.read_text())["valid"][:8]}
    few = tmp_path / "valid8.json"
    few.write_text(json.dumps(valid))
    alone = api.load("jsb-chorales", key_average=0).evaluate(str(few), split="valid")
    averaged = api.load("jsb-chorales").evaluate(str(few), split="valid")
    assert averaged["key_average"] == 3 and averaged["tokens"] == alone["tokens"]
    assert averaged["nll_per_token"] < alone["nll_per_token"] - 0.005


@pytest.mark.parametrize(
    "name", ["shakespeare", "bach", "jsb-chorales", "pop-piano", "harmonizer", "shakespeare-attention", "band"]
)
def test_bundled_checkpoint_records_no_machine_path(name):
    """Their corpus is a built-in name or a path under GENERATOR_CORPORA_DIR (see docs/models/)."""
    import json
    from pathlib import PurePosixPath

    run = checkpoints.load_run(name)
    for file in ("config.json", "metrics.json"):
        corpus = json.loads((run.path / file).read_text())["corpus"]
        assert not PurePosixPath(corpus).is_absolute() and not corpus.startswith("~"), (file, corpus)


def test_a_folder_named_like_a_bundled_model_does_not_hide_it(tmp_path, monkeypatch):
    from generator.training.checkpoints import bundled_dir, resolve

    (tmp_path / "bach").mkdir()  # say, the user's folder of Bach scores
    (tmp_path / "bach" / "chorale.mid").write_bytes(b"MThd")
    monkeypatch.chdir(tmp_path)
    assert resolve("bach") == bundled_dir() / "bach"
    (tmp_path / "mine").mkdir()
    assert resolve("mine") == Path("mine")  # not a bundled name: the folder, judged when loaded
    (tmp_path / "bach" / "config.json").write_text("{}")
    assert resolve("bach") == Path("bach")  # a run directory of that name is what the user means
