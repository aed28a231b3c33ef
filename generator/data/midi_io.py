"""Music files to ``NoteSequence`` and back: MIDI through symusic (``midi_fast``, the same notes) or
pretty_midi/mido, scores through music21.

Readers treat every file as hostile. Before mido sees a MIDI file its size and chunk layout
are checked (nothing is allocated from a length field the file claims), its largest tick and
tempi are bounded, and notes that are never released are closed at the end of the file. Any
problem, whatever library notices it, comes out as one ``GeneratorError`` whose message names
the file: ``"song.mid: not a MIDI file (no MThd header)"``.

Policies worth knowing:

- MIDI type 2 (independent sequential patterns) and SMPTE time division are refused.
- Tempi are clamped to ``MIN_BPM``..``MAX_BPM``; a tempo of 0 (invalid) counts as ``MAX_BPM``.
- A file with no notes is refused, and so is one over the limits of ``generator.data.limits``
  (bytes, notes, events, duration; each names the environment variable that raises it). A MIDI
  file's note-ons and events are counted from its bytes before mido parses it.
- A file whose last tick is past ``MAX_TICK`` is read at a coarser resolution (pretty_midi builds
  a table as long as the last tick); only one that would need fewer than ``MIN_RESOLUTION`` ticks
  per quarter note is refused.
- Scores (MusicXML, ABC, Humdrum) are parsed by music21, rendered to MIDI in memory by music21
  (ties, chords, tempo marks and parts become MIDI tracks) and then read like a MIDI file. As
  music21's time cannot be bounded, that happens in a worker process killed when the
  ``parse_seconds`` limit passes (``limits.call_bounded``).

No TensorFlow here.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

from generator.data import limits
from generator.errors import ArgumentError, GeneratorError
from generator.data.notes import Instrument, Note, NoteSequence

MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".musicxml", ".mxl", ".xml", ".abc", ".krn")
MUSIC_SUFFIXES = MIDI_SUFFIXES + SCORE_SUFFIXES

MAX_FILE_BYTES = limits.LIMITS["midi_bytes"].default  # GENERATOR_MAX_MIDI_BYTES overrides it
MAX_TICK = 10_000_000  # pretty_midi builds a tick -> seconds table this long
MIN_RESOLUTION = 24  # ticks per quarter note below which a rescaled file is called corrupt
MAX_SECONDS = limits.LIMITS["seconds"].default  # longer "music" is a corrupt delta time, not a piece
MIN_BPM, MAX_BPM = 1.0, 1000.0
WRITE_RESOLUTION = 480  # ticks per quarter note in the files we write
_MIN_WRITE_SECONDS = 0.005  # shortest note written, so note-on and note-off never share a tick


def _fail(name: str, problem: object) -> GeneratorError:
    """A one-line GeneratorError naming the file."""
    text = " ".join(str(problem).split()) or type(problem).__name__
    return GeneratorError(f"{name}: {text[:300]}")


# -- reading MIDI ----------------------------------------------------------------------------
def read_midi(path) -> NoteSequence:
    """Read a standard MIDI file into a NoteSequence; any problem raises GeneratorError."""
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _fail(name, f"cannot read file ({error.strerror or error})") from None
    limits.check("midi_bytes", name, size, limits.get("midi_bytes", MAX_FILE_BYTES))
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _fail(name, f"cannot read file ({error.strerror or error})") from None
    return read_midi_bytes(data, name)


def read_midi_bytes(data: bytes, source: str = "<bytes>") -> NoteSequence:
    """Read MIDI file content already in memory; ``source`` names it in messages."""
    try:
        return _read_midi_bytes(data, source)
    except GeneratorError:
        raise
    except Exception as error:  # mido, pretty_midi and numpy raise many types on bad input
        detail = "data ends in the middle of an event" if isinstance(error, EOFError) else str(error)
        raise _fail(source, f"corrupt MIDI data: {detail} ({type(error).__name__})") from None


def _read_midi_bytes(data: bytes, source: str) -> NoteSequence:
    import mido
    import pretty_midi

    clean = _checked_midi_bytes(data, source)
    from generator.data import midi_fast

    fast = midi_fast.fast_read(clean, source) if midi_fast.enabled() else None
    if fast is not None:  # the same notes as below, read by symusic
        return _checked_sequence(fast.to_sequence(), source)
    max_notes, max_events = limits.get("notes"), limits.get("midi_events")
    if max_notes or max_events:
        notes, events = _count_events(clean, int(max_notes or 2**62), int(max_events or 2**62))
        for name, counted, limit, unit in (
            ("notes", notes, max_notes, "notes"),
            ("midi_events", events, max_events, "events"),
        ):
            if limit and counted > limit:  # counting stopped just past the limit
                raise limits.exceeded(name, source, f"at least {counted:,} {unit}", limit)
    midi = mido.MidiFile(file=io.BytesIO(clean), clip=True)
    _repair(midi, source)
    onsets = _note_on_channels(midi)  # before pretty_midi, which turns delta ticks into absolute ones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = pretty_midi.PrettyMIDI(mido_object=midi)
    seq = from_pretty_midi(pm, source)
    for inst, channel in zip(seq.instruments, _channels(onsets, pm)):
        inst.channel = channel
    return _checked_sequence(seq, source)


def _checked_sequence(seq: NoteSequence, source: str) -> NoteSequence:
    if not seq.notes:
        raise _fail(source, "contains no notes")
    limits.check("seconds", source, round(seq.end_time), limits.get("seconds", MAX_SECONDS))
    return seq


def _note_on_channels(midi) -> dict[tuple[int, int], list[int]]:
    """(tick, pitch) -> the channels of the note-ons there, for ``_channels``."""
    onsets: dict[tuple[int, int], list[int]] = {}
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "note_on" and message.velocity > 0:
                onsets.setdefault((tick, message.note), []).append(message.channel)
    return onsets


def _channels(onsets, pm) -> list[int]:
    """The MIDI channel of each of ``pm``'s instruments (-1 where none is found): the channel of
    the note-ons at its first notes' ticks and pitches."""
    found = []
    for inst in pm.instruments:
        votes: dict[int, int] = {}
        for note in inst.notes[:16]:
            for channel in onsets.get((pm.time_to_tick(note.start), note.pitch), []):
                if (channel == 9) == bool(inst.is_drum):
                    votes[channel] = votes.get(channel, 0) + 1
        found.append(max(votes, key=votes.get) if votes else -1)
    return found


