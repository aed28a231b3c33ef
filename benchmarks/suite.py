"""``generator bench`` (``python -m benchmarks.suite``): the speed and memory, each figure beside its baseline.

Every figure is measured in the same run on the same machine as the baseline it is compared
with (model 2 x LSTM(256), embedding 64, vocabulary 65, windows of 100, batch 64):

- sampling at batch 1: the compiled decode loop against TensorFlow's text-generation tutorial's
  one-step stateful loop (a Keras model called one token at a time with its states,
  ``benchmarks.sampling_speed``), and against the window loop (``model.predict`` on the last 100
  tokens for every new token, as keras.io's example and Classical-Piano-Composer do);
- sampling at batch 64: tokens per second against the tutorial loop at batch 64, and the share
  of the peak that the model's matmul FLOPs reach, the peak being TensorFlow's own matmul on the
  shapes of one decoding step at that batch (measured here); the band model (2 x LSTM(384),
  404 tokens) the same way;
- training: the trainer's compiled step as ``generator train`` runs it by default against the
  same model in PyTorch with the same number of threads (set in both processes and printed),
  and against Keras ``model.fit`` (``benchmarks.train_speed``, one process each);
- the band continuation: 30 seconds after a 4-minute, 10-track song, the whole
  ``generate-music`` command and its phases in process (``benchmarks/band_continuation.py``);
- memory: peak resident memory of ``generator train text`` preparing a generated 100 MB text
  corpus and training 200 steps on it (``ru_maxrss`` of that child process);
- MIDI: files per second tokenized from a cold cache and from the tokenized-corpus cache,
  against parsing the same files with music21 (Classical-Piano-Composer's reader).

``--quick`` runs everything at toy sizes in about a minute: its figures mean nothing, it only
proves the benchmark works. Targets are printed beside the figures, never asserted.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks import sampling_speed
from benchmarks.common import ROOT, child_env
from benchmarks.report import TARGETS, table, write_docs  # noqa: F401 (table: the suite's output)

FULL = dict(
    layers=2,
    units=256,
    embedding=64,
    vocab=65,
    seq_len=100,
    batch=64,
    dropout=0.2,  # the model
    window_tokens=20,
    tutorial_tokens=400,
    tutorial_b64_tokens=100,
    b1_tokens=4096,
    b64_tokens=1024,
    repeats=5,  # sampling: timed passes, in turn
    warmup=5,
    steps=20,
    rounds=4,  # training: round-robin passes of the trainer and PyTorch, each in a fresh process (the best of each counts)
    band_prompt=384,
    band_b1_tokens=1024,
    band_b64_tokens=512,
    band_runs=1,  # the band model
    corpus_mb=100,
    corpus_steps=200,
    midi_files=48,
    music21_files=6,
)
QUICK = dict(
    layers=1,
    units=32,
    embedding=8,
    vocab=65,
    seq_len=20,
    batch=8,
    dropout=0.2,
    window_tokens=3,
    tutorial_tokens=8,
    tutorial_b64_tokens=4,
    b1_tokens=64,
    b64_tokens=32,
    repeats=1,
    warmup=1,
    steps=2,
    rounds=0,
    band_prompt=16,
    band_b1_tokens=16,
    band_b64_tokens=8,
    band_runs=0,
    corpus_mb=1,
    corpus_steps=3,
    midi_files=2,
    music21_files=1,
)
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tinyshakespeare's 65


def threads() -> int:
    """The CPU threads both frameworks are given: the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def flops_per_token(s: dict) -> float:
    """Matmul FLOPs of one token through the model (input and recurrent kernels, output layer)."""
    return sampling_speed.flops(sampling_speed.step_shapes(s["layers"], s["units"], s["embedding"], s["vocab"], 1))


# -- sampling -------------------------------------------------------------------------------------


def _model(s: dict):
    import keras

    from benchmarks.train_speed import run_config
    from generator.models import build_model

    keras.utils.set_random_seed(0)
    return build_model(run_config(s))


