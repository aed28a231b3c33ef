"""Harmonize a melody, or rewrite part of a chorale, with the harmonizer model by pseudo-Gibbs sampling.

The piece is an SATB grid on 16th notes (``generator.data.tokenizers.voices``). Some cells are
*fixed* (the melody, or the voices and steps the user keeps) and never change; the others are
*free*. Sampling follows Coconet's blocked Gibbs sampler with an annealed block size (Huang et al.,
"Counterpoint by Convolution", ISMIR 2017, section 4):

- iteration 0 hides every free cell behind MASK and draws all of them at once;
- iteration n = 1 .. N-1 hides each free cell with probability
  ``a_n = max(0.05, 0.9 - 0.85 * n / (0.75 N))`` (at least one cell), runs the model once over the
  whole piece (the forward LSTM reads the steps before each cell, the backward one the steps after
  it, the dense centre the other voices at its step) and draws every hidden cell again;
- the temperature falls linearly from ``2 * temperature`` at iteration 0 to ``temperature`` at the
  last one (annealing: early draws explore, late draws settle). Ending colder was measured worse:
  on 16 valid chorales, ending at ``temperature / 4`` gave 22 % parallel fifths and octaves per
  chord change against 10 % for this schedule (``benchmarks/harmonizer_quality.py``);
- each voice draws only REST or pitches in its range (``VOICE_RANGES``, those of the JSB train split);
- unless ``voice_leading=False``, the voice-leading rules of the voices tokenizer's left-to-right
  sampling (``generator.data.tokenizers.voices``) mask each drawn cell given the current values of
  the others (``voice_leading_rules``): no crossing of the nearest sounding voice above or below,
  soprano-alto and alto-tenor at most an octave apart, and no parallel fifths or octaves/unisons
  with any other voice against the nearest four-voice step before and after (the previous and
  next chord change). REST stays allowed; where no pitch in range passes, the parallels are
  relaxed first, then crossing and spacing. So that a cell is judged against values that stay,
  the hidden cells of an iteration are drawn in eight rounds from the one forward pass, one round
  per voice and parity of step (cells of one round never share a step or touch neighbouring
  steps), in an order shuffled each iteration; cells drawn in no round yet (iteration 0) do not
  constrain. Fixed cells are never masked or changed.

All samples (``num_samples``) are drawn in one batch, and one iteration is one forward pass over
the whole piece for all of them, which keeps a 64-beat melody at a few seconds on a CPU.

Input: a melody (its only line, or the top line of several) or a four-voice piece, from a MIDI,
MusicXML, ABC or kern file, a ``NoteSequence``, or a grid; a JSB Chorales JSON file with a split
and an index. A melody becomes the soprano, moved by octaves into the soprano's range when it lies
outside (with a notice); each of its notes is kept as it is after quantization to the grid, repeated
notes included. Output: a four-track ``Music`` (Soprano, Alto, Tenor, Bass) in the input's tempo
map and time signature.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import numpy as np

from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.base import BOS
from generator.data.tokenizers.voices import NUM_VOICES, PITCH_OFFSET, REST, VOICES, as_grid, grid_from_note_sequence
from generator.errors import ArgumentError, GeneratorError

STEPS_PER_QUARTER = 4
VOICE_RANGES = ((60, 81), (52, 74), (46, 69), (36, 66))  # S, A, T, B: MIDI ranges of the JSB train split
DEFAULT_ITERATIONS = 100
MAX_ITERATIONS = 100_000
MAX_STEPS = 16_384  # 1,024 bars of 4/4
BLOCK_MAX, BLOCK_MIN, BLOCK_ANNEAL = 0.9, 0.05, 0.75  # Coconet's masking schedule
START_TEMPERATURE = 2.0  # the first iteration samples at this multiple of ``temperature``, the last at 1x
PROGRAM = 52  # General MIDI Choir Aahs, as the voices tokenizer writes


# -- schedules ---------------------------------------------------------------------------------------


def block_probability(n: int, iterations: int) -> float:
    """The share of free cells resampled at iteration ``n`` (1 at iteration 0)."""
    if n == 0:
        return 1.0
    return max(BLOCK_MIN, BLOCK_MAX - (BLOCK_MAX - BLOCK_MIN) * n / (BLOCK_ANNEAL * iterations))


def temperature_at(n: int, iterations: int, temperature: float) -> float:
    """Linear from ``START_TEMPERATURE * temperature`` (iteration 0) to ``temperature`` (the last)."""
    progress = n / (iterations - 1) if iterations > 1 else 1.0
    return temperature * (START_TEMPERATURE - (START_TEMPERATURE - 1.0) * progress)


# -- the input ----------------------------------------------------------------------------------------


class Piece:
    """A grid to complete: ``grid [steps, 4]`` (MIDI pitch, -1 rest), ``onsets`` (where a kept note
    begins, so repeated notes stay separate), ``voices`` (the columns the input really gives),
    the tempo map and time signature of the output, and notices for the user."""

    def __init__(
        self, grid, onsets=None, voices=(0, 1, 2, 3), tempos=None, time_signature=(4, 4), source="", notices=None
    ):
        self.grid = as_grid(grid)
        self.onsets = np.zeros(self.grid.shape, bool) if onsets is None else np.asarray(onsets, bool)
        self.voices = tuple(voices)
        self.tempos = list(tempos or [(0.0, 120.0)])
        self.time_signature = tuple(time_signature)
        self.source = source
        self.notices = list(notices or [])

    @property
    def steps(self) -> int:
        return len(self.grid)


def read_piece(source, *, split: str | None = None, index: int | None = None) -> Piece:
    """The piece to harmonize from a file path, a ``NoteSequence`` or a grid (see the module docstring)."""
    if isinstance(source, NoteSequence):
        return piece_from_sequence(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() == ".json":
            return _jsb_piece(path, split, index)
        if split is not None or index is not None:
            raise ArgumentError(
                "split",
                f"and index choose a chorale of a JSB Chorales .json file, not of {path.suffix or 'this'} file",
                "index",
            )
        from generator.generation.compose import read_seed

        return piece_from_sequence(read_seed(path))
    grid = np.asarray(source)
    if grid.ndim == 1:  # soprano pitches, one per 16th note
        full = np.full((len(grid), NUM_VOICES), -1, np.int64)
        full[:, 0] = grid
        return _melody_piece(full[:, 0], _onsets_of_column(full[:, 0]), [(0.0, 120.0)], (4, 4), "melody")
    try:
        return Piece(grid, _changes(as_grid(grid)), source="grid")
    except ValueError as e:
        raise GeneratorError(str(e)) from None


def _jsb_piece(path: Path, split: str | None, index: int | None) -> Piece:
    from generator.data.chorales import read_jsb_json

    if split is None or index is None:
        raise ArgumentError.sentence(
            f"{path} is a JSB Chorales file: choose a chorale with split and index", "split", "index"
        )
    chorales = read_jsb_json(path, split)
    if not 0 <= index < len(chorales):
        raise GeneratorError(f"{path}: split {split!r} has chorales 0 to {len(chorales) - 1}, not {index}")
    grid = chorales[index]
    return Piece(grid, _changes(grid), source=f"{path}:{split}:{index}")


def _changes(grid: np.ndarray) -> np.ndarray:
    """Onsets where a voice's pitch changes (the JSB convention: a repeated pitch is held)."""
    previous = np.vstack([np.full((1, grid.shape[1]), -2), grid[:-1]])
    return (grid != previous) & (grid >= 0)