_KNOWN_CHUNKS = (b"MThd", b"XFIH", b"XFKM")  # other chunk kinds seen in the wild, skipped


def _checked_midi_bytes(data: bytes, source: str) -> bytes:
    """Validate the chunk layout; return a header plus only the MTrk chunks, in order."""
    if not data:
        raise _fail(source, "file is empty")
    limits.check("midi_bytes", source, len(data), limits.get("midi_bytes", MAX_FILE_BYTES))
    if data[:4] != b"MThd":
        raise _fail(source, "not a MIDI file (no MThd header)")
    if len(data) < 14:
        raise _fail(source, "truncated MIDI header")
    header_length = struct.unpack(">L", data[4:8])[0]
    if header_length < 6 or 8 + header_length > len(data):
        raise _fail(source, f"corrupt MIDI header (length {header_length})")
    midi_type, declared_tracks, division = struct.unpack(">HHH", data[8:14])
    if midi_type == 2:
        raise _fail(source, "MIDI type 2 (sequential patterns) is not supported")
    if midi_type > 2:
        raise _fail(source, f"unknown MIDI file type {midi_type}")
    if division & 0x8000:
        raise _fail(source, "SMPTE time division is not supported")
    if division == 0:
        raise _fail(source, "corrupt MIDI header (0 ticks per quarter note)")
    tracks, position = [], 8 + header_length
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        length = struct.unpack(">L", data[position + 4 : position + 8])[0]
        end = position + 8 + length
        if tracks and (kind != b"MTrk" or len(tracks) >= declared_tracks):
            if end > len(data) or kind not in (b"MTrk",) + _KNOWN_CHUNKS:
                break  # bytes after the declared tracks (padding, junk): ignored as players do
        if end > len(data):
            remain = len(data) - position - 8
            raise _fail(source, f"truncated or corrupt: a chunk claims {length} bytes, {remain} remain")
        if kind == b"MTrk":
            tracks.append(data[position:end])
        position = end
    if not tracks:
        raise _fail(source, "has no tracks")
    header = b"MThd" + struct.pack(">LHHH", 6, 1 if len(tracks) > 1 else midi_type, len(tracks), division)
    return header + b"".join(tracks)


def _count_note_ons(clean: bytes, stop: int) -> int:
    """Note-ons (velocity > 0) in the MTrk chunks of ``clean`` (see ``_count_events``)."""
    return _count_events(clean, stop, 2**62)[0]


def track_chunks(clean: bytes) -> list[bytes]:
    """The contents of the MTrk chunks of checked MIDI bytes (``_checked_midi_bytes``), in order."""
    chunks, position = [], 14
    while position + 8 <= len(clean):
        length = int.from_bytes(clean[position + 4 : position + 8], "big")
        chunks.append(clean[position + 8 : position + 8 + length])
        position += 8 + length
    return chunks


