"""The symusic MIDI reader gives the notes, instruments and tokens of the pretty_midi path (#29)."""

import io
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("symusic")

from generator.data import dataset, midi_fast, midi_io  # noqa: E402
from generator.data.corpora import open_music  # noqa: E402
from generator.data.tokenizers.band import BandTokenizer  # noqa: E402
from generator.data.tokenizers.events import EventTokenizer  # noqa: E402

POP909 = Path("/work/shared/corpora/pop909")


def _slow(data: bytes, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv(midi_fast.READER_ENV, "pretty_midi")
        return midi_io.read_midi_bytes(data, "x.mid")


def _same(data: bytes, monkeypatch, must_be_fast: bool = False):
    slow = _slow(data, monkeypatch)
    arrays = midi_fast.fast_read(midi_io._checked_midi_bytes(data, "x.mid"), "x.mid")
    if arrays is None:
        assert not must_be_fast
        return
    fast = arrays.to_sequence()
    assert [(i.program, i.is_drum, i.name, i.channel) for i in fast.instruments] == [
        (i.program, i.is_drum, i.name, i.channel) for i in slow.instruments
    ]
    assert fast.notes == slow.notes and fast.tempos == slow.tempos and fast.time_signature == slow.time_signature
    for tokenizer in (BandTokenizer(), EventTokenizer()):
        assert tokenizer.encode(fast) == tokenizer.encode(slow)


def _midi(tracks, tpq=480) -> bytes:
    import mido

    m = mido.MidiFile(ticks_per_beat=tpq)
    for name, channel, program, events in tracks:
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name))
        track.append(mido.Message("program_change", channel=channel, program=program))
        last = 0
        for tick, on, pitch in events:
            track.append(
                mido.Message("note_on", channel=channel, note=pitch, velocity=70 if on else 0, time=tick - last)
            )
            last = tick
        m.tracks.append(track)
    out = io.BytesIO()
    m.save(file=out)
    return out.getvalue()


CASES = {
    "repeated note held over": [(0, 1, 60), (10, 1, 60), (20, 0, 60), (30, 0, 60)],
    "never released": [(0, 1, 60), (10, 1, 62), (20, 0, 62)],
    "released at its start": [(0, 1, 60), (0, 0, 60), (5, 1, 61), (9, 0, 61)],
    "legato repeat": [(0, 1, 60), (10, 0, 60), (10, 1, 60), (20, 0, 60)],
    "three starts one release": [(0, 1, 60), (5, 1, 60), (7, 1, 60), (20, 0, 60)],
    "two releases at two starts": [
        (0, 1, 60),
        (0, 1, 60),
        (9, 1, 60),
        (9, 1, 60),
        (9, 0, 60),
        (9, 0, 60),
        (15, 0, 60),
        (15, 0, 60),
    ],
    "spurious release": [(0, 0, 60), (5, 1, 60), (9, 0, 60)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_note_pairing_matches_pretty_midi(case, monkeypatch):
    events = CASES[case] + [(600, 1, 72), (700, 0, 72)]
    _same(
        _midi(
            [
                ("Lead", 0, 5, events),
                ("Bass", 1, 33, [(0, 1, 40), (900, 0, 40)]),
                ("Drums", 9, 0, [(0, 1, 36), (100, 0, 36)]),
            ]
        ),
        monkeypatch,
    )


def test_readable_files_are_read_fast_with_the_same_result(monkeypatch):
    import music21

    files = sorted((Path(music21.__file__).parent / "midi" / "testPrimitive").glob("*.mid"))
    files += sorted(Path(__file__).resolve().parents[1].glob("docs/**/*.mid"))
    read = 0
    for path in files:
        try:
            _slow(path.read_bytes(), monkeypatch)
        except Exception:
            continue
        _same(path.read_bytes(), monkeypatch)
        read += 1
    assert read >= 10


@pytest.mark.skipif(not POP909.is_dir(), reason="needs /work/shared/corpora/pop909")
def test_pop909_files_read_fast_with_the_same_tokens(monkeypatch):
    for path in sorted(POP909.glob("*.mid"))[:6]:
        _same(path.read_bytes(), monkeypatch, must_be_fast=True)


def test_music_corpus_is_tokenized_in_workers_with_the_same_ids(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "songs"
    folder.mkdir()
    for i, case in enumerate(sorted(CASES)):
        (folder / f"{i}.mid").write_bytes(_midi([("Piano", 0, 0, CASES[case] + [(600, 1, 72 + i), (700, 0, 72 + i)])]))
    (folder / "bad.mid").write_bytes(b"MThd not really")
    factory = dataset.TokenizerFactory("band")
    monkeypatch.setenv("GENERATOR_PARSE_SECONDS", "30")  # parse in worker processes
    said = []
    data = dataset.tokenize(open_music(folder), factory, use_cache=False, log=said.append)
    tokenizer = BandTokenizer()
    expected = [tokenizer.encode(_slow((folder / f"{i}.mid").read_bytes(), monkeypatch)) for i in range(len(CASES))]
    assert data.num_documents == len(CASES)
    for i, ids in enumerate(expected):
        np.testing.assert_array_equal(data.document(i)[1:], ids)
    assert any("bad.mid" in line for line in said) and any("skipped 1 of" in line for line in said)
    assert os.environ.get(midi_fast.READER_ENV) is None
