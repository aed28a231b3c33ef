"""Vectorised numpy helpers for ``EventTokenizer``: batch augmentation and the sampling constraint.

They work on id arrays and the vocabulary offsets only, so they stay fast (they run on every
training batch and every sampling step) and easy to test without any music.

The constraint state is ``[batch, num_pitches]``, an int32 array of ages (``-1``: silent,
``k >= 0``: sounding for ``k`` clock steps); ``sounding(state)`` reads which pitches sound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _in_range(ids: np.ndarray, offset: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of ids inside ``[offset, offset + size)``, ids minus ``offset``)."""
    relative = ids - offset
    return (relative >= 0) & (relative < size), relative


def transpose_windows(
    windows: np.ndarray,
    rng: np.random.Generator,
    max_semitones: int,
    pitch_offsets: Sequence[int],
    num_pitches: int,
) -> np.ndarray:
    """Shift every pitched id (the ranges of ``num_pitches`` ids starting at ``pitch_offsets``:
    NOTE_ON of each track, NOTE_OFF) of each window by one random number of semitones in
    ``[-max_semitones, max_semitones]``, chosen so that every pitch of the window stays in range."""
    windows = np.asarray(windows)
    if max_semitones <= 0 or windows.size == 0:
        return windows.copy()
    is_note = np.zeros(windows.shape, dtype=bool)
    pitch = np.zeros(windows.shape, dtype=np.int64)
    for offset in pitch_offsets:
        inside, relative = _in_range(windows, offset, num_pitches)
        is_note |= inside
        pitch = np.where(inside, relative, pitch)
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


def sounding(state: np.ndarray) -> np.ndarray:
    """Bool ``[batch, num_pitches]``: which pitches sound."""
    return state >= 0


def allowed_mask(
    state: np.ndarray,
    vocab_size: int,
    on_offsets: Sequence[int],
    off_offset: int,
    max_polyphony: int,
    shift_offset: int = 0,
    max_shift_steps: int = 0,
    max_note_steps: int | None = None,
) -> np.ndarray:
    """Mask ``[batch, vocab_size]``: NOTE_OFF only for sounding pitches that have sounded for at
    least one clock step (encoded notes last at least one, and a note released where it starts is
    silent, the loop that never advances time), NOTE_ON (of any
    track) only for silent pitches while polyphony is under the cap, never BOS (id 0), and, with
    ``max_note_steps``, only the TIME_SHIFTs that keep every sounding note within that many
    steps and, once a note has lasted that long, nothing but the NOTE_OFFs of such notes (the
    release is forced: were NOTE_ONs or velocities still allowed, a sampler that keeps choosing
    them would never advance time); everything else always (so a NOTE_OFF is allowed whenever no
    shift is, and a TIME_SHIFT whenever no NOTE_OFF or NOTE_ON is)."""
    on = sounding(state)
    batch, num_pitches = on.shape
    mask = np.ones((batch, vocab_size), dtype=bool)
    mask[:, 0] = False
    can_start = ~on & (on.sum(axis=1) < max_polyphony)[:, None]
    for offset in on_offsets:
        mask[:, offset : offset + num_pitches] = can_start
    mask[:, off_offset : off_offset + num_pitches] = state >= 1
    if max_note_steps is not None:
        room = max_note_steps - state.max(axis=1, initial=-1)  # steps the oldest note may still last
        room = np.where(on.any(axis=1), room, max_shift_steps)
        mask[:, shift_offset : shift_offset + max_shift_steps] = (
            np.arange(1, max_shift_steps + 1)[None, :] <= room[:, None]
        )
        capped = state >= max_note_steps  # [batch, num_pitches]: notes that must end now
        must_release = capped.any(axis=1)
        mask[must_release] = False
        mask[:, off_offset : off_offset + num_pitches] |= capped
    return mask


def advance_sounding(
    state: np.ndarray,
    ids: np.ndarray,
    on_offsets: Sequence[int],
    off_offset: int,
    shift_offset: int = 0,
    max_shift_steps: int = 0,
) -> np.ndarray:
    """The state after sequence ``b`` emitted ``ids[b]`` (a new array): a TIME_SHIFT ages every
    sounding pitch by its steps."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.shape[0] != state.shape[0]:
        raise ValueError(f"got {ids.shape[0]} ids for a batch of {state.shape[0]}")
    state = state.copy()
    rows = np.arange(ids.shape[0])
    for offset in on_offsets:
        is_on, on_pitch = _in_range(ids, offset, state.shape[1])
        state[rows[is_on], on_pitch[is_on]] = 0
    is_off, off_pitch = _in_range(ids, off_offset, state.shape[1])
    state[rows[is_off], off_pitch[is_off]] = -1
    if max_shift_steps:
        is_shift, steps = _in_range(ids, shift_offset, max_shift_steps)
        grow = np.where(is_shift, steps + 1, 0).astype(state.dtype)[:, None]
        state = np.where(state >= 0, state + grow, state)
    return state
