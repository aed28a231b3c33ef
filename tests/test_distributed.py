"""Distributed training on CPUs and training that survives SIGKILL.

Logical CPU devices and MultiWorkerMirroredStrategy must be set up before TensorFlow starts, so
those runs happen in fresh subprocesses; every subprocess has a timeout and is killed on failure.
"""

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import ExitStack, closing

import numpy as np
import pytest

from generator import api
from generator.training import distribute
from generator.training.train_state import unpack_state
from tests.conftest import TINY_SETTINGS, TINY_TEXT, interrupt_after_first_epoch

CLI = "from generator.cli.main import generator; generator()"

# Every architecture trains under multi-worker and survives SIGKILL; the LSTM in the default run,
# the attention archs (XLA compilation of their steps makes each case longer) behind the slow marker.
ARCH_SETTINGS = {
    "lstm": {},
    "lstm-attention": dict(arch="lstm-attention", heads=2, attention_window=8),
    "transformer": dict(arch="transformer", heads=2),
}
ARCHS = [
    "lstm",
    pytest.param("lstm-attention", marks=pytest.mark.slow),
    pytest.param("transformer", marks=pytest.mark.slow),
]


def flags(settings: dict) -> list[str]:
    """Command-line flags for ``settings``; a boolean is ``--name`` or ``--no-name``."""

    def flag(key, value):
        name = key.replace("_", "-")
        return (f"--{name}" if value else f"--no-{name}") if isinstance(value, bool) else f"--{name}={value}"

    return [flag(k, v) for k, v in settings.items()]


def history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def env(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture
def processes():
    """Start subprocesses in their own process groups; kill whatever is left at the end."""
    started = []

    def start(argv, **kwargs):
        p = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs
        )
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def finish(p, timeout=300) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    return out


# -- shards of the global batch ------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [None, lambda w, rng: w + rng.integers(0, 3, (len(w), 1))])
@pytest.mark.parametrize("workers,replicas", [(1, 2), (2, 1), (2, 3)])
def test_the_shards_of_all_workers_make_up_each_global_batch(workers, replicas, augment):
    from generator.data.dataset import WindowSampler

    sampler = WindowSampler(np.arange(2000) % 97, seq_len=10, batch_size=13, seed=3, augment=augment)
    whole = list(sampler.batches(epoch=1, start_batch=2))
    shards = [list(sampler.batches(1, 2, shard=(w, workers), replicas=replicas)) for w in range(workers)]
    assert all(len(s) == len(whole) * replicas for s in shards)
    sampler.own_shards = True  # the trainer's training windows: each worker reads its own stretch of the tokens
    own = [list(sampler.batches(1, 2, shard=(w, workers), replicas=replicas)) for w in range(workers)]
    assert [[len(px) for px, _ in s] for s in own] == [[len(px) for px, _ in s] for s in shards]  # the same rows
    sampler.own_shards = False
    for k, (x, y) in enumerate(whole):
        parts = [part for s in shards for part in s[k * replicas : (k + 1) * replicas]]
        assert all(len(px) > 0 for px, _ in parts)
        np.testing.assert_array_equal(np.concatenate([px for px, _ in parts]), x)
        np.testing.assert_array_equal(np.concatenate([py for _, py in parts]), y)


def test_each_of_two_workers_reads_only_its_half_of_the_training_tokens():
    from generator.data.dataset import WindowSampler

    ids = np.arange(20_000) % 97
    sampler = WindowSampler(ids, seq_len=10, batch_size=16, seed=3)
    sampler.own_shards = True
    for w in range(2):
        lo, hi = sampler.shard_range(w, 2)
        assert (lo, hi) == (w * 10_000, (w + 1) * 10_000)
        batches = list(sampler.batches(0, shard=(w, 2)))
        assert len(batches) == sampler.num_batches(0) and all(len(x) == 8 for x, _ in batches)
        starts = sampler._shards[(w, 2)].window_starts(0)
        assert starts.min() >= lo and starts.max() + 11 <= hi
    again = list(sampler.batches(0, start_batch=3, shard=(1, 2)))
    np.testing.assert_array_equal(again[0][0], list(sampler.batches(0, shard=(1, 2)))[3][0])


# -- MirroredStrategy over two logical CPUs ---------------------------------------------------------