def _count_events(clean: bytes, stop_notes: int, stop_events: int) -> tuple[int, int]:
    """(note-ons with velocity > 0, events) in the MTrk chunks of ``clean``, counted from the bytes
    without building messages; counting stops past either ``stop``. Damaged data ends a track's
    count (mido judges the damage afterwards)."""
    count, events = 0, 0
    for chunk in track_chunks(clean):
        if count > stop_notes or events > stop_events:
            break
        i, status, end = 0, 0, len(chunk)
        while i < end and count <= stop_notes and events <= stop_events:
            while i < end and chunk[i] & 0x80:  # delta time
                i += 1
            i += 1
            if i >= end:
                break
            events += 1
            byte = chunk[i]
            if byte >= 0xF0:  # meta (type, length) or sysex (length): skip its data
                i += 2 if byte == 0xFF else 1
                length = 0
                while i < end and chunk[i] & 0x80:
                    length = (length << 7) | (chunk[i] & 0x7F)
                    i += 1
                if i >= end:
                    break
                i += 1 + ((length << 7) | chunk[i])
                continue
            if byte & 0x80:
                status = byte
                i += 1
            elif not status:
                break
            kind = status & 0xF0
            if kind == 0x90 and i + 1 < end and chunk[i + 1]:
                count += 1
            i += 1 if kind in (0xC0, 0xD0) else 2
    return count, events


def _rescale(midi, source: str) -> None:
    """Read a file whose last tick is past ``MAX_TICK`` at a coarser resolution (times in seconds kept)."""
    last = max((sum(message.time for message in track) for track in midi.tracks), default=0)
    if last <= MAX_TICK:
        return
    resolution = midi.ticks_per_beat * MAX_TICK // last
    if resolution < MIN_RESOLUTION:
        raise _fail(
            source,
            f"largest tick is {last}, more than {MAX_TICK} even at {MIN_RESOLUTION} ticks per "
            f"quarter note: corrupt delta times",
        )
    resolution = min(resolution, WRITE_RESOLUTION)  # finer than our own files' buys nothing
    scale = resolution / midi.ticks_per_beat
    for track in midi.tracks:
        tick = written = 0
        for message in track:
            tick += message.time
            new = int(round(tick * scale))
            message.time, written = new - written, new
    midi.ticks_per_beat = resolution


def _repair(midi, source: str) -> None:
    """Bound ticks and tempi, and close notes never released (in place, delta ticks kept)."""
    import mido

    _rescale(midi, source)
    ends, open_notes = [], []
    for track in midi.tracks:
        tick, sounding = 0, {}  # (channel, pitch) -> start ticks, paired the way pretty_midi pairs
        for message in track:
            tick += message.time
            if message.type == "set_tempo":
                bpm = 6e7 / message.tempo if message.tempo > 0 else MAX_BPM
                message.tempo = int(round(6e7 / min(max(bpm, MIN_BPM), MAX_BPM)))
            elif message.type == "note_on" and message.velocity > 0:
                sounding.setdefault((message.channel, message.note), []).append(tick)
            elif message.type in ("note_on", "note_off"):
                starts = sounding.get((message.channel, message.note))
                if starts:  # pretty_midi closes every earlier start; same-tick starts survive
                    keep = [s for s in starts if s == tick]
                    sounding[(message.channel, message.note)] = keep if len(keep) < len(starts) else []
        ends.append(tick)
        open_notes.append({key: max(starts) for key, starts in sounding.items() if starts})
    file_end = max(ends)
    if file_end > MAX_TICK:
        raise _fail(source, f"largest tick is {file_end}, more than {MAX_TICK}: corrupt delta times")
    for track, track_end, still_open in zip(midi.tracks, ends, open_notes):
        tick = track_end
        closes = sorted((max(file_end, start + midi.ticks_per_beat), key) for key, start in still_open.items())
        for close_tick, (channel, pitch) in closes:
            track.append(mido.Message("note_off", channel=channel, note=pitch, time=close_tick - tick))
            tick = close_tick


