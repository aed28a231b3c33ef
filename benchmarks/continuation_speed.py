"""How long ``generate-music`` takes to continue a whole song: 30 seconds after a 4-minute one.

    python -m benchmarks.continuation_speed [--checkpoint pop-piano] [--seed SONG.mid] [--runs 3]

Times ``Generator.generate(seed=song, seconds=30)`` as the command line runs it (reading the seed,
encoding it, priming the model with the end of the seed, constrained sampling, decoding and putting
the continuation after the seed), with the model already loaded. Without ``--seed`` the song is a
4-minute pop-like piece built here (a melody over broken chords at 96 bpm). The first run includes
tracing and compiling the decode step; the best later run is what a second request costs.
The target (under 10 s on this project's 2-core CPU) is printed beside the figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import time

from generator.data.notes import Instrument, Note, NoteSequence

TARGET_SECONDS = 10.0


def four_minute_song(bpm: float = 96.0, seconds: float = 240.0) -> NoteSequence:
    """A melody (track 0) over broken chords (track 1), I-vi-IV-V in C, ``seconds`` long."""
    beat = 60.0 / bpm
    chords = [(48, 52, 55, 60), (45, 48, 52, 57), (41, 45, 48, 53), (43, 47, 50, 55)]
    tune = [64, 67, 69, 67, 64, 62, 60, 62, 64, 60, 59, 60, 65, 64, 62, 67]
    notes, bar = [], 0
    while (bar + 1) * 4 * beat <= seconds:
        start = bar * 4 * beat
        chord = chords[bar % 4]
        for i in range(8):  # eighth-note broken chord
            notes.append(Note(chord[i % 4], start + i * beat / 2, start + (i + 1) * beat / 2, 60, 0, False, 1))
        for i in range(4):
            notes.append(
                Note(tune[(bar * 4 + i) % len(tune)] + 12, start + i * beat, start + (i + 0.95) * beat, 90, 0, False, 0)
            )
        bar += 1
    notes.sort(key=lambda n: (n.start, n.pitch))
    return NoteSequence(
        notes=notes,
        tempos=[(0.0, bpm)],
        instruments=[Instrument(0, name="melody"), Instrument(0, name="piano")],
        source="four-minute song",
    )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.continuation_speed", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="pop-piano", help="The bundled checkpoint name or run directory to time.")
    p.add_argument(
        "--seed",
        default=None,
        metavar="FILE",
        help="The song to continue (a MIDI file or score); without it a 4-minute song built here.",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="Seconds of new music to generate (default 30).")
    p.add_argument("--runs", type=int, default=3, help="How many timed runs (the first includes compiling).")
    p.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = p.parse_args(argv)

    import generator
    from generator.generation.compose import read_seed

    started = time.perf_counter()
    model = generator.load(args.checkpoint)
    load_seconds = time.perf_counter() - started
    song = read_seed(args.seed) if args.seed else four_minute_song()
    times, generated = [], 0.0
    for run in range(args.runs):
        started = time.perf_counter()
        seed = read_seed(args.seed) if args.seed else song
        piece = model.generate(seed=seed, seconds=args.seconds, random_seed=run, log=lambda _: None)
        times.append(time.perf_counter() - started)
        generated = piece.sequence.end_time - piece.continuation_start
    result = {
        "checkpoint": args.checkpoint,
        "song": args.seed or song.source,
        "song_seconds": round(song.end_time, 1),
        "asked_seconds": args.seconds,
        "generated_seconds": round(generated, 1),
        "load_seconds": round(load_seconds, 2),
        "first_run_seconds": round(times[0], 2),
        "best_later_run_seconds": round(min(times[1:]), 2) if len(times) > 1 else None,
        "target_seconds": TARGET_SECONDS,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.checkpoint}: {result['generated_seconds']} s continuing a {result['song_seconds']} s song: "
            f"first run {result['first_run_seconds']} s (with compiling), best later run "
            f"{result['best_later_run_seconds']} s; model load {result['load_seconds']} s; "
            f"target under {TARGET_SECONDS:.0f} s"
        )
    return result


if __name__ == "__main__":
    main()
