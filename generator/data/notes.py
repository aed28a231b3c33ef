"""The music document shared by readers, tokenizers and writers: a list of timed notes.

Pure Python and numpy (no TensorFlow, no MIDI library): readers in ``generator.data.midi_io``
build a ``NoteSequence`` from files, tokenizers turn it into ids and back, writers turn it
into MIDI. Times are in seconds; ``tempos`` keeps the tempo map so beat-relative tokenizers
and writers can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Note:
    """One note: MIDI pitch 0-127, start and end in seconds, velocity 1-127."""

    pitch: int
    start: float
    end: float
    velocity: int = 80
    program: int = 0  # General MIDI program of the instrument that plays it
    is_drum: bool = False
    track: int = 0  # index into NoteSequence.instruments


@dataclass
class Instrument:
    """One track of the source: its General MIDI program, drum flag and name."""

    program: int = 0
    is_drum: bool = False
    name: str = ""
    channel: int = -1  # MIDI channel 0-15 it was read from (-1: unknown; writers choose one)
    role: str = ""  # lead, bass, drums, chords, pad or melody: generator.data.score.assign_roles


@dataclass
class NoteSequence:
    """A piece of music: notes plus the tempo map, time signature and instruments."""

    notes: list[Note] = field(default_factory=list)
    tempos: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 120.0)])  # (time s, bpm)
    time_signature: tuple[int, int] = (4, 4)
    instruments: list[Instrument] = field(default_factory=lambda: [Instrument()])
    source: str = ""  # file name or corpus entry, for messages

    @property
    def end_time(self) -> float:
        return max((n.end for n in self.notes), default=0.0)

    @property
    def initial_bpm(self) -> float:
        return self.tempos[0][1] if self.tempos else 120.0
