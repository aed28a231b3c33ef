"""Benchmark of the harmonizer: speed, and its chorales beside Bach's and the left-to-right model's.

    python -m benchmarks.harmonizer_quality --corpus $CORPORA/jsb-chorales/Jsb16thSeparated.train-valid.json

1. Speed: seconds to harmonize a 64-beat melody (the first 256 steps of the soprano of the
   first valid chorale that long), one sample, default iterations, after a warm-up call.
2. Quality: the soprano of every chorale of the JSB valid split (never trained on) harmonized
   by the harmonizer (seed = chorale index), by the left-to-right ``jsb-chorales`` model with
   the soprano token forced at every step (it cannot look ahead), and Bach's own chorales;
   the music statistics of ``generator.evaluation.features`` for each: the mean per piece, and
   parallel fifths and octaves pooled over all chord changes. Both models draw each voice only
   within the harmonizer's voice ranges (REST allowed), so they are compared under the same rule.
   The harmonizer samples under its voice-leading rules (``--no-voice-leading``: without them,
   the speed measurement included); the left-to-right model here samples without them.

Prints a Markdown table (``--json`` for one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from generator.data.tokenizers.base import BOS
from generator.data.tokenizers.voices import NUM_VOICES, PITCH_OFFSET, REST

FEATURES = (
    "parallel_fifths_octaves",
    "parallel_fifths",
    "parallel_octaves",
    "voice_crossing",
    "spacing",
    "out_of_range",
    "pitch_class_entropy",
    "scale_consistency",
    "mean_abs_interval",
    "notes_per_beat",
)


def soprano_grid(grid: np.ndarray) -> np.ndarray:
    out = np.full_like(grid, -1)
    out[:, 0] = grid[:, 0]
    return out


def harmonize_all(
    generator, chorales, iterations: int, temperature: float, group: int = 8, voice_leading: bool = True
) -> list[np.ndarray]:
    """Each chorale's soprano harmonized (seed = index), in batches of similar length padded with BOS frames."""
    from generator.generation.harmonize import GibbsSampler

    tokenizer = generator.tokenizer
    sampler = GibbsSampler(generator.run.model, tokenizer, voice_leading=voice_leading)
    order = np.argsort([len(c) for c in chorales])
    results: list = [None] * len(chorales)
    for first in range(0, len(order), group):
        members = order[first : first + group]
        steps = max(len(chorales[i]) for i in members)
        cells = np.full((len(members), steps, NUM_VOICES), BOS, np.int64)
        free = np.zeros(cells.shape, bool)
        for row, i in enumerate(members):
            n = len(chorales[i])
            ids = np.asarray(tokenizer.ids_from_grid(soprano_grid(chorales[i])), np.int64).reshape(n, NUM_VOICES)
            cells[row, :n] = ids
            free[row, :n, 1:] = True
        rng = np.random.default_rng(int(members[0]))
        out = sampler.sample(cells, free, iterations, temperature, rng)
        for row, i in enumerate(members):
            n = len(chorales[i])
            results[i] = tokenizer.grid_from_ids(out[row, :n].ravel())
    return results


def left_to_right_all(generator, chorales, temperature: float, seed: int = 0) -> list[np.ndarray]:
    """Each chorale's soprano forced into the left-to-right voices model, alto, tenor and bass sampled."""
    import tensorflow as tf

    from generator.generation.harmonize import VOICE_RANGES

    tokenizer = generator.tokenizer
    decoder = generator.decoder
    step = tf.function(decoder.step, reduce_retracing=True)
    batch = len(chorales)
    steps = max(len(c) for c in chorales)
    soprano = np.full((batch, steps), REST, np.int64)
    for b, c in enumerate(chorales):
        soprano[b, : len(c)] = np.asarray(tokenizer.ids_from_grid(soprano_grid(c)), np.int64).reshape(-1, 4)[:, 0]
    penalty = np.full((NUM_VOICES, tokenizer.vocab_size), -np.inf)
    penalty[:, REST] = 0.0
    for v, (low, high) in enumerate(VOICE_RANGES):
        penalty[v, low - tokenizer.low + PITCH_OFFSET : high - tokenizer.low + PITCH_OFFSET + 1] = 0.0
    rng = np.random.default_rng(seed)
    states = decoder.zero_states(batch)
    logits, states = step(tf.constant(np.full(batch, BOS, np.int32)), states)
    out = np.zeros((batch, steps, NUM_VOICES), np.int64)
    for t in range(steps):
        for v in range(NUM_VOICES):
            if v == 0:
                token = soprano[:, t]
            else:
                z = np.asarray(logits, np.float64) / temperature + penalty[v]
                z -= z.max(axis=1, keepdims=True)
                cumulative = np.cumsum(np.exp(z), axis=1)
                draws = (1.0 - rng.random(batch))[:, None] * cumulative[:, -1:]
                token = np.minimum((cumulative < draws).sum(axis=1), tokenizer.vocab_size - 1)
            out[:, t, v] = token
            logits, states = step(tf.constant(token.astype(np.int32)), states)
    return [tokenizer.grid_from_ids(out[b, : len(c)].ravel()) for b, c in enumerate(chorales)]