def _onsets_of_column(column: np.ndarray) -> np.ndarray:
    return _changes(column[:, None])[:, 0]


def _quantized(seq: NoteSequence, notes) -> np.ndarray:
    """``[n, 2]`` start and end steps of ``notes`` on the grid (as ``grid_from_note_sequence`` rounds them)."""
    from generator.data.tokenizers.voices import _seconds_to_quarters

    times = np.array([[n.start, n.end] for n in notes], dtype=float).reshape(-1)
    steps = np.rint(_seconds_to_quarters(times, seq.tempos) * STEPS_PER_QUARTER).astype(np.int64).reshape(-1, 2)
    steps[:, 0] = np.maximum(steps[:, 0], 0)
    steps[:, 1] = np.maximum(steps[:, 1], steps[:, 0] + 1)
    return steps


def piece_from_sequence(seq: NoteSequence) -> Piece:
    """A melody (one line, or the top line of several) or a four-voice piece from a ``NoteSequence``."""
    notes = [n for n in seq.notes if not n.is_drum]
    name = seq.source or "the melody"
    if not notes:
        raise GeneratorError(f"{name} has no pitched notes to harmonize")
    steps = _quantized(seq, notes)
    if int(steps[:, 1].max()) > MAX_STEPS:
        raise GeneratorError(
            f"{name} is {steps[:, 1].max() / 16:.0f} bars of 4/4 long; at most {MAX_STEPS // 16} can be harmonized"
        )
    tracks = sorted({n.track for n in notes})
    grid = grid_from_note_sequence(seq, STEPS_PER_QUARTER)
    meta = (list(seq.tempos), tuple(seq.time_signature), name)
    if len(tracks) == NUM_VOICES or (len(tracks) > 1 and (grid >= 0).all(axis=1).mean() >= 0.5):
        onsets = np.zeros(grid.shape, bool)
        if len(tracks) == NUM_VOICES:
            from generator.data.tokenizers.voices import _track_voices

            voice_of = _track_voices(seq, tracks)
            for note, (start, _) in zip(notes, steps):
                if grid[start, voice_of[note.track]] == note.pitch:
                    onsets[start, voice_of[note.track]] = True
        else:
            onsets = _changes(grid)
        return Piece(grid, onsets | _changes(grid), (0, 1, 2, 3), *meta)
    if len(tracks) == 1:  # the only line: refuse chords
        order = np.lexsort((steps[:, 1], steps[:, 0]))
        starts, ends = steps[order, 0], steps[order, 1]
        if len(starts) > 1 and (starts[1:] < np.maximum.accumulate(ends)[:-1]).any():
            at = int(starts[1:][starts[1:] < np.maximum.accumulate(ends)[:-1]][0])
            raise GeneratorError(
                f"{name} sounds more than one note at a time (at beat {at / 4 + 1:g}); give a melody of one line"
            )
    column = grid[:, 0]
    onsets = np.zeros(len(column), bool)
    for note, (start, _) in zip(notes, steps):
        if column[start] == note.pitch:
            onsets[start] = True
    return _melody_piece(column, onsets, *meta)


