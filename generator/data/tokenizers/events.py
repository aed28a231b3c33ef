"""MIDI performance events, in the style of Magenta's performance_rnn (note_seq).

A piece is one stream of events read left to right; the clock starts at 0 and only
``TIME_SHIFT`` moves it:

==================  ======================================  ==============================
event               meaning                                 values
==================  ======================================  ==============================
``BOS``             start of a document (id 0, from base)   -
``NOTE_ON(p)``      pitch ``p`` starts sounding              ``min_pitch`` .. ``max_pitch``
``NOTE_OFF(p)``     pitch ``p`` stops sounding               ``min_pitch`` .. ``max_pitch``
``TIME_SHIFT(k)``   the clock moves ``k`` steps forward      1 .. ``max_shift_steps``
``VELOCITY(b)``     later notes use velocity bin ``b``       1 .. ``velocity_bins`` (or none)
``DRUM(p)``         one hit of drum key ``p``                0 .. 127 (only with ``drums``)
==================  ======================================  ==============================

The vocabulary is this list of ranges laid end to end (``EventTokenizer.ranges``): the id of
event value ``v`` in a range is ``range.offset + (v - range.first)``. With the defaults
(all 128 pitches, 100 shifts, 32 velocity bins, no drums) there are 1 + 128 + 128 + 100 + 32
= 389 ids.

Design decisions:

- **Time shifts are in seconds** (``1 / steps_per_second``, 10 ms by default, at most 1 s per
  token as in performance RNN). MIDI performances carry expressive timing that a beat grid
  would flatten, the same code serves any tempo map, and decoded notes are already in seconds.
  Longer gaps chain several shifts, so long notes and rests survive. Onsets and offsets are
  rounded to the nearest step; a note shorter than one step lasts one step.
- **Instruments are merged into one stream** (no PROGRAM tokens): the corpora are mostly one
  timbre (piano, chorale voices) and one stream keeps the vocabulary and the sampling constraint
  small. Decoding gives one instrument playing ``program``. Because the stream only knows
  whether a pitch sounds, notes of one pitch that overlap (unisons between parts) are merged:
  a pitch sounds over the union of their time spans and is struck again at each distinct onset.
- **Drums never become pitched notes.** With ``drums=False`` (the default) drum notes are
  dropped; with ``drums=True`` each hit is a ``DRUM(key)`` token (hits have no duration: decoded
  hits last ``DRUM_SECONDS``). What ``encode`` dropped is counted in ``last_dropped``
  (``drum_notes``, ``out_of_range``, ``polyphony``) so the caller can print a notice.
- **Polyphony is capped** at ``max_polyphony`` distinct sounding pitches: ``encode`` drops notes
  that would exceed it, and constrained sampling never exceeds it.

Sampling constraint: a ``NOTE_OFF`` only for a sounding pitch, a ``NOTE_ON`` only for a silent
pitch while fewer than ``max_polyphony`` pitches sound, never ``BOS``; time shifts are always
allowed, so no mask is empty. Array helpers live in ``generator.data.tokenizers.event_arrays``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers import event_arrays
from generator.data.tokenizers.base import BOS, BOS_NAME, Tokenizer, register

DEFAULT_VELOCITY = 80  # velocity of notes decoded before any VELOCITY token
DRUM_SECONDS = 0.1  # length of a decoded drum hit
CLOSING_TAIL_SECONDS = 0.5  # how long notes still sounding ring before closing_ids ends them
JSB_STEP_SECONDS = 0.125  # a 16th note at 120 bpm, the grid of JSB-style chorale arrays


@dataclass(frozen=True)
class EventRange:
    """One block of the vocabulary: ``size`` ids from ``offset`` for values ``first`` onwards."""

    name: str
    offset: int
    size: int
    first: int

    def id(self, value: int) -> int:
        return self.offset + value - self.first


@register
class EventTokenizer(Tokenizer):
    """NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY (/ DRUM) performance events."""

    kind = "events"
    modality = "music"
    has_constraint = True

    def __init__(
        self,
        steps_per_second: int = 100,  # time resolution: 100 means 10 ms steps
        max_shift_steps: int = 100,  # largest single TIME_SHIFT, in steps (100 = 1 s)
        velocity_bins: int = 32,  # 0 drops dynamics (every note gets DEFAULT_VELOCITY)
        min_pitch: int = 0,  # lowest and highest MIDI pitch kept; others are dropped
        max_pitch: int = 127,
        max_polyphony: int = 16,  # most distinct pitches sounding at once
        drums: bool = False,  # True: DRUM tokens; False: drum notes are dropped
        transpose: int = 5,  # augmentation: random transposition within +-transpose semitones
        stretch: float = 0.05,  # augmentation: random tempo factor within 1 +- stretch
        program: int = 0,  # General MIDI program of decoded notes
    ):
        if not 0 <= min_pitch <= max_pitch <= 127:
            raise ValueError("need 0 <= min_pitch <= max_pitch <= 127")
        if steps_per_second < 1 or max_shift_steps < 1 or max_polyphony < 1:
            raise ValueError("steps_per_second, max_shift_steps and max_polyphony must be >= 1")
        if not 0 <= velocity_bins <= 127 or transpose < 0 or not 0 <= stretch < 1:
            raise ValueError("need 0 <= velocity_bins <= 127, transpose >= 0, 0 <= stretch < 1")
        self.steps_per_second = int(steps_per_second)
        self.max_shift_steps = int(max_shift_steps)
        self.velocity_bins = int(velocity_bins)
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.max_polyphony = int(max_polyphony)
        self.drums = bool(drums)
        self.transpose, self.stretch = int(transpose), float(stretch)
        self.program = int(program)
        self.last_dropped = {"drum_notes": 0, "out_of_range": 0, "polyphony": 0}

        layout = [
            ("NOTE_ON", self.num_pitches, self.min_pitch),
            ("NOTE_OFF", self.num_pitches, self.min_pitch),
            ("TIME_SHIFT", self.max_shift_steps, 1),
        ]
        if self.velocity_bins:
            layout.append(("VELOCITY", self.velocity_bins, 1))
        if self.drums:
            layout.append(("DRUM", 128, 0))
        self.ranges: list[EventRange] = []
        offset = BOS + 1
        for name, size, first in layout:
            self.ranges.append(EventRange(name, offset, size, first))
            offset += size
        self._vocab_size = offset
        self._range = {r.name: r for r in self.ranges}
        self.on, self.off = self._range["NOTE_ON"], self._range["NOTE_OFF"]
        self.shift = self._range["TIME_SHIFT"]
        # id -> (event name, value), for decoding and naming without searching the ranges
        self._events = [(BOS_NAME, 0)] + [(r.name, r.first + i) for r in self.ranges for i in range(r.size)]
        self._bin_width = math.ceil(127 / self.velocity_bins) if self.velocity_bins else 0

    # -- vocabulary ----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def num_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    def event_id(self, name: str, value: int) -> int:
        """The id of one event, e.g. ``event_id("NOTE_ON", 60)``."""
        r = self._range[name]
        if not r.first <= value < r.first + r.size:
            raise ValueError(f"{name} value {value} outside {r.first}..{r.first + r.size - 1}")
        return r.id(value)

    def token_name(self, token_id: int) -> str:
        if not 0 <= int(token_id) < self.vocab_size:
            return f"<invalid {token_id}>"
        name, value = self._events[int(token_id)]
        return name if token_id == BOS else f"{name}({value})"

    def velocity_bin(self, velocity: int) -> int:
        """The 1-based velocity bin of a MIDI velocity 1-127."""
        return min((max(int(velocity), 1) - 1) // self._bin_width + 1, self.velocity_bins)

    def bin_velocity(self, velocity_bin: int) -> int:
        """The MIDI velocity a bin decodes to (the middle of the bin)."""
        return min((velocity_bin - 1) * self._bin_width + 1 + self._bin_width // 2, 127)

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, document) -> list[int]:
        """Turn a NoteSequence (or a JSB-style pitch grid) into ids; see ``last_dropped``."""
        seq = document if isinstance(document, NoteSequence) else grid_to_sequence(document)
        dropped = {"drum_notes": 0, "out_of_range": 0, "polyphony": 0}
        by_pitch: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        hits: set[tuple[int, int, int]] = set()
        sps = self.steps_per_second
        for note in seq.notes:
            if not (math.isfinite(note.start) and math.isfinite(note.end)):
                continue
            start = max(int(round(note.start * sps)), 0)
            if note.is_drum:
                if self.drums and 0 <= note.pitch <= 127:
                    hits.add((start, int(note.pitch), int(note.velocity)))
                else:
                    dropped["drum_notes"] += 1
                continue
            if not self.min_pitch <= note.pitch <= self.max_pitch:
                dropped["out_of_range"] += 1
                continue
            end = max(int(round(note.end * sps)), start + 1)
            by_pitch[int(note.pitch)].append((start, end, int(note.velocity)))

        # Events as (time, order, pitch, velocity, segment): offs before hits before ons.
        events = []
        for pitch, notes in by_pitch.items():
            for n, (start, end, velocity) in enumerate(_merge_same_pitch(notes)):
                key = (pitch, n)
                events.append((start, 2, pitch, velocity, key))
                events.append((end, 0, pitch, 0, key))
        events.extend((start, 1, pitch, velocity, None) for start, pitch, velocity in hits)
        events.sort(key=lambda e: e[:4])

        ids, now, current_bin, sounding, skipped = [], 0, None, 0, set()
        for time, order, pitch, velocity, key in events:
            if order == 0:
                if key in skipped:
                    continue
                sounding -= 1
            elif order == 2:
                if sounding >= self.max_polyphony:
                    skipped.add(key)
                    dropped["polyphony"] += 1
                    continue
                sounding += 1
            self._emit_shifts(ids, time - now)
            now = time
            if order and self.velocity_bins:
                velocity_bin = self.velocity_bin(velocity)
                if velocity_bin != current_bin:
                    ids.append(self._range["VELOCITY"].id(velocity_bin))
                    current_bin = velocity_bin
            ids.append((self.off, self._range.get("DRUM"), self.on)[order].id(pitch))
        self.last_dropped = dropped
        return ids

    def _emit_shifts(self, ids: list[int], steps: int) -> None:
        while steps > 0:
            k = min(steps, self.max_shift_steps)
            ids.append(self.shift.id(k))
            steps -= k

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, ids) -> NoteSequence:
        """Turn ids into a NoteSequence; notes still sounding at the end are closed there."""
        step = 1.0 / self.steps_per_second
        time, velocity = 0, DEFAULT_VELOCITY
        sounding: dict[int, tuple[int, int]] = {}  # pitch -> (start step, velocity)
        notes: list[Note] = []

        def close(pitch: int) -> None:
            start, note_velocity = sounding.pop(pitch)
            end = max(time, start + 1)
            notes.append(Note(pitch, start * step, end * step, note_velocity, self.program, False, 0))

        for token in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} outside the vocabulary of {self.vocab_size}")
            name, value = self._events[token]
            if name == "TIME_SHIFT":
                time += value
            elif name == "NOTE_ON":
                if value in sounding:  # struck again while sounding: end it here first
                    close(value)
                sounding[value] = (time, velocity)
            elif name == "NOTE_OFF":
                if value in sounding:
                    close(value)
            elif name == "VELOCITY":
                velocity = self.bin_velocity(value)
            elif name == "DRUM":
                notes.append(Note(value, time * step, time * step + DRUM_SECONDS, velocity, 0, True, 1))
        for pitch in list(sounding):
            close(pitch)
        notes.sort(key=lambda n: (n.start, n.pitch))
        instruments = [Instrument(program=self.program)]
        if any(n.is_drum for n in notes):
            instruments.append(Instrument(program=0, is_drum=True, name="drums"))
        return NoteSequence(notes=notes, instruments=instruments, source="generated")

    # -- serialization -------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "steps_per_second": self.steps_per_second,
            "max_shift_steps": self.max_shift_steps,
            "velocity_bins": self.velocity_bins,
            "min_pitch": self.min_pitch,
            "max_pitch": self.max_pitch,
            "max_polyphony": self.max_polyphony,
            "drums": self.drums,
            "transpose": self.transpose,
            "stretch": self.stretch,
            "program": self.program,
        }

    # -- augmentation --------------------------------------------------------------------------
    def augment(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transpose each window by a random in-range shift and stretch its time shifts."""
        out = event_arrays.transpose_windows(
            windows, rng, self.transpose, self.on.offset, self.off.offset, self.num_pitches
        )
        if self.stretch:
            out = event_arrays.stretch_windows(
                out, rng, self.stretch, self.shift.offset, self.max_shift_steps
            )
        return out

    # -- constrained sampling ------------------------------------------------------------------
    def new_constraint_state(self, batch_size: int) -> np.ndarray:
        """The state is a bool array ``[batch, num_pitches]``: which pitches sound."""
        return np.zeros((batch_size, self.num_pitches), dtype=bool)

    def allowed(self, state: np.ndarray) -> np.ndarray:
        return event_arrays.allowed_mask(
            state, self.vocab_size, self.on.offset, self.off.offset, self.max_polyphony
        )

    def advance(self, state: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return event_arrays.advance_sounding(state, ids, self.on.offset, self.off.offset)

    def closing_ids(self, state: np.ndarray, index: int) -> list[int]:
        """A short tail (TIME_SHIFT) then NOTE_OFF for every pitch still sounding."""
        pitches = np.flatnonzero(state[index])
        if not len(pitches):
            return []
        tail = min(max(int(round(CLOSING_TAIL_SECONDS * self.steps_per_second)), 1), self.max_shift_steps)
        return [self.shift.id(tail)] + [self.off.offset + int(p) for p in pitches]

    def duration(self, ids) -> float:
        """Seconds from the start of ``ids`` to their end: the sum of their time shifts."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        shifts = ids[(ids >= self.shift.offset) & (ids < self.shift.offset + self.shift.size)]
        return float((shifts - self.shift.offset + self.shift.first).sum()) / self.steps_per_second

    def count_invalid_events(self, ids) -> int:
        """Count ill-formed events: BOS after the start, NOTE_OFF of a silent pitch, NOTE_ON of a
        sounding pitch, NOTE_ON beyond ``max_polyphony``, ids outside the vocabulary, and notes
        left sounding at the end."""
        invalid, sounding = 0, set()
        for position, token in enumerate(np.asarray(ids, dtype=np.int64).ravel().tolist()):
            if not 0 <= token < self.vocab_size:
                invalid += 1
                continue
            name, value = self._events[token]
            if token == BOS:
                invalid += position > 0
            elif name == "NOTE_ON":
                invalid += value in sounding or len(sounding) >= self.max_polyphony
                sounding.add(value)
            elif name == "NOTE_OFF":
                invalid += value not in sounding
                sounding.discard(value)
        return invalid + len(sounding)


def _merge_same_pitch(notes: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Make the notes of one pitch non-overlapping: the pitch sounds over the union of their
    spans and is struck again at every distinct onset (louder velocity wins on a shared onset)."""
    merged: list[list[int]] = []
    for start, end, velocity in sorted(notes):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if start == last[0]:
                last[1], last[2] = max(last[1], end), max(last[2], velocity)
                continue
            end = max(end, last[1])
            last[1] = start
        merged.append([start, end, velocity])
    return [tuple(m) for m in merged]


def grid_to_sequence(grid, step_seconds: float = JSB_STEP_SECONDS) -> NoteSequence:
    """A JSB-style grid (steps x voices of MIDI pitches, -1 or NaN = silence) as a NoteSequence;
    a voice repeating its pitch on consecutive steps holds one note."""
    array = np.asarray(grid, dtype=float)
    if array.ndim != 2:
        raise ValueError("expected a NoteSequence or a 2-D grid of MIDI pitches (steps x voices)")
    array = np.where(np.isfinite(array), array, -1).astype(int)
    notes = []
    for voice in range(array.shape[1]):
        column = array[:, voice]
        boundaries = np.flatnonzero(np.diff(column)) + 1
        for start, end in zip(np.r_[0, boundaries], np.r_[boundaries, len(column)]):
            pitch = int(column[start])
            if 0 <= pitch <= 127:
                start_s, end_s = float(start * step_seconds), float(end * step_seconds)
                notes.append(Note(pitch, start_s, end_s, DEFAULT_VELOCITY))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return NoteSequence(notes=notes, source="grid")
