"""Corpora larger than memory (#29): peak memory and speed of tokenizing and training at scale.

    python -m benchmarks.scale text --gigabytes 1 4        # synthetic text, tokenizing and 200 steps
    python -m benchmarks.scale midi --files 10000 --corpus PATH/TO/pop909
    python -m benchmarks.scale read --corpus PATH/TO/pop909 --workers 2
    python -m benchmarks.scale documents --gigabytes 1   # lines, CSV and JSONL columns, a grown vocabulary

``text`` writes a synthetic text file of each size into a temporary folder (removed at the end),
then measures in child processes, each with its own peak resident memory (``ru_maxrss``): the
first tokenization into the token store, and one epoch's first ``--steps`` training steps of a
small model on it (the store memory-mapped, validation capped by ``--val-tokens``). ``midi`` links
copies of a MIDI corpus (POP909) into a temporary folder until it holds ``--files`` files and
tokenizes them (workers on every core; the parent's and the largest worker's peak memory).
``read`` reads every file of a MIDI corpus in ``--workers`` processes with symusic and, on the
first ``--baseline`` files, with pretty_midi, and prints files per second and the ratio.
``documents`` writes synthetic corpora of short documents (a text file read ``--documents lines``,
a CSV file and a JSONL file read with ``--column``) and a text file tokenized the way a fine-tuning
run grows a checkpoint's character vocabulary, and measures the peak memory of tokenizing each.
Each line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import child_env

GB = 1 << 30


def _peak_mb(who=resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MB: of this process its own high-water mark (``VmHWM``, which starts
    afresh at exec, where ``ru_maxrss`` keeps the parent's at the fork), of the waited-for children
    their largest ``ru_maxrss``."""
    if who == resource.RUSAGE_SELF:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def write_text(path: Path, size: int, seed: int = 0) -> None:
    """``size`` bytes of synthetic English-like text: seeded random words of a 60-character alphabet."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"etaoinshrdlucmfwypvbgkjqxz" * 2 + b"ETAOINSHRDLUCM.,;:!?'-", np.uint8)
    block = 32 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            chunk = letters[rng.integers(0, len(letters), n)]
            chunk[rng.random(n) < 0.17] = ord(" ")
            chunk[rng.random(n) < 0.015] = ord("\n")
            f.write(chunk.tobytes())
            left -= n


def write_table(path: Path, size: int, kind: str, seed: int = 0) -> None:
    """About ``size`` bytes of the synthetic lines of ``write_text`` as a CSV file (``title,n``: each line,
    then a number) or a JSONL file (``{"title": line}``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"etaoinshrdlucmfwypvbgkjqxz" * 2 + b"ETAOINSHRDLUCM.;:!?'-", np.uint8)
    prefix, suffix = (b"", b",7") if kind == "csv" else (b'{"title": "', b'"}')
    with open(path, "wb") as f:
        f.write(b"title,n\n" if kind == "csv" else b"")
        written = 0
        while written < size:
            n = min(32 << 20, size - written)
            chunk = letters[rng.integers(0, len(letters), n)]
            chunk[rng.random(n) < 0.17] = ord(" ")
            chunk[rng.random(n) < 0.015] = ord("\n")
            chunk[-1] = ord("\n")
            ends = np.flatnonzero(chunk == ord("\n"))
            starts = np.concatenate([[0], ends[:-1] + 1])
            where = np.concatenate([np.repeat(starts, len(prefix)), np.repeat(ends, len(suffix))])
            values = np.concatenate(
                [
                    np.tile(np.frombuffer(prefix, np.uint8), len(starts)),
                    np.tile(np.frombuffer(suffix, np.uint8), len(ends)),
                ]
            )
            chunk = np.insert(chunk, where, values) if len(where) else chunk
            f.write(chunk.tobytes())
            written += len(chunk)


