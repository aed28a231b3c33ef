"""Fast MIDI reading with symusic (C++), giving the same ``NoteSequence`` as the pretty_midi path.

``midi_io.read_midi`` parses with mido and pretty_midi in Python, about 25 files a second;
symusic reads the same files over a hundred times faster. This module turns symusic's score (in
ticks) into a ``NoteSequence`` the way ``midi_io`` does, so tokens do not depend on the reader:
seconds from ticks through pretty_midi's tempo arithmetic (tempo events of the first track only,
each clamped to ``MIN_BPM``..``MAX_BPM`` first), the first time signature of the first track,
instruments in the order pretty_midi creates them (per track, by the first note's release), the
name of each track, notes sorted by (start, track, pitch).

Where the two readers could disagree the file is left to the pretty_midi path (``fast_read``
returns None): symusic missing or failing, tempo or time signature events outside the first
track, a track holding several channels or programs, overlapping notes of one pitch in a track
(which the readers pair differently), notes never released, ticks past ``midi_io.MAX_TICK``.

No TensorFlow here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from generator.data import limits
from generator.data.notes import Instrument, Note, NoteSequence


READER_ENV = "GENERATOR_MIDI_READER"  # "pretty_midi" reads every MIDI file the slow way


def enabled() -> bool:
    """Whether MIDI files are read with symusic first: it is installed and $GENERATOR_MIDI_READER is
    not ``pretty_midi``."""
    if os.environ.get(READER_ENV, "").strip().lower() in ("pretty_midi", "pretty-midi", "slow"):
        return False
    try:
        import symusic  # noqa: F401
    except ImportError:
        return False
    return True


FAR = (1 << 27) - 1  # ticks after a track's end where every still-sounding note is released
MAX_CHUNKS = 256  # files with more tracks go the pretty_midi way (each track costs 2,048 release events here)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _release_all() -> bytes:
    """A marker at the track's end, then, ``FAR`` ticks later, a note-off of every pitch on every channel,
    and one more a tick after that."""
    events = bytearray(b"\xff\x06\x01e")
    for round_ in range(2):  # a second round shows where even one release per pitch was too few
        for channel in range(16):
            events += (_vlq(FAR if round_ == 0 else 1) if channel == 0 else b"\x00") + bytes([0x80 | channel, 0, 0])
            for pitch in range(1, 128):
                events += bytes([0, pitch, 0])
    return bytes(events) + b"\x00\xff\x2f\x00"


_RELEASE = _release_all()


def _walk(chunk: bytes):
    """The events of a track chunk read from its bytes: ``(status, data)`` with the status byte
    (running status applied; 0xFF for a meta event) and, for a channel event, its second data byte
    (a note-on's velocity), for a meta event ``(type, payload)``; ``(None, None)`` where the bytes make no sense."""
    i, status, size = 0, 0, len(chunk)
    while i < size:
        while i < size and chunk[i] & 0x80:  # delta time
            i += 1
        i += 1
        if i >= size:
            return
        byte = chunk[i]
        if byte >= 0xF0:  # meta or sysex: skip its data
            kind = chunk[i + 1] if byte == 0xFF and i + 1 < size else -1
            i += 2 if byte == 0xFF else 1
            length = 0
            while i < size and chunk[i] & 0x80:
                length = (length << 7) | (chunk[i] & 0x7F)
                i += 1
            if i >= size:
                return
            length = (length << 7) | chunk[i]
            if byte == 0xFF:
                yield 0xFF, (kind, chunk[i + 1 : i + 1 + length])
            i += 1 + length
            continue
        if byte & 0x80:
            status, i = byte, i + 1
        elif not status:
            yield None, None
            return
        yield status, chunk[i + 1] if i + 1 < size else 0
        i += 1 if status & 0xF0 in (0xC0, 0xD0) else 2


def _track_head(chunk: bytes) -> tuple[int, str | None]:
    """(the channel of the first note-on with velocity > 0 or -1, the last track name before it read
    as latin-1 the way mido reads it, or None) of a track chunk."""
    name = None
    for status, data in _walk(chunk):
        if status == 0xFF and data[0] == 0x03:
            name = data[1].decode("latin-1")
        elif status is not None and status & 0xF0 == 0x90 and data:
            return status & 0x0F, name
    return -1, name


def _program_change_after_note(chunk: bytes) -> bool:
    """Whether a program change follows a note-on in this track chunk (or the bytes make no sense)."""
    noted = False
    for status, _ in _walk(chunk):
        if status is None:
            return True  # damaged: let the careful path judge it
        kind = status & 0xF0
        if kind == 0xC0 and noted:
            return True
        noted = noted or kind == 0x90
    return False


def _tick_scales(tempos, resolution: int) -> list[tuple[int, float]]:
    """pretty_midi's ``_tick_scales`` from the first track's tempo events ``[(tick, microseconds)]``."""
    from generator.data.midi_io import MAX_BPM, MIN_BPM

    scales = [(0, 60.0 / (120.0 * resolution))]
    for tick, tempo in tempos:
        bpm = 6e7 / tempo if tempo > 0 else MAX_BPM
        tempo = int(round(6e7 / min(max(bpm, MIN_BPM), MAX_BPM)))  # midi_io._repair's clamp
        if tick == 0:
            scales = [(0, 60.0 / ((6e7 / tempo) * resolution))]
        else:
            scale = 60.0 / ((6e7 / tempo) * resolution)
            if scale != scales[-1][1]:
                scales.append((int(tick), scale))
    return scales


def _seconds(scales):
    """Ticks -> seconds exactly as pretty_midi's tick table computes them."""
    ticks = np.array([t for t, _ in scales], np.int64)
    rates = np.array([s for _, s in scales], np.float64)
    ends = [0.0]
    for k in range(1, len(scales)):
        ends.append(ends[-1] + rates[k - 1] * float(ticks[k] - ticks[k - 1]))
    ends = np.array(ends)

    def convert(values):
        values = np.asarray(values, np.int64)
        k = np.searchsorted(ticks, values, side="right") - 1
        return ends[k] + rates[k] * (values - ticks[k]).astype(np.float64)

    return convert


@dataclass
class NoteArrays:
    """The notes of a piece as numpy arrays (one entry per note, sorted by start, track, pitch), with
    the instruments, tempo map and time signature of a ``NoteSequence``; ``to_sequence`` makes one."""

    pitch: np.ndarray
    start: np.ndarray  # seconds
    end: np.ndarray
    velocity: np.ndarray
    track: np.ndarray  # index into instruments
    instruments: list
    tempos: list
    time_signature: tuple
    source: str = ""

    @classmethod
    def from_sequence(cls, seq: NoteSequence) -> "NoteArrays":
        column = lambda name, dtype: np.array([getattr(n, name) for n in seq.notes], dtype)  # noqa: E731
        return cls(
            column("pitch", np.int64),
            column("start", float),
            column("end", float),
            column("velocity", np.int64),
            column("track", np.int64),
            seq.instruments,
            seq.tempos,
            seq.time_signature,
            seq.source,
        )

    def to_sequence(self) -> NoteSequence:
        programs = [inst.program for inst in self.instruments]
        drums = [inst.is_drum for inst in self.instruments]
        notes = [
            Note(p, s, e, v, programs[t], drums[t], t)
            for p, s, e, v, t in zip(
                self.pitch.tolist(), self.start.tolist(), self.end.tolist(), self.velocity.tolist(), self.track.tolist()
            )
        ]
        return NoteSequence(
            notes=notes,
            tempos=list(self.tempos),
            time_signature=self.time_signature,
            instruments=self.instruments or [Instrument()],
            source=self.source,
        )


def _ambiguous(start, end, pitch) -> bool:
    """Whether a tick holds note-ons and note-offs of one pitch whose order in the file decides what
    pretty_midi keeps: two or more note-offs there, or a note released at its own start beside another
    note-on. symusic's notes do not tell that order."""
    big = np.int64(1 << 40)
    released = end < FAR // 2
    ons, on_count = np.unique(pitch * big + start, return_counts=True)
    offs, off_count = np.unique((pitch * big + end)[released], return_counts=True)
    both, on_at, off_at = np.intersect1d(ons, offs, assume_unique=True, return_indices=True)
    if not len(both):
        return False
    if (off_count[off_at] >= 2).any():
        return True
    zero = np.unique((pitch * big + start)[end == start])
    return bool(np.isin(both[on_count[on_at] >= 2], zero).any())


def _vote_channels(instruments, heads, onsets) -> None:
    """Each instrument's channel as ``midi_io._channels`` finds it: the channel of the note-ons of any
    track at the (tick, pitch) of its first 16 notes, drums on channel 10 only (-1 if none)."""
    keys = np.concatenate([k for k, _ in onsets]) if onsets else np.zeros(0, np.int64)
    channels = np.concatenate([np.full(len(k), c) for k, c in onsets]) if onsets else np.zeros(0, np.int64)
    for inst, head in zip(instruments, heads):
        votes: dict[int, int] = {}
        for key in head.tolist():
            for channel in channels[keys == key].tolist():
                if channel >= 0 and (channel == 9) == inst.is_drum:
                    votes[channel] = votes.get(channel, 0) + 1
        inst.channel = max(votes, key=votes.get) if votes else -1


def _pretty_ends(start, end, pitch, file_end: int, resolution: int):
    """The end tick pretty_midi (after ``midi_io._repair``) gives each note, from symusic's first-in,
    first-out pairing: a note-off releases every earlier note of its pitch, and a note still sounding
    at the end is released at the later of the file's end and a beat after the last such start."""
    big = np.int64(1 << 40)
    real = end < FAR // 2  # ended by one of the file's note-offs, not by the release after its end
    offs = np.sort(pitch[real] * big + end[real])
    k = np.searchsorted(offs, pitch * big + start, side="right")
    found = k < len(offs)
    found[found] = offs[k[found]] // big == pitch[found]
    ends = np.where(found, offs[np.minimum(k, len(offs) - 1)] % big if len(offs) else 0, 0)
    if not found.all():
        last = np.full(128, -1, np.int64)
        np.maximum.at(last, pitch[~found], start[~found])
        ends[~found] = np.maximum(file_end, last[pitch[~found]] + resolution)
    return ends


def _parsed_tracks(clean: bytes, chunks: list[bytes], symusic) -> list | None:
    """Each track chunk of ``clean`` read by symusic on its own as ``(score, its sounding track or None,
    its end tick, the chunk)``, or None when one of them is left to the pretty_midi path."""
    if len(chunks) > MAX_CHUNKS or any(not chunk.endswith(b"\xff\x2f\x00") for chunk in chunks):
        return None
    header = clean[:8] + b"\x00\x00\x00\x01" + clean[12:14]  # one track, type 0
    parsed = []
    try:
        for chunk in chunks:
            body = chunk[:-3] + _RELEASE
            score = symusic.Score.from_midi(header + b"MTrk" + len(body).to_bytes(4, "big") + body, ttype="tick")
            playing = [t for t in score.tracks if len(t.notes)]
            if (
                playing
                and np.count_nonzero(np.frombuffer(chunk, np.uint8) & 0xF0 == 0xC0) > 1
                and _program_change_after_note(chunk)
            ):
                return None  # pretty_midi files a note under the program in force at its note-off
            if len(playing) > 1 or not score.markers:
                return None  # several channels or programs in one track: pretty_midi's order cannot be told
            end_tick = int(score.markers[-1].time)
            if playing:
                notes = playing[0].notes.numpy()
                if np.any(notes["time"].astype(np.int64) + notes["duration"] > end_tick + FAR):
                    return None  # three or more notes of one pitch never released: symusic dropped some
            parsed.append((score, playing[0] if playing else None, end_tick, chunk))
    except Exception:  # symusic refuses what pretty_midi may still read or explain
        return None
    return parsed


def fast_read(clean: bytes, source: str) -> NoteArrays | None:
    """The notes of the checked MIDI bytes ``clean`` (``midi_io._checked_midi_bytes``), or None when
    this file is left to the pretty_midi path (see the module docstring)."""
    from generator.data.midi_io import MAX_BPM, MAX_TICK, MIN_BPM, _valid_time_signature, track_chunks

    try:
        import symusic
    except ImportError:
        return None
    parsed = _parsed_tracks(clean, track_chunks(clean), symusic)
    if parsed is None:
        return None
    file_end = max(end for _, _, end, _ in parsed)
    if file_end > MAX_TICK:
        return None  # pretty_midi's path reads it at a coarser resolution
    resolution = int(clean[12]) << 8 | clean[13]
    first = parsed[0][0]
    scales = _tick_scales([(int(t.time), int(t.mspq)) for t in first.tempos], resolution)
    seconds = _seconds(scales)
    instruments, columns, heads, onsets = [], [], [], []
    for _score, track, _, chunk in parsed:
        if track is None:
            continue
        notes = track.notes.numpy()
        start, pitch = notes["time"].astype(np.int64), notes["pitch"].astype(np.int64)
        end = start + notes["duration"].astype(np.int64)
        if _ambiguous(start, end, pitch):
            return None
        real = end > start  # a note-off at its note-on's tick (nothing else sounding) ends nothing in pretty_midi
        start, end, pitch, velocity = start[real], end[real], pitch[real], notes["velocity"][real]
        if not len(start):
            continue
        end = _pretty_ends(start, end, pitch, file_end, resolution)
        begin, finish = seconds(start), seconds(end)
        keep = finish > begin
        columns.append(
            (
                pitch[keep],
                begin[keep],
                finish[keep],
                velocity[keep].astype(np.int64),
                np.full(int(keep.sum()), len(instruments), np.int64),
            )
        )
        channel, name = _track_head(chunk)
        if name is None and track.name:
            return None  # named after its first note: pretty_midi may name it otherwise
        instruments.append(Instrument(program=int(track.program), is_drum=bool(track.is_drum), name=name or ""))
        opening = np.lexsort((start, end))[:16]  # the order pretty_midi files notes in: by release
        heads.append(start[opening] * 128 + pitch[opening])
        onsets.append((notes["time"].astype(np.int64) * 128 + notes["pitch"], channel))
    _vote_channels(instruments, heads, onsets)
    pitch, begin, finish, velocity, index = (
        (np.concatenate(c) if columns else np.zeros(0) for c in zip(*columns))
        if columns
        else (np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    order = np.lexsort((pitch, index, begin))
    times = seconds([t for t, _ in scales])
    tempos = [
        (float(t), float(min(max(60.0 / (s * resolution), MIN_BPM), MAX_BPM))) for t, (_, s) in zip(times, scales)
    ]
    time_signature = (4, 4)
    for ts in list(first.time_signatures)[:1]:
        if _valid_time_signature(ts.numerator, ts.denominator):
            time_signature = (int(ts.numerator), int(ts.denominator))
    limits.check("notes", source, len(order))
    events = 2 * len(order)  # a note-on and a note-off each: fewer than the file holds
    max_events = limits.get("midi_events")
    if max_events and events > max_events:
        raise limits.exceeded("midi_events", source, f"at least {events:,} events", max_events)
    return NoteArrays(
        pitch[order],
        begin[order],
        finish[order],
        velocity[order],
        index[order],
        instruments,
        tempos,
        time_signature,
        source,
    )


def read_arrays(path) -> NoteArrays:
    """The notes of MIDI file ``path`` as arrays: symusic where it gives pretty_midi's notes, else the
    pretty_midi path (``midi_io.read_midi``); GeneratorError naming the file on any problem."""
    from generator.data import midi_io

    path = str(path)
    if enabled():
        try:
            with open(path, "rb") as f:
                data = f.read(int(limits.get("midi_bytes", midi_io.MAX_FILE_BYTES) or 2**40) + 1)
        except OSError as error:
            raise midi_io._fail(path, f"cannot read file ({error.strerror or error})") from None
        arrays = fast_read(midi_io._checked_midi_bytes(data, path), path)
        if arrays is not None:
            if not len(arrays.pitch):
                raise midi_io._fail(path, "contains no notes")
            limits.check("seconds", path, round(float(arrays.end.max())), limits.get("seconds", midi_io.MAX_SECONDS))
            return arrays
    return NoteArrays.from_sequence(midi_io.read_midi(path))
