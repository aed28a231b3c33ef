"""Text files -> character ids, streamed: files of any size in bounded memory.

A text corpus is read in chunks of ``CHUNK_BYTES``. Each chunk is decoded (an incremental
decoder, so a character split between two chunks is whole; ASCII chunks skip decoding), turned
into an array of code points, cleaned of the ``\\r`` of every ``\\r\\n`` (also across chunks)
and checked for NUL (a binary file). A first pass finds the vocabulary (every code point that
occurs, in code-point order: the same ids as ``CharTokenizer.fit``); the second maps code points
to ids with a lookup table, one numpy indexing per chunk, and appends them to a token store
(``generator.data.store``). Empty files are no documents.

With ``--documents lines`` each line is a short document (``corpora.short_document``), found with
numpy in each stretch of whole lines (``line_pieces``); with ``--column`` the values of a CSV or
JSONL column are read row by row from lines streamed the same way (``corpora.column_values``) and
encoded a megabyte of characters at a time. A fine-tuning run's vocabulary (the checkpoint's
characters, then the corpus's new ones: ``finetune.GrowingChars``) comes from the same first pass.

No TensorFlow here.
"""

from __future__ import annotations

import codecs
import functools
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


def _as_text(cps: np.ndarray) -> str:
    """A chunk of code points (``code_points``) as a string."""
    if cps.dtype == np.uint8:
        return cps.tobytes().decode("latin-1")
    return cps.astype("<u4", copy=False).tobytes().decode("utf-32-le", "surrogatepass")


def text_lines(path: Path, encoding: str = "utf-8", progress=None) -> Iterator[str]:
    """The lines of text file ``path`` read in chunks, each with its ``\\n`` (the last without one if the
    file does not end in one; ``\\r\\n`` read as ``\\n``): the lines ``io.StringIO`` gives of the whole text."""
    rest = ""
    for cps in code_points(path, encoding, progress):
        lines = (rest + _as_text(cps)).split("\n")
        rest = lines.pop()
        for line in lines:
            yield line + "\n"
    if rest:
        yield rest


@functools.cache
def _space_table() -> np.ndarray:
    """Code point -> whether ``str.strip`` removes it (``str.isspace``)."""
    table = np.zeros(MAX_CODE_POINT + 1, bool)
    table[[c for c in range(0x3001) if chr(c).isspace()]] = True  # U+3000 is the last space
    return table


def _line_block(block: np.ndarray):
    """The documents of ``block`` (code points ending in a newline), one
    per line with anything but spaces: its code points from the first to the last that is not a space
    (a ``\\r`` inside counts as a space), then a newline; (their code points, the offset of each)."""
    block = np.where(block == 13, np.uint32(32), block.astype(np.uint32))
    solid = np.flatnonzero(~_space_table()[block])
    if not len(solid):
        return None
    line = np.cumsum(block == 10, dtype=np.int32)[solid]  # the newlines before each
    opens = np.flatnonzero(np.concatenate([[True], line[1:] != line[:-1]]))
    firsts = solid[opens]
    lasts = solid[np.append(opens[1:] - 1, len(solid) - 1)]
    keep = np.zeros(len(block) + 1, np.int8)
    keep[firsts] = 1
    keep[lasts + 1] -= 1
    keep = np.cumsum(keep[:-1], dtype=np.int8).astype(bool)
    keep[lasts + 1] = True  # lasts + 1 is at most the line's own newline
    block[lasts + 1] = 10
    lengths = lasts - firsts + 2
    return block[keep], np.concatenate([[0], np.cumsum(lengths)[:-1]])


LINE_BLOCK = 1 << 20  # code points of whole lines split into documents at once (numpy temporaries of ~30 bytes each)


