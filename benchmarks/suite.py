"""``generator bench`` (``python -m benchmarks.suite``): the speed and memory, each figure beside its baseline.

Every figure is measured in the same run on the same machine as the baseline it is compared
with (model 2 x LSTM(256), embedding 64, vocabulary 65, windows of 100, batch 64):

- sampling at batch 1: the compiled decode loop against the tutorials' window loop
  (``model.predict`` on the last 100 tokens for every new token, as keras.io's text
  generation example and Classical-Piano-Composer do);
- sampling at batch 64: tokens per second, and the share of this machine's float32 matmul
  peak (numpy GEMM, measured here) that the model's matmul FLOPs per token reach; also against
  TensorFlow's own matmul peak, which is higher where numpy's BLAS build uses narrower vectors;
- training: the trainer's compiled step as ``generator train`` runs it by default (on a CPU:
  XLA with ``generator.models.fast_lstm``'s loops) against Keras ``model.fit`` (with and without XLA)
  and against the same model in PyTorch (``benchmarks.train_speed``, one process each), plus
  the trainer without XLA and with XLA over Keras's own LSTM layers;
- memory: peak resident memory of ``generator train text`` preparing a generated 100 MB text
  corpus and training 200 steps on it (``ru_maxrss`` of that child process);
- MIDI: files per second tokenized from a cold cache and from the tokenized-corpus cache,
  against parsing the same files with music21 (Classical-Piano-Composer's reader).

``--quick`` runs everything at toy sizes in well under a minute: its figures mean nothing,
it only proves the benchmark works. Targets are printed beside the figures, never asserted.
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

from benchmarks.common import child_env

FULL = dict(layers=2, units=256, embedding=64, vocab=65, seq_len=100, batch=64, dropout=0.2,  # the model
            window_tokens=20, b1_tokens=4096, b64_tokens=1024, repeats=3,  # sampling
            warmup=5, steps=20, rounds=3, gemm_sizes=(1024, 2048),  # training (steps per window), GEMM peak
            corpus_mb=100, corpus_steps=200, midi_files=48, music21_files=6)
QUICK = dict(layers=1, units=32, embedding=8, vocab=65, seq_len=20, batch=8, dropout=0.2,
             window_tokens=3, b1_tokens=64, b64_tokens=32, repeats=1,
             warmup=1, steps=2, rounds=0, gemm_sizes=(128,), corpus_mb=1, corpus_steps=3, midi_files=2, music21_files=1)
TARGETS = {"sampling_b1_speedup": ">= 1000", "sampling_b64_tokens_per_s": ">= 80,000 (~75 % of peak)",
           "train_vs_torch": ">= 1.1", "memory_100mb_peak_rss_mb": "< 2,048"}
VARIANTS = {"train_no_xla_tokens_per_s": "trainer, --no-jit (Keras LSTM layers)",
            "train_xla_keras_lstm_tokens_per_s": "trainer, XLA over Keras LSTM layers"}
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tinyshakespeare's 65


def flops_per_token(s: dict) -> float:
    """Matmul FLOPs of one token through the model (input and recurrent kernels, output layer)."""
    gates = 4 * s["units"]
    macs = s["embedding"] * gates + s["units"] * gates  # layer 1
    macs += (s["layers"] - 1) * 2 * s["units"] * gates + s["units"] * s["vocab"]
    return 2.0 * macs


def _best_flops(sizes, operands, matmul) -> float:
    """Best FLOP/s of ``matmul`` over five runs for each ``n`` of ``sizes`` on ``operands(n)`` (two n x n)."""
    best = 0.0
    for n in sizes:
        a, b = operands(n)
        matmul(a, b)
        for _ in range(5):
            t = time.perf_counter()
            matmul(a, b)
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t))
    return best


def gemm_peak(sizes) -> float:
    """This machine's float32 matmul rate in FLOP/s: numpy's BLAS, best of five, largest of ``sizes``."""
    return _best_flops(sizes, lambda n: [np.random.default_rng(i).random((n, n), dtype=np.float32) for i in (1, 2)],
                       np.matmul)


def tf_gemm_peak(sizes) -> float:
    """The same for TensorFlow's matmul (oneDNN may use wider vector units than numpy's BLAS build)."""
    import tensorflow as tf

    matmul = tf.function(tf.linalg.matmul)
    return _best_flops(sizes, lambda n: [tf.random.stateless_uniform([n, n], [i, 0]) for i in (1, 2)],
                       lambda a, b: matmul(a, b).numpy())


# -- sampling -------------------------------------------------------------------------------------

def _model(s: dict):
    import keras

    from benchmarks.train_speed import run_config
    from generator.models import build_model

    keras.utils.set_random_seed(0)
    return build_model(run_config(s))


def window_loop_rate(model, s: dict) -> float:
    """Tokens per second of the tutorials' loop: predict on the last ``seq_len`` tokens, sample, slide.

    Best of ``repeats`` runs of ``window_tokens`` tokens, like the decode loop it is compared with.
    """
    rng = np.random.default_rng(0)
    window = rng.integers(0, s["vocab"], s["seq_len"]).astype(np.int32)
    model.predict(window[None], verbose=0)  # the first call traces the predict function
    best = 0.0
    for _ in range(s["repeats"]):
        start = time.perf_counter()
        for _ in range(s["window_tokens"]):
            logits = model.predict(window[None], verbose=0)[0, -1].astype(np.float64)
            probs = np.exp(logits - logits.max())
            token = rng.choice(len(probs), p=probs / probs.sum())
            window = np.append(window[1:], token).astype(np.int32)
        best = max(best, s["window_tokens"] / (time.perf_counter() - start))
    return best


def decode_rate(model, s: dict, batch: int, length: int) -> tuple[float, float]:
    """(tokens per second, seconds of the first call) of ``DecodeLoop`` after a ``seq_len`` prompt."""
    from generator.generation import sampling
    from generator.models import decoder as make_decoder

    loop = sampling.DecodeLoop(make_decoder(model), sampling.get(temperature=1.0))
    prompts = np.random.default_rng(1).integers(0, s["vocab"], (batch, s["seq_len"])).astype(np.int32)
    start = time.perf_counter()
    for _ in loop.generate(prompts, 8, seed=0):  # traces and compiles
        pass
    first = time.perf_counter() - start
    best = 0.0
    for r in range(s["repeats"]):
        start = time.perf_counter()
        for _ in loop.generate(prompts, length, seed=r + 1):
            pass
        best = max(best, batch * length / (time.perf_counter() - start))
    return best, first


def bench_sampling(s: dict, peak: float) -> dict:
    tf_peak = tf_gemm_peak(s["gemm_sizes"])
    model = _model(s)
    window = window_loop_rate(model, s)
    b1, first = decode_rate(model, s, 1, s["b1_tokens"])
    b64, _ = decode_rate(model, s, 64, s["b64_tokens"])
    return {"sampling_b1_tokens_per_s": b1, "window_loop_tokens_per_s": window, "sampling_b1_speedup": b1 / window,
            "sampling_first_call_s": first, "sampling_b64_tokens_per_s": b64,
            "sampling_b64_fraction_of_peak": b64 * flops_per_token(s) / peak, "tf_gemm_peak_gflops": tf_peak / 1e9,
            "sampling_b64_fraction_of_tf_peak": b64 * flops_per_token(s) / tf_peak}


# -- training -------------------------------------------------------------------------------------

def _child(args: list[str], env: dict | None = None) -> dict:
    """Run ``python -m benchmarks.train_speed ARGS`` and return its JSON line."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_speed", *args], capture_output=True, text=True,
                          env=child_env(TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore", **(env or {})))
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {args[0]} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def bench_training(s: dict) -> dict:
    """Every variant in its own process, in ``rounds`` round-robin passes; the best pass of each counts.

    Round-robin keeps a slow spell of a shared machine from falling on one variant only.
    ``--quick`` runs all TensorFlow variants in one process, once.
    """
    from benchmarks.train_speed import DEFAULT_SIZES, variants

    sizes = json.dumps({k: s[k] for k in DEFAULT_SIZES})
    torch = ["torch"] if torch_available() else []
    groups = variants() + torch if s["rounds"] else [",".join(variants())] + torch
    rates: dict[str, float] = {}
    for _ in range(max(1, s["rounds"])):
        for group in groups:
            for name, rate in _child([group, sizes]).items():
                rates[name] = max(rates.get(name, 0.0), rate)
    torch_rate = rates.pop("torch", None)
    out = {"train_tokens_per_s": rates.pop("project")}
    out.update({f"train_{k[len('project_'):]}_tokens_per_s": v for k, v in rates.items() if k.startswith("project_")})
    out.update({"keras_fit_tokens_per_s": rates["keras_fit"], "keras_fit_xla_tokens_per_s": rates["keras_fit_xla"],
                "torch_tokens_per_s": torch_rate,
                "train_vs_keras_fit": out["train_tokens_per_s"] / rates["keras_fit"],
                "train_vs_torch": out["train_tokens_per_s"] / torch_rate if torch_rate else None})
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
    argv = ["train", "text", "--corpus", str(corpus), "--output", str(workdir / "run"), "--layers", str(s["layers"]),
            "--units", str(s["units"]), "--embedding", str(s["embedding"]), "--seq-len", str(s["seq_len"]),
            "--batch-size", str(s["batch"]), "--epochs", "1", "--steps-per-epoch", str(s["corpus_steps"]),
            "--val-fraction", "0.001"]
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
                notes.append(Note(int(pitch), float(start), float(start + rng.choice([0.125, 0.25, 0.5])),
                                  int(rng.integers(40, 110)), track=track))
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
        for element in (parts.parts[0].recurse() if parts else score.flatten().notes):
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
    baseline = music21_rate(paths[:s["music21_files"]])
    return {"midi_files_per_s_cold": rates[0], "midi_files_per_s_cached": rates[1],
            "midi_files_per_s_music21": baseline, "midi_cold_vs_music21": rates[0] / baseline}


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
    versions = {"python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__,
                "keras": keras.__version__}
    if torch_available():
        import importlib.metadata

        versions["torch"] = importlib.metadata.version("torch")
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "versions": versions}