def bench_sampling(s: dict) -> dict:
    """The text model's decode loop at batch 1 and 64 against the tutorial loop, the window loop and the peak."""
    from generator.models import decoder as make_decoder

    ss = sampling_speed
    model = _model(s)
    out = {}
    stack = ss.tutorial_model(model, s["layers"], s["units"], s["embedding"], s["vocab"])
    decoder = make_decoder(model)
    for batch, length, tutorial_length in (
        (1, s["b1_tokens"], s["tutorial_tokens"]),
        (64, s["b64_tokens"], s["tutorial_b64_tokens"]),
    ):
        shapes = ss.step_shapes(s["layers"], s["units"], s["embedding"], s["vocab"], batch)
        rate, first, loop = ss.decode_rate(decoder, s["vocab"], s["seq_len"], batch, length)
        timers = {
            "peak": ss.tf_matmul_peak(shapes),
            "rate": rate,
            "tutorial": ss.tutorial_rate(stack, s["vocab"], s["seq_len"], batch, tutorial_length),
        }
        if batch == 1:  # batch 1 runs in C (generation/native.py); the XLA loop it replaces, beside it
            timers["xla"] = ss.decode_rate(decoder, s["vocab"], s["seq_len"], batch, length, native=False)[0]
        best = ss.interleaved_best(timers, s["repeats"])
        out.update(
            {
                f"sampling_b{batch}_tokens_per_s": best["rate"],
                f"tf_tutorial_b{batch}_tokens_per_s": best["tutorial"],
                f"sampling_b{batch}_vs_tf_tutorial": best["rate"] / best["tutorial"],
                f"tf_peak_b{batch}_gflops": best["peak"] / 1e9,
                f"sampling_b{batch}_fraction_of_tf_peak": best["rate"] / batch * ss.flops(shapes) / best["peak"],
            }
        )
        if batch == 1:
            out["sampling_first_call_s"] = first
            out["sampling_b1_xla_tokens_per_s"] = best["xla"]
            out["sampling_b1_native_threads"] = loop.native_threads
    out["window_loop_tokens_per_s"] = ss.window_loop_rate(
        model, s["vocab"], s["seq_len"], s["window_tokens"], s["repeats"]
    )
    out["sampling_b1_vs_window_loop"] = out["sampling_b1_tokens_per_s"] / out["window_loop_tokens_per_s"]
    out["load_average_sampling"] = round(os.getloadavg()[0], 2)
    return out


def bench_band(s: dict) -> dict:
    """The band model: unconstrained decode rates with their peaks, and the 30-second continuation."""
    import generator

    band = generator.load("band", key_average=0)
    out = sampling_speed.model_rates(
        band.run.model, "band", s["band_prompt"], s["band_b1_tokens"], s["band_b64_tokens"], s["repeats"]
    )
    if s["band_runs"]:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "band_continuation.py"),
                "--json",
                "--runs",
                str(s["band_runs"]),
            ],
            capture_output=True,
            text=True,
            env=child_env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore"),
        )
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks/band_continuation.py failed:\n{done.stderr[-2000:]}")
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        out.update(
            {
                "band_continuation_30s_s": timing["command_best_seconds"],
                "band_continuation_phases_s": timing["phases_total_seconds"],
                "band_continuation_phases": timing["phases_seconds"],
            }
        )
    else:
        out.update({"band_continuation_30s_s": None, "band_continuation_phases_s": None})
    out["load_average_band"] = round(os.getloadavg()[0], 2)
    return out


# -- training -------------------------------------------------------------------------------------


