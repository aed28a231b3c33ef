"""A small progress bar on stderr for long loops (corpus parsing, long generations)."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

MIN_SECONDS = 1.0  # loops that finish sooner draw nothing
_watchers = threading.local()  # the callback of ``observe`` for the bars of this thread


class ProgressBar:
    """Draws ``label [#####.....] n/total`` on stderr, at most ten times a second; with
    ``unit="bytes"`` the counts are shown in MB with the rate in MB per second."""

    def __init__(self, total: int, label: str, stream=None, min_seconds: float | None = None, unit: str = ""):
        self.total, self.label, self.count, self.unit = max(int(total), 1), label, 0, unit
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
        self._last = 0.0
        self._drawn = False
        self.watcher = getattr(_watchers, "callback", None)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.watcher is not None:
            self.watcher(self.label, self.count, self.total)
        now = time.monotonic()
        if (
            self.enabled
            and now - self.start >= self.min_seconds
            and (now - self._last > 0.1 or self.count >= self.total)
        ):
            self._last = now
            filled = int(30 * self.count / self.total)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self._counts(now)}")
            self.stream.flush()
            self._drawn = True

    def _counts(self, now: float) -> str:
        if self.unit != "bytes":
            return f"{self.count}/{self.total}"
        rate = self.count / max(now - self.start, 1e-9) / 1e6
        return f"{self.count / 1e6:,.0f}/{self.total / 1e6:,.0f} MB, {rate:,.0f} MB/s"

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


@contextmanager
def observe(callback):
    """Inside the block, every progress bar this thread makes also calls ``callback(label, count,
    total)`` on each update (the studio page shows it); an exception the callback raises ends the
    loop being measured, which is how a long generation is cancelled."""
    previous = getattr(_watchers, "callback", None)
    _watchers.callback = callback
    try:
        yield
    finally:
        _watchers.callback = previous


@contextmanager
def progress_bar(total: int, label: str, **kwargs):
    bar = ProgressBar(total, label, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


def track(chunks, total: int, label: str = "generating", **kwargs):
    """Yield ``chunks`` (token arrays ``[batch, n]``) unchanged while a bar counts their columns."""
    with progress_bar(total, label, **kwargs) as bar:
        for chunk in chunks:
            yield chunk
            bar.update(chunk.shape[1])