def from_pretty_midi(pm, source: str = "") -> NoteSequence:
    """Convert a ``pretty_midi.PrettyMIDI`` into a NoteSequence (notes sorted by start)."""
    instruments, notes = [], []
    for track, inst in enumerate(pm.instruments):
        program, is_drum = int(inst.program), bool(inst.is_drum)
        instruments.append(Instrument(program=program, is_drum=is_drum, name=str(inst.name or "")))
        for n in inst.notes:
            if n.end > n.start:
                start, end = float(n.start), float(n.end)
                notes.append(Note(int(n.pitch), start, end, int(n.velocity), program, is_drum, track))
    notes.sort(key=lambda n: (n.start, n.track, n.pitch))
    times, bpms = pm.get_tempo_changes()
    tempos = [(float(t), float(min(max(b, MIN_BPM), MAX_BPM))) for t, b in zip(times, bpms)] or [(0.0, 120.0)]
    time_signature = (4, 4)
    for ts in pm.time_signature_changes[:1]:
        if _valid_time_signature(ts.numerator, ts.denominator):
            time_signature = (int(ts.numerator), int(ts.denominator))
    return NoteSequence(
        notes=notes,
        tempos=tempos,
        time_signature=time_signature,
        instruments=instruments or [Instrument()],
        source=source,
    )


def _valid_time_signature(numerator, denominator) -> bool:
    return 1 <= numerator <= 64 and denominator in (1, 2, 4, 8, 16, 32, 64)


# -- reading scores --------------------------------------------------------------------------
def read_score(path) -> NoteSequence:
    """Read a MIDI, MusicXML, ABC or Humdrum file (first piece of a collection); GeneratorError on failure."""
    return read_scores(path, first_only=True)[0]