def _melody_piece(column, onsets, tempos, time_signature, name) -> Piece:
    column = np.asarray(column, np.int64)
    if not (column >= 0).any():
        raise GeneratorError(f"{name} has no pitched notes to harmonize")
    shift, notices = soprano_shift(column[column >= 0], name)
    column = np.where(column >= 0, column + shift, -1)
    grid = np.full((len(column), NUM_VOICES), -1, np.int64)
    grid[:, 0] = column
    full_onsets = np.zeros(grid.shape, bool)
    full_onsets[:, 0] = np.asarray(onsets, bool) | _onsets_of_column(column)
    return Piece(grid, full_onsets, (0,), tempos, time_signature, name, notices)


def soprano_shift(pitches: np.ndarray, name: str = "the melody") -> tuple[int, list[str]]:
    """The octave shift that puts ``pitches`` in the soprano's range (or nearest it), and its notice."""
    low, high = VOICE_RANGES[0]
    vocab_low, vocab_high = VOICE_RANGES[3][0], VOICE_RANGES[0][1]
    best = None
    for octaves in range(-10, 11):
        moved = pitches + 12 * octaves
        if moved.min() < vocab_low or moved.max() > vocab_high:
            continue
        outside = int(((moved < low) | (moved > high)).sum())
        key = (outside, abs(octaves))
        if best is None or key < best[0]:
            best = (key, octaves)
    if best is None:
        raise GeneratorError(
            f"{name} spans {pitches.min()}..{pitches.max()} (MIDI), more than the "
            f"{vocab_high - vocab_low} semitones four voices can cover"
        )
    octaves = best[1]
    notices = []
    if octaves:
        direction = "up" if octaves > 0 else "down"
        notices.append(
            f"{name} was moved {direction} {abs(octaves)} octave{'s' if abs(octaves) > 1 else ''} "
            f"into the soprano's range ({VOICE_RANGES[0][0]}-{VOICE_RANGES[0][1]})"
        )
    return 12 * octaves, notices


