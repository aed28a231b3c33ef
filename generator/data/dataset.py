"""Token ids -> cached arrays -> tf.data windows.

A tokenized corpus is one integer array holding every document, each preceded by BOS, plus
the offset where each document starts. It is cached on disk (``cache_dir()``), keyed by the
corpus fingerprint and the tokenizer, so a second run skips reading and tokenizing.

Validation split (``split_segments``): with 20 or more documents, whole documents are held
out (every document whose seeded hash falls in the validation share); with fewer, the
contiguous tail of each document is. Training windows never cross into validation data.

Windows (``WindowSampler``): each epoch takes non-overlapping windows of ``seq_len + 1``
tokens starting at a random offset, shuffled with a seed derived from (seed, epoch), so a
resumed run sees exactly the same batches. ``x`` is a window's first ``seq_len`` tokens and
``y`` the same window shifted by one. Memory grows with the corpus length only: batches are
gathered from the id array on the fly, never materialized as one-hot or as all windows.
In a distributed run every worker feeds only its own share of each global batch (and reads only
that share unless augmenting, which is applied to the whole batch so that it is the same for
any number of devices).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.errors import GeneratorError
from generator.data.tokenizers.base import BOS, Tokenizer, from_json

CACHE_VERSION = "1"


def cache_dir() -> Path:
    """Where tokenized corpora are cached: $GENERATOR_CACHE_DIR, else the user cache folder."""
    if os.environ.get("GENERATOR_CACHE_DIR"):
        return Path(os.environ["GENERATOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstm-generator"


@dataclass
class TokenizedCorpus:
    """All documents as one id array; ``starts[i]`` is where document i's BOS sits."""

    ids: np.ndarray
    starts: np.ndarray
    tokenizer: Tokenizer

    @property
    def num_documents(self) -> int:
        return len(self.starts)

    def document(self, i: int) -> np.ndarray:
        """Document i's ids, BOS first."""
        end = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.ids)
        return self.ids[self.starts[i]:end]


def concatenate(encoded: list[list[int]], tokenizer: Tokenizer) -> TokenizedCorpus:
    """Build the id array from encoded documents (BOS put in front of each)."""
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max else np.int32
    lengths = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ids = np.empty(int(lengths.sum()), dtype=dtype)
    for start, doc in zip(starts, encoded):
        ids[start] = BOS
        ids[start + 1:start + 1 + len(doc)] = doc
    return TokenizedCorpus(ids, starts, tokenizer)


def tokenize(corpus, make_tokenizer, *, use_cache: bool = True, log=None) -> TokenizedCorpus:
    """Tokenize a ``Corpus``; ``make_tokenizer(documents)`` returns the tokenizer to use.

    ``make_tokenizer`` may fit a vocabulary to the documents (characters) or ignore them
    (fixed music vocabularies); ``cache_key`` identifies it without building it.
    """
    key = hashlib.sha256(f"{CACHE_VERSION}:{corpus.fingerprint}:{make_tokenizer.cache_key}".encode()).hexdigest()[:32]
    path = cache_dir() / f"{key}.npz"
    if use_cache and path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                tokenizer = from_json(str(data["tokenizer"]))
                return TokenizedCorpus(data["ids"], data["starts"], tokenizer)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            pass
    documents = corpus.documents()
    tokenizer = make_tokenizer(documents)
    encoded, dropped = [], {}
    from generator.progress import progress_bar

    with progress_bar(len(documents), "tokenizing") as bar:  # draws only on a terminal, after a second
        for doc in documents:
            try:
                encoded.append(tokenizer.encode(doc))
            except ValueError as e:
                raise GeneratorError(f"corpus {corpus.name}: {e}") from None
            for reason, count in (getattr(tokenizer, "last_dropped", None) or {}).items():
                dropped[reason] = dropped.get(reason, 0) + count  # e.g. drum notes of the events tokenizer
            bar.update(1)
    if any(dropped.values()):
        what = ", ".join(f"{count:,} {reason.replace('_', ' ')}" for reason, count in dropped.items() if count)
        (log or (lambda message: print(message, file=sys.stderr)))(f"corpus {corpus.name}: the tokenizer dropped {what}")
    result = concatenate(encoded, tokenizer)
    if len(result.ids) <= len(result.starts):
        raise GeneratorError(f"corpus {corpus.name} holds no tokens")
    if use_cache:
        _save_cache(path, result)
    return result


def _save_cache(path: Path, data: TokenizedCorpus) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=data.ids, starts=data.starts, tokenizer=np.array(data.tokenizer.to_json()))
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation; a read-only home must not stop training


# -- splitting ---------------------------------------------------------------------------------

WHOLE_DOCUMENT_THRESHOLD = 20