def _child(args: list[str], env: dict | None = None) -> dict:
    """Run ``python -m benchmarks.train_speed ARGS`` and return its JSON line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.train_speed", *args],
        capture_output=True,
        text=True,
        env=child_env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", **(env or {})),
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {args[0]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def bench_training(s: dict, every_variant: bool = False) -> dict:
    """The trainer and PyTorch, each in its own process, in ``rounds`` round-robin passes (the best pass
    of each counts), then Keras ``fit`` once; ``every_variant`` adds the trainer without XLA, with XLA
    over Keras's LSTM layers, and ``fit`` with XLA.

    Round-robin keeps a slow spell of a shared machine from falling on one side only. Both
    frameworks get ``threads()`` threads. ``--quick`` runs all TensorFlow variants in one process, once.
    """
    from benchmarks.train_speed import DEFAULT_SIZES, EXTRA_VARIANTS

    sizes = json.dumps({**{k: s[k] for k in DEFAULT_SIZES if k in s}, "threads": threads()})
    torch = ["torch"] if torch_available() else []
    tf_variants = ["project", "keras_fit"] + (EXTRA_VARIANTS if every_variant or not s["rounds"] else [])
    if s["rounds"]:
        groups = [["project"] + torch] * s["rounds"] + [[v] for v in tf_variants[1:]]
    else:
        groups = [[",".join(tf_variants)] + torch]
    rates: dict[str, float] = {}
    for group in groups:
        for variant in group:
            for name, rate in _child([variant, sizes]).items():
                rates[name] = max(rates.get(name, 0.0), rate)
    torch_rate = rates.pop("torch", None)
    out = {"train_tokens_per_s": rates.pop("project"), "train_threads": threads()}
    out.update({f"train_{k[len('project_') :]}_tokens_per_s": v for k, v in rates.items() if k.startswith("project_")})
    out.update(
        {
            "keras_fit_tokens_per_s": rates["keras_fit"],
            "keras_fit_xla_tokens_per_s": rates.get("keras_fit_xla"),
            "torch_tokens_per_s": torch_rate,
            "train_vs_keras_fit": out["train_tokens_per_s"] / rates["keras_fit"],
            "train_vs_torch": out["train_tokens_per_s"] / torch_rate if torch_rate else None,
            "load_average_training": round(os.getloadavg()[0], 2),
        }
    )
    return out


# -- memory ---------------------------------------------------------------------------------------


def write_text_corpus(path: Path, megabytes: int) -> None:
    """``megabytes`` MB of word-like text over the 65 characters of tinyshakespeare, made in 1 MB blocks."""
    rng = np.random.default_rng(0)
    codes = np.frombuffer(ALPHABET.encode(), np.uint8)
    weights = 1.0 / np.arange(1, len(codes) + 1)  # Zipf-like letter frequencies
    weights[[0, 1]] = [2.0, 6.0]  # plenty of newlines and spaces
    letters = codes[rng.permutation(len(codes))]
    with open(path, "wb") as f:
        for _ in range(megabytes):
            f.write(letters[rng.choice(len(codes), 1 << 20, p=weights / weights.sum())].tobytes())


def bench_memory(s: dict, workdir: Path) -> dict:
    """Peak RSS of ``generator train text`` tokenizing (and caching) the corpus, then training."""
    corpus = workdir / "corpus.txt"
    write_text_corpus(corpus, s["corpus_mb"])
    argv = [
        "train",
        "text",
        "--corpus",
        str(corpus),
        "--output",
        str(workdir / "run"),
        "--layers",
        str(s["layers"]),
        "--units",
        str(s["units"]),
        "--embedding",
        str(s["embedding"]),
        "--seq-len",
        str(s["seq_len"]),
        "--batch-size",
        str(s["batch"]),
        "--epochs",
        "1",
        "--steps-per-epoch",
        str(s["corpus_steps"]),
        "--val-fraction",
        "0.001",
    ]
    code = "import sys; from generator.cli.main import generator; sys.argv[0] = 'generator'; generator()"  # the command
    env = {**os.environ, "GENERATOR_CACHE_DIR": str(workdir / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    with open(workdir / "train.log", "w+") as log:
        child = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"generator train failed in the memory benchmark:\n{log.read()[-2000:]}")
    return {"memory_100mb_peak_rss_mb": usage.ru_maxrss / 1024, "memory_100mb_seconds": time.perf_counter() - start}


# -- MIDI -----------------------------------------------------------------------------------------


def write_midi_corpus(folder: Path, count: int) -> list[Path]:
    """``count`` two-part MIDI files of about 600 notes each (a minute of music), written by midi_io."""
    from generator.data.midi_io import write_midi
    from generator.data.notes import Instrument, Note, NoteSequence

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        notes = []
        for track, (low, high) in enumerate(((60, 84), (36, 60))):
            starts = np.cumsum(rng.choice([0.125, 0.25, 0.5], 300))
            for start, pitch in zip(starts, rng.integers(low, high, len(starts))):
                notes.append(
                    Note(
                        int(pitch),
                        float(start),
                        float(start + rng.choice([0.125, 0.25, 0.5])),
                        int(rng.integers(40, 110)),
                        track=track,
                    )
                )
        seq = NoteSequence(notes=notes, instruments=[Instrument(name="right"), Instrument(name="left")])
        paths.append(write_midi(seq, folder / f"piece{i:03d}.mid"))
    return paths


def music21_rate(paths: list[Path]) -> float:
    """Files per second of Classical-Piano-Composer's ``get_notes``: music21 parse, then note names."""
    from music21 import chord, converter, instrument, note

    start = time.perf_counter()
    for path in paths:
        score = converter.parse(str(path))
        parts = instrument.partitionByInstrument(score)
        names = []
        for element in parts.parts[0].recurse() if parts else score.flatten().notes:
            if isinstance(element, note.Note):
                names.append(str(element.pitch))
            elif isinstance(element, chord.Chord):
                names.append(".".join(str(n) for n in element.normalOrder))
    return len(paths) / (time.perf_counter() - start)


