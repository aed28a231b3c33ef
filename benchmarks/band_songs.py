"""Continue held-out songs cut at 60 s by 20 s and ask whether the whole band keeps playing.

    python benchmarks/band_songs.py --songs DIR [--count 50] [--checkpoint auto|band|pop-piano|DIR]
                                    [--cut 60] [--seconds 20] [--repetition R] [--json out.json] [--png roll.png [--png-song N]]

For each song (a MIDI file under DIR with at least ``cut + seconds`` of music), the seed is the
song's first ``cut`` seconds; the model continues it by ``seconds`` with the defaults of
``generate-music`` (the model chosen from the seed's content with ``auto``, its recommended
top-p, temperature 1, random seed = the song's index). The same figures are computed for the
real next ``seconds`` of the song and for a shuffled baseline (the real next seconds of the
next song in the list, its tracks laid on this seed's tracks by rank of median pitch, drums on
drums), and printed side by side with the mean over songs (``generator.evaluation.arrangement``).
Uses the public API only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from generator import api
from generator.data.notes import NoteSequence
from generator.errors import GeneratorError
from generator.evaluation.arrangement import arrangement_figures, density_ratio, summarize
from generator.generation.choose import choose_checkpoint
from generator.generation.compose import notes_after, read_seed


def cut(song: NoteSequence, start: float, end: float) -> NoteSequence:
    """The notes of ``song`` starting in [start, end), cut at ``end``, in the song's time."""
    return dataclasses.replace(song, notes=notes_after(song, start, end - start))


def shuffled(seed: NoteSequence, other: NoteSequence, start: float) -> NoteSequence:
    """``other``'s notes laid on ``seed``'s tracks: pitched tracks by rank of median pitch, drums on drums."""

    def ranked(seq):
        tracks = {}
        for n in seq.notes:
            if not n.is_drum:
                tracks.setdefault(n.track, []).append(n.pitch)
        return sorted(tracks, key=lambda t: np.median(tracks[t]))

    mine, theirs = ranked(seed), ranked(other)
    drums = next((n.track for n in seed.notes if n.is_drum), None)
    mapping = (
        {t: mine[min(int(i * len(mine) / max(len(theirs), 1)), len(mine) - 1)] for i, t in enumerate(theirs)}
        if mine
        else {}
    )
    shift = start - min((n.start for n in other.notes), default=start)
    notes = []
    for n in other.notes:
        track = drums if n.is_drum else mapping.get(n.track)
        if track is not None:
            notes.append(dataclasses.replace(n, start=n.start + shift, end=n.end + shift, track=track))
    return dataclasses.replace(seed, notes=notes)


def two_hand_piano(song: NoteSequence) -> bool:
    """Whether ``song`` is a piano piece for two hands: two tracks with notes, both piano, no drums."""
    tracks = {n.track for n in song.notes}
    return (
        len(tracks) == 2
        and not any(n.is_drum for n in song.notes)
        and all(t < len(song.instruments) and song.instruments[t].program < 8 for t in tracks)
    )


def write_roll(music, path, seconds: float) -> None:
    """A piano roll of the seed's last ``seconds`` and the continuation, coloured by track."""
    from generator.data.midi_io import to_pretty_midi
    from generator.generation.render import piano_roll_png

    start = max(music.continuation_start - seconds, 0.0)
    window = cut(music.sequence, start, float("inf"))
    window.notes = [dataclasses.replace(n, start=n.start - start, end=n.end - start) for n in window.notes]
    window.tempos = [(0.0, window.initial_bpm)]
    png = piano_roll_png(
        to_pretty_midi(window),
        music.continuation_start - start,
        title=f"{Path(music.sequence.source).name}: the seed's last {seconds:.0f} s and the continuation",
    )
    Path(path).write_bytes(png)


class NgramIndex:
    """Hashes of every run of ``n`` ids of a long id array, for any ``n``, in a few passes.

    Prefix sums of ``id * B**k`` (mod 2**64, B odd so it has an inverse) give the hash of the run
    at ``i`` of length ``n`` as ``(P[i + n] - P[i]) * B**-i``: one subtraction and one
    multiplication over the array per length, with no loop over ``n``.
    """

    BASE = np.uint64(1_000_003)

    def __init__(self, ids: np.ndarray):
        with np.errstate(over="ignore"):
            count = len(ids) + 1
            powers = np.empty(count, dtype=np.uint64)
            powers[0] = 1
            powers[1:] = self.BASE
            powers = np.cumprod(powers, dtype=np.uint64)
            inverse = np.uint64(pow(int(self.BASE), -1, 1 << 64))
            inverses = np.empty(count, dtype=np.uint64)
            inverses[0] = 1
            inverses[1:] = inverse
            self.inverses = np.cumprod(inverses, dtype=np.uint64)
            prefix = np.zeros(count, dtype=np.uint64)
            prefix[1:] = np.cumsum((ids.astype(np.uint64) + np.uint64(1)) * powers[:-1], dtype=np.uint64)
            self.prefix = prefix

    def hashes(self, n: int, at: np.ndarray | None = None) -> np.ndarray:
        """The hash of the run of ``n`` ids starting at each position (or at the positions ``at``)."""
        with np.errstate(over="ignore"):
            if at is None:
                return (self.prefix[n:] - self.prefix[:-n]) * self.inverses[: len(self.prefix) - n]
            return (self.prefix[at + n] - self.prefix[at]) * self.inverses[at]