MIRRORED_DRIVER = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from generator import api
    corpus, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    for strategy in ("default", "mirrored"):
        api.train(corpus, f"{out}/{strategy}", strategy=strategy, progress=False, **settings)
    # the GPU path, on two CPUs: float16 with loss scaling and XLA inside strategy.run
    api.train(corpus, f"{out}/float16", strategy="mirrored", mixed_precision="float16", jit=True,
              progress=False, **settings)
""")


@pytest.mark.slow  # 45 s on two cores; the two-worker tests below cover the strategy code in the default run
def test_mirrored_over_two_cpus_matches_the_default_strategy(tmp_path, tiny_corpus, processes):
    settings = dict(TINY_SETTINGS, epochs=2, batch_size=6)  # 6 windows: 3 on each device
    out = finish(
        processes(
            [sys.executable, "-c", MIRRORED_DRIVER, str(tiny_corpus), str(tmp_path), json.dumps(settings)], env=env()
        )
    )
    assert "MirroredStrategy: 2 replicas" in out and "default strategy: 1 replica" in out
    default, mirrored = history(tmp_path / "default"), history(tmp_path / "mirrored")
    assert len(default) == len(mirrored) == 2
    for a, b in zip(default, mirrored):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    one = api.load(tmp_path / "default").run.model.get_weights()
    two = api.load(tmp_path / "mirrored").run.model.get_weights()
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)) < 1e-4
    for a, b in zip(default, history(tmp_path / "float16")):  # 16-bit arithmetic: close, not equal
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-2)


# -- two workers on loopback ports ------------------------------------------------------------------------

WORKER_DRIVER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from generator.training import distribute
    from generator.training import trainer as training
    distribute.make_strategy("multi-worker")  # before the CLI's first TensorFlow operation
    dump, kill_after, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    train, save = training.Trainer.train, training.Trainer._save_state
    saves = []

    def train_and_dump(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        np.savez(dump, *self.model.get_weights())
        return result

    def save_then_maybe_die(self, *args):
        save(self, *args)
        saves.append(1)
        if len(saves) == kill_after:  # every worker dies right after the same checkpoint
            os.kill(os.getpid(), signal.SIGKILL)

    training.Trainer.train, training.Trainer._save_state = train_and_dump, save_then_maybe_die
    from generator.cli.main import generator_main, run
    sys.exit(run(generator_main, argv))
""")


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(closing(socket.socket())) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@pytest.mark.parametrize("arch", ARCHS)
def test_two_workers_train_one_model_and_resume_after_sigkill(tmp_path, tiny_corpus, processes, arch):
    settings = dict(
        TINY_SETTINGS,
        epochs=2,
        batch_size=6,
        save_every=5,
        shard_tokens=False,  # a single run's batches
        **ARCH_SETTINGS[arch],
    )  # 11 or 12 steps per epoch
    out = tmp_path / "run"  # one path for both, as on a shared file system: only the chief may write it
    argv = [
        "train",
        "text",
        "--corpus",
        str(tiny_corpus),
        "--output",
        str(out),
        "--strategy",
        "multi-worker",
        *flags(settings),
    ]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}

    def workers(kill_after: int) -> list:
        return [
            processes(
                [sys.executable, "-c", WORKER_DRIVER, str(tmp_path / f"weights{i}.npz"), str(kill_after), *argv],
                env=env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
            )
            for i in range(2)
        ]

    for p in workers(kill_after=1):  # both killed right after the checkpoint of step 5
        out_text, _ = p.communicate(timeout=300)
        assert p.returncode == -signal.SIGKILL, out_text
    killed = read_state(out)
    assert (killed.epoch, killed.step_in_epoch, killed.global_step) == (0, 5, 5) and not killed.complete

    logs = [finish(p) for p in workers(kill_after=0)]
    assert "MultiWorkerMirroredStrategy: 2 workers x 1 replica" in logs[0] and "best validation loss" in logs[0]
    for log in logs:  # the other worker resumes from the chief's checkpoint, sent to it at start
        assert re.search(r"resuming \S+ from epoch 1, step 5 \(after 5 steps\)", log), log
    assert "[worker 1] not the chief: writing to the temporary" in logs[1]
    scratch = logs[1].split("writing to the temporary ")[1].split()[0]
    assert not os.path.exists(scratch)  # removed at the end

    with np.load(tmp_path / "weights0.npz") as a, np.load(tmp_path / "weights1.npz") as b:
        assert len(a.files) == len(b.files) > 0
        assert all(np.array_equal(a[k], b[k]) for k in a.files)

    # the chief's run directory loads and samples; it learned what one device learns from the same batches
    assert json.loads((out / "config.json").read_text())["arch"] == arch
    text = api.load(out).generate("To be", length=40, random_seed=1)
    assert text.startswith("To be") and len(text) == 45
    single = tmp_path / "single"
    api.train(str(tiny_corpus), single, strategy="default", log=lambda *_: None, progress=False, **settings)
    assert len(history(out)) == 2 and read_state(out).global_step == read_state(single).global_step
    for a, b in zip(history(single), history(out)):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)