def split_segments(corpus: TokenizedCorpus, val_fraction: float, seed: int = 0):
    """Return (train_ids, val_ids): two id arrays, validation taken as documented above."""
    n_docs = corpus.num_documents
    bounds = list(corpus.starts) + [len(corpus.ids)]
    train, val = [], []
    if val_fraction <= 0:
        return corpus.ids, corpus.ids[:0]
    if n_docs >= WHOLE_DOCUMENT_THRESHOLD:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n_docs)
        n_val = max(1, int(round(n_docs * val_fraction)))
        held = set(order[:n_val].tolist())
        for i in range(n_docs):
            (val if i in held else train).append(corpus.ids[bounds[i]:bounds[i + 1]])
    else:
        for i in range(n_docs):
            start, end = bounds[i], bounds[i + 1]
            cut = end - int((end - start) * val_fraction)
            train.append(corpus.ids[start:cut])
            val.append(corpus.ids[cut:end])
    join = lambda parts: np.concatenate(parts) if parts else corpus.ids[:0]  # noqa: E731
    return join(train), join(val)


# -- windows -------------------------------------------------------------------------------------

class WindowSampler:
    """Batches of (x, y) windows from one id array, reproducible per (seed, epoch)."""

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, augment=None, drop_remainder: bool = True):
        if len(ids) < 2:
            raise GeneratorError("not enough tokens to make a single training window")
        self.ids = ids
        self.seq_len = min(seq_len, len(ids) - 1)
        self.batch_size = batch_size
        self.shuffle, self.seed, self.augment = shuffle, seed, augment
        self.drop_remainder = drop_remainder

    def window_starts(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        span = self.seq_len + 1
        offset = int(rng.integers(0, self.seq_len)) if self.shuffle and len(self.ids) - span >= self.seq_len else 0
        starts = np.arange(offset, len(self.ids) - span + 1, self.seq_len, dtype=np.int64)
        return rng.permutation(starts) if self.shuffle else starts

    def batch_size_for(self, n_windows: int) -> int:
        return max(1, min(self.batch_size, n_windows))

    def batches_for(self, n_windows: int) -> int:
        """Batches in an epoch of ``n_windows`` windows."""
        b = self.batch_size_for(n_windows)
        return n_windows // b if self.drop_remainder else -(-n_windows // b)

    def num_batches(self, epoch: int = 0) -> int:
        return self.batches_for(len(self.window_starts(epoch)))

    def batches(self, epoch: int, start_batch: int = 0, shard: tuple[int, int] = (0, 1), replicas: int = 1):
        """Yield (x, y) int32 arrays ``[rows, seq_len]`` of epoch ``epoch`` from batch ``start_batch`` on.

        ``shard`` = (index, count) names one of ``count`` workers, each feeding ``replicas``
        devices. Every global batch is split into ``count * replicas`` near-equal parts and the
        worker yields its own ``replicas`` consecutive parts, one per device, so the parts of all
        workers make up exactly the global batch. Augmentation is applied to the global batch
        before it is split, so the data never depend on how many devices share them.
        """
        starts = self.window_starts(epoch)
        b, n_batches = self.batch_size_for(len(starts)), self.batches_for(len(starts))
        index, count = shard
        parts = count * replicas
        for k in range(start_batch, n_batches):
            chosen = starts[k * b:(k + 1) * b]
            if parts == 1:
                pieces = [self._windows(chosen, epoch, k)]
            else:
                rows = np.array_split(np.arange(len(chosen)), parts)[index * replicas:(index + 1) * replicas]
                if self.augment is None:  # read only this worker's rows
                    pieces = [self._windows(chosen[r], epoch, k) for r in rows]
                else:
                    windows = self._windows(chosen, epoch, k)
                    pieces = [windows[r] for r in rows]
            for windows in pieces:
                yield windows[:, :-1], windows[:, 1:]

    def _windows(self, chosen: np.ndarray, epoch: int, k: int) -> np.ndarray:
        windows = self.ids[chosen[:, None] + np.arange(self.seq_len + 1)].astype(np.int32)
        if self.augment is not None:
            windows = self.augment(windows, np.random.default_rng([self.seed, epoch, 2, k]))
        return windows


def to_tf_dataset(sampler: WindowSampler, epoch: int, start_batch: int = 0, shard=(0, 1), replicas: int = 1):
    """A prefetching tf.data.Dataset over ``sampler.batches`` (one element per device and step)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, None], tf.int32)
    ds = tf.data.Dataset.from_generator(lambda: sampler.batches(epoch, start_batch, shard, replicas),
                                        output_signature=(spec, spec))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(4)


class TokenizerFactory:
    """Builds the tokenizer of a run from the corpus documents; ``cache_key`` names it."""

    def __init__(self, kind: str, options: dict | None = None, fixed=None):
        self.kind, self.options, self.fixed = kind, dict(options or {}), fixed
        if fixed is not None:
            self.cache_key = "fixed:" + hashlib.sha256(fixed.to_json().encode()).hexdigest()
        else:
            self.cache_key = f"{kind}:{sorted(self.options.items())}"

    def __call__(self, documents):
        if self.fixed is not None:
            return self.fixed
        from generator.data.tokenizers import base, chars

        if self.kind == "chars":
            return chars.CharTokenizer.fit(documents)
        base.from_json  # make sure every tokenizer registered itself
        try:
            from generator.data.tokenizers import events, voices  # noqa: F401
        except ImportError:
            pass
        if self.kind not in base._REGISTRY:
            raise GeneratorError(f"unknown tokenizer {self.kind!r}")
        return base._REGISTRY[self.kind](**self.options)
