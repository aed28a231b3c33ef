"""Multi-track band songs: bars and positions, instrument tracks, notes with durations, drum hits.

A song is one stream read left to right, bar by bar (after REMI's bars and positions, with the
instrument tags of REMI+ and MMM):

==================  ============================================  ==========================
event               meaning                                       values
==================  ============================================  ==========================
``BOS``             start of a document (id 0, from base)          -
``TIMESIG(i)``      the metre, once before the first bar           ``TIME_SIGNATURES[i]``
``BAR``             a new bar starts (empty bars too)              -
``TEMPO(b)``        the tempo from this bar on (after ``BAR``)     ``TEMPO_BINS`` bpm
``POS(k)``          the clock moves to step ``k`` of this bar       0 .. ``max_bar_steps - 1``
``TRACK(t)``        the following notes belong to track slot ``t``  kind * 3 + instance
``VEL(b)``          this track's later notes use velocity bin b    1 .. ``VELOCITY_BINS``
``NOTE(p)``         a pitched note of pitch ``p`` starts now        0 .. 127
``DUR(d)``          the note just started lasts ``d`` steps         ``DURATIONS``
``DRUM(k)``         a hit of General MIDI drum key ``k``            27 .. 87
==================  ============================================  ==========================

Design decisions:

- **Time is in bars and beat steps** (``steps_per_beat`` per quarter note, 12 by default, so
  16ths and triplets are exact), read through the song's tempo map. Bars and positions give the
  model the metre outright, which a stream of time shifts leaves it to count; a bar of the
  song's time signature is ``numerator * 4 / denominator`` beats.
- **Notes carry their duration** (``NOTE`` then ``DUR``), as in REMI: with many tracks a
  ``NOTE_OFF`` per note would need its own track tag, and polyphony is no longer a constraint
  on sampling. Durations are quantized to the nearest of ``DURATIONS`` (in log terms).
- **Tracks are slots of an instrument kind**: the 16 General MIDI program families (piano,
  chromatic percussion, organ, guitar, bass, strings, ensemble, brass, reed, pipe, synth lead,
  synth pad, synth effects, ethnic, percussive, sound effects), each with ``INSTANCES`` slots,
  and one drum slot. A track's kind is its program's family, except that a track whose notes
  make it the bass (``generator.data.score``) is of the bass kind whatever its program. Tracks
  of one kind take its slots by their median pitch, highest first, so two guitars stay two
  and their order comes from the notes, not from the file. Tracks beyond a kind's slots share
  its last slot (``reduced`` says which); all drum tracks share the drum slot. The kind is in
  the token itself, so a window cut anywhere in a song knows which instrument plays.
- **Drums are hits** of the General MIDI drum map with coarse velocity, never pitched notes.
- **Velocity is per track** (each slot keeps its own bin, ``VEL`` only where it changes),
  in ``VELOCITY_BINS`` bins.
- Within a position the tracks come in slot order and a track's notes in rising pitch, so one
  moment of music has exactly one spelling.

Sampling constraint: the grammar above (``DUR`` right after each ``NOTE``; ``NOTE`` only in a
pitched track, ``DRUM`` only in the drum slot; positions rising within a bar and inside it;
tracks rising within a position; pitches rising within a track; ``TEMPO`` only after ``BAR``;
``TIMESIG`` only before the first bar), and, when continuing a seed (``for_seed``), only the
seed's own track slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from generator.data.notes import Instrument, Note, NoteSequence, beat_clock
from generator.data.tokenizers.base import BOS, BOS_NAME, Tokenizer, register

TIME_SIGNATURES = [
    (4, 4),
    (3, 4),
    (2, 4),
    (6, 8),
    (12, 8),
    (2, 2),
    (5, 4),
    (7, 8),
    (9, 8),
    (3, 8),
    (6, 4),
    (7, 4),
    (5, 8),
    (1, 4),
]
TEMPO_BINS = [round(40 * (240 / 40) ** (i / 23), 1) for i in range(24)]  # 40 .. 240 bpm, geometric
DURATIONS = [1, 2, 3, 4, 6, 8, 9, 12, 15, 18, 24, 30, 36, 48, 60, 72, 96, 120, 144, 192]  # steps
VELOCITY_BINS = 8
DRUM_KEYS = (27, 87)  # the General MIDI percussion map's extended range
DRUM_SECONDS = 0.1  # length of a decoded drum hit
KINDS = 17  # 16 program families + drums
DRUM_KIND = 16
BASS_KIND = 4
INSTANCES = 3  # slots per pitched kind
FAMILY_NAMES = [
    "piano",
    "chromatic percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth lead",
    "synth pad",
    "synth effects",
    "ethnic",
    "percussive",
    "sound effects",
    "drums",
]
FAMILY_PROGRAMS = [0, 11, 16, 25, 33, 48, 48, 61, 65, 73, 80, 88, 98, 104, 114, 120, 0]  # decoded without a seed
MIN_BAR_STEPS = 1


def family(program: int) -> int:
    """The General MIDI family (0-15) of a program 0-127."""
    return min(max(int(program), 0), 127) // 8


@dataclass(frozen=True)
class _Range:
    name: str
    offset: int
    size: int


@register
class BandTokenizer(Tokenizer):
    """Bars, positions, track slots, notes with durations and drum hits (see the module docstring)."""

    kind = "band"
    modality = "music"
    has_constraint = True

    def __init__(
        self,
        steps_per_beat: int = 12,
        max_bar_beats: int = 8,
        transpose: int = 5,
        time_signature: tuple[int, int] | list[int] = (4, 4),
        bpm: float = 120.0,
        slots: list[int] | None = None,
        fixed_tempo: bool = False,
    ):
        if steps_per_beat < 1 or max_bar_beats < 1 or transpose < 0 or not bpm > 0:
            raise ValueError("need steps_per_beat >= 1, max_bar_beats >= 1, transpose >= 0 and bpm > 0")
        self.steps_per_beat, self.max_bar_beats = int(steps_per_beat), int(max_bar_beats)
        self.max_bar_steps = self.steps_per_beat * self.max_bar_beats
        self.transpose = int(transpose)
        self.time_signature = (int(time_signature[0]), int(time_signature[1]))
        self.bpm = float(bpm)
        self.slots = None if slots is None else sorted({int(s) for s in slots})  # sampling may use only these
        self.fixed_tempo = bool(fixed_tempo)  # decode at ``bpm`` whatever TEMPO says (continuing a seed)
        self._slot_mask = np.zeros(KINDS * INSTANCES, dtype=bool)  # the TRACK slots sampling may choose
        self._slot_mask[self.slots if self.slots is not None else slice(None)] = True
        layout = [
            ("TIMESIG", len(TIME_SIGNATURES)),
            ("BAR", 1),
            ("TEMPO", len(TEMPO_BINS)),
            ("POS", self.max_bar_steps),
            ("TRACK", KINDS * INSTANCES),
            ("VEL", VELOCITY_BINS),
            ("NOTE", 128),
            ("DUR", len(DURATIONS)),
            ("DRUM", DRUM_KEYS[1] - DRUM_KEYS[0] + 1),
        ]
        offset, self.ranges = BOS + 1, {}
        for name, size in layout:
            self.ranges[name] = _Range(name, offset, size)
            offset += size
        self._vocab_size = offset
        r = self.ranges
        self.timesig, self.bar, self.tempo, self.pos = r["TIMESIG"], r["BAR"].offset, r["TEMPO"], r["POS"]
        self.track, self.vel, self.note, self.dur, self.drum = r["TRACK"], r["VEL"], r["NOTE"], r["DUR"], r["DRUM"]
        self._kind = np.full(self._vocab_size, -1, dtype=np.int64)  # id -> index of its range in layout
        self._value = np.zeros(self._vocab_size, dtype=np.int64)  # id -> value within its range
        for k, (name, size) in enumerate(layout):
            self._kind[r[name].offset : r[name].offset + size] = k
            self._value[r[name].offset : r[name].offset + size] = np.arange(size)
        self._names = [n for n, _ in layout]
        self._durations = np.array(DURATIONS, dtype=float)

    # -- vocabulary ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def token_name(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id == BOS:
            return BOS_NAME
        if not 0 < token_id < self.vocab_size:
            return f"<invalid {token_id}>"
        name, value = self._names[self._kind[token_id]], int(self._value[token_id])
        shown = {
            "TIMESIG": lambda v: "%d/%d" % TIME_SIGNATURES[v],
            "TEMPO": lambda v: TEMPO_BINS[v],
            "TRACK": lambda v: f"{FAMILY_NAMES[v // INSTANCES]}:{v % INSTANCES}",
            "VEL": lambda v: v + 1,
            "DUR": lambda v: DURATIONS[v],
            "DRUM": lambda v: v + DRUM_KEYS[0],
        }
        return name if name == "BAR" else f"{name}({shown.get(name, lambda v: v)(value)})"

    def bar_steps(self, time_signature) -> int:
        """Clock steps in one bar of ``time_signature`` (at most ``max_bar_steps``)."""
        numerator, denominator = time_signature
        steps = round(numerator * 4 / denominator * self.steps_per_beat)
        return int(min(max(steps, MIN_BAR_STEPS), self.max_bar_steps))

    @staticmethod
    def time_signature_index(time_signature) -> int:
        """The nearest known time signature: equal, else the same bar length, else 4/4."""
        ts = tuple(int(x) for x in time_signature)
        if ts in TIME_SIGNATURES:
            return TIME_SIGNATURES.index(ts)
        length = ts[0] * 4 / ts[1] if ts[1] else 4
        same = [i for i, (n, d) in enumerate(TIME_SIGNATURES) if abs(n * 4 / d - length) < 1e-9]
        return same[0] if same else 0

    @staticmethod
    def tempo_bin(bpm: float) -> int:
        return int(np.argmin(np.abs(np.log(np.array(TEMPO_BINS)) - math.log(max(float(bpm), 1.0)))))

    def duration_index(self, steps: float) -> int:
        return int(np.argmin(np.abs(np.log(self._durations) - math.log(max(float(steps), 1.0)))))

    # -- slots -------------------------------------------------------------------------------------
    def slot_of_tracks(self, seq: NoteSequence) -> tuple[dict[int, int], list[str]]:
        """Track index -> TRACK slot for every track of ``seq`` with notes, and a line for each
        reduction made (tracks that had to share a slot). Finds the roles first if no track has one."""
        if not any(inst.role for inst in seq.instruments):
            from generator.data.score import assign_roles

            assign_roles(seq)
        playing: dict[int, list[int]] = {}
        drums = set()
        for n in seq.notes:
            playing.setdefault(n.track, []).append(n.pitch)
            if n.is_drum:
                drums.add(n.track)
        by_kind: dict[int, list[int]] = {}
        for t in playing:
            inst = seq.instruments[t] if 0 <= t < len(seq.instruments) else Instrument()
            if t in drums or inst.is_drum:
                kind = DRUM_KIND
            elif inst.role == "bass":
                kind = BASS_KIND
            else:
                kind = family(inst.program)
            by_kind.setdefault(kind, []).append(t)
        slots, reduced = {}, []
        for kind, tracks in sorted(by_kind.items()):
            tracks.sort(key=lambda t: (-float(np.median(playing[t])), t))
            capacity = 1 if kind == DRUM_KIND else INSTANCES
            for i, t in enumerate(tracks):
                slots[t] = kind * INSTANCES + min(i, capacity - 1)
            if len(tracks) > capacity:
                names = [_track_name(seq, t) for t in tracks[capacity - 1 :]]
                reduced.append(f"{len(names)} {FAMILY_NAMES[kind]} tracks share one slot ({', '.join(names)})")
        return slots, reduced

    def slot_tracks(self, seq: NoteSequence) -> dict[int, list[int]]:
        """TRACK slot -> the seed tracks it continues (several where tracks shared a slot)."""
        found: dict[int, list[int]] = {}
        for track, slot in sorted(self.slot_of_tracks(seq)[0].items()):
            found.setdefault(slot, []).append(track)
        return found

    # -- encoding --------------------------------------------------------------------------------
    def _clock(self, seq: NoteSequence):
        """(seconds -> clock steps, clock steps -> bpm) through ``seq``'s tempo map."""
        return beat_clock(seq.tempos, self.steps_per_beat)

    def encode(self, document) -> list[int]:
        """Turn a NoteSequence into ids (see ``last_reduced`` for tracks that shared a slot).

        Vectorised: the events are found, deduplicated and spelled with numpy, not a loop per note."""
        seq = document
        notes = [n for n in seq.notes if math.isfinite(n.start) and math.isfinite(n.end)]
        self.last_reduced = []
        self.last_dropped = {"drum_notes_outside_map": 0}
        if not notes:
            return []
        slots, self.last_reduced = self.slot_of_tracks(seq)
        clock, bpm_at = self._clock(seq)
        starts = np.maximum(np.rint(clock([n.start for n in notes])), 0).astype(np.int64)
        lengths = np.rint(clock([n.end for n in notes])).astype(np.int64) - starts
        drum_slot = DRUM_KIND * INSTANCES
        pitch = np.array([int(n.pitch) for n in notes], np.int64)
        is_drum = np.array([bool(n.is_drum) for n in notes], bool)
        slot = np.array([drum_slot if n.is_drum else slots.get(n.track, drum_slot) for n in notes], np.int64)
        velocity = np.array([int(n.velocity) for n in notes], np.int64)
        outside = is_drum & ((pitch < DRUM_KEYS[0]) | (pitch > DRUM_KEYS[1]))
        self.last_dropped["drum_notes_outside_map"] = int(outside.sum())
        ts = seq.time_signature if seq.time_signature else (4, 4)
        ts = TIME_SIGNATURES[self.time_signature_index(ts)]
        bar_steps = self.bar_steps(ts)
        head = [self.timesig.offset + TIME_SIGNATURES.index(ts)]
        kept = np.flatnonzero(~outside)
        if not len(kept):
            return head
        # one event per (start, slot, pitch): a doubled note (two tracks in one slot) is played once, the
        # longest (the first of the longest); events in (start, slot, pitch) order
        order = kept[np.lexsort((kept, -lengths[kept], pitch[kept], slot[kept], starts[kept]))]
        start, slot, pitch = starts[order], slot[order], pitch[order]
        first = np.ones(len(order), bool)
        first[1:] = (start[1:] != start[:-1]) | (slot[1:] != slot[:-1]) | (pitch[1:] != pitch[:-1])
        chosen = order[first]
        start, slot, pitch, length = start[first], slot[first], pitch[first], lengths[chosen]
        vbin = np.minimum((np.maximum(velocity[chosen], 1) - 1) * VELOCITY_BINS // 127, VELOCITY_BINS - 1)
        bar, pos = np.divmod(start, bar_steps)
        count = len(start)
        # BAR for every bar up to the last event's (empty ones too), TEMPO after it where the tempo bin changes
        bars = np.arange(int(bar[-1]) + 1)
        bpms = bpm_at(bars * bar_steps)
        unique, where = np.unique(bpms, return_inverse=True)
        bins = np.array([self.tempo_bin(float(b)) for b in unique], np.int64)[where.ravel()]
        changed = np.ones(len(bars), bool)
        changed[1:] = bins[1:] != bins[:-1]
        bar_tokens = np.stack([np.full(len(bars), self.bar), np.where(changed, self.tempo.offset + bins, -1)], 1)
        bar_owner = np.repeat(np.searchsorted(bar, bars, side="left"), 2)  # the event each bar comes before
        # an event's own tokens: POS, TRACK, VEL where they change, then NOTE and DUR or DRUM
        new_bar = np.ones(count, bool)
        new_bar[1:] = bar[1:] != bar[:-1]
        new_pos = new_bar.copy()
        new_pos[1:] |= pos[1:] != pos[:-1]
        new_track = new_pos.copy()
        new_track[1:] |= slot[1:] != slot[:-1]
        by_slot = np.argsort(slot, kind="stable")
        new_vel = np.ones(count, bool)
        same = slot[by_slot][1:] == slot[by_slot][:-1]
        new_vel[by_slot[1:]] = ~same | (vbin[by_slot][1:] != vbin[by_slot][:-1])
        drum = slot == drum_slot
        unique, where = np.unique(length, return_inverse=True)
        durations = np.array([self.duration_index(int(d)) for d in unique], np.int64)[where.ravel()]
        own = np.stack(
            [
                np.where(new_pos, self.pos.offset + pos, -1),
                np.where(new_track, self.track.offset + slot, -1),
                np.where(new_vel, self.vel.offset + vbin, -1),
                np.where(drum, self.drum.offset + pitch - DRUM_KEYS[0], self.note.offset + pitch),
                np.where(drum, -1, self.dur.offset + durations),
            ],
            1,
        )
        tokens = np.concatenate([bar_tokens.ravel(), own.ravel()])
        owner = np.concatenate([bar_owner * 2, np.repeat(np.arange(count), own.shape[1]) * 2 + 1])
        tokens = tokens[np.argsort(owner, kind="stable")]
        return head + tokens[tokens >= 0].tolist()

    # -- decoding --------------------------------------------------------------------------------
    def decode(self, ids) -> NoteSequence:
        """Turn ids into a NoteSequence whose ``instruments`` are the TRACK slots (``slot_instrument``)
        and whose notes' ``track`` is their slot; writers leave out the slots with no notes."""
        return self._decode(ids)[0]

    def _walk(self, ids):
        """Yield (event name, value, bar start step, position) for each id, tracking bar lengths."""
        bar_steps = self.bar_steps(self.time_signature)
        bar_start, pos, started = -bar_steps, 0, False
        for token in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} outside the vocabulary of {self.vocab_size}")
            if token == BOS:
                continue
            name, value = self._names[self._kind[token]], int(self._value[token])
            if name == "TIMESIG":
                bar_steps = self.bar_steps(TIME_SIGNATURES[value])
            elif name == "BAR":
                bar_start = bar_start + bar_steps if started else 0
                started, pos = True, 0
            elif name == "POS":
                if not started:
                    bar_start, started = 0, True
                pos = value
            yield name, value, max(bar_start, 0), pos, bar_steps

    def _decode(self, ids):
        tempo_changes = [(0, self.bpm)]
        events, velocity, slot, last_note = [], {}, -1, None
        end_step = 0
        for name, value, bar_start, pos, _bar_steps in self._walk(ids):
            now = bar_start + pos
            if name == "BAR":
                end_step = max(end_step, bar_start)
            elif name == "TEMPO" and not self.fixed_tempo:
                tempo_changes.append((bar_start, TEMPO_BINS[value]))
            elif name == "TRACK":
                slot = value
            elif name == "VEL":
                velocity[slot] = value
            elif name == "NOTE" and slot >= 0:
                last_note = [now, now + 1, value, velocity.get(slot, 4), slot, False]
                events.append(last_note)
            elif name == "DUR" and last_note is not None:
                last_note[1] = last_note[0] + DURATIONS[value]
                end_step = max(end_step, last_note[1])
                last_note = None
            elif name == "DRUM":
                events.append([now, None, value + DRUM_KEYS[0], velocity.get(slot, 4), DRUM_KIND * INSTANCES, True])
            end_step = max(end_step, now + (name == "NOTE"))
        seconds = _step_seconds(tempo_changes, self.steps_per_beat)
        notes = []
        for start, end, pitch, vbin, slot, is_drum in events:
            t0 = seconds(start)
            t1 = t0 + DRUM_SECONDS if is_drum else seconds(end)
            notes.append(
                Note(
                    int(pitch),
                    t0,
                    t1,
                    int(vbin * 127 // VELOCITY_BINS + 8),
                    FAMILY_PROGRAMS[slot // INSTANCES],
                    bool(is_drum),
                    slot,
                )
            )
        notes.sort(key=lambda n: (n.start, n.track, n.pitch))
        instruments = [slot_instrument(slot) for slot in range(KINDS * INSTANCES)]
        tempos = []
        for step, bpm in tempo_changes:
            if not tempos or tempos[-1][1] != bpm:
                tempos.append((float(seconds(step)), float(bpm)))
        seq = NoteSequence(
            notes=notes,
            tempos=tempos or [(0.0, self.bpm)],
            time_signature=self.time_signature,
            instruments=instruments or [Instrument()],
            source="generated",
        )
        return seq, seconds(end_step)

    def duration(self, ids) -> float:
        """Seconds from the start of ``ids`` to the end of their last sound (or their last bar line
        or position, if later)."""
        return float(self._decode(ids)[1])

    # -- seeds -----------------------------------------------------------------------------------
    def for_seed(self, seed: NoteSequence) -> "BandTokenizer":
        """This tokenizer decoding at the tempo the seed ends in and in its metre, and sampling only
        the seed's own track slots."""
        slots = sorted(set(self.slot_of_tracks(seed)[0].values()))
        ts = TIME_SIGNATURES[self.time_signature_index(seed.time_signature or (4, 4))]
        end = seed.end_time
        bpm = next((b for t, b in sorted(seed.tempos or [(0.0, 120.0)], reverse=True) if t <= end), seed.initial_bpm)
        return type(self).from_config(
            {
                **self.config(),
                "bpm": float(bpm),
                "time_signature": list(ts),
                "slots": slots or None,
                "fixed_tempo": True,
            }
        )

    def cut_prompt(self, ids: list[int], limit: int) -> list[int]:
        """The last ``limit`` ids of an encoded seed, starting at a bar, after the metre and tempo."""
        if len(ids) <= limit:
            return list(ids)
        header = [ids[0]] if ids and self._names[self._kind[ids[0]]] == "TIMESIG" else []
        tail_from = len(ids) - (limit - len(header) - 1)
        bars = [i for i in range(tail_from, len(ids)) if ids[i] == self.bar]
        if not bars:
            return ids[-limit:]
        start = bars[0]
        tempo = next((ids[i] for i in range(start, -1, -1) if self._names[self._kind[ids[i]]] == "TEMPO"), None)
        body = list(ids[start:])
        if tempo is not None and not (len(body) > 1 and body[1] == tempo):
            body.insert(1, tempo)
        return header + body

    # -- serialization ----------------------------------------------------------------------------
    def config(self) -> dict:
        return {
            "steps_per_beat": self.steps_per_beat,
            "max_bar_beats": self.max_bar_beats,
            "transpose": self.transpose,
            "time_signature": list(self.time_signature),
            "bpm": self.bpm,
            "slots": self.slots,
            "fixed_tempo": self.fixed_tempo,
        }

    # -- augmentation and transposition ------------------------------------------------------------
    def transposition(self, semitones: int) -> np.ndarray:
        return self.shifted_ranges(self.vocab_size, semitones, [(self.note.offset, self.note.size)])

    def augment(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from generator.data.tokenizers import event_arrays

        return event_arrays.transpose_windows(windows, rng, self.transpose, [self.note.offset], 128)

    # -- constrained sampling -----------------------------------------------------------------------
    # state columns: phase, bar steps, position, slot, last pitch
    # phase: 0 start (before any bar), 1 after BAR (TEMPO allowed), 2 after TEMPO,
    #        3 after POS, 4 after TRACK, 5 after VEL, 6 after NOTE (DUR due), 7 after DUR or DRUM
    def new_constraint_state(self, batch_size: int) -> np.ndarray:
        state = np.zeros((batch_size, 5), dtype=np.int64)
        state[:, 1] = self.bar_steps(self.time_signature)
        state[:, 2] = -1
        state[:, 3] = -1
        state[:, 4] = -1
        return state

    def allowed(self, state: np.ndarray) -> np.ndarray:
        mask = np.zeros((len(state), self.vocab_size), dtype=bool)
        slots = self._slot_mask
        for b, (phase, bar_steps, pos, slot, pitch) in enumerate(state.tolist()):
            row = mask[b]
            if phase == 0:
                row[self.timesig.offset : self.timesig.offset + self.timesig.size] = True
                row[self.bar] = True
                continue
            if phase == 6:
                row[self.dur.offset : self.dur.offset + self.dur.size] = True
                continue
            if phase in (4, 5):
                if slot == DRUM_KIND * INSTANCES:
                    row[self.drum.offset : self.drum.offset + self.drum.size] = True
                else:
                    row[self.note.offset + pitch + 1 : self.note.offset + 128] = True
                if phase == 4:
                    row[self.vel.offset : self.vel.offset + self.vel.size] = True
                continue
            if phase == 3:  # after POS: a track
                row[self.track.offset : self.track.offset + self.track.size] = slots
                continue
            row[self.bar] = True
            row[self.pos.offset + pos + 1 : self.pos.offset + bar_steps] = True
            if phase == 1:
                row[self.tempo.offset : self.tempo.offset + self.tempo.size] = True
            if phase == 7:  # more notes of this track, or a later track
                if slot == DRUM_KIND * INSTANCES:
                    row[self.drum.offset : self.drum.offset + self.drum.size] = True
                elif pitch < 127:
                    row[self.note.offset + pitch + 1 : self.note.offset + 128] = True
                later = slots.copy()
                later[: slot + 1] = False
                row[self.track.offset : self.track.offset + self.track.size] = later
                row[self.vel.offset : self.vel.offset + self.vel.size] = True
        return mask

    def advance(self, state: np.ndarray, ids: np.ndarray) -> np.ndarray:
        state = state.copy()
        kinds = self._kind[np.asarray(ids, dtype=np.int64)]
        values = self._value[np.asarray(ids, dtype=np.int64)]
        for b, (k, v) in enumerate(zip(kinds.tolist(), values.tolist())):
            name = self._names[k] if k >= 0 else ""
            row = state[b]
            if name == "TIMESIG":
                row[1] = self.bar_steps(TIME_SIGNATURES[v])
            elif name == "BAR":
                row[0], row[2], row[3], row[4] = 1, -1, -1, -1
            elif name == "TEMPO":
                row[0] = 2
            elif name == "POS":
                row[0], row[2], row[3], row[4] = 3, v, -1, -1
            elif name == "TRACK":
                row[0], row[3], row[4] = 4, v, -1
            elif name == "VEL":
                row[0] = 5 if row[0] == 4 else 7
            elif name == "NOTE":
                row[0], row[4] = 6, v
            elif name in ("DUR",):
                row[0] = 7
            elif name == "DRUM":
                row[0], row[4] = 7, v
        return state

    def count_invalid_events(self, ids) -> int:
        """Ids the sampling constraint would not have allowed where they stand."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        invalid = int(((ids < 0) | (ids >= self.vocab_size)).sum())
        state = self.new_constraint_state(1)
        for position, token in enumerate(ids.tolist()):
            if not 0 <= token < self.vocab_size:
                continue
            if token == BOS:
                invalid += position > 0
                continue
            if not self.allowed(state)[0, token]:
                invalid += 1
            state = self.advance(state, np.array([token]))
        return invalid


def slot_instrument(slot: int) -> Instrument:
    """The instrument a TRACK slot decodes to without a seed: its family's usual program."""
    kind, instance = divmod(slot, INSTANCES)
    name = FAMILY_NAMES[kind] + (f" {instance + 1}" if instance else "")
    return Instrument(
        program=FAMILY_PROGRAMS[kind], is_drum=kind == DRUM_KIND, name=name, channel=9 if kind == DRUM_KIND else -1
    )


def _track_name(seq: NoteSequence, track: int) -> str:
    inst = seq.instruments[track] if 0 <= track < len(seq.instruments) else None
    return inst.name.strip() if inst and inst.name.strip() else f"track {track + 1}"


def _step_seconds(tempo_changes: list[tuple[int, float]], steps_per_beat: int):
    """A function from clock steps to seconds for tempo changes [(step, bpm)] (sorted by step)."""
    changes = sorted(dict(tempo_changes).items())
    steps = np.array([s for s, _ in changes], dtype=float)
    sps = np.array([60.0 / (b * steps_per_beat) for _, b in changes])  # seconds per step
    at = np.concatenate([[0.0], np.cumsum(np.diff(steps) * sps[:-1])])

    def seconds(step) -> float:
        i = max(int(np.searchsorted(steps, step, side="right")) - 1, 0)
        return float(at[i] + (step - steps[i]) * sps[i])

    return seconds