# -- what to rewrite -------------------------------------------------------------------------------

VOICE_NAMES = tuple(v.lower() for v in VOICES)


def parse_voices(text) -> tuple[int, ...]:
    """``"alto,tenor,bass"`` (or S/A/T/B) -> voice columns; GeneratorError naming a bad one."""
    if isinstance(text, (list, tuple)):
        parts = [str(p) for p in text]
    else:
        parts = [p for p in str(text).split(",")]
    aliases = {name: i for i, name in enumerate(VOICE_NAMES)} | {name[0]: i for i, name in enumerate(VOICE_NAMES)}
    voices = []
    for part in parts:
        key = part.strip().lower()
        if key not in aliases:
            raise GeneratorError(f"unknown voice {part.strip()!r}: name soprano, alto, tenor or bass")
        voices.append(aliases[key])
    if not voices:
        raise ArgumentError("voices", "names no voice")
    return tuple(sorted(set(voices)))


def parse_infill(text) -> tuple[float, float]:
    """``"8-16"`` (beats, from 0) -> (8.0, 16.0); GeneratorError when malformed or empty."""
    if isinstance(text, (tuple, list)):
        start, end = (float(v) for v in text)
    else:
        try:
            start_text, end_text = str(text).split("-")
            start, end = float(start_text), float(end_text)
        except ValueError:
            raise ArgumentError("infill", f"takes START-END in beats, like 8-16, not {text!r}") from None
    if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start:
        raise ArgumentError("infill", f"{text}: need 0 <= START < END")
    return start, end


def free_cells(piece: Piece, voices=None, infill=None) -> np.ndarray:
    """Which cells of ``piece`` are rewritten (``[steps, 4]`` bool), with every check on the request."""
    given = set(piece.voices)
    if infill is not None and given != set(range(NUM_VOICES)):
        raise ArgumentError("infill", "rewrites a passage of a four-voice piece; this input is a melody")
    if voices is None:
        voices = tuple(range(NUM_VOICES)) if infill is not None else (1, 2, 3)
    voices = parse_voices(voices) if not all(isinstance(v, (int, np.integer)) for v in voices) else tuple(voices)
    missing = [VOICE_NAMES[v] for v in range(NUM_VOICES) if v not in given and v not in voices]
    if missing:
        raise ArgumentError(
            "voices",
            f"must also name {', '.join(missing)}: the input gives only the "
            f"{' and '.join(VOICE_NAMES[v] for v in sorted(given))}",
        )
    if given == {0} and 0 in voices:
        raise ArgumentError("voices", "can name alto, tenor and bass: the melody is the soprano and is kept")
    free = np.zeros(piece.grid.shape, bool)
    free[:, list(voices)] = True
    if infill is not None:
        start, end = parse_infill(infill)
        first, last = int(round(start * STEPS_PER_QUARTER)), int(round(end * STEPS_PER_QUARTER))
        if first >= piece.steps:
            raise ArgumentError(
                "infill", f"{start:g}-{end:g} starts after the piece ends ({piece.steps / STEPS_PER_QUARTER:g} beats)"
            )
        inside = np.zeros(piece.steps, bool)
        inside[first : min(last, piece.steps)] = True
        free &= inside[:, None]
    return free


# -- sampling ------------------------------------------------------------------------------------------


