"""Tests of the music readers and writers (generator.data.midi_io), hostile input included."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import mido
import music21
import numpy as np
import pretty_midi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.data import midi_io
from generator.errors import GeneratorError
from generator.data.midi_io import (
    read_midi,
    read_midi_bytes,
    read_music21_score,
    read_score,
    read_scores,
    write_midi,
)
from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.events import EventTokenizer

TEST_MIDI = sorted((Path(music21.__file__).parent / "midi" / "testPrimitive").glob("*.mid"))
KRN = Path(music21.__file__).parent / "corpus" / "palestrina" / "Credo_67_c.krn"


# -- building MIDI bytes by hand ----------------------------------------------------------------
def vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack(">L", len(payload)) + payload


def header(midi_type: int = 1, tracks: int = 1, division: int = 480) -> bytes:
    return chunk(b"MThd", struct.pack(">HHH", midi_type, tracks, division))


def track(*events: bytes, end_delta: int = 0) -> bytes:
    return chunk(b"MTrk", b"".join(events) + vlq(end_delta) + b"\xff\x2f\x00")


def event(delta: int, *data: int) -> bytes:
    return vlq(delta) + bytes(data)


def tempo(delta: int, microseconds: int) -> bytes:
    return vlq(delta) + b"\xff\x51\x03" + microseconds.to_bytes(3, "big")


def simple_midi(*events: bytes, midi_type: int = 0, end_delta: int = 0) -> bytes:
    return header(midi_type, 1) + track(*events, end_delta=end_delta)


C4 = (event(0, 0x90, 60, 100), event(480, 0x80, 60, 0))


def read_or_error(data: bytes, folder: Path, name: str = "x.mid", seconds: float = 5.0):
    """Read data through a file; only GeneratorError may come out, one line naming the file."""
    path = folder / name
    path.write_bytes(data)
    started = time.perf_counter()
    try:
        result = read_midi(path)
    except GeneratorError as error:
        message = str(error)
        assert "\n" not in message and str(path) in message
        result = error
    assert time.perf_counter() - started < seconds
    if isinstance(result, NoteSequence):
        assert result.notes and all(0 <= n.track < len(result.instruments) for n in result.notes)
        assert all(0 <= n.start < n.end and 0 <= n.pitch <= 127 for n in result.notes)
    return result


def expect_error(data: bytes, folder: Path, words: str) -> None:
    result = read_or_error(data, folder)
    assert isinstance(result, GeneratorError), "expected a GeneratorError"
    assert words in str(result)


# -- real files -----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("path", TEST_MIDI, ids=[p.name for p in TEST_MIDI])
def test_reads_music21_test_files(path):
    seq = read_midi(path)
    reference = pretty_midi.PrettyMIDI(str(path))
    assert len(seq.notes) == sum(len(i.notes) for i in reference.instruments)
    assert seq.source == str(path)
    for note in seq.notes:
        instrument = seq.instruments[note.track]
        assert (note.program, note.is_drum) == (instrument.program, instrument.is_drum)
    assert seq.tempos[0][0] == 0 and 1 <= seq.initial_bpm <= 1000


def test_keeps_tempo_map_and_time_signature():
    seq = read_midi(next(p for p in TEST_MIDI if p.name == "test10.mid"))
    assert [round(bpm) for _, bpm in seq.tempos] == [120, 110, 90, 60]
    assert seq.tempos[1][0] == pytest.approx(2.0)
    assert seq.tempos[1][0] < seq.tempos[2][0] < seq.tempos[3][0]
    assert read_midi(next(p for p in TEST_MIDI if p.name == "test09.mid")).time_signature == (6, 8)


def test_read_music21_score_and_formats(tmp_path):
    score = music21.corpus.parse("bach/bwv66.6")
    seq = read_music21_score(score)
    assert [i.name for i in seq.instruments] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert len(seq.notes) > 150 and seq.time_signature == (4, 4) and "bwv66.6" in seq.source
    xml = tmp_path / "bwv66.musicxml"
    score.write("musicxml", fp=str(xml))
    from_file = read_score(xml)
    assert len(from_file.notes) == len(seq.notes) and len(from_file.instruments) == 4
    krn = read_score(KRN)
    assert krn.notes and len(krn.instruments) == 4
    midi = TEST_MIDI[0]
    assert read_score(midi).notes == read_midi(midi).notes


def test_abc_book_gives_every_tune(tmp_path):
    path = tmp_path / "book.abc"
    path.write_text(
        "X:1\nT:One\nM:3/4\nL:1/8\nK:G\nGAB cde|d2 B2 G2|]\n\nX:2\nT:Two\nM:4/4\nL:1/4\nQ:1/4=90\nK:D\nDEFG|A2 d2|]\n"
    )
    one, two = read_scores(path)
    assert (len(one.notes), one.time_signature) == (9, (3, 4))
    assert (len(two.notes), round(two.initial_bpm)) == (6, 90)
    assert read_score(path).notes == one.notes
    assert midi_io.read_score_documents(path)[1].notes == two.notes


@pytest.mark.parametrize(
    "name, content",
    [
        ("bad.musicxml", b"<score-partwise><oops"),
        ("bad.abc", b"\x00\x01\x02 not abc"),
        ("bad.krn", b""),
        ("song.txt", b"hello"),
        ("missing.mxl", None),
    ],
)
def test_bad_scores_raise_generator_error(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GeneratorError, match=name):
        read_scores(path)


def test_music_suffixes():
    assert set(midi_io.MUSIC_SUFFIXES) == {".mid", ".midi", ".musicxml", ".mxl", ".xml", ".abc", ".krn"}


# -- writing --------------------------------------------------------------------------------------
def sample_sequence() -> NoteSequence:
    instruments = [Instrument(0, False, "Piano"), Instrument(48, False, "Strings"), Instrument(0, True, "Drums")]
    notes = [Note(60 + i, 0.5 * i, 0.5 * i + 0.4, 90, 0, False, 0) for i in range(8)]
    notes += [Note(48, 0.0, 4.0, 70, 48, False, 1), Note(36, 1.0, 1.1, 110, 0, True, 2)]
    return NoteSequence(
        notes=notes,
        tempos=[(0.0, 100.0), (2.4, 140.0)],
        time_signature=(3, 4),
        instruments=instruments,
        source="sample",
    )


def test_write_then_read_keeps_everything(tmp_path):
    seq = sample_sequence()
    path = write_midi(seq, tmp_path / "out.mid")
    back = read_midi(path)
    assert back.time_signature == (3, 4)
    assert [(round(t, 3), round(b, 2)) for t, b in back.tempos] == [(0.0, 100.0), (2.4, 140.0)]
    assert sorted((i.program, i.is_drum, i.name) for i in back.instruments) == sorted(
        (i.program, i.is_drum, i.name) for i in seq.instruments
    )
    key = lambda n: (n.start, n.pitch)  # noqa: E731
    for original, read in zip(sorted(seq.notes, key=key), sorted(back.notes, key=key)):
        assert (read.pitch, read.velocity, read.program, read.is_drum) == (
            original.pitch,
            original.velocity,
            original.program,
            original.is_drum,
        )
        assert read.start == pytest.approx(original.start, abs=2e-3)
        assert read.end == pytest.approx(original.end, abs=2e-3)
    assert len(back.notes) == len(seq.notes)


def test_written_file_is_readable_by_other_libraries(tmp_path):
    tok = EventTokenizer()
    generated = tok.decode(tok.encode(read_midi(TEST_MIDI[2])))
    for seq, name in ((sample_sequence(), "sample.mid"), (generated, "generated.mid")):
        path = write_midi(seq, tmp_path / name)
        assert sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(path)).instruments) == len(seq.notes)
        assert sum(m.type == "note_on" and m.velocity > 0 for m in mido.MidiFile(str(path))) == len(seq.notes)
        assert len(music21.converter.parse(str(path)).flatten().notes) > 0


def test_write_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "sub" / "out.mid"
    write_midi(sample_sequence(), path)  # creates the folder
    before = path.read_bytes()
    single = NoteSequence(notes=[Note(72, 0, 1)])
    with pytest.raises(GeneratorError, match="already exists"):
        write_midi(single, path)
    assert path.read_bytes() == before
    write_midi(single, path, force=True)
    assert [n.pitch for n in read_midi(path).notes] == [72]
    assert [p.name for p in path.parent.iterdir()] == ["out.mid"]  # no temporary file left
    with pytest.raises(GeneratorError):
        write_midi(single, tmp_path, force=True)  # a directory


def test_to_and_from_pretty_midi():
    pm = midi_io.to_pretty_midi(sample_sequence())
    seq = midi_io.from_pretty_midi(pm, "memory")
    assert seq.source == "memory" and len(seq.notes) == 10 and seq.instruments[2].is_drum


# -- hostile input ------------------------------------------------------------------------------
def test_empty_random_text_and_png(tmp_path):
    expect_error(b"", tmp_path, "empty")
    expect_error(np.random.default_rng(0).bytes(3000), tmp_path, "not a MIDI file")
    expect_error(b"This is a text file, not music.\n" * 10, tmp_path, "not a MIDI file")
    expect_error(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100), tmp_path, "not a MIDI file")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(GeneratorError, match="cannot read"):
        read_midi(tmp_path / "nope.mid")
    with pytest.raises(GeneratorError):
        read_midi(tmp_path)


def test_header_without_tracks_and_bad_headers(tmp_path):
    expect_error(header(1, 0), tmp_path, "no tracks")
    expect_error(header(1, 3), tmp_path, "no tracks")
    expect_error(b"MThd\x00\x00", tmp_path, "truncated")
    expect_error(b"MThd\xff\xff\xff\xff" + bytes(20), tmp_path, "header")
    expect_error(header(2, 1) + track(*C4), tmp_path, "type 2")
    expect_error(header(7, 1) + track(*C4), tmp_path, "type")
    expect_error(header(0, 1, division=0xE728) + track(*C4), tmp_path, "SMPTE")
    expect_error(header(0, 1, division=0) + track(*C4), tmp_path, "ticks")


def test_truncated_and_bit_flipped_real_files(tmp_path):
    data = TEST_MIDI[2].read_bytes()
    expect_error(data[: len(data) // 2], tmp_path, "truncated")
    small = next(p for p in TEST_MIDI if p.name == "test01.mid").read_bytes()
    for position in range(len(small)):  # flip one bit of every byte in turn
        mutated = bytearray(small)
        mutated[position] ^= 1 << (position % 8)
        read_or_error(bytes(mutated), tmp_path, seconds=2.0)


def test_lengths_claiming_gigabytes_fail_fast(tmp_path):
    huge = struct.pack(">L", 0xFFFFFFF0)
    expect_error(header() + b"MTrk" + huge + C4[0], tmp_path, "claims")
    expect_error(b"MThd" + huge + bytes(40), tmp_path, "header")
    sysex = event(0, 0xF0) + vlq(0x0FFFFFFF) + bytes(10)  # a sysex claiming 256 MB
    read_or_error(simple_midi(*C4, sysex), tmp_path, seconds=2.0)
    far = simple_midi(event(0x0FFFFFFF, 0x90, 60, 100), event(10, 0x80, 60, 0))
    expect_error(far, tmp_path, "largest tick")


def test_no_notes(tmp_path):
    expect_error(simple_midi(tempo(0, 500000), end_delta=960), tmp_path, "no notes")


def test_drums_only(tmp_path):
    seq = read_or_error(simple_midi(event(0, 0x99, 36, 100), event(240, 0x89, 36, 0)), tmp_path)
    assert [(n.pitch, n.is_drum) for n in seq.notes] == [(36, True)] and seq.instruments[0].is_drum


def test_notes_never_released_are_closed_at_the_end(tmp_path):
    on60, on64, off99 = event(0, 0x90, 60, 100), event(480, 0x90, 64, 100), event(0, 0x80, 99, 0)
    data = simple_midi(on60, on64, off99, end_delta=960)
    seq = read_or_error(data, tmp_path)
    assert [(n.pitch, n.start, n.end) for n in seq.notes] == [(60, 0.0, 1.5), (64, 0.5, 1.5)]
    last = read_or_error(simple_midi(*C4, event(0, 0x90, 67, 100)), tmp_path)
    assert [(n.pitch, n.start, n.end) for n in last.notes] == [(60, 0.0, 0.5), (67, 0.5, 1.0)]


@pytest.mark.parametrize("microseconds", [0, 1, 59_999, 0xFFFFFF])
def test_absurd_tempi_are_clamped(tmp_path, microseconds):
    seq = read_or_error(simple_midi(tempo(0, microseconds), *C4), tmp_path)
    assert midi_io.MIN_BPM <= seq.initial_bpm <= midi_io.MAX_BPM
    assert 0 < seq.notes[0].end <= 60 / midi_io.MIN_BPM


def test_unknown_chunks_are_skipped(tmp_path):
    data = header(1, 1) + chunk(b"XFIH", b"vendor data") + track(*C4)
    assert [n.pitch for n in read_or_error(data, tmp_path).notes] == [60]


def test_oversized_file(tmp_path, monkeypatch):
    monkeypatch.setattr(midi_io, "MAX_FILE_BYTES", 100)
    expect_error(simple_midi(*C4 * 20), tmp_path, "larger than")


def test_hundred_thousand_notes_are_fast(tmp_path):
    body = b"".join(event(0, 0x90, 40 + i % 50, 90) + event(24, 0x80, 40 + i % 50, 0) for i in range(100_000))
    seq = read_or_error(simple_midi(body), tmp_path, seconds=15.0)
    assert len(seq.notes) == 100_000
    assert seq.notes[-1].end == pytest.approx(100_000 * 24 / 960)


def test_read_midi_bytes_names_the_source():
    with pytest.raises(GeneratorError, match="^memory: not a MIDI file"):
        read_midi_bytes(b"RIFF", "memory")


# -- fuzzing ---------------------------------------------------------------------------------------
SEEDS = [p.read_bytes() for p in TEST_MIDI if p.stat().st_size < 4000]
FUZZ = settings(max_examples=200, deadline=5000, suppress_health_check=[HealthCheck.too_slow], database=None)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=2048))
def test_fuzz_random_bytes(scratch, data):
    read_or_error(data, scratch)
    read_or_error(header() + chunk(b"MTrk", data), scratch)


@FUZZ
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    changes=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
    insert=st.binary(max_size=16),
)
def test_fuzz_mutated_real_files(scratch, seed, changes, cut, insert):
    data = bytearray(SEEDS[seed])
    for position, value in changes:
        data[position % len(data)] = value
    if insert:
        at = changes[0][0] % len(data)
        data[at:at] = insert
    if cut is not None:
        del data[cut:]
    read_or_error(bytes(data), scratch)
