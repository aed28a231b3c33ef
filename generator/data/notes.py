"""The music document shared by readers, tokenizers and writers: a list of timed notes.

Pure Python and numpy (no TensorFlow, no MIDI library): readers in ``generator.data.midi_io``
build a ``NoteSequence`` from files, tokenizers turn it into ids and back, writers turn it
into MIDI. Times are in seconds; ``tempos`` keeps the tempo map so beat-relative tokenizers
and writers can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def beat_clock(tempos, steps_per_beat: int):
    """``(clock, bpm_at)`` for a tempo map ``[(time s, bpm), ...]``: ``clock(seconds)`` gives clock
    steps of 1/``steps_per_beat`` quarter note (arrays in, arrays out) and ``bpm_at(steps)`` the
    tempo in force there. The beat-relative tokenizers (events with ``steps_per_beat``, band) share it."""
    tempos = sorted((max(float(t), 0.0), float(b)) for t, b in (tempos or [(0.0, 120.0)]))
    if tempos[0][0] > 0:
        tempos.insert(0, (0.0, tempos[0][1]))
    times = np.array([t for t, _ in tempos])
    bpms = np.array([b for _, b in tempos])
    rates = bpms / 60.0 * steps_per_beat  # steps per second
    at = np.concatenate([[0.0], np.cumsum(np.diff(times) * rates[:-1])])  # steps at each change

    def clock(seconds):
        seconds = np.asarray(seconds, dtype=float)
        i = np.clip(np.searchsorted(times, seconds, side="right") - 1, 0, len(times) - 1)
        return at[i] + (seconds - times[i]) * rates[i]

    def bpm_at(steps):
        i = np.clip(np.searchsorted(at, np.asarray(steps, dtype=float), side="right") - 1, 0, len(at) - 1)
        return bpms[i]

    return clock, bpm_at