def longest_copied_run(sequences: list[np.ndarray], corpus: np.ndarray, longest: int = 4096) -> list[int]:
    """For each id sequence, the length of its longest run found verbatim in ``corpus``.

    A binary search on the length per sequence. A length is tried by hashing the corpus's runs of
    that length (``NgramIndex``) and looking them up among the hashes of all the sequences' runs
    at once; only corpus positions that matched at a shorter length tried before can match at a
    longer one, so after the first tries only those few positions are hashed.
    """
    big = NgramIndex(corpus)
    small = [NgramIndex(s) for s in sequences]
    matched = {0: np.arange(len(corpus), dtype=np.int64)}  # length tried -> corpus positions whose run matched

    def present(n: int) -> np.ndarray:
        shorter = max(k for k in matched if k <= n)
        at = matched[shorter]
        at = at[at + n <= len(corpus)]
        wanted = np.unique(
            np.concatenate([q.hashes(n) for q in small if len(q.prefix) > n] or [np.zeros(0, np.uint64)])
        )
        runs = big.hashes(n, at)
        if not len(wanted):
            matched[n] = at[:0]
            return wanted
        spot = np.minimum(np.searchsorted(wanted, runs), len(wanted) - 1)
        hit = wanted[spot] == runs
        matched[n] = at[hit]
        return np.unique(runs[hit])

    tables = {n: present(n) for n in (8, 32, 128) if n <= longest}  # a ladder first: later tries hash few positions
    found = [0] * len(sequences)
    bounds = [[1, min(longest, len(s))] for s in sequences]
    while any(lo <= hi for lo, hi in bounds):
        middles = sorted((lo + hi) // 2 for lo, hi in bounds if lo <= hi)
        n = middles[len(middles) // 2]  # one sequence's own middle, so every pass narrows a search
        table = tables[n] if n in tables else present(n)
        for i, (lo, hi) in enumerate(bounds):
            if not lo <= n <= hi:
                continue
            if np.isin(small[i].hashes(n), table).any():
                found[i] = max(found[i], n)
                bounds[i][0] = n + 1
            else:
                bounds[i][1] = n - 1
    return found


def originality(tokenizer, corpus_spec: str, generated: list, real: list) -> dict:
    """The longest run of each continuation's tokens found verbatim in the training corpus."""
    from generator.data import corpora, dataset

    corpus = dataset.tokenize(corpora.open_corpus(corpus_spec, "music"), dataset.TokenizerFactory(tokenizer.kind, {}))

    def encode(seq):  # from the first sounding position on: the empty bars before the cut would match anything
        ids = tokenizer.encode(seq)
        first = next((k for k, i in enumerate(ids) if tokenizer.token_name(i).startswith("POS")), len(ids))
        return np.array(ids[first:], dtype=np.int64)

    runs = longest_copied_run([encode(s) for s in generated + real], np.asarray(corpus.ids, dtype=np.int64))
    gen, ref = runs[: len(generated)], runs[len(generated) :]
    return {
        "generated_median": float(np.median(gen)),
        "generated_max": int(max(gen)),
        "real_median": float(np.median(ref)),
        "real_max": int(max(ref)),
        "generated": gen,
        "real": ref,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--songs", required=True, help="A folder of MIDI songs none of the models trained on.")
    p.add_argument(
        "--count", type=int, default=50, help="How many songs to continue (the first usable ones in name order)."
    )
    p.add_argument(
        "--checkpoint", default="auto", help="auto (chosen from each seed, as generate-music does) or a checkpoint."
    )
    p.add_argument("--cut", type=float, default=60.0, help="Seconds of each song that make the seed.")
    p.add_argument("--seconds", type=float, default=20.0, help="Seconds of continuation.")
    p.add_argument(
        "--two-hand-piano",
        action="store_true",
        help="Keep only two-hand piano pieces: exactly two tracks with notes, both on piano programs, no drums.",
    )
    p.add_argument(
        "--repetition",
        type=float,
        default=None,
        help="The sampling's repetition share (generate-music --repetition); default: each model's recommendation.",
    )
    p.add_argument("--json", default=None, help="Write every song's figures to this JSON file.")
    p.add_argument("--png", default=None, help="Draw a song's seed end and continuation to this PNG.")
    p.add_argument(
        "--png-song", type=int, default=1, help="Which song --png draws, counted from 1 (default: the first)."
    )
    p.add_argument(
        "--training-corpus",
        default=None,
        help="The corpus the model trained on: measure the longest run of continuation tokens found in it "
        "verbatim, for the generated and the real continuations (its tokenization must be cached).",
    )
    args = p.parse_args(argv)
    files = sorted(Path(args.songs).rglob("*.mid"))
    songs = []
    for f in files:
        try:
            song = read_seed(f)
        except GeneratorError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        if args.two_hand_piano and not two_hand_piano(song):
            continue
        if song.end_time >= args.cut + args.seconds and any(n.start < args.cut for n in song.notes):
            songs.append(song)
        if len(songs) >= args.count + 1:
            break
    models, rows, pairs = {}, [], []
    began = time.perf_counter()
    for i, song in enumerate(songs[: args.count]):
        seed = cut(song, 0.0, args.cut)
        real = cut(song, args.cut, args.cut + args.seconds)
        other = songs[(i + 1) % len(songs)]
        fake = shuffled(seed, cut(other, args.cut, args.cut + args.seconds), args.cut)
        name = choose_checkpoint(seed)[0] if args.checkpoint == "auto" else args.checkpoint
        if name not in models:
            models[name] = api.load(name)
        music = models[name].generate(seed=seed, seconds=args.seconds, random_seed=i, repetition=args.repetition)
        music = music[0] if isinstance(music, list) else music
        generated = arrangement_figures(seed, music.sequence, start=music.continuation_start)
        truth = arrangement_figures(seed, real, start=args.cut)
        baseline = arrangement_figures(seed, fake, start=args.cut)
        row = {
            "song": str(song.source),
            "model": name,
            "generated": generated,
            "real": truth,
            "shuffled": baseline,
            "density_ratio": density_ratio(generated, truth),
            "polyphony_ratio": density_ratio(generated, truth, "polyphony"),
        }
        rows.append(row)
        new = dataclasses.replace(
            music.sequence, notes=[n for n in music.sequence.notes if n.start >= music.continuation_start - 1e-6]
        )
        pairs.append((new, real))
        print(
            f"{i + 1:3d} {Path(song.source).name:>12} {name:>9}: kept {_f(generated['tracks_kept'])} "
            f"(real {_f(truth['tracks_kept'])}), drums {generated['drums_continue']} (real {truth['drums_continue']}), "
            f"lowest {generated['lowest_stays_lowest']} (real {truth['lowest_stays_lowest']}), repeats "
            f"{_f(generated['seed_repeats'])} (real {_f(truth['seed_repeats'])})",
            flush=True,
        )
        if i + 1 == args.png_song and args.png:
            write_roll(music, args.png, args.seconds)
    table = {kind: summarize([r[kind] for r in rows]) for kind in ("generated", "real", "shuffled")}
    ratios = {
        key: float(np.nanmedian([r[key] for r in rows if r[key] is not None] or [np.nan]))
        for key in ("density_ratio", "polyphony_ratio")
    }
    seconds = time.perf_counter() - began
    print(f"\n{len(rows)} songs, {seconds:.0f} s; models: {', '.join(sorted({r['model'] for r in rows}))}")
    print(f"{'':24}{'generated':>11}{'real':>9}{'shuffled':>10}")
    for key in (
        "tracks_kept",
        "drums_continue",
        "lowest_stays_lowest",
        "highest_plays_on",
        "roles_kept",
        "seed_repeats",
    ):
        print(
            f"{key:24}"
            + "".join(f"{_f(table[k][key]):>{w}}" for k, w in (("generated", 11), ("real", 9), ("shuffled", 10)))
            + f"   ({table['real'][key + '_songs']} songs)"
        )
    print(
        f"per-track density, generated / real (median): {ratios['density_ratio']:.2f}; "
        f"polyphony: {ratios['polyphony_ratio']:.2f}"
    )
    copied = None
    if args.training_corpus:
        model = next(iter(models.values()))
        copied = originality(model.tokenizer, args.training_corpus, [g for g, _ in pairs], [r for _, r in pairs])
        print(
            f"longest run of tokens found verbatim in the training corpus: generated median "
            f"{copied['generated_median']:.0f} (max {copied['generated_max']}), real continuations median "
            f"{copied['real_median']:.0f} (max {copied['real_max']})"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"summary": table, "ratios": ratios, "originality": copied, "songs": rows}, indent=1)
        )
    return 0


def _f(value) -> str:
    return "-" if value is None else f"{float(value):.3f}"


if __name__ == "__main__":
    sys.exit(main())
