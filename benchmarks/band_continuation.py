"""How long continuing a 4-minute, 10-track song by 30 seconds takes, as a whole command and by phase.

    python benchmarks/band_continuation.py [--checkpoint band] [--seed SONG.mid] [--runs 3] [--json]

The whole command is ``generate-music --seed SONG --seconds 30 --checkpoint band`` in a fresh
process (Python start, TensorFlow import, model load, reading, encoding, priming, sampling,
writing), timed ``--runs`` times. In this process the phases are timed once more, with the model
already loaded: reading the seed, encoding it, and ``Generator.generate`` (priming, constrained
sampling, decoding, putting the continuation on the seed's tracks), then writing the file.
Without ``--seed`` the song is built here: 240 s at 112 bpm of drums, bass, two guitars, piano,
organ, strings, brass, a synth pad and a lead. The targets (a whole command under 20 s; under
15 s for load, tokenize, prime, sample, write) are printed beside the figures, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from generator.data.notes import Instrument, Note, NoteSequence

COMMAND_TARGET = 20.0
PHASES_TARGET = 15.0


def ten_track_song(bpm: float = 112.0, seconds: float = 240.0) -> NoteSequence:
    """A 4/4 song of ten tracks over I-V-vi-IV in G, ``seconds`` long."""
    beat = 60.0 / bpm
    roots = [43, 50, 52, 48]  # G D E C
    thirds = [4, 4, 3, 4]
    parts = [
        ("Drums", 0, True),
        ("Bass", 33, False),
        ("Rhythm guitar", 29, False),
        ("Lead guitar", 27, False),
        ("Piano", 0, False),
        ("Organ", 16, False),
        ("Strings", 48, False),
        ("Brass", 61, False),
        ("Pad", 89, False),
        ("Lead", 80, False),
    ]
    notes = []
    bars = int(seconds / (4 * beat))
    for bar in range(bars):
        t0, root, third = bar * 4 * beat, roots[bar % 4], thirds[bar % 4]
        chord = [root + 12, root + 12 + third, root + 19]
        for i in range(8):  # drums: kick, snare, hats
            t = t0 + i * beat / 2
            notes.append(Note(42, t, t + 0.05, 70, 0, True, 0))
            if i % 4 == 0:
                notes.append(Note(36, t, t + 0.05, 100, 0, True, 0))
            if i % 4 == 2:
                notes.append(Note(38, t, t + 0.05, 95, 0, True, 0))
        for i in range(4):
            notes.append(Note(root - 12 + (7 if i == 2 else 0), t0 + i * beat, t0 + (i + 0.9) * beat, 90, 33, False, 1))
        for i in range(8):
            for p in chord:
                notes.append(Note(p, t0 + i * beat / 2, t0 + (i + 0.4) * beat / 2, 70, 29, False, 2))
        for i in range(4):
            notes.append(Note(chord[i % 3] + 24, t0 + i * beat, t0 + (i + 0.5) * beat, 80, 27, False, 3))
        for i in (0, 2):
            for p in chord:
                notes.append(Note(p + 12, t0 + i * beat, t0 + (i + 1.8) * beat, 60, 0, False, 4))
        for p in chord:
            notes.append(Note(p, t0, t0 + 4 * beat, 50, 16, False, 5))
            notes.append(Note(p + 12, t0, t0 + 4 * beat, 45, 48, False, 6))
            notes.append(Note(p - 12 + 24, t0, t0 + 4 * beat, 40, 89, False, 8))
        if bar % 2:
            notes += [Note(p + 12, t0 + 3 * beat, t0 + 3.5 * beat, 85, 61, False, 7) for p in chord]
        tune = [chord[0] + 24, chord[1] + 24, chord[2] + 12, chord[1] + 24]
        notes += [Note(tune[i], t0 + i * beat, t0 + (i + 0.95) * beat, 95, 80, False, 9) for i in range(4)]
    notes.sort(key=lambda n: (n.start, n.track, n.pitch))
    return NoteSequence(
        notes=notes,
        tempos=[(0.0, bpm)],
        instruments=[Instrument(p, d, name) for name, p, d in parts],
        source="ten-track song",
    )


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="band", help="The bundled checkpoint name or run directory to time.")
    p.add_argument(
        "--seed", default=None, metavar="FILE", help="The song to continue; without it a 4-minute song built here."
    )
    p.add_argument("--seconds", type=float, default=30.0, help="Seconds of new music to generate.")
    p.add_argument("--runs", type=int, default=3, help="How many times the whole command is timed.")
    p.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = p.parse_args(argv)

    import generator
    from generator.data.midi_io import write_midi
    from generator.generation.compose import read_seed

    with tempfile.TemporaryDirectory() as folder:
        seed_path = Path(args.seed) if args.seed else write_midi(ten_track_song(), Path(folder) / "song.mid")
        command = [
            sys.executable,
            "-c",
            "from generator.cli.main import generate_music; generate_music()",
            "--seed",
            str(seed_path),
            "--seconds",
            str(args.seconds),
            "--checkpoint",
            args.checkpoint,
            "--output",
            str(Path(folder) / "out.mid"),
            "--force",
            "--random-seed",
            "1",
        ]
        whole = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            whole.append(time.perf_counter() - started)
            if result.returncode != 0:
                raise SystemExit(f"generate-music failed: {result.stderr.strip().splitlines()[-1:]}")
        phases = {}
        started = time.perf_counter()
        model = generator.load(args.checkpoint)
        phases["load"] = time.perf_counter() - started
        started = time.perf_counter()
        song = read_seed(seed_path)
        phases["read"] = time.perf_counter() - started
        started = time.perf_counter()
        ids = model.tokenizer.for_seed(song).encode(song)
        phases["tokenize"] = time.perf_counter() - started
        started = time.perf_counter()
        piece = model.generate(seed=song, seconds=args.seconds, random_seed=1, log=lambda _: None)
        phases["prime_sample_decode"] = time.perf_counter() - started
        started = time.perf_counter()
        piece.save(Path(folder) / "again.mid", force=True)
        phases["write"] = time.perf_counter() - started
    tracks = len({n.track for n in song.notes})
    result = {
        "checkpoint": args.checkpoint,
        "song_seconds": round(song.end_time, 1),
        "tracks": tracks,
        "seed_tokens": len(ids),
        "generated_seconds": round(piece.sequence.end_time - piece.continuation_start, 1),
        "command_seconds": [round(t, 2) for t in whole],
        "command_best_seconds": round(min(whole), 2),
        "phases_seconds": {k: round(v, 2) for k, v in phases.items()},
        "phases_total_seconds": round(sum(phases.values()), 2),
        "command_target_seconds": COMMAND_TARGET,
        "phases_target_seconds": PHASES_TARGET,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.checkpoint}: {result['generated_seconds']} s after a {result['song_seconds']} s, {tracks}-track song "
            f"({len(ids):,} tokens): whole command {', '.join(f'{t:.1f}' for t in whole)} s (target under "
            f"{COMMAND_TARGET:.0f} s); in process "
            + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
            + f" = {result['phases_total_seconds']:.1f} s (target under {PHASES_TARGET:.0f} s)"
        )
    return result


if __name__ == "__main__":
    main()
