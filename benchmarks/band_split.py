"""Rebuild the band model's split of the band corpus: the kept-out songs and the training songs.

    python benchmarks/band_split.py SONGS OUT

SONGS is the extracted band archive (songs.tar.xz: one folder per genre). OUT receives three
folders of symbolic links:

- ``band-test``: 200 songs kept out of all training (the relative paths sorted, shuffled with
  ``random.Random(2026)``, the first 200); ``benchmarks/band_songs.py`` measures on them;
- ``band-train``: the other 4,760;
- ``band-train-model``: the songs of ``band-train`` the bundled model trained on: without the
  108 whose chunk layout runs past the end of the file (a chunk claiming more bytes than
  remain, even after the declared tracks; the reader of the time refused them, today's reads
  those after the declared tracks) and without the 7 that the pretty_midi reader of the time could
  not parse (``UNREAD``; today's symusic reader reads four of them). The trainer reads all
  4,645 and holds out 93 for validation
  (``--holdout documents --val-fraction 0.02``, seed 1234): 61,316,733 training and 1,354,122
  validation tokens, as in the model card.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
from pathlib import Path

KEPT_OUT = 200
SPLIT_SEED = 2026
# The songs the model's reader (pretty_midi then) refused; left out so the validation songs stay the card's.
UNREAD = {
    "classic/15357.mid",  # IndexError in mido's parse
    "country/14193.mid",  # key signature with mode 255
    "pop/10189.mid",  # key signature with mode 255
    "pop/11886.mid",  # IndexError in mido's parse
    "rap_hip_hop/13052.mid",  # KeyError in mido's parse
    "rock/3540.mid",  # key signature with mode 255
    "rock/7820.mid",  # data ends in the middle of an event
}


def chunks_overrun(data: bytes) -> bool:
    """Whether a chunk of this MIDI file claims more bytes than the file has left."""
    if data[:4] != b"MThd" or len(data) < 14:
        return False  # not the layout rule's business: the reader rejects these itself
    position = 8 + struct.unpack(">L", data[4:8])[0]
    while position + 8 <= len(data):
        end = position + 8 + struct.unpack(">L", data[position + 4 : position + 8])[0]
        if end > len(data):
            return True
        position = end
    return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("songs", type=Path, help="The extracted band archive (a folder of genre folders of .mid files).")
    p.add_argument("out", type=Path, help="The folder to write band-test, band-train and band-train-model into.")
    args = p.parse_args(argv)
    files = sorted(str(f.relative_to(args.songs)) for f in args.songs.rglob("*") if f.is_file())
    if not files:
        print(f"band_split: no files under {args.songs}", file=sys.stderr)
        return 2
    random.Random(SPLIT_SEED).shuffle(files)
    parts = {
        "band-test": files[:KEPT_OUT],
        "band-train": files[KEPT_OUT:],
        "band-train-model": [
            f for f in files[KEPT_OUT:] if f not in UNREAD and not chunks_overrun((args.songs / f).read_bytes())
        ],
    }
    for name, members in parts.items():
        for f in members:
            link = args.out / name / f
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink((args.songs / f).resolve(), link)
        print(f"{name}: {len(members)} songs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