def statistics(grids) -> dict:
    """Mean of each feature over the pieces, and parallels pooled over every chord change."""
    from generator.evaluation.features import parallel_counts, piece_features

    rows = [piece_features(g) for g in grids]
    summary = {}
    for name in FEATURES:
        values = [r[name] for r in rows if r.get(name) is not None]
        summary[name] = float(np.mean(values)) if values else None
    counts = np.array([parallel_counts(g) for g in grids]).sum(axis=0)
    summary["pooled_parallel_fifths_octaves"] = float((counts[0] + counts[1]) / max(counts[2], 1))
    summary["chord_changes"] = int(counts[2])
    return summary


def speed(generator, chorales, iterations: int, voice_leading: bool = True) -> dict:
    long = next(c for c in chorales if len(c) >= 256)
    melody = long[:256, 0]
    generator.harmonize(
        melody[:32], iterations=2, random_seed=0, voice_leading=voice_leading
    )  # warm-up: tracing the forward pass
    start, cpu = time.perf_counter(), time.process_time()
    generator.harmonize(melody, iterations=iterations, random_seed=1, voice_leading=voice_leading)
    return {
        "beats": 64,
        "iterations": iterations,
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description="Harmonizer benchmark: speed, and statistics beside Bach and the "
        "left-to-right model on the JSB valid split."
    )
    p.add_argument("--corpus", required=True, help="The JSB Chorales JSON file.")
    p.add_argument("--checkpoint", default="harmonizer", help="The harmonizer checkpoint (default: harmonizer).")
    p.add_argument("--baseline", default="jsb-chorales", help="The left-to-right voices checkpoint to compare with.")
    p.add_argument("--iterations", type=int, default=100, help="Gibbs iterations per piece (default 100).")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="The harmonizer's --temperature (the last iteration's; the first samples at twice it).",
    )
    p.add_argument(
        "--baseline-temperatures",
        default="1.0,0.5",
        help="The left-to-right model's temperatures, comma-separated (one column each; default 1.0,0.5).",
    )
    p.add_argument("--limit", type=int, default=0, help="Only the first N valid chorales (0: all).")
    p.add_argument("--skip-speed", action="store_true", help="Leave out the speed measurement.")
    p.add_argument(
        "--no-voice-leading",
        action="store_true",
        help="Harmonize without the voice-leading rules (no crossing, spacing within an octave, no "
        "parallel fifths or octaves) that the sampler applies by default.",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = p.parse_args(argv)
    from benchmarks.common import quiet_tensorflow

    quiet_tensorflow()
    from generator import api
    from generator.data.chorales import read_jsb_json

    every = read_jsb_json(args.corpus, "valid")
    chorales = every[: args.limit] if args.limit else every
    harmonizer = api.load(args.checkpoint)
    temperatures = [float(t) for t in args.baseline_temperatures.split(",")]
    report = {
        "pieces": len(chorales),
        "iterations": args.iterations,
        "temperature": args.temperature,
        "baseline_temperatures": temperatures,
        "voice_leading": not args.no_voice_leading,
    }
    if not args.skip_speed:
        report["speed"] = speed(harmonizer, every, args.iterations, not args.no_voice_leading)
    start = time.perf_counter()
    sets = {
        "bach": chorales,
        "harmonizer": harmonize_all(
            harmonizer, chorales, args.iterations, args.temperature, voice_leading=not args.no_voice_leading
        ),
    }
    report["harmonizer_seconds"] = round(time.perf_counter() - start, 1)
    baseline = api.load(args.baseline)
    for t in temperatures:
        sets[f"left_to_right_t{t:g}"] = left_to_right_all(baseline, chorales, t)
    report["sets"] = {name: statistics(grids) for name, grids in sets.items()}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    names = list(report["sets"])
    print(
        f"{report['pieces']} JSB valid chorales; harmonizer {args.iterations} iterations from twice temperature "
        f"{args.temperature} (harmonizing took {report['harmonizer_seconds']} s); left-to-right temperatures "
        f"{args.baseline_temperatures}"
    )
    if "speed" in report:
        sp = report["speed"]
        print(
            f"speed: 64-beat melody harmonized in {sp['seconds']} s ({sp['cpu_seconds']} s of CPU time; "
            f"load average {sp['load_average']} on this machine's {os.cpu_count()} cores)"
        )
    print("| statistic | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key in ("pooled_parallel_fifths_octaves",) + FEATURES + ("chord_changes",):
        cells = []
        for name in names:
            value = report["sets"][name][key]
            cells.append("n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