def line_pieces(chunks: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The short documents of a text's code point chunks (``code_points``), one per line with anything
    but spaces, as ``corpora.short_document`` makes them: ``(code points, offsets where documents
    start)`` per stretch of whole lines. A line is held whole, however long."""
    carry = np.zeros(0, np.uint32)
    for cps in chunks:
        cps = np.concatenate([carry, cps.astype(np.uint32)]) if len(carry) else cps
        ends = np.flatnonzero(cps == 10)
        if not len(ends):
            carry = cps.astype(np.uint32)
            continue
        carry = cps[ends[-1] + 1 :].astype(np.uint32)
        cut = 0
        while cut <= ends[-1]:  # stretches of about LINE_BLOCK code points, ending at a newline
            k = max(int(np.searchsorted(ends, cut + LINE_BLOCK)) - 1, int(np.searchsorted(ends, cut)))
            piece = _line_block(cps[cut : ends[k] + 1])
            cut = int(ends[k]) + 1
            if piece is not None:
                yield piece
    if len(carry):
        piece = _line_block(np.append(carry, np.uint32(10)))
        if piece is not None:
            yield piece


PACK_CHARS = 1 << 20  # code points of column values gathered before they are encoded together


def column_pieces(path: Path, column: str, encoding: str = "utf-8", progress=None):
    """The short documents of a .csv or .jsonl file's ``column`` (``corpora.column_values``), packed
    ``PACK_CHARS`` at a time as ``(code points, offsets where documents start)``."""
    from generator.data.corpora import column_values, short_document

    docs, size = [], 0

    def pack():
        lengths = np.fromiter(map(len, docs), np.int64, len(docs))
        text = "".join(docs).encode("utf-32-le", "surrogatepass")
        return np.frombuffer(text, np.uint32), np.concatenate([[0], np.cumsum(lengths)[:-1]])

    for value in column_values(path, column, encoding, progress):
        doc = short_document(value)
        if doc:
            docs.append(doc)
            size += len(doc)
            if size >= PACK_CHARS:
                yield pack()
                docs, size = [], 0
    if docs:
        yield pack()


def pieces(corpus, progress=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every document of a text corpus (its ``files``, ``document_mode`` and ``column``) in chunks:
    ``(code points, offsets into them where a document starts)``; a chunk without offsets continues
    the document before it."""
    first = np.zeros(1, np.int64)
    none = np.zeros(0, np.int64)
    for path in corpus.files:
        if corpus.column:
            yield from column_pieces(path, corpus.column, corpus.encoding, progress)
        elif corpus.document_mode == "lines":
            yield from line_pieces(code_points(path, corpus.encoding, progress))
        else:
            for k, cps in enumerate(code_points(path, corpus.encoding, progress)):
                yield cps, first if k == 0 else none


def vocabulary(chunks) -> tuple[str, int]:
    """(every character of the ``pieces`` in code-point order, the number of characters)."""
    seen = np.zeros(MAX_CODE_POINT + 1, bool)
    count = 0
    for cps, _ in chunks:
        counts = np.bincount(cps)
        seen[: len(counts)] |= counts > 0
        count += len(cps)
    return "".join(map(chr, np.flatnonzero(seen))), count


def encode_pieces(chunks, chars: str, writer) -> None:
    """Append the ``pieces`` to ``writer`` (a ``store.StoreWriter``) as ids 1.. of ``chars``; ValueError
    naming the characters outside ``chars``."""
    from generator.data.tokenizers.chars import describe_chars

    code = np.fromiter(map(ord, chars), np.int64, len(chars))
    table = np.zeros(int(code.max()) + 1 if len(code) else 1, writer.dtype)
    table[code] = np.arange(1, len(chars) + 1)
    for cps, starts in chunks:
        inside = cps < len(table)
        ids = table[np.where(inside, cps, 0)]
        if not inside.all() or not ids.all():
            missing = np.unique(cps[(ids == 0) | ~inside])
            order = np.argsort([int(np.argmax(cps == c)) for c in missing[:50]])  # order of appearance
            shown = [chr(int(c)) for c in missing[:50][order]] + [chr(int(c)) for c in missing[50:]]
            raise ValueError("characters not in the vocabulary: " + describe_chars(shown))
        writer.add_documents(ids, starts)


def streams(corpus, make_tokenizer) -> bool:
    """Whether ``tokenize`` streams ``corpus``: text files under the characters tokenizer, a fixed one
    or one grown from a checkpoint's (anything with ``from_chars``)."""
    from generator.data.dataset import TokenizerFactory
    from generator.data.tokenizers.chars import CharTokenizer

    if corpus.modality != "text" or not getattr(corpus, "files", None):
        return False
    if not isinstance(make_tokenizer, TokenizerFactory):
        return callable(getattr(make_tokenizer, "from_chars", None))
    fixed = make_tokenizer.fixed
    return isinstance(fixed, CharTokenizer) if fixed is not None else make_tokenizer.kind == "chars"


def write_store(corpus, make_tokenizer, target: Path):
    """Tokenize a text corpus into a ``store.StoreWriter`` at ``target``, in chunks: the vocabulary first
    (unless fixed), then the ids; (the tokenizer, the unfinished writer)."""
    from generator.data import store
    from generator.data.tokenizers.chars import CharTokenizer
    from generator.progress import progress_bar

    try:
        total = sum(Path(p).stat().st_size for p in corpus.files)
    except OSError as e:
        raise GeneratorError(f"cannot read corpus {corpus.name}: {e.strerror}") from None
    tokenizer = getattr(make_tokenizer, "fixed", None)
    with progress_bar(total * (1 if tokenizer else 2), "reading text", unit="bytes") as bar:
        if tokenizer is None:
            chars, count = vocabulary(pieces(corpus, bar.update))
            if not count:
                raise GeneratorError(f"corpus {corpus.name} is empty")
            grow = getattr(make_tokenizer, "from_chars", None)
            tokenizer = grow(chars) if grow is not None else CharTokenizer(chars)
        writer = store.StoreWriter(target, tokenizer.vocab_size)
        try:
            encode_pieces(pieces(corpus, bar.update), tokenizer.chars, writer)
        except ValueError as e:
            writer.abort()
            raise GeneratorError(f"corpus {corpus.name}: {e}") from None
        except BaseException:
            writer.abort()
            raise
    return tokenizer, writer
