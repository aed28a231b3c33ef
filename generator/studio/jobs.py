"""The studio's work queue: one worker thread runs one job at a time, in the order asked.

Generation holds a model and its compiled sampling loop, so two requests at once are queued,
never interleaved. A job reports its progress through ``generator.progress.observe`` (the same
counts the terminal's progress bar shows) and is cancelled by raising ``Cancelled`` from that
callback, which ends the sampling loop at its next chunk. No TensorFlow here.
"""

from __future__ import annotations

import itertools
import queue
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field

from generator.errors import GeneratorError
from generator.progress import observe

KEPT_JOBS = 200  # finished jobs remembered for the page; older ones are forgotten


class Cancelled(Exception):
    """Raised inside a job when the page asked to cancel it."""


@dataclass
class Job:
    """One request: ``run(job)`` does the work, reading ``cancel`` and writing the other fields."""

    kind: str  # music, harmonize or text
    run: object  # callable(job) -> None
    settings: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    state: str = "queued"  # queued, running, done, failed, cancelled
    stage: str = "waiting for the jobs before it"
    progress: float | None = None  # 0..1 when known
    text: str = ""  # text jobs: the text so far
    take: str | None = None  # music jobs: the take made
    error: str = ""
    started: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        """Raise ``Cancelled`` when the page asked to stop."""
        if self.cancel.is_set():
            raise Cancelled

    def watch(self, label: str, count: int, total: int) -> None:
        """``observe`` callback: record the share done, and stop when cancelled."""
        self.progress = min(count / max(total, 1), 1.0)
        self.check()


class Worker:
    """A queue of jobs and the one thread that runs them."""

    def __init__(self, log=None):
        self.jobs: dict[str, Job] = {}
        self.log = log or (lambda message: None)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="studio-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
            finished = [j for j in self.jobs.values() if j.state in ("done", "failed", "cancelled")]
            for old in finished[: max(0, len(self.jobs) - KEPT_JOBS)]:
                del self.jobs[old.id]
        self._queue.put(job)
        return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait before ``job`` (0: it is running or finished)."""
        if job.state != "queued":
            return 0
        with self._lock:
            ids = list(self.jobs)
        before = ids[: ids.index(job.id)] if job.id in ids else []
        return sum(1 for i in before if i in self.jobs and self.jobs[i].state in ("queued", "running"))

    def cancel(self, job: Job) -> None:
        job.cancel.set()
        if job.state == "queued":
            job.state, job.stage = "cancelled", "cancelled before it started"

    def stop(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel.set()
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancel.is_set():
                job.state, job.stage = "cancelled", "cancelled before it started"
                continue
            job.state, job.stage, job.started = "running", "starting", time.monotonic()
            try:
                with observe(job.watch):
                    job.run(job)
                job.state, job.stage, job.progress = "done", "done", 1.0
            except Cancelled:
                job.state, job.stage = "cancelled", "cancelled"
            except GeneratorError as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # the server keeps running; the page shows the message
                job.state, job.error = "failed", f"internal error: {type(e).__name__}: {e}"[:500]
                self.log(traceback.format_exc())