class GibbsSampler:
    """Pseudo-Gibbs sampling of a harmonizer model (see the module docstring)."""

    def __init__(self, model, tokenizer, voice_leading: bool = True):
        import tensorflow as tf

        from generator.models import harmonizer

        self.vocab = tokenizer.vocab_size
        self.tokenizer = tokenizer
        self.mask = harmonizer.mask_id(self.vocab)
        self.inputs = harmonizer.model_inputs
        # XLA: a third faster per pass on a CPU; compiled once per piece length
        self.forward = tf.function(lambda ids: model(ids, training=False), reduce_retracing=True, jit_compile=True)
        allowed = np.zeros((NUM_VOICES, self.vocab), bool)  # per voice: REST and its range
        allowed[:, REST] = True
        for v, (low, high) in enumerate(VOICE_RANGES):
            low, high = max(low, tokenizer.low), min(high, tokenizer.high)
            allowed[v, low - tokenizer.low + PITCH_OFFSET : high - tokenizer.low + PITCH_OFFSET + 1] = True
        self.penalty = np.where(allowed, 0.0, -np.inf)  # [4, V]
        self.voice_leading = bool(voice_leading)
        self.pitches = np.arange(tokenizer.low, tokenizer.high + 1)
        self.in_range = allowed[:, PITCH_OFFSET:]  # [4, pitches]

    def logits(self, cells: np.ndarray) -> np.ndarray:
        """``[batch, steps, 4]`` cell ids (MASK allowed) -> ``[batch, steps, 4, vocab]`` float64 logits.

        The piece is framed by a BOS frame on each side, as documents are in training."""
        batch, steps = cells.shape[:2]
        bos = np.full((batch, 1, NUM_VOICES), BOS)
        padded = np.concatenate([bos, cells, bos], axis=1)
        ids = self.inputs(padded, self.vocab, first_step=-1)
        out = np.asarray(self.forward(ids), np.float64).reshape(batch, steps + 2, NUM_VOICES, self.vocab)
        return out[:, 1:-1]

    def sample(
        self,
        cells: np.ndarray,
        free: np.ndarray,
        iterations: int,
        temperature: float,
        rng: np.random.Generator,
        progress=None,
    ) -> np.ndarray:
        """Resample the ``free`` cells of ``cells`` (``[batch, steps, 4]`` token ids) and return them;
        the other cells are returned unchanged."""
        cells = np.array(cells, np.int64)
        free = np.broadcast_to(free, cells.shape)
        if not free.any():
            return cells
        drawn = ~free  # cells whose value stands: fixed ones, and free ones once drawn
        for n in range(iterations):
            if n == 0:
                hidden = free.copy()
            else:
                hidden = free & (rng.random(cells.shape) < block_probability(n, iterations))
                for b in np.flatnonzero(~hidden.reshape(len(cells), -1).any(axis=1)):
                    options = np.argwhere(free[b])
                    t, v = options[rng.integers(len(options))]
                    hidden[b, t, v] = True
            logits = self.logits(np.where(hidden, self.mask, cells))
            chosen = logits[hidden] / temperature_at(n, iterations, temperature)  # [k, V]
            chosen = chosen + self.penalty[np.nonzero(hidden)[2]]
            if self.voice_leading:
                self._draw_by_rules(cells, hidden, drawn, chosen, rng)
            else:
                cells[hidden] = self._draw(chosen, rng)
            if progress is not None:
                progress(n + 1)
        return cells

    def _draw(self, chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One id per row of ``chosen`` (``[k, V]`` tempered logits, -inf where forbidden)."""
        chosen = chosen - chosen.max(axis=1, keepdims=True)
        cumulative = np.cumsum(np.exp(chosen), axis=1)
        draws = (1.0 - rng.random(len(cumulative)))[:, None] * cumulative[:, -1:]  # in (0, total]
        return np.minimum((cumulative < draws).sum(axis=1), self.vocab - 1)

    def _draw_by_rules(self, cells, hidden, drawn, chosen, rng) -> None:
        """Draw the ``hidden`` cells in rounds by voice and step parity, each under the voice-leading
        rules given the current values of the others (``cells`` and ``drawn`` are updated in place)."""
        batch, step, voice = np.nonzero(hidden)
        low = self.pitches[0]
        for group in rng.permutation(2 * NUM_VOICES):
            v, parity = group // 2, group % 2
            sel = np.flatnonzero((voice == v) & (step % 2 == parity))
            if not len(sel):
                continue
            b, t = batch[sel], step[sel]
            grid = np.where(drawn & (cells >= PITCH_OFFSET), cells - PITCH_OFFSET + low, -1)
            strict, relaxed = voice_leading_rules(grid, b, t, v, self.pitches)
            allowed = self.in_range[v] & strict
            stuck = ~allowed.any(axis=1)
            allowed[stuck] = (self.in_range[v] & relaxed)[stuck]  # relax the parallels first
            stuck = ~allowed.any(axis=1)
            allowed[stuck] = self.in_range[v]  # then crossing and spacing: the range alone
            logits = chosen[sel].copy()
            logits[:, PITCH_OFFSET:][~allowed] = -np.inf
            cells[b, t, v] = self._draw(logits, rng)
            drawn[b, t, v] = True


def voice_leading_rules(
    grid: np.ndarray, batch: np.ndarray, step: np.ndarray, voice: int, pitches: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which ``pitches`` voice ``voice`` may take at cells ``(batch[i], step[i])`` of ``grid``
    (``[batch, steps, 4]`` MIDI pitches, -1 for a rest or a value not drawn yet, which constrains
    nothing), given every other cell: ``(strict, relaxed)``, both ``[len(step), len(pitches)]``.

    ``relaxed``: no crossing of the nearest sounding voice above or below at that step; alto
    within an octave of the soprano, tenor within an octave of the alto (both ways). ``strict``:
    also no parallel fifths or octaves/unisons with any other voice sounding at that step, against
    the nearest step before and after it where all four voices sound (the rule of
    ``VoicesTokenizer`` and of ``generator.evaluation.features.parallel_counts``)."""
    grid = np.asarray(grid, np.int64)
    steps = grid.shape[1]
    here = grid[batch, step]  # [m, 4]
    p = np.asarray(pitches)[None, :]
    above = np.full(len(step), -1, np.int64)
    for u in range(voice):  # the last sounding voice above is the nearest
        above = np.where(here[:, u] >= 0, here[:, u], above)
    below = np.full(len(step), -1, np.int64)
    for u in range(NUM_VOICES - 1, voice, -1):
        below = np.where(here[:, u] >= 0, here[:, u], below)
    relaxed = ((above < 0)[:, None] | (p <= above[:, None])) & ((below < 0)[:, None] | (p >= below[:, None]))
    if voice in (1, 2):  # within an octave of the voice above
        upper = here[:, voice - 1][:, None]
        relaxed &= (upper < 0) | (upper - p <= 12)
    if voice in (0, 1):  # the voice below within an octave of this one
        lower = here[:, voice + 1][:, None]
        relaxed &= (lower < 0) | (p - lower <= 12)
    strict = relaxed.copy()
    positions = np.arange(steps)
    full = (grid >= 0).all(axis=2)  # [batch, steps]
    last_full = np.maximum.accumulate(np.where(full, positions, -1), axis=1)
    next_full = np.minimum.accumulate(np.where(full, positions, steps)[:, ::-1], axis=1)[:, ::-1]
    before_step = np.where(step > 0, last_full[batch, np.maximum(step - 1, 0)], -1)
    after_step = np.where(step < steps - 1, next_full[batch, np.minimum(step + 1, steps - 1)], steps)
    for neighbour, later in ((before_step, False), (after_step, True)):
        valid = (neighbour >= 0) & (neighbour < steps)
        other = grid[batch, np.clip(neighbour, 0, steps - 1)]  # [m, 4]
        for u in range(NUM_VOICES):
            if u == voice:
                continue
            mine, theirs_v = here[:, u][:, None], other[:, voice][:, None]
            theirs_u = other[:, u][:, None]
            if later:
                move_u, move_v = theirs_u - mine, theirs_v - p
                interval_first, interval_second = np.abs(mine - p) % 12, np.abs(theirs_u - theirs_v) % 12
            else:
                move_u, move_v = mine - theirs_u, p - theirs_v
                interval_first, interval_second = np.abs(theirs_u - theirs_v) % 12, np.abs(mine - p) % 12
            similar = (move_u != 0) & (np.sign(move_u) == np.sign(move_v))
            perfect = (interval_second == 0) | (interval_second == 7)
            active = (valid & (here[:, u] >= 0))[:, None]
            strict &= ~(active & similar & perfect & (interval_first == interval_second))
    return strict, relaxed


def harmonize(
    generator,
    melody,
    *,
    voices=None,
    infill=None,
    iterations: int = DEFAULT_ITERATIONS,
    temperature: float = 1.0,
    num_samples: int = 1,
    random_seed: int | None = None,
    split: str | None = None,
    index: int | None = None,
    voice_leading: bool = True,
    log=None,
):
    """Harmonize ``melody`` (or rewrite ``voices`` of a chorale, within ``infill`` beats) with a
    harmonizer ``Generator``, under the voice-leading rules unless ``voice_leading=False``; returns
    a list of ``num_samples`` ``Music`` objects."""
    from generator.generation.compose import Music
    from generator.progress import progress_bar

    log = log or (lambda message: print(message, file=sys.stderr))
    generator.task.require("harmonize", f"checkpoint {generator.run.path.name}", generator.config.modality)
    if not isinstance(iterations, (int, np.integer)) or not 1 <= iterations <= MAX_ITERATIONS:
        raise ArgumentError("iterations", f"must be between 1 and {MAX_ITERATIONS:,}, not {iterations}")
    if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
        raise ArgumentError("temperature", f"must be greater than 0, not {temperature}")
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ArgumentError("num_samples", f"must be at least 1, not {num_samples}")
    piece = melody if isinstance(melody, Piece) else read_piece(melody, split=split, index=index)
    free = free_cells(piece, voices, infill)
    for notice in piece.notices:
        log(notice)
    tokenizer = generator.tokenizer
    kept = np.where(free, -1, piece.grid)
    try:
        ids = np.asarray(tokenizer.ids_from_grid(kept), np.int64).reshape(piece.grid.shape)
    except ValueError as e:
        raise GeneratorError(f"{piece.source}: {e}") from None
    seed = secrets.randbits(62) if random_seed is None else int(random_seed)
    rng = np.random.default_rng(seed)
    sampler = GibbsSampler(generator.run.model, tokenizer, voice_leading=voice_leading)
    cells = np.broadcast_to(ids, (num_samples,) + ids.shape)
    with progress_bar(iterations, "harmonizing") as bar:

        def advance(done):
            bar.count = done
            bar.update(0)

        out = sampler.sample(cells, free, iterations, temperature, rng, progress=advance)
    results = []
    for row in out:
        grid = np.where(row == REST, -1, row - PITCH_OFFSET + tokenizer.low)
        grid = np.where(free, grid, piece.grid)  # fixed cells exactly as given (even outside the vocabulary)
        onsets = np.where(free, False, piece.onsets)
        results.append(Music(sequence_from_grid(grid, onsets, piece), 0.0, list(piece.notices)))
    return results


# -- the output ------------------------------------------------------------------------------------


def quarters_to_seconds(quarters: np.ndarray, tempos) -> np.ndarray:
    """Seconds of quarter-note positions under a tempo map ``[(time s, bpm), ...]``."""
    changes = sorted((float(t), float(b)) for t, b in tempos if b > 0) or [(0.0, 120.0)]
    starts = np.array([0.0] + [t for t, _ in changes[1:]])
    bpms = np.array([b for _, b in changes])
    at = np.concatenate([[0.0], np.cumsum(np.diff(starts) * bpms[:-1] / 60.0)])  # quarters at each change
    segment = np.clip(np.searchsorted(at, quarters, side="right") - 1, 0, len(starts) - 1)
    return starts[segment] + (np.asarray(quarters, float) - at[segment]) * 60.0 / bpms[segment]


def sequence_from_grid(grid: np.ndarray, onsets: np.ndarray, piece: Piece, velocity: int = 80) -> NoteSequence:
    """Four tracks from a grid: a note per run of one pitch, split where ``onsets`` says a kept note begins."""
    notes = []
    steps = len(grid)
    seconds = quarters_to_seconds(np.arange(steps + 1) / STEPS_PER_QUARTER, piece.tempos)
    for voice in range(NUM_VOICES):
        column = grid[:, voice]
        previous = np.concatenate([[-2], column[:-1]])
        starts = np.flatnonzero((column != previous) | onsets[:, voice])
        ends = np.append(starts[1:], steps)
        for start, end in zip(starts, ends):
            if column[start] >= 0:
                notes.append(
                    Note(
                        int(column[start]), float(seconds[start]), float(seconds[end]), velocity, PROGRAM, False, voice
                    )
                )
    notes.sort(key=lambda n: (n.start, n.track))
    return NoteSequence(
        notes=notes,
        tempos=list(piece.tempos),
        time_signature=piece.time_signature,
        instruments=[Instrument(PROGRAM, False, name) for name in VOICES],
        source=piece.source,
    )
