"""Text files -> character ids, streamed: files of any size in bounded memory.

A text corpus is read in chunks of ``CHUNK_BYTES``. Each chunk is decoded (an incremental
decoder, so a character split between two chunks is whole; ASCII chunks skip decoding), turned
into an array of code points, cleaned of the ``\\r`` of every ``\\r\\n`` (also across chunks)
and checked for NUL (a binary file). A first pass finds the vocabulary (every code point that
occurs, in code-point order: the same ids as ``CharTokenizer.fit``); the second maps code points
to ids with a lookup table, one numpy indexing per chunk, and appends them to a token store
(``generator.data.store``). Empty files are no documents.

No TensorFlow here.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from generator.errors import ArgumentError, GeneratorError

CHUNK_BYTES = 8 << 20
MAX_CODE_POINT = 0x10FFFF
_ASCII_SAFE = {"utf-8", "utf_8", "utf8", "ascii", "us-ascii", "latin-1", "latin1", "iso-8859-1", "iso8859-1", "cp1252"}


def _decoder(encoding: str):
    try:
        return codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError:
        raise GeneratorError(f"unknown encoding {encoding!r}") from None


def code_points(path: Path, encoding: str = "utf-8", progress=None) -> Iterator[np.ndarray]:
    """The code points of text file ``path`` in chunks (``\\r\\n`` read as ``\\n``); ``progress(n)`` is
    called with the bytes read. GeneratorError for undecodable bytes (offering --encoding) or NUL."""
    decoder = _decoder(encoding)
    ascii_safe = codecs.lookup(encoding).name in {codecs.lookup(e).name for e in _ASCII_SAFE}
    carry = np.zeros(0, np.uint32)
    consumed = 0
    try:
        f = open(path, "rb")
    except OSError as e:
        raise GeneratorError(f"cannot read {path}: {e.strerror}") from None
    with f:
        while True:
            try:
                data = f.read(CHUNK_BYTES)
            except OSError as e:
                raise GeneratorError(f"cannot read {path}: {e.strerror}") from None
            final = not data
            buffered = decoder.getstate()[0]
            if ascii_safe and not buffered and data.isascii():
                cps = np.frombuffer(data, np.uint8)
            else:
                try:
                    text = decoder.decode(data, final)
                except UnicodeDecodeError as e:
                    where = consumed - len(buffered) + e.start
                    raise ArgumentError.sentence(
                        f"{path} is not valid {encoding} (byte 0x{e.object[e.start]:02x} at offset {where}); "
                        "pass encoding with the file's character set, e.g. encoding latin-1",
                        "encoding",
                    ) from None
                cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
            consumed += len(data)
            if progress is not None and data:
                progress(len(data))
            if len(carry):
                cps = np.concatenate([carry, cps.astype(np.uint32)])
                carry = carry[:0]
            if not final and len(cps) and cps[-1] == 13:  # a \r whose \n may start the next chunk
                carry, cps = cps[-1:].astype(np.uint32), cps[:-1]
            if len(cps):
                if not cps.all():
                    raise GeneratorError(f"{path} looks like a binary file, not text")
                crlf = np.flatnonzero((cps[:-1] == 13) & (cps[1:] == 10))
                if len(crlf):
                    cps = np.delete(cps, crlf)
                yield cps
            if final:
                return


def vocabulary(files: list[Path], encoding: str = "utf-8", progress=None) -> tuple[str, list[int]]:
    """(every character of ``files`` in code-point order, the number of characters of each file)."""
    seen = np.zeros(MAX_CODE_POINT + 1, bool)
    lengths = []
    for path in files:
        count = 0
        for cps in code_points(path, encoding, progress):
            counts = np.bincount(cps)
            seen[: len(counts)] |= counts > 0
            count += len(cps)
        lengths.append(count)
    return "".join(map(chr, np.flatnonzero(seen))), lengths


def encode_files(files: list[Path], chars: str, writer, encoding: str = "utf-8", progress=None) -> None:
    """Append each non-empty file of ``files`` to ``writer`` (a ``store.StoreWriter``) as one document
    of ids 1.. of ``chars``; ValueError naming the characters outside ``chars``."""
    from generator.data.tokenizers.chars import describe_chars

    code = np.fromiter(map(ord, chars), np.int64, len(chars))
    table = np.zeros(int(code.max()) + 1 if len(code) else 1, writer.dtype)
    table[code] = np.arange(1, len(chars) + 1)
    for path in files:
        started = False
        for cps in code_points(path, encoding, progress):
            inside = cps < len(table)
            ids = table[np.where(inside, cps, 0)]
            if not inside.all() or not ids.all():
                missing = np.unique(cps[(ids == 0) | ~inside])
                order = np.argsort([int(np.argmax(cps == c)) for c in missing[:50]])  # order of appearance
                shown = [chr(int(c)) for c in missing[:50][order]] + [chr(int(c)) for c in missing[50:]]
                raise ValueError("characters not in the vocabulary: " + describe_chars(shown))
            if not started:
                writer.begin_document()
                started = True
            writer.add(ids)


def streams(corpus, make_tokenizer) -> bool:
    """Whether ``tokenize`` streams ``corpus``: text files under the characters tokenizer."""
    from generator.data.dataset import TokenizerFactory
    from generator.data.tokenizers.chars import CharTokenizer

    if (
        corpus.modality != "text"
        or not getattr(corpus, "files", None)
        or not isinstance(make_tokenizer, TokenizerFactory)
    ):
        return False
    fixed = make_tokenizer.fixed
    return isinstance(fixed, CharTokenizer) if fixed is not None else make_tokenizer.kind == "chars"


def write_store(corpus, make_tokenizer, target: Path):
    """Tokenize a text corpus into a ``store.StoreWriter`` at ``target``, in chunks: the vocabulary first
    (unless fixed), then the ids; (the tokenizer, the unfinished writer)."""
    from generator.data import store
    from generator.data.tokenizers.chars import CharTokenizer
    from generator.progress import progress_bar

    files, encoding = corpus.files, corpus.encoding
    try:
        total = sum(Path(p).stat().st_size for p in files)
    except OSError as e:
        raise GeneratorError(f"cannot read corpus {corpus.name}: {e.strerror}") from None
    tokenizer = make_tokenizer.fixed
    with progress_bar(total * (1 if tokenizer else 2), "reading text", unit="bytes") as bar:
        if tokenizer is None:
            chars, lengths = vocabulary(files, encoding, bar.update)
            if not any(lengths):
                raise GeneratorError(f"corpus {corpus.name} is empty")
            tokenizer = CharTokenizer(chars)
        writer = store.StoreWriter(target, tokenizer.vocab_size)
        try:
            encode_files(files, tokenizer.chars, writer, encoding, bar.update)
        except ValueError as e:
            writer.abort()
            raise GeneratorError(f"corpus {corpus.name}: {e}") from None
        except BaseException:
            writer.abort()
            raise
    return tokenizer, writer
