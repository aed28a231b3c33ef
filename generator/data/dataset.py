"""Token ids -> cached arrays -> tf.data windows.

A tokenized corpus is one integer array holding every document, each preceded by BOS, plus
the offset where each document starts. It is written once into a token store (``store``: a plain
.npy and a manifest) in ``cache_dir()``, keyed by the corpus fingerprint and the tokenizer, and
opened memory-mapped, so a second run skips reading and tokenizing and no run holds the corpus in
memory. Text is streamed into the store in chunks (``text_stream``); an old ``.npz`` cache entry
is rebuilt once, with a message.

Validation split (``split_segments``), by ``holdout``: "documents" holds out whole documents
(every document whose seeded draw falls in the validation share); "blocks" holds out seeded random
blocks of about ``block`` tokens, one drawn in each of ``n`` equal stretches of the concatenated
corpus, so that they add up to ``val_fraction`` and are spread over the whole text; "tail" holds
out the contiguous tail of each document. "auto" takes documents for corpora of 20 or more
documents and blocks for fewer (a long novel or a collection of plays). Training windows are cut
within the training segments between held-out blocks, so none touches validation data. Both sides
of the split are views of the one memory-mapped array (``store.TokenView``), never copies.

Windows (``WindowSampler``): each epoch takes non-overlapping windows of ``seq_len + 1``
tokens starting at a random offset, shuffled with a seed derived from (seed, epoch), so a
resumed run sees exactly the same batches. Past ``LAZY_WINDOWS`` windows the epoch's order is a
seeded permutation computed batch by batch (``LazyStarts``), so it takes no memory either. ``x`` is a window's first ``seq_len`` tokens and
``y`` the same window shifted by one. Memory grows with the corpus length only: batches are
gathered from the id array on the fly, never materialized as one-hot or as all windows.
With ``segments`` (the start of each contiguous stretch of ``ids``), windows are cut within each
stretch and never span two. In a distributed run every worker feeds only its own share of each global batch (and reads only
that share unless augmenting, which is applied to the whole batch so that it is the same for
any number of devices).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generator.errors import GeneratorError
from generator.data import store
from generator.data.order import LazyStarts
from generator.data.tokenizers.base import BOS, Tokenizer, from_json

CACHE_VERSION = "2"  # 2: the events tokenizer learns its note-length cap as a quantile


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
        return self.ids[self.starts[i] : end]


def concatenate(encoded: list[list[int]], tokenizer: Tokenizer) -> TokenizedCorpus:
    """Build the id array in memory from encoded documents (BOS put in front of each)."""
    dtype = store.token_dtype(tokenizer.vocab_size)
    lengths = np.array([len(e) + 1 for e in encoded], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ids = np.empty(int(lengths.sum()), dtype=dtype)
    for start, doc in zip(starts, encoded):
        ids[start] = BOS
        ids[start + 1 : start + 1 + len(doc)] = doc
    return TokenizedCorpus(ids, starts, tokenizer)


def _say(log):
    return log or (lambda message: print(message, file=sys.stderr))


def tokenize(corpus, make_tokenizer, *, use_cache: bool = True, log=None) -> TokenizedCorpus:
    """Tokenize a ``Corpus`` into a token store and open it memory-mapped; ``make_tokenizer(documents)``
    returns the tokenizer to use.

    ``make_tokenizer`` may fit a vocabulary to the documents (characters) or ignore them (fixed
    music vocabularies); ``cache_key`` identifies it without building it. Text corpora with the
    characters tokenizer are streamed (``text_stream``), never read whole. Without ``use_cache`` the
    store is written to a temporary folder that is removed at once (the mapping stays readable).
    """
    key = hashlib.sha256(f"{CACHE_VERSION}:{corpus.fingerprint}:{make_tokenizer.cache_key}".encode()).hexdigest()[:32]
    path = cache_dir() / key
    if use_cache:
        if path.exists():
            try:
                ids, manifest = store.open_store(path)
                return TokenizedCorpus(ids, np.asarray(manifest["starts"], np.int64), from_json(manifest["tokenizer"]))
            except (ValueError, KeyError):  # a damaged store is rebuilt, never trusted
                pass
        old = cache_dir() / f"{key}.npz"
        if old.exists():
            _say(log)(
                f"corpus {corpus.name}: its token cache is in the old .npz format; rebuilding it once "
                f"as a memory-mapped token store"
            )
    target = path if use_cache else Path(tempfile.mkdtemp(prefix="generator-tokens-")) / "store"
    try:
        _build(corpus, make_tokenizer, target, log)
        ids, manifest = store.open_store(target)
    except OSError as e:
        raise GeneratorError(
            f"cannot write the token store of corpus {corpus.name} in {target.parent}: "
            f"{e.strerror or e}; set GENERATOR_CACHE_DIR to a writable folder with room"
        ) from None
    finally:
        if not use_cache:
            shutil.rmtree(target.parent, ignore_errors=True)
    if use_cache:
        with contextlib.suppress(OSError):
            (cache_dir() / f"{key}.npz").unlink()
    return TokenizedCorpus(ids, np.asarray(manifest["starts"], np.int64), from_json(manifest["tokenizer"]))


def _manifest(corpus, make_tokenizer, tokenizer) -> dict:
    return {
        "cache_version": CACHE_VERSION,
        "corpus": corpus.name,
        "fingerprint": corpus.fingerprint,
        "tokenizer_key": make_tokenizer.cache_key,
        "tokenizer": tokenizer.to_json(),
    }


def _build(corpus, make_tokenizer, target: Path, log) -> None:
    """Write the token store of ``corpus`` at ``target``."""
    from generator.data import music_stream, text_stream

    if text_stream.streams(corpus, make_tokenizer):
        tokenizer, writer = text_stream.write_store(corpus, make_tokenizer, target)
    elif music_stream.streams(corpus, make_tokenizer):
        tokenizer, writer = music_stream.write_store(corpus, make_tokenizer, target, log)
    else:
        tokenizer, writer = _encode_documents(corpus, make_tokenizer, target, log)
    try:
        if writer.length <= writer.documents:
            raise GeneratorError(f"corpus {corpus.name} holds no tokens")
        writer.finish(_manifest(corpus, make_tokenizer, tokenizer))
    except BaseException:
        writer.abort()
        raise


def _encode_documents(corpus, make_tokenizer, target: Path, log):
    """Read the documents, build the tokenizer from them and encode them one by one."""
    from generator.progress import progress_bar

    documents = corpus.documents()
    tokenizer = make_tokenizer(documents)
    dropped: dict[str, int] = {}
    writer = store.StoreWriter(target, tokenizer.vocab_size)
    try:
        with progress_bar(len(documents), "tokenizing") as bar:  # draws only on a terminal, after a second
            for doc in documents:
                try:
                    writer.add_document(tokenizer.encode(doc))
                except ValueError as e:
                    raise GeneratorError(f"corpus {corpus.name}: {e}") from None
                for reason, count in (getattr(tokenizer, "last_dropped", None) or {}).items():
                    dropped[reason] = dropped.get(reason, 0) + count  # e.g. drum notes of the events tokenizer
                bar.update(1)
    except BaseException:
        writer.abort()
        raise
    if any(dropped.values()):
        what = ", ".join(f"{count:,} {reason.replace('_', ' ')}" for reason, count in dropped.items() if count)
        _say(log)(f"corpus {corpus.name}: the tokenizer dropped {what}")
    return tokenizer, writer


# -- splitting ---------------------------------------------------------------------------------

WHOLE_DOCUMENT_THRESHOLD = 20
HOLDOUTS = ("auto", "blocks", "tail", "documents")


@dataclass
class Split:
    """Training and validation ids, each with the start of every contiguous segment in it.

    The ids are ``store.TokenView``s of the corpus array: its pieces read as one array, never
    copied. Unpacks as ``train_ids, val_ids``. ``method`` is the holdout used and ``blocks`` the number
    of held-out blocks or documents.
    """

    train_ids: np.ndarray
    train_segments: np.ndarray
    val_ids: np.ndarray
    val_segments: np.ndarray
    method: str
    blocks: int

    def __iter__(self):
        return iter((self.train_ids, self.val_ids))

    def describe(self) -> str:
        """One line for metrics.json and the log."""
        if self.method == "documents":
            return f"{self.blocks} whole documents"
        if self.method == "blocks":
            size = len(self.val_ids) // max(self.blocks, 1)
            return f"{self.blocks} seeded blocks of about {size:,} tokens spread over the corpus"
        return "the tail of each document" if self.method == "tail" else "none"


def resolve_holdout(holdout: str, num_documents: int) -> str:
    """The holdout that ``holdout`` means for a corpus of ``num_documents`` ("auto" resolved)."""
    if holdout not in HOLDOUTS:
        raise GeneratorError(f"unknown holdout {holdout!r}; choose one of {', '.join(HOLDOUTS)}")
    if holdout == "auto":
        return "documents" if num_documents >= WHOLE_DOCUMENT_THRESHOLD else "blocks"
    return holdout


def _held_out_indices(num_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(num_documents)
    return np.sort(order[: max(1, int(round(num_documents * val_fraction)))])


def held_out_documents(num_documents: int, val_fraction: float, seed: int) -> list[int]:
    """The indices, in corpus order, of the documents the ``documents`` holdout keeps for validation."""
    return _held_out_indices(num_documents, val_fraction, seed).tolist()


def held_out_intervals(corpus: TokenizedCorpus, val_fraction: float, seed: int, method: str, block: int):
    """Sorted, disjoint ``(start, end)`` intervals of ``corpus.ids`` held out for validation (an array of
    pairs, found with numpy: a corpus of millions of short documents makes no Python object per document)."""
    n = len(corpus.ids)
    bounds = np.append(np.asarray(corpus.starts, np.int64), np.int64(n))
    if method == "documents":
        held = _held_out_indices(corpus.num_documents, val_fraction, seed)
        return np.stack([bounds[held], bounds[held + 1]], 1)
    if method == "tail":
        begin, end = bounds[:-1], bounds[1:]
        cut = ((end - begin) * val_fraction).astype(np.int64)  # int() of the same float products
        return np.stack([end - cut, end], 1)[cut > 0]
    # blocks: n_blocks blocks of equal length, one at a seeded position inside each of n_blocks equal stretches
    wanted = n * val_fraction
    n_blocks = max(1, int(round(wanted / block)))
    length = int(round(wanted / n_blocks))
    if length < 1:
        return []
    rng = np.random.default_rng([seed, 13])
    edges = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    intervals = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        room = max(int(hi - lo) - length, 0)
        start = int(lo) + int(rng.integers(0, room + 1))
        intervals.append((start, min(start + length, n)))
    return intervals


def split_segments(
    corpus: TokenizedCorpus, val_fraction: float, seed: int = 0, holdout: str = "auto", block: int = 2000
) -> Split:
    """Hold out ``val_fraction`` of the corpus as documented above; unpacks as ``(train_ids, val_ids)``."""
    method = resolve_holdout(holdout, corpus.num_documents)
    n = len(corpus.ids)
    intervals = held_out_intervals(corpus, val_fraction, seed, method, block) if val_fraction > 0 else []
    intervals = np.asarray(intervals, np.int64).reshape(-1, 2)
    if not len(intervals):
        return Split(
            store.TokenView(corpus.ids, [(0, n)]),
            np.zeros(1, np.int64),
            store.TokenView(corpus.ids, []),
            np.zeros(0, np.int64),
            method,
            0,
        )
    begin = np.concatenate([[0], intervals[:, 1]])  # the stretches between the held-out intervals
    end = np.concatenate([intervals[:, 0], [n]])
    train_spans = np.stack([begin, end], 1)[end > begin]

    def gather(spans):
        ids = store.TokenView(corpus.ids, spans)  # the pieces as one array, nothing copied
        if method != "blocks":  # pieces end at document ends, where the next one's BOS begins: one segment, as ever
            return ids, np.zeros(1 if len(spans) else 0, np.int64)
        return ids, ids.offsets[:-1].copy()

    return Split(*gather(train_spans), *gather(intervals), method, len(intervals))


# -- windows -------------------------------------------------------------------------------------

LAZY_WINDOWS = 1 << 22  # above this many windows an epoch's order is computed batch by batch, never stored


class WindowSampler:
    """Batches of (x, y) windows from one id array, reproducible per (seed, epoch)."""

    def __init__(
        self,
        ids: np.ndarray,
        seq_len: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        augment=None,
        drop_remainder: bool = True,
        segments=None,
    ):
        if len(ids) < 2:
            raise GeneratorError("not enough tokens to make a single training window")
        self.ids = ids
        starts = np.asarray([0] if segments is None or len(segments) == 0 else segments, np.int64)
        self.segments = np.stack([starts, np.append(starts[1:], len(ids))], 1)  # [n, 2]: (start, end)
        longest = int((self.segments[:, 1] - self.segments[:, 0]).max())
        if longest < 2:
            raise GeneratorError("not enough contiguous tokens to make a single training window")
        self.seq_len = min(seq_len, longest - 1)
        self.batch_size = batch_size
        self.shuffle, self.seed, self.augment = shuffle, seed, augment
        self.drop_remainder = drop_remainder

    sample = None  # the windows kept by keep_sample, read in every epoch

    def keep_sample(self, windows: int, seed: int = 0) -> None:
        """Read only a fixed seeded sample of ``windows`` windows (in corpus order), the same in every epoch,
        when there are more (the validation cap)."""
        starts = self.window_starts(0)
        if len(starts) > windows:
            chosen = np.sort(np.random.default_rng([seed, 29]).choice(len(starts), windows, replace=False))
            self.sample = np.asarray(starts[chosen], np.int64)

    def window_starts(self, epoch: int):
        """The start of every window of ``epoch``, in the order they are read: an array, or for more
        than ``LAZY_WINDOWS`` windows a ``LazyStarts`` that computes the ones asked for."""
        if self.sample is not None:
            return self.sample
        rng = np.random.default_rng([self.seed, epoch])
        span = self.seq_len + 1
        room = self.segments[:, 1] - self.segments[:, 0] - span
        if int(np.where(room >= 0, room // self.seq_len + 1, 0).sum()) > LAZY_WINDOWS:
            eligible = self.shuffle & (room >= self.seq_len)
            offsets = np.where(eligible, rng.integers(0, self.seq_len, len(room)), 0)
            counts = np.where(room - offsets >= 0, (room - offsets) // self.seq_len + 1, 0)
            keys = rng.integers(0, 2**63, 4, dtype=np.uint64) if self.shuffle else None
            return LazyStarts(self.segments[:, 0] + offsets, counts, self.seq_len, keys)
        pieces = []
        for begin, end in self.segments:  # windows lie inside one segment
            offset = int(rng.integers(0, self.seq_len)) if self.shuffle and end - begin - span >= self.seq_len else 0
            pieces.append(np.arange(begin + offset, end - span + 1, self.seq_len, dtype=np.int64))
        starts = np.concatenate(pieces)
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
        if count > 1 and self.own_shards:
            yield from self._shard_batches(epoch, start_batch, n_batches, b, index, count, replicas)
            return
        for k in range(start_batch, n_batches):
            chosen = starts[k * b : (k + 1) * b]
            if parts == 1:
                pieces = [self._windows(chosen, epoch, k)]
            else:
                rows = np.array_split(np.arange(len(chosen)), parts)[index * replicas : (index + 1) * replicas]
                if self.augment is None:  # read only this worker's rows
                    pieces = [self._windows(chosen[r], epoch, k) for r in rows]
                else:
                    windows = self._windows(chosen, epoch, k)
                    pieces = [windows[r] for r in rows]
            for windows in pieces:
                yield windows[:, :-1], windows[:, 1:]

    own_shards = False  # in a multi-worker run each worker reads windows of its own stretch of the tokens only

    def shard_range(self, index: int, count: int) -> tuple[int, int]:
        """The stretch of the ids whose windows worker ``index`` of ``count`` reads with ``own_shards``."""
        n = len(self.ids)
        return n * index // count, n * (index + 1) // count

    def _shard_batches(self, epoch, start_batch, n_batches, b, index, count, replicas):
        """With ``own_shards``: every step, worker ``index`` takes its rows of the global batch from the
        windows inside its own ``shard_range`` (in their seeded order, wrapping round), so that it reads
        about ``1 / count`` of the tokens; augmentation is seeded per worker and step."""
        lo, hi = self.shard_range(index, count)
        if not hasattr(self, "_shards"):
            self._shards = {}
        if (index, count) not in self._shards:
            clipped = np.clip(self.segments, lo, hi)
            clipped = clipped[clipped[:, 1] - clipped[:, 0] >= self.seq_len + 1]
            own = WindowSampler.__new__(WindowSampler)
            own.__dict__.update(self.__dict__)
            own.segments, own.sample, own.own_shards = (clipped if len(clipped) else self.segments), None, False
            self._shards[(index, count)] = own
        own = self._shards[(index, count)]
        mine = own.window_starts(epoch)
        sizes = [len(r) for r in np.array_split(np.arange(b), count * replicas)][
            index * replicas : (index + 1) * replicas
        ]
        rows = sum(sizes)
        for k in range(start_batch, n_batches):
            chosen = np.asarray(mine[np.arange(k * rows, (k + 1) * rows) % len(mine)], np.int64)
            windows = self._windows(chosen, epoch, k * count + index)
            for piece in np.split(windows, np.cumsum(sizes)[:-1]):
                yield piece[:, :-1], piece[:, 1:]

    def _windows(self, chosen: np.ndarray, epoch: int, k: int) -> np.ndarray:
        windows = store.read_windows(self.ids, chosen, self.seq_len + 1).astype(np.int32)
        if self.augment is not None:
            windows = self.augment(windows, np.random.default_rng([self.seed, epoch, 2, k]))
        return windows


def to_tf_dataset(sampler: WindowSampler, epoch: int, start_batch: int = 0, shard=(0, 1), replicas: int = 1):
    """A prefetching tf.data.Dataset over ``sampler.batches`` (one element per device and step)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, None], tf.int32)
    ds = tf.data.Dataset.from_generator(
        lambda: sampler.batches(epoch, start_batch, shard, replicas), output_signature=(spec, spec)
    )
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
        if self.kind not in base.kinds():
            raise GeneratorError(f"unknown tokenizer {self.kind!r}")
        return base._REGISTRY[self.kind](**self.options)