def run(quick: bool = False, log=None) -> dict:
    """Every figure of the benchmark as one flat dict (plus ``machine``, ``sizes`` and ``quick``)."""
    s = QUICK if quick else FULL
    log = log or (lambda message: None)
    results = {"quick": quick, "machine": machine(),
               "sizes": {k: v for k, v in s.items() if k != "gemm_sizes"}}
    log("numpy GEMM peak")
    peak = gemm_peak(s["gemm_sizes"])
    results["gemm_peak_gflops"] = peak / 1e9
    log("sampling")
    results.update(bench_sampling(s, peak))
    log("training")
    results.update(bench_training(s))
    with tempfile.TemporaryDirectory(prefix="generator-bench-") as tmp:
        log(f"memory ({s['corpus_mb']} MB corpus, {s['corpus_steps']} steps)")
        results.update(bench_memory(s, Path(tmp)))
        log("MIDI tokenization")
        results.update(bench_midi(s, Path(tmp)))
    return results


def _n(value, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(r: dict) -> str:
    """The results as an aligned text table: figure, this project, baseline, ratio, target."""
    rows = [("figure", "project", "baseline", "ratio", "target"),
            ("sampling, batch 1 (tokens/s)", _n(r["sampling_b1_tokens_per_s"]),
             f"{_n(r['window_loop_tokens_per_s'], 1)} (predict on a 100-token window)",
             f"{_n(r['sampling_b1_speedup'])}x", TARGETS["sampling_b1_speedup"] + "x"),
            ("sampling, batch 64 (tokens/s)", _n(r["sampling_b64_tokens_per_s"]),
             f"numpy GEMM peak {_n(r['gemm_peak_gflops'])} GFLOP/s",
             f"{100 * r['sampling_b64_fraction_of_peak']:.0f} % of peak", TARGETS["sampling_b64_tokens_per_s"]),
            ("", "", f"TensorFlow matmul peak {_n(r['tf_gemm_peak_gflops'])} GFLOP/s",
             f"{100 * r['sampling_b64_fraction_of_tf_peak']:.0f} % of peak", ""),
            ("training (tokens/s)", _n(r["train_tokens_per_s"]), f"{_n(r['keras_fit_tokens_per_s'])} (Keras fit)",
             f"{r['train_vs_keras_fit']:.2f}x", ""),
            ("", "", f"{_n(r['keras_fit_xla_tokens_per_s'])} (Keras fit, XLA)",
             f"{r['train_tokens_per_s'] / r['keras_fit_xla_tokens_per_s']:.2f}x", ""),
            ("", "", f"{_n(r['torch_tokens_per_s'])} (PyTorch)",
             "n/a" if r["train_vs_torch"] is None else f"{r['train_vs_torch']:.2f}x", TARGETS["train_vs_torch"] + "x")]
    for key, label in VARIANTS.items():  # the trainer's step with other settings, against PyTorch
        if r.get(key) is not None:
            ratio = f"{r[key] / r['torch_tokens_per_s']:.2f}x PyTorch" if r["torch_tokens_per_s"] else ""
            rows.append((f"training, {label} (tokens/s)", _n(r[key]), "", ratio, ""))
    sizes = r["sizes"]
    rows += [(f"peak memory, {sizes['corpus_mb']} MB corpus + {sizes['corpus_steps']} steps (MB)",
              _n(r["memory_100mb_peak_rss_mb"]), "", "",
              TARGETS["memory_100mb_peak_rss_mb"]),
             ("MIDI tokenization, cold (files/s)", _n(r["midi_files_per_s_cold"], 1),
              f"{_n(r['midi_files_per_s_music21'], 1)} (music21 parse)", f"{r['midi_cold_vs_music21']:.1f}x", ""),
             ("MIDI tokenization, cached (files/s)", _n(r["midi_files_per_s_cached"], 1), "", "", "")]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    m = r["machine"]
    head = (f"{m['cpu']}, {m['cores']} cores, {m['date']}, load average {m['load_average']} at the start; "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    note = "\n(--quick: toy sizes, the figures mean nothing)" if r["quick"] else ""
    return head + "\n\n" + "\n".join(lines) + note


def main(argv=None, prog: str = "python -m benchmarks.suite") -> None:
    """What ``generator bench`` runs: progress on stderr, the table or one JSON object on stdout."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description="Measure sampling, training, memory and MIDI tokenization, "
                                                       "each figure beside its baseline measured in the same run "
                                                       "(takes several minutes).")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    p.add_argument("--quick", action="store_true",
                   help="Run at toy sizes in well under a minute, to check the benchmark works; the figures mean nothing.")
    p.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")
    args = p.parse_args(argv)
    if not args.verbose:
        from benchmarks.common import quiet_tensorflow

        quiet_tensorflow()
    results = run(args.quick, log=lambda message: print(f"bench: {message}", file=sys.stderr, flush=True))
    print(json.dumps(results) if args.json else table(results))


if __name__ == "__main__":
    main()