def _child(args: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.scale", *args], env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"benchmark child {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


GROWN_FROM = "etaoin shrdlu\n"  # the characters of the checkpoint whose vocabulary ``documents`` grows


def tokenize_corpus(spec: str, modality: str, tokenizer: str, documents: str = "files", column: str = "") -> dict:
    """Child: tokenize ``spec`` into the token store (``GENERATOR_CACHE_DIR``); wall time and peak memory.
    Tokenizer ``grow`` grows the characters ``GROWN_FROM`` as fine-tuning does (``finetune.GrowingChars``)."""
    from generator.data import corpora, dataset

    started = time.perf_counter()
    corpus = corpora.open_corpus(spec, modality, documents=documents, column=column)
    if tokenizer == "grow":
        from generator.data.tokenizers.chars import CharTokenizer
        from generator.training.finetune import GrowingChars

        factory = GrowingChars(CharTokenizer("".join(sorted(GROWN_FROM))))
    else:
        factory = dataset.TokenizerFactory(tokenizer)
    data = dataset.tokenize(corpus, factory, log=lambda m: None)
    seconds = time.perf_counter() - started
    return {
        "tokens": int(len(data.ids)),
        "documents": int(data.num_documents),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(_peak_mb()),
        "workers_peak_rss_mb": round(_peak_mb(resource.RUSAGE_CHILDREN)),
    }


def train_steps(spec: str, steps: int, val_tokens: int, documents: str = "files", column: str = "") -> dict:
    """Child: one epoch's first ``steps`` steps of a small model on ``spec`` (already tokenized)."""
    from benchmarks.common import quiet_tensorflow

    quiet_tensorflow()
    import generator

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        generator.train(
            spec,
            Path(out) / "run",
            epochs=1,
            steps_per_epoch=steps,
            layers=1,
            units=64,
            embedding=32,
            seq_len=100,
            batch_size=64,
            val_tokens=val_tokens,
            documents=documents,
            column=column,
            log=lambda m: None,
            progress=False,
        )
        seconds = time.perf_counter() - started
    return {"steps": steps, "seconds": round(seconds, 1), "peak_rss_mb": round(_peak_mb())}


def text(sizes: list[float], steps: int, val_tokens: int) -> None:
    for gigabytes in sizes:
        folder = Path(tempfile.mkdtemp(prefix="generator-scale-"))
        try:
            path = folder / "corpus.txt"
            write_text(path, int(gigabytes * GB))
            env = child_env(GENERATOR_CACHE_DIR=str(folder / "cache"))
            tokenized = _child(["_tokenize", str(path), "text", "chars"], env)
            trained = _child(["_train", str(path), str(steps), str(val_tokens)], env)
            print(
                json.dumps(
                    {
                        "corpus": f"{gigabytes:g} GB synthetic text",
                        "bytes": path.stat().st_size,
                        "tokenize": {
                            **tokenized,
                            "mb_per_s": round(path.stat().st_size / 1e6 / tokenized["seconds"], 1),
                        },
                        "train_first_steps": trained,
                        "load_average": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def documents(sizes: list[float], kinds: list[str], steps: int, val_tokens: int) -> None:
    """Peak memory of tokenizing short documents (lines, CSV and JSONL columns) and a grown vocabulary,
    and with ``steps``, of that many training steps on each corpus of short documents."""
    for gigabytes in sizes:
        for kind in kinds:
            folder = Path(tempfile.mkdtemp(prefix="generator-scale-"))
            try:
                suffix = {"csv": ".csv", "jsonl": ".jsonl"}.get(kind, ".txt")
                path = folder / f"corpus{suffix}"
                if kind in ("csv", "jsonl"):
                    write_table(path, int(gigabytes * GB), kind)
                else:
                    write_text(path, int(gigabytes * GB))
                options = {
                    "lines": ["chars", "lines", ""],
                    "csv": ["chars", "files", "title"],
                    "jsonl": ["chars", "files", "title"],
                    "grow": ["grow", "files", ""],
                }[kind]
                env = child_env(GENERATOR_CACHE_DIR=str(folder / "cache"))
                tokenized = _child(["_tokenize", str(path), "text", *options], env)
                trained = {}
                if steps and kind != "grow":
                    trained = {
                        "train_first_steps": _child(
                            ["_train", str(path), str(steps), str(val_tokens), *options[1:]], env
                        )
                    }
                print(
                    json.dumps(
                        {
                            "corpus": f"{gigabytes:g} GB synthetic {kind}",
                            "bytes": path.stat().st_size,
                            "tokenize": {
                                **tokenized,
                                "mb_per_s": round(path.stat().st_size / 1e6 / tokenized["seconds"], 1),
                            },
                            **trained,
                            "load_average": os.getloadavg()[0],
                        }
                    ),
                    flush=True,
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def _copies(corpus: Path, files: int, folder: Path) -> None:
    """Hard links (symbolic where those fail) to the MIDI files of ``corpus`` until ``folder`` holds ``files``."""
    sources = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    for i in range(files):
        source = sources[i % len(sources)]
        target = folder / f"{i // 1000:03d}" / f"{i:06d}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            os.symlink(source.resolve(), target)


def midi(corpus: Path, counts: list[int], tokenizer: str) -> None:
    for files in counts:
        folder = Path(tempfile.mkdtemp(prefix="generator-scale-"))
        try:
            _copies(corpus, files, folder / "songs")
            env = child_env(GENERATOR_CACHE_DIR=str(folder / "cache"))
            result = _child(["_tokenize", str(folder / "songs"), "music", tokenizer], env)
            print(
                json.dumps(
                    {
                        "corpus": f"{files:,} MIDI files (copies of {corpus.name})",
                        "tokenizer": tokenizer,
                        **result,
                        "files_per_s": round(files / result["seconds"], 1),
                        "cores": os.cpu_count(),
                        "load_average": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _read_notes(name: str) -> int:
    """Worker: read one MIDI file's notes (as arrays); their count."""
    from generator.data import midi_fast

    return len(midi_fast.read_arrays(name).pitch)


def read(corpus: Path, workers: int, baseline: int) -> None:
    """MIDI files per second read by ``workers`` processes, symusic first and pretty_midi alone."""
    from benchmarks.scale import _read_notes as read_notes  # by module name, not __main__, for the workers
    from generator.data import limits, midi_fast

    files = sorted(str(p) for p in corpus.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    rates = {}
    for reader, chosen in (("symusic", files), ("pretty_midi", files[:baseline])):
        os.environ[midi_fast.READER_ENV] = "pretty_midi" if reader == "pretty_midi" else "auto"
        notes, stamps = 0, []
        for _, ok, value in limits.map_bounded(read_notes, chosen, workers=workers):
            if not ok:
                raise SystemExit(value)
            notes += value
            stamps.append(time.perf_counter())
        cpu = time.process_time()
        for name in chosen:  # the same reads in this process: CPU seconds, which a loaded machine stretches less
            read_notes(name)
        cpu = time.process_time() - cpu
        timed = len(stamps) - workers  # the clock starts at the first result of every worker: start-up not timed
        seconds = stamps[-1] - stamps[workers - 1]
        rates[reader] = timed / seconds
        print(
            json.dumps(
                {
                    "reader": reader,
                    "files": len(chosen),
                    "notes": notes,
                    "timed_files": timed,
                    "seconds": round(seconds, 2),
                    "files_per_s": round(rates[reader], 1),
                    "workers": workers,
                    "files_per_cpu_second": round(len(chosen) / cpu, 1),
                    "load_average": os.getloadavg()[0],
                }
            ),
            flush=True,
        )
    print(json.dumps({"symusic_over_pretty_midi": round(rates["symusic"] / rates["pretty_midi"], 1)}))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_tokenize":
        print(json.dumps(tokenize_corpus(*argv[1:6])))
        return
    if argv and argv[0] == "_train":
        print(json.dumps(train_steps(argv[1], int(argv[2]), int(argv[3]), *argv[4:6])))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("text", help="Peak memory of tokenizing and training on synthetic text of these sizes.")
    t.add_argument(
        "--gigabytes", type=float, nargs="+", default=[1.0, 4.0], help="Sizes of the synthetic corpora in GiB."
    )
    t.add_argument("--steps", type=int, default=200, help="Training steps measured (one epoch's first).")
    t.add_argument("--val-tokens", type=int, default=200_000, help="The validation cap of the training run.")
    m = sub.add_parser("midi", help="Tokenizing many copies of a MIDI corpus: time, files per second, peak memory.")
    m.add_argument("--corpus", type=Path, required=True, help="A folder of MIDI files to copy (POP909).")
    m.add_argument("--files", type=int, nargs="+", default=[10_000], help="How many files to tokenize.")
    m.add_argument("--tokenizer", default="band", help="The tokenizer to use.")
    r = sub.add_parser("read", help="MIDI files per second read with symusic against pretty_midi.")
    r.add_argument("--corpus", type=Path, required=True, help="A folder of MIDI files (POP909).")
    r.add_argument("--workers", type=int, default=2, help="Worker processes reading the files.")
    r.add_argument("--baseline", type=int, default=100, help="Files read with pretty_midi for the ratio.")
    d = sub.add_parser("documents", help="Peak memory of tokenizing short documents and a grown vocabulary.")
    d.add_argument("--gigabytes", type=float, nargs="+", default=[1.0], help="Sizes of the synthetic files in GiB.")
    d.add_argument(
        "--kinds",
        nargs="+",
        choices=["lines", "csv", "jsonl", "grow"],
        default=["lines", "csv", "jsonl", "grow"],
        help="Which corpora to measure: lines of text, CSV and JSONL columns, a fine-tuning run's grown vocabulary.",
    )
    d.add_argument("--steps", type=int, default=0, help="Training steps also measured on each corpus (0: none).")
    d.add_argument("--val-tokens", type=int, default=200_000, help="The validation cap of the training runs.")
    args = parser.parse_args(argv)
    if args.what == "documents":
        documents(args.gigabytes, args.kinds, args.steps, args.val_tokens)
    elif args.what == "text":
        text(args.gigabytes, args.steps, args.val_tokens)
    elif args.what == "midi":
        midi(args.corpus, args.files, args.tokenizer)
    else:
        read(args.corpus, args.workers, args.baseline)


if __name__ == "__main__":
    main()