def bench_midi(s: dict, workdir: Path) -> dict:
    from generator.data import corpora
    from generator.data import dataset
    from generator.data.dataset import TokenizerFactory

    paths = write_midi_corpus(workdir / "midi", s["midi_files"])
    with mock.patch.dict(os.environ, {"GENERATOR_CACHE_DIR": str(workdir / "midi-cache")}):
        rates = []
        for _ in ("cold", "cached"):
            start = time.perf_counter()
            dataset.tokenize(corpora.open_music(workdir / "midi"), TokenizerFactory("events"))
            rates.append(len(paths) / (time.perf_counter() - start))
    baseline = music21_rate(paths[: s["music21_files"]])
    return {
        "midi_files_per_s_cold": rates[0],
        "midi_files_per_s_cached": rates[1],
        "midi_files_per_s_music21": baseline,
        "midi_cold_vs_music21": rates[0] / baseline,
    }


# -- the run and its table ----------------------------------------------------------------------


def machine() -> dict:
    """Where and when: CPU model, cores, load average at the start, library versions."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    if torch_available():
        import importlib.metadata

        versions["torch"] = importlib.metadata.version("torch")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads(),
        "load_average": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": versions,
    }


def run(quick: bool = False, log=None, every_variant: bool = False) -> dict:
    """Every figure of the benchmark as one flat dict (plus ``machine``, ``sizes`` and ``quick``).

    ``log`` gets a line before each part and one JSON line of its figures after it, so that a run
    cut short still shows what it measured.
    """
    s = QUICK if quick else FULL
    log = log or (lambda message: None)
    results = {"quick": quick, "machine": machine(), "sizes": dict(s)}
    started = time.perf_counter()

    def part(message: str, figures: dict) -> None:
        results.update(figures)
        log(f"{message}: " + json.dumps(figures))

    log("sampling: the decode loop, the tutorial's one-step loop, the window loop, the matmul peak")
    part("sampling", bench_sampling(s))
    log("the band model: sampling and the 30-second continuation")
    part("band", bench_band(s))
    log("training: the trainer and PyTorch in round robin, then Keras fit")
    part("training", bench_training(s, every_variant))
    with tempfile.TemporaryDirectory(prefix="generator-bench-") as tmp:
        log(f"memory ({s['corpus_mb']} MB corpus, {s['corpus_steps']} steps)")
        part("memory", bench_memory(s, Path(tmp)))
        log("MIDI tokenization")
        part("MIDI", bench_midi(s, Path(tmp)))
    results["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def main(argv=None, prog: str = "python -m benchmarks.suite") -> None:
    """What ``generator bench`` runs: progress on stderr, the table or one JSON object on stdout."""
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="Measure sampling, training, memory and MIDI tokenization, "
        "each figure beside its baseline measured in the same run "
        "(takes several minutes).",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    p.add_argument(
        "--quick",
        action="store_true",
        help="Run at toy sizes in well under a minute, to check the benchmark works; the figures mean nothing.",
    )
    p.add_argument(
        "--every-variant",
        action="store_true",
        help="Also time the trainer without XLA, with XLA over Keras's LSTM layers, and Keras fit with XLA.",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="Replace the generated table in docs/benchmarks.md with this run's (refused with --quick).",
    )
    p.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")
    args = p.parse_args(argv)
    if not args.verbose:
        from benchmarks.common import quiet_tensorflow

        quiet_tensorflow()
    if args.write_docs and args.quick:
        p.error("--write-docs takes the figures of a full run, not of --quick")
    results = run(
        args.quick,
        log=lambda message: print(f"bench: {message}", file=sys.stderr, flush=True),
        every_variant=args.every_variant,
    )
    print(json.dumps(results) if args.json else table(results))
    if args.write_docs:
        write_docs(results)


if __name__ == "__main__":
    main()