def read_scores(path, first_only: bool = False) -> list[NoteSequence]:
    """Read every piece of a music file (an ABC book or a music21 Opus holds several).

    Size limits are checked first; a score is then parsed by music21 in a worker process under the
    ``parse_seconds`` limit (see ``generator.data.limits``). ``first_only`` converts only the first piece.
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return [read_midi(path)]
    check_score_size(path)
    return limits.call_bounded(_parse_score_file, (name, first_only), name)


def check_score_size(path) -> None:
    """Refuse a score file over its size limit (a .mxl: its unpacked size) before parsing it."""
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise _fail(name, f"unsupported suffix {suffix!r}; expected one of {', '.join(MUSIC_SUFFIXES)}")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _fail(name, f"cannot read file ({error.strerror or error})") from None
    if size == 0:
        raise _fail(name, "file is empty")
    if suffix == ".abc":
        limits.check("abc_bytes", name, size)
        return
    if suffix == ".mxl":
        try:
            with zipfile.ZipFile(path) as archive:
                size = sum(max(member.file_size, 0) for member in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise _fail(name, f"not a compressed MusicXML file ({error})") from None
        if limits.get("score_bytes") and size > limits.get("score_bytes"):
            raise limits.exceeded("score_bytes", name, f"{size:,} bytes unpacked")
    limits.check("score_bytes", name, size)


def _parse_score_file(task: tuple[str, bool]) -> list[NoteSequence]:
    """Parse a score file with music21 in this process (``read_scores`` runs it under a deadline)."""
    name, first_only = task
    try:
        import music21

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = music21.converter.parse(name)
    except MemoryError:
        raise
    except Exception as error:
        raise _fail(name, f"cannot parse score ({type(error).__name__}: {error})") from None
    pieces = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    if not pieces:
        raise _fail(name, "contains no pieces")
    if len(pieces) == 1 or first_only:
        return [read_music21_score(pieces[0], name)]
    return [read_music21_score(piece, f"{name}#{i + 1}") for i, piece in enumerate(pieces)]


def read_score_documents(path) -> list[NoteSequence]:
    """Every piece of a music file, parsed in this process: what a corpus worker runs (its parent keeps
    the clock), the same as ``read_scores`` elsewhere."""
    return read_scores(path)


def read_music21_score(score, source: str = "") -> NoteSequence:
    """Convert an already parsed music21 stream (e.g. a corpus chorale) into a NoteSequence."""
    source = source or _music21_name(score)
    try:
        import music21

        if isinstance(score, music21.stream.Opus):
            if not score.scores:
                raise _fail(source, "contains no pieces")
            score = score.scores[0]
        max_notes = limits.get("notes")
        if max_notes:  # before the MIDI conversion, whose time grows with the square of the notes
            notes = sum(len(n.pitches) if n.isChord else 1 for n in score.recurse().notes)
            limits.check("notes", source, notes, max_notes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = music21.midi.translate.streamToMidiFile(score).writestr()
    except GeneratorError:
        raise
    except Exception as error:
        raise _fail(source, f"cannot convert score to MIDI ({type(error).__name__}: {error})") from None
    return read_midi_bytes(data, source)


def _music21_name(score) -> str:
    try:
        return str(score.metadata.corpusFilePath or score.metadata.title or "music21 score")
    except Exception:  # metadata is optional and varies between music21 versions
        return "music21 score"


# -- writing ---------------------------------------------------------------------------------
def to_pretty_midi(seq: NoteSequence):
    """Build a ``pretty_midi.PrettyMIDI`` with the tempo map, time signature and instruments of seq."""
    import pretty_midi

    tempos = sorted((max(float(t), 0.0), min(max(float(b), MIN_BPM), MAX_BPM)) for t, b in seq.tempos)
    tempos = tempos or [(0.0, 120.0)]
    pm = pretty_midi.PrettyMIDI(resolution=WRITE_RESOLUTION, initial_tempo=tempos[0][1])
    scales = [(0, 60.0 / (tempos[0][1] * WRITE_RESOLUTION))]
    last_time = 0.0
    for time, bpm in tempos[1:]:
        tick = scales[-1][0] + int(round((time - last_time) / scales[-1][1]))
        scale = 60.0 / (bpm * WRITE_RESOLUTION)
        if tick == scales[-1][0]:
            scales[-1] = (tick, scale)
        elif scale != scales[-1][1]:
            scales.append((tick, scale))
        last_time = time
    # pretty_midi has no public call for a tempo map; these two are what its own reader fills.
    pm._tick_scales = scales
    pm._update_tick_to_time(scales[-1][0] + 1)
    numerator, denominator = seq.time_signature
    if not _valid_time_signature(numerator, denominator):
        numerator, denominator = 4, 4
    pm.time_signature_changes = [pretty_midi.TimeSignature(int(numerator), int(denominator), 0.0)]

    tracks = [
        pretty_midi.Instrument(program=_clamp(i.program, 0, 127), is_drum=bool(i.is_drum), name=i.name or "")
        for i in seq.instruments
    ]
    for track, inst in zip(tracks, seq.instruments):
        track.channel = inst.channel  # write_midi puts each track back on its own channel
    extra: dict[tuple[int, bool], object] = {}
    for note in seq.notes:
        if not 0 <= note.pitch <= 127:
            continue
        if 0 <= note.track < len(tracks) and tracks[note.track].is_drum == bool(note.is_drum):
            target = tracks[note.track]
        else:  # a note whose track index is missing or wrong goes to a track of its own kind
            key = (_clamp(note.program, 0, 127), bool(note.is_drum))
            if key not in extra:
                extra[key] = pretty_midi.Instrument(program=key[0], is_drum=key[1])
            target = extra[key]
        start = max(float(note.start), 0.0)
        end = max(float(note.end), start + _MIN_WRITE_SECONDS)
        target.notes.append(pretty_midi.Note(_clamp(note.velocity, 1, 127), int(note.pitch), start, end))
    pm.instruments = [t for t in tracks + list(extra.values()) if t.notes]
    return pm


def _clamp(value, low: int, high: int) -> int:
    return int(min(max(int(value), low), high))


def _restore_channels(pm, path: str) -> None:
    """Move each written track to the channel its instrument was read from, where that is known and
    fits (drums on 9 only, each channel used by one pitched track); pretty_midi numbers them in order."""
    wanted = [getattr(inst, "channel", -1) for inst in pm.instruments]
    pitched = [c for inst, c in zip(pm.instruments, wanted) if not inst.is_drum]
    if all(c < 0 for c in wanted) or len(set(pitched)) < len(pitched) or 9 in pitched or -1 in pitched:
        return
    import mido

    midi = mido.MidiFile(path)
    for inst, channel, track in zip(pm.instruments, wanted, midi.tracks[1:]):
        if inst.is_drum:
            continue
        for i, message in enumerate(track):
            if hasattr(message, "channel"):
                track[i] = message.copy(channel=channel)
    midi.save(path)


def write_midi(seq: NoteSequence, path, force: bool = False) -> Path:
    """Write seq as a standard MIDI file, atomically; refuse to overwrite unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise ArgumentError.sentence(f"{path}: already exists; pass force=True to overwrite it", "force")
    if path.is_dir():
        raise GeneratorError(f"{path}: is a directory")
    try:
        pm = to_pretty_midi(seq)
    except Exception as error:
        raise _fail(str(path), f"cannot build MIDI data ({type(error).__name__}: {error})") from None
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        pm.write(temporary)
        _restore_channels(pm, temporary)
        os.replace(temporary, path)
        temporary = None
    except Exception as error:
        raise _fail(str(path), f"cannot write MIDI file ({type(error).__name__}: {error})") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
    return path
