"""Seeded orders of many windows, computed for the windows asked for and never stored.

``permute(index, n, keys)`` gives position ``index`` of a seeded permutation of ``range(n)``;
``LazyStarts`` uses it to hand ``dataset.WindowSampler`` an epoch's window starts batch by batch
for corpora whose window table would not fit in memory. numpy only.
"""

from __future__ import annotations

import numpy as np


def _mix(values: np.ndarray, key) -> np.ndarray:
    """A 64-bit hash of ``values`` (uint64) under ``key``."""
    with np.errstate(over="ignore"):
        v = (values ^ np.uint64(key)) * np.uint64(0x9E3779B97F4A7C15)
        v ^= v >> np.uint64(29)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(32)
    return v


def permute(index, n: int, keys) -> np.ndarray:
    """Position ``index`` of a seeded permutation of ``range(n)`` (a Feistel network over the next
    power of four, walked until it lands below ``n``), computed without storing the permutation."""
    half = max(1, (max(int(n) - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    x = np.asarray(index, np.uint64).copy()
    todo = np.ones(x.shape, bool)
    while todo.any():
        y = x[todo]
        left, right = y >> shift, y & mask
        for key in keys:
            left, right = right, left ^ (_mix(right, key) & mask)
        x[todo] = (left << shift) | right
        todo = x >= np.uint64(n)
    return x.astype(np.int64)


class LazyStarts:
    """An epoch's window starts for a large corpus: ``len`` and indexing by slice or array, each
    window's start computed when asked for (a seeded permutation when ``keys`` is given)."""

    def __init__(self, begins: np.ndarray, counts: np.ndarray, seq_len: int, keys=None):
        self.begins, self.seq_len, self.keys = np.asarray(begins, np.int64), int(seq_len), keys
        self.cumulative = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def __getitem__(self, key) -> np.ndarray:
        index = np.arange(*key.indices(len(self))) if isinstance(key, slice) else np.asarray(key, np.int64)
        window = permute(index, len(self), self.keys) if self.keys is not None else index
        segment = np.searchsorted(self.cumulative, window, side="right") - 1
        return self.begins[segment] + (window - self.cumulative[segment]) * self.seq_len
