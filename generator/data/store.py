"""The token store: a corpus's token ids written once as a plain ``.npy`` and read back memory-mapped.

A store is a folder in the cache (``dataset.cache_dir()``) holding

- ``tokens.npy``: every document's ids, each document preceded by BOS, as one uint16 array
  (uint32 for vocabularies over 65,535 ids), written sequentially chunk by chunk, so that writing
  needs no more memory than one chunk, and opened with ``np.load(mmap_mode="r")``, so that reading
  needs no more memory than the pages a window touches;
- ``starts.npy``: the offset of each document's BOS (the document boundaries), int64, written and
  read the same way, so that a corpus of millions of short documents costs no memory for them
  (stores written before kept them as a list in the manifest, which is still read);
- ``manifest.json``: the store format, the tokenizer (its JSON, which holds the vocabulary), the
  tokenizer key and the cache version it was made with, the corpus name and the fingerprint of its
  source bytes, the number of tokens and of documents.

``TokenView`` addresses pieces of the memory-mapped array as if they were concatenated, so the
training and validation sides of a split are views of the one array, never copies.

No TensorFlow here.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

FORMAT = 1  # the layout of a store folder; another value is rebuilt
HEADER_BYTES = 128  # the .npy header is written at this fixed size, so it can be filled in last


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    """A version 1.0 .npy header for a 1-d little-endian array, padded to ``HEADER_BYTES``."""
    descr = np.lib.format.dtype_to_descr(dtype.newbyteorder("<"))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({int(length)},), }}"
    text = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin-1")


class StoreWriter:
    """Writes a store: ``add_document`` (or ``begin_document`` and ``add``, or ``add_documents``), then ``finish``.

    Tokens and document starts go to a temporary folder beside ``path`` that replaces it at
    ``finish``; ``abort`` removes it. Nothing is held in memory but a buffer of document starts.
    """

    STARTS_BUFFER = 1 << 16  # document starts held before they are written out

    def __init__(self, path: Path, vocab_size: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"))
        self.dtype = token_dtype(vocab_size)
        self.file = open(self.tmp / "tokens.npy", "wb")
        self.file.write(b"\0" * HEADER_BYTES)
        self.starts_file = open(self.tmp / "starts.npy", "wb")
        self.starts_file.write(b"\0" * HEADER_BYTES)
        self.length = 0
        self.documents = 0
        self._starts: list[int] = []

    def _flush_starts(self) -> None:
        if self._starts:
            self.starts_file.write(np.asarray(self._starts, "<i8").tobytes())
            self._starts = []

    def begin_document(self) -> None:
        """Start a document: its BOS is written."""
        self._starts.append(self.length)
        self.documents += 1
        if len(self._starts) >= self.STARTS_BUFFER:
            self._flush_starts()
        self.add(np.zeros(1, self.dtype))

    def add(self, ids) -> None:
        """Append ids to the current document."""
        ids = np.asarray(ids)
        if ids.dtype != self.dtype:
            ids = ids.astype(self.dtype)
        self.file.write(ids.astype(self.dtype.newbyteorder("<"), copy=False).tobytes())
        self.length += len(ids)

    def add_document(self, ids) -> None:
        self.begin_document()
        self.add(ids)

    def add_documents(self, ids, starts) -> None:
        """Append ``ids`` with a new document (its BOS) beginning before each of the sorted offsets
        ``starts`` into them; ids before the first start continue the current document."""
        starts = np.asarray(starts, np.int64)
        if not len(starts):
            self.add(ids)
            return
        self._flush_starts()
        self.starts_file.write((self.length + starts + np.arange(len(starts))).astype("<i8").tobytes())
        self.documents += len(starts)
        self.add(np.insert(np.asarray(ids, self.dtype), starts, 0))

    def finish(self, manifest: dict) -> None:
        """Fill in the headers, write the manifest and move the store into place."""
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, self.length))
        self.file.close()
        self._flush_starts()
        self.starts_file.seek(0)
        self.starts_file.write(_npy_header(np.dtype(np.int64), self.documents))
        self.starts_file.close()
        manifest = {
            "format": FORMAT,
            **manifest,
            "dtype": self.dtype.name,
            "tokens": self.length,
            "documents": self.documents,
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
        if self.path.exists():  # another process built it meanwhile, or a damaged copy: ours wins
            shutil.rmtree(self.path, ignore_errors=True)
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            self.abort()
            raise

    def abort(self) -> None:
        for f in (self.file, self.starts_file):
            if not f.closed:
                f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_store(path: Path):
    """(memory-mapped ids, manifest) of the store at ``path``, the manifest's ``starts`` the document
    starts (memory-mapped too); ValueError when it is missing or damaged."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        ids = np.load(path / "tokens.npy", mmap_mode="r", allow_pickle=False)
        if "starts" in manifest:  # written before the starts had a file of their own
            starts = np.asarray(manifest["starts"], np.int64)
        elif manifest.get("documents"):
            starts = np.load(path / "starts.npy", mmap_mode="r", allow_pickle=False)
        else:
            starts = np.zeros(0, np.int64)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot open the token store {path}: {e}") from None
    if (
        manifest.get("format") != FORMAT
        or ids.ndim != 1
        or len(ids) != manifest.get("tokens")
        or ids.dtype.name != manifest.get("dtype")
        or starts.ndim != 1
        or starts.dtype != np.int64
        or len(starts) != manifest.get("documents", len(starts))
    ):
        raise ValueError(f"the token store {path} is damaged or from another version")
    manifest["starts"] = starts
    try:  # read_windows reads through this descriptor, which outlives a temporary store's removal
        import weakref

        ids._reader = os.open(path / "tokens.npy", os.O_RDONLY)
        weakref.finalize(ids, os.close, ids._reader)
    except OSError:
        pass
    return ids, manifest


