"""Benchmark of ``generator music-stats``: seconds to read, featurize and compare 1,000 pieces.

    python -m benchmarks.music_stats_speed [--folder DIR] [--pieces 1000]
    PYTHONPATH=DIR_WITH_MUSPY python -m benchmarks.music_stats_speed --muspy   # our features beside MusPy's

With ``--folder`` (default: the POP909 MIDI files in ``$GENERATOR_CORPORA_DIR/pop909`` when present)
the pieces are real MIDI files read with the project's reader on every core, files repeated in
order until there are ``--pieces`` of them; without one they are random two-track pieces made
in memory (no reading). The set is compared with itself shifted by half (two different orders
of the same pieces, so every distance is computed).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

DEFAULT_FOLDER = (
    Path(os.environ["GENERATOR_CORPORA_DIR"]).expanduser() / "pop909"  # POP909, if there
    if os.environ.get("GENERATOR_CORPORA_DIR")
    else None
)


def random_pieces(count: int, seed: int = 0) -> list:
    """``count`` random two-track pieces of 200-600 notes in memory."""
    from generator.data.notes import Instrument, Note, NoteSequence

    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        n = int(rng.integers(200, 600))
        starts = np.cumsum(rng.choice([0.125, 0.25, 0.5], n))
        notes = [
            Note(int(p), float(s), float(s + d), track=int(t))
            for p, s, d, t in zip(
                rng.integers(40, 90, n), starts, rng.choice([0.25, 0.5, 1.0], n), rng.integers(0, 2, n)
            )
        ]
        pieces.append(
            NoteSequence(
                notes=notes, tempos=[(0.0, float(rng.integers(70, 150)))], instruments=[Instrument(), Instrument(33)]
            )
        )
    return pieces


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (the reading pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(folder: Path | None, pieces: int = 1000) -> dict:
    """Time each stage (wall and CPU seconds); returns the figures and the piece count."""
    from generator.data.corpora import MUSIC_SUFFIXES, read_music_files
    from generator.evaluation.compare import compare_sets, feature_table

    timings = {}
    cpu = _cpu()
    start = time.perf_counter()
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MUSIC_SUFFIXES)
        files = [files[i % len(files)] for i in range(pieces)]
        docs = read_music_files(files, report=lambda message: None)
        timings["read"] = time.perf_counter() - start
    else:
        docs = random_pieces(pieces)
        timings["read"] = 0.0
    timings["read_cpu"], cpu = _cpu() - cpu, _cpu()
    start = time.perf_counter()
    table = feature_table(docs)
    timings["features"] = time.perf_counter() - start
    timings["features_cpu"], cpu = _cpu() - cpu, _cpu()
    start = time.perf_counter()
    compare_sets(table, np.roll(table, len(table) // 2, axis=0))
    timings["compare"] = time.perf_counter() - start
    timings["compare_cpu"] = _cpu() - cpu
    timings["total"] = timings["read"] + timings["features"] + timings["compare"]
    timings["total_cpu"] = timings["read_cpu"] + timings["features_cpu"] + timings["compare_cpu"]
    return {"pieces": len(docs), "source": str(folder) if folder else "random in memory", **timings}


MUSPY_PAIRS = {
    "pitch_class_entropy": "pitch_class_entropy",
    "scale_consistency": "scale_consistency",
    "pitch_range": "pitch_range",
    "n_pitches_used": "distinct_pitches",
    "polyphony": "polyphony",
    "empty_beat_rate": "empty_beat_rate",
    "groove_consistency": "groove_consistency",
}


def compare_with_muspy(folder: Path, pieces: int = 100) -> list[str]:
    """Our features beside MusPy's metrics on the same files: CPU seconds, and means and correlation per metric.

    MusPy is not a dependency: install it aside (``pip install --target DIR --no-deps muspy bidict
    pypianoroll miditoolkit``) and put DIR on PYTHONPATH. Its groove consistency is taken over bars
    of four beats at the file's own resolution, as MusPy computes it.
    """
    import warnings

    import muspy
    import pretty_midi

    from generator.data.midi_io import read_midi
    from generator.evaluation.features import piece_features

    warnings.filterwarnings("ignore")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mid", ".midi"))[:pieces]
    midis, docs = [pretty_midi.PrettyMIDI(str(f)) for f in files], [read_midi(f) for f in files]
    cpu = time.process_time()
    music = [muspy.from_pretty_midi(pm) for pm in midis]
    values = {
        name: [
            getattr(muspy, name)(m, m.resolution * 4) if name == "groove_consistency" else getattr(muspy, name)(m)
            for m in music
        ]
        for name in MUSPY_PAIRS
    }
    theirs = time.process_time() - cpu
    cpu = time.process_time()
    ours = [piece_features(d) for d in docs]
    mine = time.process_time() - cpu
    lines = [
        f"{len(files)} files of {folder}, CPU seconds: MusPy {muspy.__version__} conversion and "
        f"{len(MUSPY_PAIRS)} metrics {theirs:.2f}; our {len(ours[0])} features {mine:.2f}"
    ]
    for name, our_name in MUSPY_PAIRS.items():
        a = np.array(values[name], float)
        b = np.array([f[our_name] if f[our_name] is not None else np.nan for f in ours], float)
        ok = ~(np.isnan(a) | np.isnan(b))
        lines.append(
            f"{name:<20} MusPy {a[ok].mean():.4f} +- {a[ok].std():.4f}   ours ({our_name}) "
            f"{b[ok].mean():.4f} +- {b[ok].std():.4f}   correlation {np.corrcoef(a[ok], b[ok])[0, 1]:.3f}"
        )
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Time music-stats on 1,000 pieces.")
    p.add_argument("--folder", default=None, help="A folder of MIDI files (default: POP909 when present).")
    p.add_argument("--pieces", type=int, default=1000, help="How many pieces (default 1000).")
    p.add_argument("--random", action="store_true", help="Use random pieces made in memory instead of files.")
    p.add_argument(
        "--muspy",
        action="store_true",
        help="Instead, compare our features with MusPy's metrics on the first 100 files of the folder "
        "(needs MusPy importable; it is not a dependency).",
    )
    args = p.parse_args(argv)
    folder = (
        None
        if args.random
        else Path(args.folder)
        if args.folder
        else (DEFAULT_FOLDER if DEFAULT_FOLDER and DEFAULT_FOLDER.is_dir() else None)
    )
    if args.muspy:
        if folder is None:
            raise SystemExit("--muspy needs a folder of MIDI files (--folder)")
        print("\n".join(compare_with_muspy(folder)))
        return
    r = run(folder, args.pieces)
    print(
        f"{r['pieces']} pieces ({r['source']}), wall seconds (CPU seconds): read {r['read']:.1f} "
        f"({r['read_cpu']:.1f}), features {r['features']:.1f} ({r['features_cpu']:.1f}), compare "
        f"{r['compare']:.1f} ({r['compare_cpu']:.1f}), total {r['total']:.1f} ({r['total_cpu']:.1f})"
    )


if __name__ == "__main__":
    main()