SHARD_DRIVER = textwrap.dedent("""
    import atexit, json, sys
    from generator.training import distribute
    distribute.make_strategy("multi-worker")
    from generator.data import dataset
    dump, argv = sys.argv[1], sys.argv[2:]
    read, windows = {}, dataset.WindowSampler._windows

    def recording(self, chosen, epoch, k):
        if self.own_shards:  # the training windows of this worker
            read.setdefault("tokens", len(self.ids))
            read["lo"] = min(read.get("lo", len(self.ids)), int(chosen.min()))
            read["hi"] = max(read.get("hi", 0), int(chosen.max()) + self.seq_len + 1)
        return windows(self, chosen, epoch, k)

    dataset.WindowSampler._windows = recording
    atexit.register(lambda: open(dump, "w").write(json.dumps(read)))
    from generator.cli.main import generator_main, run
    sys.exit(run(generator_main, argv))
""")


@pytest.mark.slow
def test_two_loopback_workers_each_read_about_half_of_the_training_tokens(tmp_path, tiny_corpus, processes):
    corpus = tmp_path / "long.txt"
    corpus.write_text(TINY_TEXT * 8, encoding="utf-8")
    settings = dict(TINY_SETTINGS, epochs=1, batch_size=8)
    argv = ["train", "text", "--corpus", str(corpus), "--output", str(tmp_path / "run"), "--strategy", "multi-worker"]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [
        processes(
            [sys.executable, "-c", SHARD_DRIVER, str(tmp_path / f"read{i}.json"), *argv, *flags(settings)],
            env=env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
        )
        for i in range(2)
    ]
    for p in workers:
        finish(p)
    first, second = (json.loads((tmp_path / f"read{i}.json").read_text()) for i in range(2))
    n = first["tokens"]
    assert second["tokens"] == n > 10_000
    assert first["hi"] <= n // 2 < second["lo"] + 1  # each its own half, nothing of the other's
    for read in (first, second):
        assert 0.4 * n < read["hi"] - read["lo"] <= n / 2 + 1  # and most of that half


@pytest.mark.slow
def test_two_workers_fine_tune_with_a_grown_vocabulary(tmp_path, tiny_corpus, tiny_run, processes):
    corpus = tmp_path / "accents.txt"
    corpus.write_text(TINY_TEXT.replace("o", "ö"), encoding="utf-8")
    out = tmp_path / "ft"
    argv = [
        "train",
        "text",
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--strategy",
        "multi-worker",
        "--init-from",
        str(tiny_run),
        "--epochs",
        "2",
        "--seq-len",
        "32",
        "--batch-size",
        "6",
        "--warmup-steps",
        "4",
    ]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [
        processes(
            [sys.executable, "-c", WORKER_DRIVER, str(tmp_path / f"weights{i}.npz"), "0", *argv],
            env=env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
        )
        for i in range(2)
    ]
    logs = [finish(p) for p in workers]
    for log in logs:  # every worker grows the same vocabulary from the same checkpoint
        assert "added 1 new characters to the vocabulary" in log and "the starting weights: validation" in log, log
    with np.load(tmp_path / "weights0.npz") as a, np.load(tmp_path / "weights1.npz") as b:
        assert len(a.files) == len(b.files) > 0 and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert api.load(out).generate("Tö", length=10, random_seed=1).startswith("Tö")


def test_a_worker_needs_a_cluster(monkeypatch):
    from generator.errors import GeneratorError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    with pytest.raises(GeneratorError, match="TF_CONFIG"):
        distribute.cluster_resolver()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(GeneratorError, match="must be JSON"):
        distribute.cluster_resolver()
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "ps", "index": 0}})
    )
    with pytest.raises(GeneratorError, match="not a chief or worker"):
        distribute.cluster_resolver()


