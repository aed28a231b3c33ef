"""Fixed-grid SATB voices: the JSB Chorales representation (Huang et al. 2019, Music Transformer).

A chorale is a *grid* ``[steps, 4]`` of MIDI pitches on a 16th-note grid (``steps_per_quarter``
= 4), one column per voice in the order Soprano, Alto, Tenor, Bass, ``-1`` for a silent voice.
A held note repeats its pitch on every step it sounds, so a held note and repeated notes of
the same pitch look alike (the JSB data convention).

Tokens: the grid is read row by row, four tokens per step in the order S, A, T, B. The
position of a token in that cycle (its voice) is its count since BOS modulo 4; the ids
themselves carry no voice, one vocabulary is shared by the four voices (as in the paper).

Vocabulary (``low``..``high`` inclusive, default MIDI 36..81 = C2..A5, exactly the range of
the JSB train and valid splits)::

    0                   BOS   start of a document (from ``base``)
    1                   REST  the voice is silent at this step
    2 .. 2+high-low     pitch ``low + (id - 2)``

Default vocabulary size: 2 + 46 = 48.

Pitches outside ``low..high`` are moved by whole octaves into the range when
``out_of_range="transpose"`` (default), or rejected with ``ValueError`` when ``"error"``.

From a ``NoteSequence`` (``encode`` or ``grid_from_note_sequence``): note times are turned
into quarter notes with the tempo map and rounded to the grid; a note covers the steps from
its rounded start to its rounded end (at least one step); drum notes are ignored.
Voices: with exactly four non-drum tracks holding notes, each track is one voice; tracks named
Soprano/Alto/Tenor/Bass (or S/A/T/B) go to their voice, otherwise the tracks are ordered from
highest to lowest mean pitch. A track that sounds several pitches at once gives its voice the
highest. With any other number of tracks, the notes sounding at each step are sorted from
high to low: with four or more, S, A, T take the three highest and B the lowest; with three,
S, A, B; with two, S and B; with one, S.

Sampling constraint (``allowed``/``advance``): never BOS after the start (well-formedness),
and, unless ``voice_leading=False``, the voice-leading rules of four-part writing for the voice
about to be sampled, checked against the voices already sampled in this step and the last step
where all four voices sounded (the last *chord*): no pitch above the voice above it (crossing);
alto and tenor at most an octave below the voice above (spacing); each voice within its range
(``VOICE_RANGES``, where the rules above leave a pitch there); and no parallel fifths or
octaves/unisons: a pair of voices that both move in the same direction from a (compound) fifth
or octave to the same interval class. The rules only narrow sampling: REST stays allowed, and a
voice for which the rules leave no pitch is left unconstrained. Likelihood (``evaluate``) is
unaffected: it never consults the constraint.

To a ``NoteSequence`` (``decode``): four instruments Soprano, Alto, Tenor, Bass, all with
General MIDI ``program`` (default 52, Choir Aahs), tempo ``bpm`` (default 120); consecutive
equal pitches of one voice become one held note, rests are silence. A final step with fewer
than four tokens leaves its missing voices silent.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.base import BOS, BOS_NAME, Tokenizer, register

REST = 1
PITCH_OFFSET = 2  # id of the lowest pitch
VOICES = ("Soprano", "Alto", "Tenor", "Bass")
NUM_VOICES = 4
VOICE_RANGES = ((60, 81), (53, 74), (48, 69), (36, 64))  # S, A, T, B (MIDI): textbook ranges widened by a tone
_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int) -> str:
    """Scientific pitch name, e.g. 60 -> 'C4'."""
    return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


# -- grids ---------------------------------------------------------------------------------
def as_grid(grid) -> np.ndarray:
    """Check and convert a ``[steps, 4]`` grid (ints or integral floats, -1 = rest) to int64."""
    array = np.asarray(grid)
    if array.size == 0:
        return np.zeros((0, NUM_VOICES), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != NUM_VOICES:
        raise ValueError(f"a voice grid has shape [steps, 4], got {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"a voice grid holds numbers, got {array.dtype}")
    whole = np.isfinite(array).all() and (array == np.rint(array)).all()
    if array.dtype.kind == "f" and not whole:
        raise ValueError("a voice grid holds whole MIDI pitches, got fractional or NaN values")
    as_int = array.astype(np.int64)
    bad = (as_int != -1) & ((as_int < 0) | (as_int > 127))
    if bad.any():
        raise ValueError(f"pitch {as_int[bad][0]} is neither -1 (rest) nor a MIDI pitch 0-127")
    return as_int


def _seconds_to_quarters(times: np.ndarray, tempos) -> np.ndarray:
    """Quarter-note positions of ``times`` (seconds) under a tempo map [(time, bpm), ...]."""
    changes = sorted((float(t), float(b)) for t, b in tempos if b > 0) or [(0.0, 120.0)]
    starts = np.array([0.0] + [t for t, _ in changes[1:]])
    bpms = np.array([b for _, b in changes])
    quarters_at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * bpms[:-1] / 60.0)])
    segment = np.searchsorted(starts, times, side="right") - 1
    segment = np.clip(segment, 0, len(starts) - 1)
    return quarters_at[segment] + (times - starts[segment]) * bpms[segment] / 60.0


def _track_voices(seq: NoteSequence, tracks: list[int]) -> dict[int, int]:
    """Map four tracks to voice columns: by name when all four are named, else by mean pitch."""
    aliases = {"soprano": 0, "s": 0, "alto": 1, "a": 1, "tenor": 2, "t": 2, "bass": 3, "b": 3}
    names = [seq.instruments[t].name.strip().lower() if t < len(seq.instruments) else "" for t in tracks]
    by_name = [aliases.get((name.split() or [""])[0]) for name in names]
    if None not in by_name and sorted(by_name) == [0, 1, 2, 3]:
        return dict(zip(tracks, by_name))
    means = {t: np.mean([n.pitch for n in seq.notes if n.track == t]) for t in tracks}
    ordered = sorted(tracks, key=lambda t: -means[t])
    return {track: voice for voice, track in enumerate(ordered)}


def grid_from_note_sequence(seq: NoteSequence, steps_per_quarter: int = 4) -> np.ndarray:
    """Put a ``NoteSequence`` on the voice grid ``[steps, 4]`` (see the module docstring)."""
    notes = sorted((n for n in seq.notes if not n.is_drum), key=lambda n: (n.start, n.pitch))
    if not notes:
        return np.zeros((0, NUM_VOICES), dtype=np.int64)
    times = np.array([[n.start, n.end] for n in notes], dtype=float)
    steps = np.rint(_seconds_to_quarters(times.ravel(), seq.tempos) * steps_per_quarter)
    steps = steps.astype(np.int64).reshape(-1, 2)
    steps[:, 0] = np.maximum(steps[:, 0], 0)
    steps[:, 1] = np.maximum(steps[:, 1], steps[:, 0] + 1)
    grid = np.full((int(steps[:, 1].max()), NUM_VOICES), -1, dtype=np.int64)

    tracks = sorted({n.track for n in notes})
    if len(tracks) == NUM_VOICES:
        voice_of = _track_voices(seq, tracks)
        # In start order, so a later note overwrites what it overlaps and the highest of
        # notes starting together wins.
        for note, (start, end) in zip(notes, steps):
            grid[start:end, voice_of[note.track]] = note.pitch
        return grid

    sounding: list[list[int]] = [[] for _ in range(len(grid))]
    for note, (start, end) in zip(notes, steps):
        for step in range(start, end):
            sounding[step].append(note.pitch)
    slots = {1: (0,), 2: (0, 3), 3: (0, 1, 3)}
    for step, pitches in enumerate(sounding):
        pitches.sort(reverse=True)
        if len(pitches) >= NUM_VOICES:
            grid[step] = pitches[:3] + pitches[-1:]
        elif pitches:
            grid[step, list(slots[len(pitches)])] = pitches
    return grid


def note_sequence_from_grid(
    grid, bpm: float = 120.0, program: int = 52, steps_per_quarter: int = 4, velocity: int = 80
) -> NoteSequence:
    """Turn a ``[steps, 4]`` grid into a four-track ``NoteSequence``; repeated pitches are held."""
    grid = as_grid(grid)
    step_seconds = 60.0 / bpm / steps_per_quarter
    notes = []
    for voice in range(NUM_VOICES):
        column = grid[:, voice]
        # A note starts wherever the pitch differs from the previous step's.
        changes = np.flatnonzero(np.diff(column, prepend=-2))
        ends = np.append(changes[1:], len(column))
        for start, end in zip(changes, ends):
            if column[start] >= 0:
                notes.append(
                    Note(int(column[start]), start * step_seconds, end * step_seconds, velocity, program, False, voice)
                )
    notes.sort(key=lambda n: (n.start, n.track))
    return NoteSequence(
        notes=notes,
        tempos=[(0.0, float(bpm))],
        instruments=[Instrument(program, False, name) for name in VOICES],
    )


# -- the tokenizer ---------------------------------------------------------------------------
@register
class VoicesTokenizer(Tokenizer):
    """SATB voices on a fixed grid, four tokens (S, A, T, B) per step."""

    kind: ClassVar[str] = "voices"
    modality: ClassVar[str] = "music"
    has_constraint: ClassVar[bool] = True
    prompt_multiple: ClassVar[int] = NUM_VOICES  # whole grid steps, so the voices stay aligned

    def __init__(
        self,
        low: int = 36,  # lowest pitch of the vocabulary (C2)
        high: int = 81,  # highest pitch of the vocabulary (A5)
        steps_per_quarter: int = 4,  # grid resolution: 4 = 16th notes
        bpm: float = 120.0,  # tempo of decoded NoteSequences
        program: int = 52,  # General MIDI program of decoded voices (52 = Choir Aahs)
        max_shift: int = 5,  # augmentation: random transposition within +-max_shift semitones
        out_of_range: str = "transpose",  # "transpose" by octaves into low..high, or "error"
        voice_leading: bool = True,  # sampling forbids crossing, spacing over an octave and parallel 5ths/8ves
    ):
        if not 0 <= low <= high <= 127:
            raise ValueError(f"need 0 <= low <= high <= 127, got low={low} high={high}")
        if out_of_range not in ("transpose", "error"):
            raise ValueError(f"out_of_range is 'transpose' or 'error', got {out_of_range!r}")
        if out_of_range == "transpose" and high - low < 11:
            raise ValueError("transposing by octaves needs a range of at least 12 pitches")
        if steps_per_quarter < 1 or bpm <= 0 or max_shift < 0 or not 0 <= program <= 127:
            raise ValueError("need steps_per_quarter >= 1, bpm > 0, max_shift >= 0, program 0-127")
        self.low, self.high = int(low), int(high)
        self.steps_per_quarter = int(steps_per_quarter)
        self.bpm = float(bpm)
        self.program = int(program)
        self.max_shift = int(max_shift)
        self.out_of_range = out_of_range
        self.voice_leading = bool(voice_leading)

    @property
    def vocab_size(self) -> int:
        return PITCH_OFFSET + self.high - self.low + 1

    def token_name(self, token_id: int) -> str:
        if token_id == BOS:
            return BOS_NAME
        if token_id == REST:
            return "REST"
        if PITCH_OFFSET <= token_id < self.vocab_size:
            return pitch_name(self.low + token_id - PITCH_OFFSET)
        return f"<invalid {token_id}>"

    # -- grid <-> ids --------------------------------------------------------------------------
    def fit_range(self, grid) -> np.ndarray:
        """The grid with every pitch moved into ``low..high`` (or ValueError, see out_of_range)."""
        grid = as_grid(grid).copy()
        sounding = grid >= 0
        outside = sounding & ((grid < self.low) | (grid > self.high))
        if not outside.any():
            return grid
        if self.out_of_range == "error":
            raise ValueError(f"pitch {grid[outside][0]} is outside the vocabulary range {self.low}..{self.high}")
        below = sounding & (grid < self.low)
        grid[below] += 12 * -((grid[below] - self.low) // 12)  # ceil to the first octave >= low
        above = grid > self.high
        grid[above] -= 12 * -((self.high - grid[above]) // 12)
        return grid

    def ids_from_grid(self, grid) -> list[int]:
        """Token ids of a ``[steps, 4]`` grid, row by row (S, A, T, B per step)."""
        grid = self.fit_range(grid)
        ids = np.where(grid < 0, REST, grid - self.low + PITCH_OFFSET)
        return ids.ravel().tolist()

    def grid_from_ids(self, ids) -> np.ndarray:
        """The ``[steps, 4]`` grid of token ids (BOS skipped; a short last step padded with -1)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        ids = ids[ids != BOS]
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0]
            raise ValueError(f"token id {bad} is outside the vocabulary (size {self.vocab_size})")
        steps = -(-ids.size // NUM_VOICES)
        padded = np.full(steps * NUM_VOICES, REST, dtype=np.int64)
        padded[: ids.size] = ids
        grid = np.where(padded == REST, -1, padded - PITCH_OFFSET + self.low)
        return grid.reshape(steps, NUM_VOICES)

    def encode(self, document) -> list[int]:
        """Ids of a grid ``[steps, 4]`` (-1 = rest) or of a ``NoteSequence``."""
        if isinstance(document, NoteSequence):
            document = grid_from_note_sequence(document, self.steps_per_quarter)
        return self.ids_from_grid(document)

    def decode(self, ids) -> NoteSequence:
        """A four-track ``NoteSequence`` (Soprano, Alto, Tenor, Bass) of token ids."""
        return note_sequence_from_grid(self.grid_from_ids(ids), self.bpm, self.program, self.steps_per_quarter)

    def duration(self, ids) -> float:
        """Seconds spanned by the complete grid steps of ``ids`` at ``bpm``."""
        steps = int(np.count_nonzero(np.asarray(ids) != BOS)) // NUM_VOICES
        return steps * 60.0 / self.bpm / self.steps_per_quarter

    def config(self) -> dict:
        return {
            "low": self.low,
            "high": self.high,
            "steps_per_quarter": self.steps_per_quarter,
            "bpm": self.bpm,
            "program": self.program,
            "max_shift": self.max_shift,
            "out_of_range": self.out_of_range,
            "voice_leading": self.voice_leading,
        }

    # -- augmentation ----------------------------------------------------------------------------
    def transposition(self, semitones: int) -> np.ndarray:
        """Every pitch id moved ``semitones`` (-1 outside low..high); BOS and REST stay."""
        return self.shifted_ranges(self.vocab_size, semitones, [(PITCH_OFFSET, self.vocab_size - PITCH_OFFSET)])

    def augment(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transpose each window by its own random shift in +-max_shift that keeps it in range."""
        windows = np.asarray(windows)
        if self.max_shift == 0 or windows.size == 0:
            return windows.copy()
        is_pitch = windows >= PITCH_OFFSET
        top = self.vocab_size - 1
        lowest = np.where(is_pitch, windows, top).min(axis=-1)
        highest = np.where(is_pitch, windows, PITCH_OFFSET).max(axis=-1)
        down = np.maximum(-self.max_shift, PITCH_OFFSET - lowest)  # most negative allowed shift
        up = np.minimum(self.max_shift, top - highest)
        shift = down + np.floor(rng.random(down.shape) * (up - down + 1)).astype(np.int64)
        return np.where(is_pitch, windows + shift[..., None], windows).astype(windows.dtype)

    # -- constrained sampling ----------------------------------------------------------------------
    def without_voice_leading(self) -> "VoicesTokenizer":
        """The same tokenizer with the voice-leading rules of sampling turned off."""
        return type(self).from_config({**self.config(), "voice_leading": False})

    # The state is an int64 array [batch, 9]: column 0 counts the tokens since BOS (voice = count % 4),
    # columns 1-4 hold the last chord (the last step where all four voices sounded; -1 before
    # any) and columns 5-8 the pitches sampled so far in the current step (-1: rest or not yet).
    def new_constraint_state(self, batch_size: int) -> np.ndarray:
        """Per sequence: tokens since BOS, the last chord and the current step so far (all empty)."""
        state = np.full((batch_size, 1 + 2 * NUM_VOICES), -1, dtype=np.int64)
        state[:, 0] = 0
        return state

    def allowed(self, state: np.ndarray) -> np.ndarray:
        """Every pitch and REST, never BOS after the start; with ``voice_leading`` the rules above."""
        state = np.asarray(state)
        mask = np.ones((len(state), self.vocab_size), dtype=bool)
        mask[:, BOS] = False
        if self.voice_leading and len(state):
            mask[:, PITCH_OFFSET:] = self._voice_leading_mask(state)
        return mask

    def _voice_leading_mask(self, state: np.ndarray) -> np.ndarray:
        """[batch, pitches]: the pitches the next voice may take under the voice-leading rules."""
        rows = np.arange(len(state))
        voice = state[:, 0] % NUM_VOICES
        chord, current = state[:, 1 : 1 + NUM_VOICES], state[:, 1 + NUM_VOICES :]
        pitch = np.arange(self.low, self.high + 1)[None, :]
        above = np.where(voice > 0, current[rows, np.maximum(voice - 1, 0)], -1)[:, None]
        basic = (above < 0) | (pitch <= above)  # no crossing with the voice above
        spaced = ((voice == 1) | (voice == 2))[:, None] & (above >= 0)
        basic &= ~spaced | (above - pitch <= 12)  # alto and tenor within an octave of the voice above
        ranges = np.array(VOICE_RANGES)[voice]
        in_range = basic & (pitch >= ranges[:, :1]) & (pitch <= ranges[:, 1:])  # each voice within its range
        in_range[~in_range.any(axis=1)] = basic[~in_range.any(axis=1)]
        ok = in_range.copy()
        had_chord = (chord >= 0).all(axis=1)
        before_v = chord[rows, voice][:, None]
        move_v = pitch - before_v
        for u in range(NUM_VOICES - 1):  # no parallel fifths or octaves with any voice above
            active = (had_chord & (u < voice) & (current[:, u] >= 0))[:, None]
            move_u = (current[:, u] - chord[:, u])[:, None]
            similar = (move_u != 0) & (np.sign(move_u) == np.sign(move_v))
            interval_before = np.abs(chord[:, u][:, None] - before_v) % 12
            interval_after = np.abs(current[:, u][:, None] - pitch) % 12
            perfect = (interval_after == 0) | (interval_after == 7)
            ok &= ~(active & similar & perfect & (interval_before == interval_after))
        stuck = ~ok.any(axis=1)
        ok[stuck] = in_range[stuck]  # no pitch avoids the parallels: keep the other rules only
        ok[~ok.any(axis=1)] = True  # (cannot happen in range: the voice above's own pitch is allowed)
        return ok

    def advance(self, state: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The state after each sequence emitted ``ids[b]`` (BOS starts it afresh)."""
        ids = np.asarray(ids).reshape(-1)
        state = np.array(state, dtype=np.int64, copy=True)
        rows = np.arange(len(state))
        voice = state[:, 0] % NUM_VOICES
        state[rows, 1 + NUM_VOICES + voice] = np.where(ids >= PITCH_OFFSET, ids - PITCH_OFFSET + self.low, -1)
        state[:, 0] += 1
        step_done = state[:, 0] % NUM_VOICES == 0
        current = state[:, 1 + NUM_VOICES :]
        full = step_done & (current >= 0).all(axis=1)
        state[full, 1 : 1 + NUM_VOICES] = current[full]
        state[step_done, 1 + NUM_VOICES :] = -1
        bos = ids == BOS
        state[bos] = self.new_constraint_state(int(bos.sum()))
        return state

    def closing_ids(self, state: np.ndarray, index: int) -> list[int]:
        """RESTs that complete the current step, so the last step has all four voices."""
        return [REST] * (-int(np.asarray(state)[index, 0]) % NUM_VOICES)