def write_array(path: Path, ids: np.ndarray, starts, manifest: dict, vocab_size: int) -> None:
    """Write a store from ids already in memory (small corpora, tests)."""
    writer = StoreWriter(path, vocab_size)
    try:
        bounds = list(np.asarray(starts, np.int64)) + [len(ids)]
        for begin, end in zip(bounds[:-1], bounds[1:]):
            writer.add_document(ids[begin + 1 : end])
        writer.finish(manifest)
    except BaseException:
        writer.abort()
        raise


class TokenView:
    """Pieces ``spans`` (``(start, end)`` pairs) of the array ``base``, addressed as one concatenated
    array without copying them: ``len``, integer, slice and integer-array indexing, ``np.asarray``."""

    def __init__(self, base, spans):
        self.base = base
        self.spans = np.asarray(spans, np.int64).reshape(-1, 2)
        self.offsets = np.concatenate([[0], np.cumsum(self.spans[:, 1] - self.spans[:, 0])]).astype(np.int64)
        self.dtype = base.dtype

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    @property
    def ndim(self) -> int:
        return 1

    def physical(self, positions):
        """The indices into ``base`` of these positions of the view."""
        positions = np.asarray(positions, np.int64)
        if len(self.spans) == 1:
            return positions + self.spans[0, 0]
        k = np.searchsorted(self.offsets, positions, side="right") - 1
        k = np.clip(k, 0, len(self.spans) - 1)
        return positions - self.offsets[k] + self.spans[k, 0]

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return np.asarray(self)[key]
            return self._range(start, max(start, stop))
        if isinstance(key, (int, np.integer)):
            index = int(key) + n if key < 0 else int(key)
            if not 0 <= index < n:
                raise IndexError(f"index {key} is out of range for {n} tokens")
            return self.base[int(self.physical(index))]
        positions = np.asarray(key)
        if positions.dtype == bool:
            return np.asarray(self)[positions]
        positions = np.where(positions < 0, positions + n, positions)
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise IndexError(f"index out of range for {n} tokens")
        return np.asarray(self.base[self.physical(positions)])

    def _range(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        pieces = []
        k = max(first, 0)
        while start < stop and k < len(self.spans):
            begin = self.spans[k, 0] + start - self.offsets[k]
            end = self.spans[k, 0] + min(stop, self.offsets[k + 1]) - self.offsets[k]
            if end > begin:
                pieces.append(self.base[begin:end])
            start = int(self.offsets[k + 1])
            k += 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.asarray(self.base[:0])

    def __array__(self, dtype=None, copy=None):
        whole = np.asarray(self._range(0, len(self)))
        return whole if dtype is None else whole.astype(dtype)

    def astype(self, dtype) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def tolist(self) -> list:
        return np.asarray(self).tolist()

    def __iter__(self):
        return iter(np.asarray(self))

    def __eq__(self, other):
        return np.asarray(self) == other

    def __ne__(self, other):
        return np.asarray(self) != other

    __hash__ = None


def _file_of(array):
    """(path, byte offset) of a memory-mapped array that maps a whole file from its start, else None."""
    import mmap

    if isinstance(array, np.memmap) and getattr(array, "filename", None) and isinstance(array.base, mmap.mmap):
        return array.filename, array.offset
    return None


def read_windows(ids, starts, length: int) -> np.ndarray:
    """``ids[starts[:, None] + arange(length)]`` for an array or a ``TokenView``, read from the store file
    with ``pread`` where the ids are memory-mapped: touching the mapping would leave its pages, and the
    kernel's read-around pages beside them, in this process's resident memory, which would grow to the
    corpus's size; file reads go through the page cache only."""
    starts = np.asarray(starts, np.int64)
    view = ids if isinstance(ids, TokenView) else None
    base = view.base if view is not None else ids
    where = _file_of(base)
    if where is None:
        positions = starts[:, None] + np.arange(length)
        return np.asarray(ids[positions])
    physical = view.physical(starts) if view is not None else starts
    last = view.physical(starts + length - 1) if view is not None else starts + length - 1
    offset = where[1]
    fd = getattr(base, "_reader", None)  # opened with the mapping (open_store), so a rebuilt store is never read stale
    if fd is None:
        return np.asarray(ids[starts[:, None] + np.arange(length)])
    size = base.dtype.itemsize
    out = np.empty((len(starts), length), base.dtype)
    for row, (begin, end) in enumerate(zip(physical.tolist(), last.tolist())):
        if end - begin == length - 1:  # one stretch of the file
            out[row] = np.frombuffer(os.pread(fd, length * size, offset + begin * size), base.dtype)
        else:  # a window across pieces of a view: each stretch read from the file too, never through the mapping
            positions = view.physical(np.arange(starts[row], starts[row] + length))
            column = 0
            for run in np.split(positions, np.flatnonzero(np.diff(positions) != 1) + 1):
                data = os.pread(fd, len(run) * size, offset + int(run[0]) * size)
                out[row, column : column + len(run)] = np.frombuffer(data, base.dtype)
                column += len(run)
    return out
