"""Readers of four-voice chorales on the 16th-note grid used by ``tokenizers.voices``.

A chorale is an int64 array ``[steps, 4]``: MIDI pitches of Soprano, Alto, Tenor, Bass at
every 16th note, ``-1`` where a voice is silent; a held note repeats its pitch.

- ``read_jsb_json``: the JSB Chorales JSON of the Music Transformer and Coconet papers
  (``Jsb16thSeparated.json``): ``{"train": [chorale, ...], "valid": [...], "test": [...]}``,
  each chorale a list of ``[S, A, T, B]`` steps (ints or integral floats).
- ``music21_chorales``: the Bach chorales installed with music21, put on the same grid.
- ``grid_from_note_sequence``: a MIDI/MusicXML chorale read with ``generator.data.midi_io``.

No TensorFlow here; problems with user files become ``GeneratorError``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from generator.errors import GeneratorError
from generator.data.tokenizers.voices import NUM_VOICES, grid_from_note_sequence

__all__ = ["read_jsb_json", "music21_chorales", "grid_from_note_sequence"]

log = logging.getLogger(__name__)

VOICE_PART_NAMES = ("soprano", "alto", "tenor", "bass")


def read_jsb_json(path, split: str) -> list[np.ndarray]:
    """The chorales of one split of a JSB Chorales JSON file, each an int64 ``[steps, 4]`` grid."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GeneratorError(f"cannot read JSB Chorales file {path}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise GeneratorError(f"{path} is not JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(data, dict):
        raise GeneratorError(
            f"{path} is not a JSB Chorales file: expected a JSON object of splits "
            f'like {{"train": [...], "valid": [...]}}, got a {type(data).__name__}'
        )
    if split not in data:
        available = ", ".join(sorted(map(str, data))) or "none"
        raise GeneratorError(f"{path} has no split {split!r} (available: {available})")
    chorales = data[split]
    if not isinstance(chorales, list):
        raise GeneratorError(f"{path}: split {split!r} is not a list of chorales")
    return [_check_chorale(chorale, f"{path}: chorale {i} of split {split!r}") for i, chorale in enumerate(chorales)]


def _check_chorale(chorale, where: str) -> np.ndarray:
    """One chorale as an int64 grid, or GeneratorError saying what is wrong with it."""
    shape_error = f"{where} is not a non-empty list of [S, A, T, B] steps"
    if not isinstance(chorale, list) or not chorale:
        raise GeneratorError(shape_error)
    try:
        array = np.asarray(chorale, dtype=float)
    except (TypeError, ValueError):
        raise GeneratorError(shape_error) from None
    if array.ndim != 2 or array.shape[1] != NUM_VOICES:
        raise GeneratorError(f"{shape_error} (shape {list(array.shape)})")
    grid = np.rint(array)
    bad = (grid != array) | ((grid != -1) & ((grid < 0) | (grid > 127)))
    if bad.any():
        step, voice = np.argwhere(bad)[0]
        raise GeneratorError(
            f"{where}, step {step}, voice {voice}: {array[step, voice]!r} is neither -1 (silent) nor a MIDI pitch 0-127"
        )
    return grid.astype(np.int64)


# -- music21's Bach chorales ---------------------------------------------------------------------
def music21_chorales(
    limit: int | None = None,
    steps_per_quarter: int = 4,
    expand_repeats: bool = False,
    skipped: list | None = None,
) -> list[np.ndarray]:
    """music21's Bach chorales (Riemenschneider numbering) as ``[steps, 4]`` grids.

    Parts named Soprano, Alto, Tenor and Bass are the voices (instrumental parts are left
    out); a score without those names is used only when it has exactly four parts, in score
    order. Other scores, and those music21 cannot read, are skipped: their names and the
    reason are appended to ``skipped`` when given, and their count is logged. ``limit``
    stops after that many chorales. Repeats are written out only with ``expand_repeats``
    (as music21 does when it writes MIDI; the one chorale with malformed repeat marks stays
    as written); ties need no special care since a held note and
    tied notes look the same on the grid.
    """
    try:
        from music21 import corpus
    except ImportError:
        raise GeneratorError("music21's chorales need music21: pip install music21") from None

    names = list(corpus.chorales.Iterator(returnType="filename"))
    grids: list[np.ndarray] = []
    missed: list[tuple[str, str]] = []
    for name in names:
        if limit is not None and len(grids) >= limit:
            break
        try:
            score = corpus.parse(name)
            if expand_repeats:
                score = _expanded(score, name)
            grid = _score_grid(score, steps_per_quarter)
        except Exception as error:  # noqa: BLE001 - a corpus file music21 cannot read
            missed.append((name, f"{type(error).__name__}: {error}"))
            continue
        if isinstance(grid, str):
            missed.append((name, grid))
        else:
            grids.append(grid)
    if missed:
        log.info("music21 chorales: %d read, %d skipped", len(grids), len(missed))
    if skipped is not None:
        skipped.extend(missed)
    return grids


def _expanded(score, name: str):
    """The score with its repeats written out, or unchanged when music21 cannot expand them."""
    try:
        return score.expandRepeats()
    except Exception as error:  # noqa: BLE001 - badly formed repeat marks in a few files
        log.info("music21 chorale %s: repeats kept unexpanded (%s)", name, error)
        return score


def _voice_parts(score) -> list | str:
    """The four SATB parts of a music21 score, or the reason there are none."""
    parts = list(score.parts)
    named = {}
    for part in parts:
        words = (part.partName or part.id or "").strip().lower().split()
        if words and words[0] in VOICE_PART_NAMES and words[0] not in named:
            named[words[0]] = part
    if len(named) == NUM_VOICES:
        return [named[name] for name in VOICE_PART_NAMES]
    if len(parts) == NUM_VOICES:
        return parts
    return f"{len(parts)} parts, not Soprano, Alto, Tenor and Bass"


def _score_grid(score, steps_per_quarter: int) -> np.ndarray | str:
    """One score on the grid, or the reason it is skipped."""
    parts = _voice_parts(score)
    if isinstance(parts, str):
        return parts
    voices = []
    for part in parts:
        notes = []
        for element in part.flatten().notes:
            length = float(element.quarterLength)
            if length <= 0:  # grace notes
                continue
            pitch = max(p.midi for p in element.pitches)  # the top note of a divided voice
            start = float(element.offset) * steps_per_quarter
            notes.append((round(start), round(start + length * steps_per_quarter), pitch))
        if not notes:
            return "a voice without notes"
        voices.append(notes)
    steps = max(max(end for _, end, _ in notes) for notes in voices)
    if steps <= 0 or not math.isfinite(steps):
        return "empty score"
    grid = np.full((steps, NUM_VOICES), -1, dtype=np.int64)
    for voice, notes in enumerate(voices):
        for start, end, pitch in sorted(notes):
            grid[start : max(end, start + 1), voice] = pitch
    return grid
