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
``NOTE_ON_t(p)``    pitch ``p`` starts sounding in track t   t = 1 .. ``tracks - 1``
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
- **Instruments are merged into one stream** (no PROGRAM tokens) by default: the corpora are
  mostly one timbre (piano, chorale voices) and one stream keeps the vocabulary and the sampling
  constraint small. Decoding gives one instrument playing ``program``. Because the stream only
  knows whether a pitch sounds, notes of one pitch that overlap (unisons between parts) are
  merged: a pitch sounds over the union of their time spans and is struck again at each
  distinct onset.
- **Track slots** (``tracks=k``, k >= 2) keep a melody apart from its accompaniment at no cost
  in sequence length: each slot has its own ``NOTE_ON`` range (``NOTE_OFF`` stays shared, as a
  pitch sounds or not). Slot 0 is the lead, found from the notes (``generator.data.score``:
  the high single-note line, the right hand); the other tracks fill slots 1 .. k-1 from the
  highest median pitch down (the last slot takes all the rest), and a piece with a single track
  goes to the last slot (a whole piano part, not a melody). Track order never decides. Decoding gives one instrument per slot; notes keep their slot in
  ``Note.track``.
- **Beat-relative time** (``steps_per_beat=n``): a TIME_SHIFT step is 1/n of a quarter-note
  beat read through the piece's tempo map instead of 1/``steps_per_second`` s, so the same
  rhythm has the same tokens at any tempo (quantized arrangements such as POP909's). Decoding
  plays the beats at ``bpm``; generation sets it to the seed's tempo.
- **Drums never become pitched notes.** With ``drums=False`` (the default) drum notes are
  dropped; with ``drums=True`` each hit is a ``DRUM(key)`` token (hits have no duration: decoded
  hits last ``DRUM_SECONDS``). What ``encode`` dropped is counted in ``last_dropped``
  (``drum_notes``, ``out_of_range``, ``polyphony``) so the caller can print a notice.
- **Polyphony is capped** at ``max_polyphony`` distinct sounding pitches: ``encode`` drops notes
  that would exceed it, and constrained sampling never exceeds it.
- **Note length is capped** at ``max_note_steps`` clock steps when set: constrained sampling
  allows only the time shifts that keep every sounding note within it (the note must be
  released first). A new tokenizer with ``note_limit`` (the default) learns it from the notes
  it encodes, the training corpus's: the length within which all but the longest 1 in
  ``1 / (1 - NOTE_LIMIT_QUANTILE)`` notes stay (the longest note while fewer are encoded), so a
  handful of outliers cannot license half-minute holds; tokenizer.json then records it. Files
  from before the cap have none, and ``without_note_limit()`` lifts it.

Sampling constraint: a ``NOTE_OFF`` only for a pitch that has sounded for at least one clock
step (no note ends where it starts: encoded notes never do, and a model that loops on
NOTE_ON/NOTE_OFF pairs would never advance time), a ``NOTE_ON`` only for a silent
pitch while fewer than ``max_polyphony`` pitches sound, never ``BOS``; time shifts are allowed
unless they would hold a note past ``max_note_steps``, and once a note has lasted that long
only the NOTE_OFFs of such notes are (the release is forced, so sampling cannot stall on
NOTE_ONs and velocities while the note waits), so no mask is empty. Array helpers live in
``generator.data.tokenizers.event_arrays``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from generator.data.notes import Instrument, Note, NoteSequence, beat_clock
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
        tracks: int = 1,  # NOTE_ON slots: 1 merges all instruments; 2 keeps a melody apart (see above)
        steps_per_beat: int = 0,  # > 0: time steps are 1/steps_per_beat of a beat, not of a second
        bpm: float = 120.0,  # tempo at which beat-relative steps decode
        max_note_steps: int | None = None,  # longest note sampling allows, in steps (None: no cap)
        note_limit: bool = True,  # learn max_note_steps from the notes encoded (note_length_cap)
    ):
        if not 0 <= min_pitch <= max_pitch <= 127:
            raise ValueError("need 0 <= min_pitch <= max_pitch <= 127")
        if steps_per_second < 1 or max_shift_steps < 1 or max_polyphony < 1:
            raise ValueError("steps_per_second, max_shift_steps and max_polyphony must be >= 1")
        if not 0 <= velocity_bins <= 127 or transpose < 0 or not 0 <= stretch < 1:
            raise ValueError("need 0 <= velocity_bins <= 127, transpose >= 0, 0 <= stretch < 1")
        if not 1 <= tracks <= 16 or steps_per_beat < 0 or not bpm > 0:
            raise ValueError("need 1 <= tracks <= 16, steps_per_beat >= 0 and bpm > 0")
        if max_note_steps is not None and max_note_steps < 1:
            raise ValueError("max_note_steps must be at least 1 (or None for no cap)")
        self.steps_per_second = int(steps_per_second)
        self.max_shift_steps = int(max_shift_steps)
        self.velocity_bins = int(velocity_bins)
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.max_polyphony = int(max_polyphony)
        self.drums = bool(drums)
        self.transpose, self.stretch = int(transpose), float(stretch)
        self.program = int(program)
        self.tracks, self.steps_per_beat, self.bpm = int(tracks), int(steps_per_beat), float(bpm)
        self.max_note_steps = None if max_note_steps is None else int(max_note_steps)
        self.note_limit = bool(note_limit)
        # A new tokenizer with note_limit learns the cap from what it encodes (the training corpus,
        # before it is saved); one rebuilt from JSON (from_config) keeps the cap it was saved with.
        self._fitting = self.note_limit and self.max_note_steps is None
        self._note_lengths: Counter = Counter()  # clock steps -> notes encoded that long (while fitting)
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
        layout.extend((f"NOTE_ON_{t}", self.num_pitches, self.min_pitch) for t in range(1, self.tracks))
        self.ranges: list[EventRange] = []
        offset = BOS + 1
        for name, size, first in layout:
            self.ranges.append(EventRange(name, offset, size, first))
            offset += size
        self._vocab_size = offset
        self._range = {r.name: r for r in self.ranges}
        self.on, self.off = self._range["NOTE_ON"], self._range["NOTE_OFF"]
        self.shift = self._range["TIME_SHIFT"]
        self.ons = [self.on] + [self._range[f"NOTE_ON_{t}"] for t in range(1, self.tracks)]  # by slot
        self._on_offsets = [r.offset for r in self.ons]
        # id -> (event name, value), for decoding and naming without searching the ranges
        self._events = [(BOS_NAME, 0)] + [(r.name, r.first + i) for r in self.ranges for i in range(r.size)]
        self._slot = {r.name: t for t, r in enumerate(self.ons)}  # NOTE_ON range name -> track slot
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
    @property
    def step_seconds(self) -> float:
        """Seconds of one clock step when decoding (at ``bpm`` in beat-relative mode)."""
        if self.steps_per_beat:
            return 60.0 / (self.bpm * self.steps_per_beat)
        return 1.0 / self.steps_per_second

    def _clock(self, seq: NoteSequence):
        """A function from seconds (array) to clock steps (float) for ``seq``."""
        if not self.steps_per_beat:
            return lambda seconds: np.asarray(seconds, dtype=float) * self.steps_per_second
        return beat_clock(seq.tempos, self.steps_per_beat)[0]

    def slots(self, seq: NoteSequence) -> dict[int, int]:
        """Track index -> NOTE_ON slot for the pitched tracks of ``seq`` (see the module docstring)."""
        pitched = sorted({n.track for n in seq.notes if not n.is_drum})
        if self.tracks == 1 or not pitched:
            return {t: 0 for t in pitched}
        if len(pitched) == 1:
            return {pitched[0]: self.tracks - 1}
        from generator.data.score import assign_roles, track_stats

        if not any(inst.role for inst in seq.instruments):
            assign_roles(seq)
        role = {t: seq.instruments[t].role if t < len(seq.instruments) else "" for t in pitched}
        lead = next((t for t in pitched if role[t] == "lead"), None)
        stats = track_stats(seq)
        others = sorted((t for t in pitched if t != lead), key=lambda t: (-stats[t].median_pitch, t))
        if lead is None:
            return {t: self.tracks - 1 for t in others}
        return {lead: 0, **{t: min(1 + i, self.tracks - 1) for i, t in enumerate(others)}}

    def slot_tracks(self, seq: NoteSequence) -> dict[int, list[int]]:
        """NOTE_ON slot -> the tracks of ``seq`` it came from (several where tracks share the last
        slot: compose gives each continued note to the one whose pitches it is nearest)."""
        found: dict[int, list[int]] = {}
        for track, slot in sorted(self.slots(seq).items()):
            found.setdefault(slot, []).append(track)
        return found

    def note_spans(self, document) -> list[tuple[int, int, int, int, bool, int]]:
        """The notes of a document on the tokenizer's clock: (start, end, pitch, velocity, is_drum,
        slot), unfiltered; a pitched note lasts at least one step."""
        seq = document if isinstance(document, NoteSequence) else grid_to_sequence(document)
        notes = [n for n in seq.notes if math.isfinite(n.start) and math.isfinite(n.end)]
        if not notes:
            return []
        clock = self._clock(seq)
        starts = np.maximum(np.rint(clock([n.start for n in notes])), 0).astype(np.int64).tolist()
        ends = np.rint(clock([n.end for n in notes])).astype(np.int64).tolist()
        slot = self.slots(seq)
        return [
            (start, max(end, start + 1), int(n.pitch), int(n.velocity), n.is_drum, slot.get(n.track, 0))
            for n, start, end in zip(notes, starts, ends)
        ]

    def encode(self, document) -> list[int]:
        """Turn a NoteSequence (or a JSB-style pitch grid) into ids; see ``last_dropped``."""
        dropped = {"drum_notes": 0, "out_of_range": 0, "polyphony": 0}
        by_pitch: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
        hits: set[tuple[int, int, int]] = set()
        for start, end, pitch, velocity, is_drum, slot in self.note_spans(document):
            if is_drum:
                if self.drums and 0 <= pitch <= 127:
                    hits.add((start, pitch, velocity))
                else:
                    dropped["drum_notes"] += 1
                continue
            if not self.min_pitch <= pitch <= self.max_pitch:
                dropped["out_of_range"] += 1
                continue
            by_pitch[pitch].append((start, end, velocity, slot))

        # Events as (time, order, pitch, velocity, segment, slot): offs before hits before ons.
        events, lengths = [], []
        for pitch, notes in by_pitch.items():
            for n, (start, end, velocity, slot) in enumerate(_merge_same_pitch(notes)):
                key = (pitch, n)
                lengths.append(end - start)
                events.append((start, 2, pitch, velocity, key, slot))
                events.append((end, 0, pitch, 0, key, slot))
        events.extend((start, 1, pitch, velocity, None, 0) for start, pitch, velocity in hits)
        events.sort(key=lambda e: e[:4])

        ids, now, current_bin, sounding, skipped = [], 0, None, 0, set()
        drum = self._range.get("DRUM")
        for time, order, pitch, velocity, key, slot in events:
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
            ids.append((self.off, drum, self.ons[slot])[order].id(pitch))
        self.last_dropped = dropped
        if self._fitting and lengths:
            self._note_lengths.update(lengths)
            self.max_note_steps = note_length_cap(self._note_lengths)
        return ids

    @classmethod
    def from_config(cls, config: dict) -> "EventTokenizer":
        """Rebuild a saved tokenizer; files from before the note-length cap get none."""
        config = dict(config)
        if "max_note_steps" not in config:
            config["note_limit"] = False
        tokenizer = cls(**config)
        tokenizer._fitting = False
        return tokenizer

    def without_note_limit(self) -> "EventTokenizer":
        """The same tokenizer with no cap on note length (``--no-note-limit``)."""
        return type(self).from_config({**self.config(), "max_note_steps": None, "note_limit": False})

    def longest_note(self, ids) -> int:
        """The longest note in ``ids``, in clock steps (notes left sounding end with the ids)."""
        longest, time, sounding = 0, 0, {}
        for token in np.asarray(ids, dtype=np.int64).ravel().tolist():
            name, value = self._events[token] if 0 <= token < self.vocab_size else ("", 0)
            if name == "TIME_SHIFT":
                time += value
            elif name in self._slot:
                longest = max(longest, time - sounding.get(value, time))
                sounding[value] = time
            elif name == "NOTE_OFF" and value in sounding:
                longest = max(longest, time - sounding.pop(value))
        return max([longest] + [time - start for start in sounding.values()])

    def _emit_shifts(self, ids: list[int], steps: int) -> None:
        while steps > 0:
            k = min(steps, self.max_shift_steps)
            ids.append(self.shift.id(k))
            steps -= k

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, ids) -> NoteSequence:
        """Turn ids into a NoteSequence; notes still sounding at the end are closed there."""
        step = self.step_seconds
        time, velocity = 0, DEFAULT_VELOCITY
        sounding: dict[int, tuple[int, int, int]] = {}  # pitch -> (start step, velocity, slot)
        notes: list[Note] = []

        def close(pitch: int) -> None:
            start, note_velocity, slot = sounding.pop(pitch)
            end = max(time, start + 1)
            notes.append(Note(pitch, start * step, end * step, note_velocity, self.program, False, slot))

        for token in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} outside the vocabulary of {self.vocab_size}")
            name, value = self._events[token]
            if name == "TIME_SHIFT":
                time += value
            elif name in self._slot:
                if value in sounding:  # struck again while sounding: end it here first
                    close(value)
                sounding[value] = (time, velocity, self._slot[name])
            elif name == "NOTE_OFF":
                if value in sounding:
                    close(value)
            elif name == "VELOCITY":
                velocity = self.bin_velocity(value)
            elif name == "DRUM":
                notes.append(Note(value, time * step, time * step + DRUM_SECONDS, velocity, 0, True, self.tracks))
        for pitch in list(sounding):
            close(pitch)
        notes.sort(key=lambda n: (n.start, n.pitch))
        names = ["melody", "accompaniment"] if self.tracks == 2 else [""] * self.tracks
        instruments = [Instrument(program=self.program, name=name) for name in names]
        if any(n.is_drum for n in notes):
            instruments.append(Instrument(program=0, is_drum=True, name="drums"))
        tempos = [(0.0, self.bpm)] if self.steps_per_beat else [(0.0, 120.0)]
        return NoteSequence(notes=notes, tempos=tempos, instruments=instruments, source="generated")

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
            "tracks": self.tracks,
            "steps_per_beat": self.steps_per_beat,
            "bpm": self.bpm,
            "max_note_steps": self.max_note_steps,
            "note_limit": self.note_limit,
        }

    # -- augmentation --------------------------------------------------------------------------
    def transposition(self, semitones: int) -> np.ndarray:
        """NOTE_ON (every track's) and NOTE_OFF ids moved ``semitones`` (-1 outside the pitch range);
        time shifts, velocities and drums stay."""
        return self.shifted_ranges(self.vocab_size, semitones, [(r.offset, r.size) for r in self.ons + [self.off]])

    def augment(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transpose each window by a random in-range shift and stretch its time shifts."""
        out = event_arrays.transpose_windows(
            windows, rng, self.transpose, self._on_offsets + [self.off.offset], self.num_pitches
        )
        if self.stretch:
            out = event_arrays.stretch_windows(out, rng, self.stretch, self.shift.offset, self.max_shift_steps)
        return out

    # -- constrained sampling ------------------------------------------------------------------
    def new_constraint_state(self, batch_size: int) -> np.ndarray:
        """``[batch, num_pitches]``: how many clock steps each pitch has sounded (int32, -1 when
        silent), for the note-length cap and so that no note ends where it starts; see ``event_arrays``."""
        return np.full((batch_size, self.num_pitches), -1, dtype=np.int32)

    def allowed(self, state: np.ndarray) -> np.ndarray:
        return event_arrays.allowed_mask(
            state,
            self.vocab_size,
            self._on_offsets,
            self.off.offset,
            self.max_polyphony,
            self.shift.offset,
            self.max_shift_steps,
            self.max_note_steps,
        )

    def advance(self, state: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return event_arrays.advance_sounding(
            state, ids, self._on_offsets, self.off.offset, self.shift.offset, self.max_shift_steps
        )

    def closing_ids(self, state: np.ndarray, index: int) -> list[int]:
        """A short tail (TIME_SHIFT, within the note-length cap) then NOTE_OFF for every pitch still sounding."""
        pitches = np.flatnonzero(event_arrays.sounding(state)[index])
        if not len(pitches):
            return []
        tail = min(max(int(round(CLOSING_TAIL_SECONDS / self.step_seconds)), 1), self.max_shift_steps)
        if self.max_note_steps is not None:
            tail = min(tail, self.max_note_steps - int(state[index].max()))
        return ([self.shift.id(tail)] if tail > 0 else []) + [self.off.offset + int(p) for p in pitches]

    def duration(self, ids) -> float:
        """Seconds from the start of ``ids`` to their end: the sum of their time shifts."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        shifts = ids[(ids >= self.shift.offset) & (ids < self.shift.offset + self.shift.size)]
        return float((shifts - self.shift.offset + self.shift.first).sum()) * self.step_seconds

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
            elif name in self._slot:
                invalid += value in sounding or len(sounding) >= self.max_polyphony
                sounding.add(value)
            elif name == "NOTE_OFF":
                invalid += value not in sounding
                sounding.discard(value)
        return invalid + len(sounding)


NOTE_LIMIT_QUANTILE = 0.9999  # the learned cap: all but the longest 1 in 10,000 notes stay within it


def note_length_cap(lengths: Counter, quantile: float = NOTE_LIMIT_QUANTILE) -> int:
    """The smallest length (clock steps) that at least ``quantile`` of the notes counted in
    ``lengths`` (length -> count) do not exceed: the longest note when fewer than
    ``1 / (1 - quantile)`` are counted."""
    total, seen = sum(lengths.values()), 0
    need = math.ceil(quantile * total - 1e-9)
    for length in sorted(lengths):
        seen += lengths[length]
        if seen >= need:
            return int(length)
    return int(max(lengths))


def _merge_same_pitch(notes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Make the notes (start, end, velocity, slot) of one pitch non-overlapping: the pitch sounds
    over the union of their spans and is struck again at every distinct onset (on a shared onset
    the louder velocity and the lower slot, the melody's, win)."""
    merged: list[list[int]] = []
    for start, end, velocity, slot in sorted(notes):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            if start == last[0]:
                last[1], last[2], last[3] = max(last[1], end), max(last[2], velocity), min(last[3], slot)
                continue
            end = max(end, last[1])
            last[1] = start
        merged.append([start, end, velocity, slot])
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
