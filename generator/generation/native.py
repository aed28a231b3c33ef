"""Batch-1 decoding of an ``lstm`` checkpoint in C (``native_lstm.c``), outside TensorFlow.

At batch 1 each token reads every weight once, so decoding is bound by memory; XLA runs each
matrix-vector product on one thread. The C loop splits every layer's weights among threads by
output unit and runs the whole token loop (layers, output layer, temperature, top-k, top-p, the
draw) without returning to Python; it primes the prompt the same way, one token at a time.
``DecodeLoop`` uses it for unconstrained batch-1 decoding of an ``lstm`` decoder when the library
was built at install time; otherwise, or with
``GENERATOR_NATIVE=0``, the XLA loop runs. The two paths draw different random numbers, so a seed
reproduces its output on the same path; their logits agree to float rounding.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
import sys
import threading
from pathlib import Path

import numpy as np

LIBRARY_NAME = "_native_lstm"
MIN_BYTES_PER_THREAD = 256 * 1024  # below this many bytes of weights per thread, fewer threads decode faster
MAX_THREADS = 16
INTERFACE = 2  # native_lstm.c's lstm_net_interface(): the functions' arguments this file passes

_library = None


def library():
    """The compiled ``native_lstm.c`` as a ctypes library, or None when it was not built or is turned off."""
    global _library
    if os.environ.get("GENERATOR_NATIVE", "1") == "0":
        return None
    if _library is None:
        _library = _load() or False
    return _library or None


def _candidates():
    """Where the built library may be: beside this file (an installed or editable package), then in
    any other copy of the package on the path (an installed one, when this file is a source
    checkout's, imported from its root)."""
    names = [f"{LIBRARY_NAME}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    yield from (Path(__file__).parent / name for name in names)
    for entry in sys.path:
        yield from (Path(entry or ".") / "generator" / "generation" / name for name in names)


def _load():
    for path in _candidates():
        if path.exists():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            if getattr(lib, "lstm_net_interface", lambda: 0)() != INTERFACE:
                continue  # built from other sources than this file's (another installed version)
            pointers = ctypes.POINTER(ctypes.c_void_p)
            lib.lstm_net_create.restype = ctypes.c_void_p
            lib.lstm_net_create.argtypes = [
                ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                pointers, pointers, pointers, pointers, pointers, ctypes.c_int,
            ]  # fmt: skip
            lib.lstm_net_prime.argtypes = [
                ctypes.c_void_p, pointers, pointers, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
            ]  # fmt: skip
            lib.lstm_net_free.argtypes = [ctypes.c_void_p]
            lib.lstm_net_threads.argtypes = [ctypes.c_void_p]
            lib.lstm_net_generate.argtypes = [
                ctypes.c_void_p, pointers, pointers, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64,
                ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_float, ctypes.c_int, ctypes.c_void_p,
            ]  # fmt: skip
            return lib
    return None


def _pointers(arrays) -> ctypes.Array:
    return (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])


def default_threads(weight_bytes: int) -> int:
    """Threads for a model with ``weight_bytes`` of weights: the cores this process may use, fewer
    for small models (a barrier per layer costs more than a small slice saves)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_THREADS, weight_bytes // MIN_BYTES_PER_THREAD))


class NativeLSTM:
    """A decoder's weights packed for ``native_lstm.c``; ``generate`` continues from logits and states.

    The packed copy and its threads belong to the process that made them: after a fork the child
    packs its own on its first call. Calls from several Python threads take turns.
    """

    def __init__(self, decoder, threads: int | None = None):
        if library() is None:
            raise RuntimeError("the native decoding library is not available")
        self.decoder, self.asked_threads = decoder, threads
        self._lock = threading.Lock()
        self._handle, self._pid = None, None
        self.threads = self._build()

    def _build(self) -> int:
        lib = self._lib = library()
        stack, dec = self.decoder.lstm, self.decoder
        f32 = lambda t: np.ascontiguousarray(np.asarray(t, np.float32))  # noqa: E731
        recurrent = [f32(r) for _, r, _ in stack.cells]
        kernels = [f32(k) for k, _, _ in stack.cells]
        biases = [f32(b) for _, _, b in stack.cells]
        stages = ([dec.projection] if dec.projection is not None else []) + [(dec.out_kernel, dec.out_bias)]
        stage_kernels = [f32(k) for k, _ in stages]
        stage_biases = [f32(b) for _, b in stages]
        table = f32(stack.input_table)
        self.vocab_size = int(stage_kernels[-1].shape[1])
        weight_bytes = sum(a.nbytes for a in recurrent + kernels[1:] + stage_kernels)
        units = np.array(stack.units, np.int32)
        outs = np.array([k.shape[1] for k in stage_kernels], np.int32)
        self._handle = lib.lstm_net_create(
            len(units),
            units.ctypes.data,
            self.vocab_size,
            len(stages),
            outs.ctypes.data,
            table.ctypes.data,
            _pointers(recurrent),
            _pointers(kernels),
            _pointers(biases),
            _pointers(stage_kernels),
            _pointers(stage_biases),
            int(self.asked_threads or default_threads(weight_bytes)),
        )  # the library keeps packed copies: the arrays above can go
        if not self._handle:
            raise MemoryError("the native decoder could not be built (out of memory or threads)")
        self._pid = os.getpid()
        return lib.lstm_net_threads(self._handle)

    def __del__(self):
        handle, self._handle = getattr(self, "_handle", None), None
        if handle and self._pid == os.getpid():
            self._lib.lstm_net_free(handle)

    def prime(self, tokens):
        """Run ``tokens`` (a 1-D prompt, BOS first) through the model from zero states: (the logits
        after the last ``[vocab]``, the states after it)."""
        tokens = np.ascontiguousarray(np.reshape(tokens, -1), np.int32)
        if tokens.size < 1:
            raise ValueError("a prompt needs at least one token (BOS)")
        hs = [np.zeros(u, np.float32) for u in self.decoder.units]
        cs = [np.zeros(u, np.float32) for u in self.decoder.units]
        logits = np.zeros(self.vocab_size, np.float32)
        self._call(
            self._lib.lstm_net_prime, _pointers(hs), _pointers(cs), logits.ctypes.data, tokens.ctypes.data, tokens.size
        )
        return logits, tuple(zip(hs, cs))

    def generate(self, logits, states, length: int, seed: int, first_step: int, sampler):
        """``length`` tokens after ``logits`` ``[vocab]`` from ``states`` ((h, c) per layer, each ``[units]``
        or ``[1, units]``); (tokens int32 ``[length]``, the logits after the last, the states after it).
        Token i is drawn with a uniform made from ``seed`` and ``first_step + i``."""
        temperature, top_k, top_p, greedy = sampler_settings(sampler)
        hs = [np.array(np.reshape(h, -1), np.float32) for h, _ in states]
        cs = [np.array(np.reshape(c, -1), np.float32) for _, c in states]
        logits = np.array(np.reshape(logits, -1), np.float32)
        out = np.empty(length, np.int32)
        self._call(
            self._lib.lstm_net_generate, _pointers(hs), _pointers(cs), logits.ctypes.data, int(length),
            int(seed) % (1 << 64), int(first_step), temperature, top_k, top_p, int(greedy), out.ctypes.data,
        )  # fmt: skip
        return out, logits, tuple(zip(hs, cs))

    def _call(self, function, *args):
        """``function(handle, *args)`` of the library, one Python thread at a time, packed again first
        in a forked child (the parent's threads are not there)."""
        with self._lock:
            if self._pid != os.getpid():
                self.threads = self._build()
            function(self._handle, *args)


def sampler_settings(sampler) -> tuple | None:
    """(temperature, top_k or 0, top_p or 1, greedy) of one of ``generator.generation.sampling``'s
    samplers; None for any other sampler."""
    from generator.generation import sampling

    settings = {
        sampling.GreedySampler: lambda: (0, 1.0, True),
        sampling.TopKTopPSampler: lambda: (sampler.top_k.k, sampler.p, False),
        sampling.TopKSampler: lambda: (sampler.k, 1.0, False),
        sampling.TopPSampler: lambda: (0, sampler.p, False),
        sampling.Sampler: lambda: (0, 1.0, False),
    }.get(type(sampler))
    return None if settings is None else (sampler.temperature, *settings())


def supports(decoder, sampler) -> bool:
    """Whether ``NativeLSTM`` can decode for ``decoder`` and ``sampler``."""
    from generator.models import lstm

    return library() is not None and type(decoder) is lstm.Decoder and sampler_settings(sampler) is not None
