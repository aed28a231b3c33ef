"""Limits on the input: every file, prompt and peer is handled in bounded time and memory or refused.

Each limit has a default, an environment variable that changes it and, for some, a command-line
flag (which wins over the variable). 0 switches a limit off.

    name            variable                    default    what it bounds
    midi_bytes      GENERATOR_MAX_MIDI_BYTES    32 MiB     size of a MIDI file
    score_bytes     GENERATOR_MAX_SCORE_BYTES   16 MiB     size of a MusicXML or kern file (a .mxl: unpacked)
    abc_bytes       GENERATOR_MAX_ABC_BYTES     1 MiB      size of an ABC file (music21 parses ABC slowly)
    notes           GENERATOR_MAX_NOTES         200,000    notes in one piece (counted before the full parse)
    midi_events     GENERATOR_MAX_MIDI_EVENTS   2,000,000  events of a MIDI file (counted before mido parses it)
    seconds         GENERATOR_MAX_SECONDS       21,600     duration of one piece (6 hours)
    parse_seconds   GENERATOR_PARSE_SECONDS     60         time to parse one score or corpus file
    parse_memory    GENERATOR_PARSE_MEMORY_MB   4,096      address space of a parsing worker, MiB
    text_bytes      GENERATOR_MAX_TEXT_BYTES    256 MiB    size of a text file read whole (a prompt; corpus
                                                           files are streamed and have no limit)
    prompt_tokens   GENERATOR_PROMPT_TOKENS     2,048      tokens at the end of a prompt that prime the model
    peer_timeout    GENERATOR_PEER_TIMEOUT      300        seconds a multi-worker run waits for its peers

Sizes, notes and durations are checked before the expensive parse where the file allows it (a
MIDI file's note-ons are counted from its bytes, a .mxl's unpacked size read from its zip
directory). Scores go through music21, whose time cannot be predicted from the size (its MIDI
conversion grows with the square of a piece's length), so they are parsed in a worker process
that is killed when ``parse_seconds`` pass (``call_bounded``, ``map_bounded``); a corpus
directory parses its files in such workers, each file with its own deadline.

No TensorFlow here.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from generator.errors import GeneratorError

MIB = 1 << 20


@dataclass(frozen=True)
class Limit:
    name: str
    env: str
    default: float
    unit: str  # how the value is counted: bytes, notes, seconds, tokens, MiB
    what: str  # what it bounds, e.g. "the size of an ABC file"
    flag: str = ""  # the command-line flag that sets it, where there is one


LIMITS = {
    limit.name: limit
    for limit in (
        Limit("midi_bytes", "GENERATOR_MAX_MIDI_BYTES", 32 * MIB, "bytes", "the size of a MIDI file"),
        Limit("score_bytes", "GENERATOR_MAX_SCORE_BYTES", 16 * MIB, "bytes", "the size of a MusicXML or kern file"),
        Limit("abc_bytes", "GENERATOR_MAX_ABC_BYTES", 1 * MIB, "bytes", "the size of an ABC file"),
        Limit("notes", "GENERATOR_MAX_NOTES", 200_000, "notes", "the number of notes in one piece"),
        Limit("midi_events", "GENERATOR_MAX_MIDI_EVENTS", 2_000_000, "events", "the number of events in a MIDI file"),
        Limit("seconds", "GENERATOR_MAX_SECONDS", 6 * 3600, "seconds", "the duration of one piece"),
        Limit("parse_seconds", "GENERATOR_PARSE_SECONDS", 60, "seconds", "the time to parse one music file"),
        Limit("parse_memory", "GENERATOR_PARSE_MEMORY_MB", 4096, "MiB", "the memory of a parsing worker"),
        Limit("text_bytes", "GENERATOR_MAX_TEXT_BYTES", 256 * MIB, "bytes", "the size of a text file"),
        Limit(
            "prompt_tokens",
            "GENERATOR_PROMPT_TOKENS",
            2048,
            "tokens",
            "the prompt tokens that prime the model",
            "--prompt-tokens",
        ),
        Limit(
            "peer_timeout", "GENERATOR_PEER_TIMEOUT", 300, "seconds", "the wait for the other workers", "--peer-timeout"
        ),
    )
}

_overrides: dict[str, float] = {}  # set from command-line flags; win over the environment


def get(name: str, default: float | None = None) -> float:
    """The value of limit ``name``: a flag's override, else its environment variable, else ``default``
    (the limit's own default when None). 0 means no limit."""
    limit = LIMITS[name]
    if name in _overrides:
        return _overrides[name]
    text = os.environ.get(limit.env, "").strip().replace("_", "")
    if not text:
        return limit.default if default is None else default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise GeneratorError(f"{limit.env} must be a number, at least 0 (0: no limit), not {os.environ[limit.env]!r}")
    return int(value) if value == int(value) else value


def override(name: str, value: float | None) -> None:
    """Set limit ``name`` for this process (a command-line flag); None leaves it to the environment."""
    LIMITS[name]  # noqa: B018  (a KeyError names a wrong limit)
    if value is None:
        _overrides.pop(name, None)
    else:
        _overrides[name] = value


def snapshot() -> dict[str, float]:
    """Every limit's current value, to hand to a worker process."""
    return {name: get(name) for name in LIMITS}


def how_to_raise(name: str) -> str:
    """E.g. ``set GENERATOR_MAX_ABC_BYTES to raise it`` or ``--prompt-tokens or GENERATOR_PROMPT_TOKENS changes it``."""
    limit = LIMITS[name]
    if limit.flag:
        return f"raise it with {limit.flag} or {limit.env} (0: no limit)"
    return f"set {limit.env} to raise it (0: no limit)"


def _number(value: float) -> str:
    return f"{value:,}" if float(value) == int(value) else f"{value:,.1f}"


def exceeded(name: str, source: str, measured: float | str, limit: float | None = None) -> GeneratorError:
    """The one-line error for ``source`` going over limit ``name``: what, by how much, how to raise it."""
    spec = LIMITS[name]
    limit = get(name) if limit is None else limit
    shown = measured if isinstance(measured, str) else f"{_number(measured)} {spec.unit}"
    prefix = f"{source}: " if source else ""
    return GeneratorError(
        f"{prefix}{spec.what} is {shown}, larger than the limit of {_number(limit)} {spec.unit}; {how_to_raise(name)}"
    )


def check(name: str, source: str, measured: float, limit: float | None = None) -> None:
    """Raise ``exceeded`` when ``measured`` is over limit ``name`` (never when the limit is 0)."""
    limit = get(name) if limit is None else limit
    if limit and measured > limit:
        raise exceeded(name, source, measured, limit)


def tail(ids, source: str = "the prompt", name: str = "prompt_tokens", limit: int | None = None):
    """The last ``limit`` tokens of ``ids`` and a notice when that cut anything (else None)."""
    limit = int(get(name) if limit is None else limit)
    if not limit or len(ids) <= limit:
        return ids, None
    spec = LIMITS[name]
    return ids[-limit:], (
        f"{source} is {len(ids):,} tokens long; only its last {limit:,} prime the model "
        f"({spec.flag} or {spec.env} changes how many, 0 for all)"
    )


# -- parsing in worker processes with a deadline -----------------------------------------------------
#
# Workers are plain ``python -c`` subprocesses talking pickles over their stdin and stdout, not
# multiprocessing's: those re-run the parent's main script in every child, which breaks a user's
# script without an ``if __name__ == "__main__"`` guard, and forking a process that runs
# TensorFlow is unsafe.

_in_worker = False  # true inside a parsing worker: its calls run directly, the parent keeps the clock
_SERVE = "import sys; from generator.data.limits import _serve; _serve(int(sys.argv[1]))"
STARTUP_SECONDS = 300.0  # a worker that has not imported its parsers by then is a broken installation


def in_worker() -> bool:
    """True in a worker process of ``map_bounded`` (whose own deadline already applies)."""
    return _in_worker


def _write_frame(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left:
        part = os.read(fd, min(left, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_frame(fd: int):
    (size,) = struct.unpack("<Q", _read_exactly(fd, 8))
    return pickle.loads(_read_exactly(fd, size))


def _serve(memory_mb: int) -> None:
    """A worker's main loop: run (function, argument, limits) tasks read from stdin, answer on stdout."""
    global _in_worker
    _in_worker = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    if sys.platform.startswith("linux"):  # die with the parent, even in the middle of a parse
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # what the parsers print must not mix with the replies
    sys.stdout = open(os.devnull, "w")
    if memory_mb:
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            wanted = int(memory_mb) * MIB
            if hard != resource.RLIM_INFINITY:
                wanted = min(wanted, hard)
            if soft == resource.RLIM_INFINITY or wanted < soft:
                resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
        except (ImportError, ValueError, OSError):  # no resource module (Windows) or not allowed
            pass
    import warnings

    warnings.simplefilter("ignore")
    for module in ("generator.data.midi_io", "generator.data.corpora", "mido", "pretty_midi", "music21"):
        try:
            importlib.import_module(module)  # before "ready": the deadline counts parsing, not imports
        except ImportError:
            pass
    _write_frame(replies, ("ready", None))
    while True:
        try:
            task = _read_frame(0)
        except (EOFError, OSError):
            return
        if task is None:
            return
        function, argument, limits = task
        _overrides.clear()
        _overrides.update(limits)
        try:
            reply = ("ok", function(argument))
        except GeneratorError as error:
            reply = ("error", str(error))
        except MemoryError:
            reply = ("memory", "")
        except Exception as error:  # a parser bug must not take the corpus down
            reply = ("error", f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
        try:
            _write_frame(replies, reply)
        except MemoryError:
            _write_frame(replies, ("memory", ""))
        except Exception as error:  # e.g. a result that cannot be pickled
            _write_frame(replies, ("error", f"cannot return the result ({type(error).__name__}: {error})"))


class _Worker:
    def __init__(self, memory_mb: int):
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the generator package
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(int(memory_mb))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self.reader = self.process.stdout
        self.ready = False
        self.task: tuple[int, str] | None = None  # (index, name) of the item being parsed
        self.deadline = float("inf")

    def send(self, obj) -> None:
        _write_frame(self.process.stdin.fileno(), obj)

    def receive(self):
        return _read_frame(self.reader.fileno())

    def stop(self, kill: bool) -> None:
        if not kill:
            try:
                self.send(None)
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                kill = True
        if kill and self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _Pool:
    """Worker processes that each run one call at a time under a deadline (``map_bounded`` drives them)."""

    def __init__(self, function: Callable, items: list, names: list[str], count: int, seconds: float, memory: int):
        self.function, self.items, self.names = function, items, names
        self.seconds, self.memory, self.limits = seconds, memory, snapshot()
        self.workers = [_Worker(memory) for _ in range(count)]
        self.pending = list(range(len(items)))[::-1]

    def started(self) -> bool:
        return any(worker.ready for worker in self.workers)

    def hand_out(self, now: float) -> None:
        """Give every started, idle worker the next pending call."""
        for position, worker in enumerate(self.workers):
            if worker.ready and worker.task is None and self.pending:
                index = self.pending.pop()
                try:
                    worker.send((self.function, self.items[index], self.limits))
                except (OSError, ValueError):  # the worker died while idle: retry on a new one
                    self.pending.append(index)
                    self.workers[position] = _replace(worker, self.memory)
                    continue
                worker.task = (index, self.names[index])
                worker.deadline = now + self.seconds if self.seconds else float("inf")

    def replies(self, now: float) -> Iterator[tuple[int, bool, object]]:
        """The calls that end before the next deadline (or within a second): ``(index, ok, result or message)``."""
        from multiprocessing.connection import wait

        timeout = max(0.0, min([w.deadline - now for w in self.workers if w.task is not None] + [1.0]))
        for reader in wait([w.reader for w in self.workers], timeout=timeout):
            position, worker = next((k, w) for k, w in enumerate(self.workers) if w.reader is reader)
            try:
                kind, value = worker.receive()
            except (EOFError, OSError, pickle.UnpicklingError):
                kind, value = "died", None
            if kind == "ready":
                worker.ready = True
                continue
            if worker.task is None:  # died before taking any work
                if kind == "died":
                    code = worker.process.wait()
                    raise GeneratorError(
                        f"a parsing worker could not start (exit code {code}); "
                        f"{LIMITS['parse_seconds'].env}=0 parses in this process"
                    )
                continue
            index, name = worker.task
            worker.task, worker.deadline = None, float("inf")
            if kind == "ok":
                yield index, True, value
                continue
            if kind == "memory":
                value = f"{name}: parsing ran out of memory (limit {self.memory:,} MiB); {how_to_raise('parse_memory')}"
            elif kind == "died":
                code = worker.process.wait()
                value = f"{name}: the parser died (exit code {code}), probably out of memory; {how_to_raise('parse_memory')}"
            if kind in ("died", "memory"):
                self.workers[position] = _replace(worker, self.memory)
            yield index, False, str(value)

    def expired(self) -> Iterator[tuple[int, bool, str]]:
        """The calls past their deadline, their workers killed and replaced."""
        now = time.monotonic()
        for position, worker in enumerate(self.workers):
            if worker.task is not None and now > worker.deadline:
                index, name = worker.task
                worker.task = None
                self.workers[position] = _replace(worker, self.memory)
                yield (
                    index,
                    False,
                    (
                        f"{name}: parsing took longer than the limit of {_number(self.seconds)} seconds; "
                        f"{how_to_raise('parse_seconds')}"
                    ),
                )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(kill=worker.task is not None or not worker.ready)


def map_bounded(
    function: Callable,
    items: Iterable,
    names: list[str] | None = None,
    *,
    workers: int | None = None,
    seconds: float | None = None,
) -> Iterator[tuple[int, bool, object]]:
    """Call ``function(item)`` for every item in worker processes, each call with a deadline.

    Yields ``(index, True, result)`` or ``(index, False, message)`` in the order calls finish. A
    call that runs past ``seconds`` (default: the ``parse_seconds`` limit) has its worker killed
    and replaced; a worker that dies (out of memory under ``parse_memory``, a crash) is replaced
    too. ``function`` must be a module-level function and its results picklable.
    """
    items = list(items)
    names = names or [str(item) for item in items]
    seconds = get("parse_seconds") if seconds is None else seconds
    memory = int(get("parse_memory"))
    if not items:
        return
    pool = _Pool(function, items, names, max(1, min(len(items), workers or os.cpu_count() or 1)), seconds, memory)
    started, done = time.monotonic(), 0
    try:
        while done < len(items):
            now = time.monotonic()
            pool.hand_out(now)
            if not pool.started() and now - started > STARTUP_SECONDS:
                raise GeneratorError(
                    f"no parsing worker started within {STARTUP_SECONDS:.0f} s; "
                    f"{LIMITS['parse_seconds'].env}=0 parses in this process"
                )
            for outcome in itertools.chain(pool.replies(now), pool.expired()):
                done += 1
                yield outcome
    finally:
        pool.stop()


def _replace(worker: _Worker, memory: int) -> _Worker:
    worker.stop(kill=True)
    return _Worker(memory)


def call_bounded(function: Callable, argument, name: str, seconds: float | None = None):
    """``function(argument)`` under the ``parse_seconds`` limit (in a worker process); GeneratorError
    naming ``name`` and the limit when it fails or runs out of time. Runs directly inside a worker
    or when the limit is 0."""
    seconds = get("parse_seconds") if seconds is None else seconds
    if not seconds or _in_worker:
        return function(argument)
    for _, ok, value in map_bounded(function, [argument], [name], workers=1, seconds=seconds):
        if ok:
            return value
        raise GeneratorError(value)
    raise GeneratorError(f"{name}: the parser returned nothing")  # pragma: no cover