# -- SIGKILL, then the same command ------------------------------------------------------------------------


def read_state(run_dir):
    return unpack_state((run_dir / "resume.npz").read_bytes(), "resume.npz")


@pytest.mark.parametrize("arch", ARCHS)
def test_a_killed_run_resumes_where_its_last_checkpoint_left_off(tmp_path, processes, arch):
    corpus = tmp_path / "hamlet.txt"
    corpus.write_text(TINY_TEXT * 8, encoding="utf-8")
    settings = dict(TINY_SETTINGS, epochs=3, steps_per_epoch=40, save_every=3, **ARCH_SETTINGS[arch])
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-c",
        CLI,
        "train",
        "text",
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--strategy",
        "default",
        *flags(settings),
    ]

    first = processes(command, env=env())
    deadline = time.monotonic() + 240
    while not (out / "resume.npz").exists():
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = read_state(out)
    assert not killed.complete and not (out / "metrics.json").exists()
    assert killed.global_step % 3 == 0 or killed.step_in_epoch == 0

    log = finish(processes(command, env=env()))
    assert f"resuming {out} from {killed.position()}" in log
    done = read_state(out)
    assert done.complete and done.epoch == 3 and done.global_step == 3 * 40
    assert [int(row["epoch"]) for row in history(out)] == [1, 2, 3]
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3
    assert not list(out.glob(".*.tmp"))

    # the same steps on the same batches as a run that was never interrupted
    reference = tmp_path / "reference"
    api.train(str(corpus), reference, strategy="default", log=lambda *_: None, progress=False, **settings)
    for a, b in zip(history(reference), history(out)):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    with np.load(io.BytesIO((out / "resume.npz").read_bytes())) as a, np.load(reference / "resume.npz") as b:
        assert all(np.allclose(a[k], b[k], atol=1e-5) for k in a.files if k != "state")


# -- GPU switches, exercised on the CPU ------------------------------------------------------------------


@pytest.mark.parametrize(
    "precision,jit", [("bfloat16", False), ("bfloat16", None), ("float16", False), ("float16", None), ("", True)]
)  # None: the CPU default, XLA with fast_lstm
def test_mixed_precision_and_xla_train_and_resume(tmp_path, tiny_corpus, precision, jit):
    import keras

    out = tmp_path / "run"
    settings = dict(TINY_SETTINGS, epochs=2, steps_per_epoch=4, mixed_precision=precision, jit=jit)

    with pytest.raises(KeyboardInterrupt):
        api.train(str(tiny_corpus), out, log=interrupt_after_first_epoch, progress=False, **settings)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    with np.load(out / "resume.npz") as saved:
        assert ("s0" in saved.files) == (precision == "float16")  # the loss scale is checkpointed
    messages = []
    metrics = api.train(str(tiny_corpus), out, log=messages.append, progress=False, **settings)
    assert any(m.startswith("resuming") for m in messages)
    assert metrics["epochs_run"] == 2 and np.isfinite(metrics["val_loss_nats"])
    assert api.load(out).generate("To", length=10, random_seed=1).startswith("To")


def test_multi_worker_without_a_cluster_is_a_one_line_error(tmp_path, tiny_corpus, capsys, monkeypatch):
    from generator.cli.main import generator_main, run

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    code = run(
        generator_main,
        [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(tmp_path / "run"),
            "--strategy",
            "multi-worker",
            "--layers",
            "1",
            "--units",
            "8",
        ],
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "TF_CONFIG" in err


def test_a_config_file_naming_multi_worker_creates_the_strategy_before_tensorflow_runs(
    tmp_path, tiny_corpus, monkeypatch
):
    from generator.cli import main as cli

    class Stop(Exception):
        pass

    seen = []

    def record(verbose, multi_worker=False):
        seen.append(multi_worker)
        raise Stop

    monkeypatch.setattr(cli, "quiet_tensorflow", record)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"strategy": "multi-worker", "corpus": str(tiny_corpus)}))
    with pytest.raises(Stop):
        cli.generator_main(["train", "text", "--config", str(config), "--output", str(tmp_path / "run")])
    assert seen == [True]
