"""The small corpora of the fine-tuning measurement (docs/fine-tuning.md), written outside the repository.

python -m benchmarks.fine_tune_data text OUT
    OUT/austen-train.txt and OUT/austen-test.txt: the built-in austen corpus (Jane Austen's Lady
    Susan, the Project Gutenberg text installed with music21; public domain), its first 90 % of
    characters for training and the last 10 % held out for the test.
python -m benchmarks.fine_tune_data music ARCHIVE OUT [--train 20] [--test 5] [--seed 31]
    OUT/train/*.mid and OUT/test/*.mid: piano-heavy songs (at least ``--piano`` of their pitched
    notes on the General MIDI pianos, programs 0-7) of a .tar.xz of MIDI files, drawn in a seeded
    order; a file that does not parse is passed over.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

import numpy as np


def write_text(out: Path, test_share: float = 0.1) -> None:
    from generator.data import corpora

    text = corpora.open_corpus("austen", "text").documents()[0]
    cut = text.rfind("\n\n", 0, int(len(text) * (1 - test_share))) + 2  # at a paragraph break
    out.mkdir(parents=True, exist_ok=True)
    (out / "austen-train.txt").write_text(text[:cut], encoding="utf-8")
    (out / "austen-test.txt").write_text(text[cut:], encoding="utf-8")
    print(f"{out}/austen-train.txt: {cut:,} characters; austen-test.txt: {len(text) - cut:,}")


def piano_share(data: bytes) -> float | None:
    """The share of a MIDI file's pitched notes played on the pianos (None when it does not parse)."""
    import pretty_midi

    try:
        midi = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception:
        return None
    pitched = [i for i in midi.instruments if not i.is_drum]
    total = sum(len(i.notes) for i in pitched)
    return sum(len(i.notes) for i in pitched if i.program < 8) / total if total else None


def write_music(archive: Path, out: Path, train: int, test: int, seed: int, piano: float) -> None:
    with tarfile.open(archive) as tar:
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith((".mid", ".midi"))),
            key=lambda m: m.name,
        )
        order = np.random.default_rng(seed).permutation(len(members))
        chosen = []
        for index in order:
            data = tar.extractfile(members[index]).read()
            share = piano_share(data)
            if share is not None and share >= piano:
                chosen.append((members[index].name, data))
            if len(chosen) == train + test:
                break
    for i, (name, data) in enumerate(chosen):
        folder = out / ("train" if i < train else "test")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:02d}-{Path(name).name}").write_bytes(data)
    print(f"{out}: {min(len(chosen), train)} training and {max(len(chosen) - train, 0)} test songs")


def main(argv=None, prog=None) -> None:
    p = argparse.ArgumentParser(prog=prog, description="Write the corpora of the fine-tuning measurement.")
    sub = p.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("text", help="Austen's Lady Susan, split 90/10.")
    t.add_argument("out", type=Path, help="The folder to write.")
    m = sub.add_parser("music", help="Piano-heavy songs of a MIDI archive.")
    m.add_argument("archive", type=Path, help="A .tar.xz of MIDI files.")
    m.add_argument("out", type=Path, help="The folder to write (train/ and test/ in it).")
    m.add_argument("--train", type=int, default=20, help="Songs to train on.")
    m.add_argument("--test", type=int, default=5, help="Songs to test on.")
    m.add_argument("--seed", type=int, default=31, help="Seed of the order the archive is drawn in.")
    m.add_argument("--piano", type=float, default=0.7, help="Least share of pitched notes on the pianos.")
    args = p.parse_args(argv)
    if args.kind == "text":
        write_text(args.out)
    else:
        write_music(args.archive, args.out, args.train, args.test, args.seed, args.piano)


if __name__ == "__main__":
    main(sys.argv[1:])
