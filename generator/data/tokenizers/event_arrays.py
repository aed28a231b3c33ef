"""Vectorised numpy helpers for ``EventTokenizer``: batch augmentation and the sampling constraint.

They work on id arrays and the vocabulary offsets only, so they stay fast (they run on every
training batch and every sampling step) and easy to test without any music.
"""

from __future__ import annotations

import numpy as np


def _in_range(ids: np.ndarray, offset: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of ids inside ``[offset, offset + size)``, ids minus ``offset``)."""
    relative = ids - offset
    return (relative >= 0) & (relative < size), relative


def transpose_windows(
    windows: np.ndarray,
    rng: np.random.Generator,
    max_semitones: int,
    on_offset: int,
    off_offset: int,
    num_pitches: int,
) -> np.ndarray:
    """Shift NOTE_ON and NOTE_OFF ids of each window by one random number of semitones in
    ``[-max_semitones, max_semitones]``, chosen so that every pitch of the window stays in range."""
    windows = np.asarray(windows)
    if max_semitones <= 0 or windows.size == 0:
        return windows.copy()
    is_on, on_pitch = _in_range(windows, on_offset, num_pitches)
    is_off, off_pitch = _in_range(windows, off_offset, num_pitches)
    is_note = is_on | is_off
    pitch = np.where(is_on, on_pitch, off_pitch)
    lowest = np.where(is_note, pitch, num_pitches).min(axis=-1)  # num_pitches when no note
    highest = np.where(is_note, pitch, -1).max(axis=-1)
    low = np.maximum(-max_semitones, -lowest)
    high = np.minimum(max_semitones, num_pitches - 1 - highest)
    shifts = rng.integers(low, high + 1)
    return windows + np.where(is_note, shifts[..., None], 0).astype(windows.dtype)


def stretch_windows(
    windows: np.ndarray, rng: np.random.Generator, stretch: float, shift_offset: int, max_shift_steps: int
) -> np.ndarray:
    """Scale the TIME_SHIFT ids of each window by one random factor in ``1 +- stretch``
    (rounded, kept within 1..max_shift_steps): the same music a little faster or slower."""
    windows = np.asarray(windows)
    if stretch <= 0 or windows.size == 0:
        return windows.copy()
    is_shift, relative = _in_range(windows, shift_offset, max_shift_steps)
    factor = rng.uniform(1.0 - stretch, 1.0 + stretch, size=windows.shape[:-1] + (1,))
    steps = np.clip(np.rint((relative + 1) * factor), 1, max_shift_steps).astype(windows.dtype)
    return np.where(is_shift, steps - 1 + shift_offset, windows)


def allowed_mask(
    sounding: np.ndarray, vocab_size: int, on_offset: int, off_offset: int, max_polyphony: int
) -> np.ndarray:
    """Mask ``[batch, vocab_size]``: NOTE_OFF only for sounding pitches, NOTE_ON only for silent
    pitches while polyphony is under the cap, never BOS (id 0), everything else always."""
    batch, num_pitches = sounding.shape
    mask = np.ones((batch, vocab_size), dtype=bool)
    mask[:, 0] = False
    can_start = sounding.sum(axis=1) < max_polyphony
    mask[:, on_offset : on_offset + num_pitches] = ~sounding & can_start[:, None]
    mask[:, off_offset : off_offset + num_pitches] = sounding
    return mask


def advance_sounding(sounding: np.ndarray, ids: np.ndarray, on_offset: int, off_offset: int) -> np.ndarray:
    """The sounding-pitch array after sequence ``b`` emitted ``ids[b]`` (a new array)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.shape[0] != sounding.shape[0]:
        raise ValueError(f"got {ids.shape[0]} ids for a batch of {sounding.shape[0]}")
    sounding = sounding.copy()
    rows = np.arange(ids.shape[0])
    is_on, on_pitch = _in_range(ids, on_offset, sounding.shape[1])
    sounding[rows[is_on], on_pitch[is_on]] = True
    is_off, off_pitch = _in_range(ids, off_offset, sounding.shape[1])
    sounding[rows[is_off], off_pitch[is_off]] = False
    return sounding
