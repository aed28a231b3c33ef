"""Corpus specs -> documents.

A *spec* is what the user types after ``--corpus``: a file, a directory, or the name of a
built-in corpus defined by a small TOML file in the repository's ``corpora/`` folder (shipped
in the package). A relative path that is neither is looked for under ``$GENERATOR_CORPORA_DIR``
too, the folder a user keeps corpora in: the bundled checkpoints record their corpus that way
(``pop909``, ``tinyshakespeare/train.txt``), so ``heldout:pop-piano`` finds POP909 there. Text documents are strings; music documents are ``NoteSequence`` objects or
SATB grids (numpy ``[steps, 4]`` arrays). Every problem with the input becomes a
``GeneratorError`` naming the file.

A corpus carries a *fingerprint* computed from its raw bytes before anything is parsed, so
that a tokenized copy can be found in the cache without reading the documents again.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import ArgumentError, GeneratorError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CORPORA_DIR_ENV = "GENERATOR_CORPORA_DIR"  # a folder of corpora that relative specs are also looked for in
TEXT_SUFFIXES = (".txt",)
TABLE_SUFFIXES = (".csv", ".jsonl")  # text corpora of short documents, one per row (--column)
DOCUMENTS = ("files", "lines")
MUSIC_SUFFIXES = (".mid", ".midi", ".musicxml", ".mxl", ".xml", ".abc", ".krn")


@dataclass
class Corpus:
    """A resolved corpus: where it comes from, its fingerprint and how to read its documents."""

    name: str
    modality: str
    fingerprint: str
    read: Callable[[], list] = field(repr=False)  # returns the documents
    description: str = ""
    files: list = field(default_factory=list, repr=False)  # the files it is read from, where it has files
    encoding: str = "utf-8"  # of text files
    document_mode: str = "files"  # of text files: "files" or "lines" (``open_text``)
    column: str = ""  # of .csv and .jsonl text files

    def documents(self) -> list:
        docs = self.read()
        if not docs:
            raise GeneratorError(f"corpus {self.name} has no usable documents")
        return docs


# -- built-in corpora ----------------------------------------------------------------------


def _definitions_dir() -> Path:
    """The folder holding built-in corpus definitions (repository ``corpora/``, shipped in the wheel)."""
    from generator.resources import bundled_folder

    return bundled_folder("_corpora", "corpora")


def builtin_definitions() -> dict[str, dict]:
    """Name -> definition of every built-in corpus."""
    found = {}
    for path in sorted(_definitions_dir().glob("*.toml")):
        with open(path, "rb") as f:
            definition = tomllib.load(f)
        found[definition["name"]] = definition
    return found


def _music21_root() -> Path:
    import music21

    return Path(music21.__file__).resolve().parent


def builtin_size(definition: dict) -> str:
    """A human description of a built-in corpus's size, without parsing it."""
    root = _music21_root()
    if definition["reader"] == "music21-chorales":
        return f"{len(_builtin_music_files({**definition, 'path': 'corpus/bach', 'glob': 'bwv*.mxl'}))} scores"
    if definition["reader"] == "music21-text":
        size = (root / definition["path"]).stat().st_size
        return f"{size / 1024:.0f} KiB of text"
    files = _builtin_music_files(definition)
    return f"{len(files)} files"


def _builtin_music_files(definition: dict) -> list[Path]:
    root = _music21_root() / definition["path"]
    pattern = definition.get("glob", "*")
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in MUSIC_SUFFIXES)


def _open_builtin(name: str, definition: dict, encoding: str, documents: str = "files") -> Corpus:
    import music21

    reader = definition["reader"]
    if reader == "music21-text":
        path = _music21_root() / definition["path"]
        corpus = open_text(path, encoding=definition.get("encoding", "utf-8"), documents=documents)
        corpus.name = name
        return corpus
    if reader == "music21-files":
        files = _builtin_music_files(definition)
        digest = _hash_strings([f"music21 {music21.__version__}", name] + [p.name for p in files])
        return Corpus(name, "music", digest, lambda: read_music_files(files), definition.get("description", ""))
    if reader == "music21-chorales":
        from generator.data import chorales

        digest = _hash_strings([f"music21 {music21.__version__}", name, reader])
        return Corpus(name, "music", digest, lambda: chorales.music21_chorales(), definition.get("description", ""))
    raise GeneratorError(f"built-in corpus {name} has an unknown reader {reader!r}")


# -- resolving specs -------------------------------------------------------------------------


def open_corpus(
    spec: str, modality: str, *, split: str = "", encoding: str = "utf-8", documents: str = "files", column: str = ""
) -> Corpus:
    """Resolve a ``--corpus`` spec for ``modality`` ("text" or "music"); for text, ``documents`` and
    ``column`` say what one document is (see ``open_text``)."""
    definitions = builtin_definitions()
    path = Path(spec).expanduser()
    if not path.exists() and spec in definitions:
        definition = definitions[spec]
        if definition["modality"] != modality:
            raise GeneratorError(f"built-in corpus {spec} is {definition['modality']}, not {modality}")
        return _open_builtin(spec, definition, encoding, documents)
    if not path.exists() and not path.is_absolute() and os.environ.get(CORPORA_DIR_ENV):
        path = Path(os.environ[CORPORA_DIR_ENV]).expanduser() / path
    if not path.exists():
        names = ", ".join(n for n, d in definitions.items() if d["modality"] == modality)
        raise GeneratorError(
            f"corpus {spec} not found: give a file, a directory or a built-in name ({names}), "
            f"or set {CORPORA_DIR_ENV} to the folder that holds it"
        )
    if modality == "text":
        return open_text(path, encoding=encoding, documents=documents, column=column)
    if path.suffix.lower() == ".json":
        return open_grid_json(path, split or "train")
    return open_music(path)


def _hash_strings(parts: list[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _hash_files(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(root) if p != root else p.name).encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _files_under(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


# -- text ------------------------------------------------------------------------------------


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """Read a text document; undecodable bytes become a GeneratorError that offers --encoding.

    A file over the ``text_bytes`` limit (``generator.data.limits``) is refused before it is read.
    """
    from generator.data import limits

    try:
        limits.check("text_bytes", str(path), Path(path).stat().st_size)
        data = Path(path).read_bytes()
    except OSError as e:
        raise GeneratorError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ArgumentError.sentence(
            f"{path} is not valid {encoding} (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "pass encoding with the file's character set, e.g. encoding latin-1",
            "encoding",
        ) from None
    except LookupError:
        raise GeneratorError(f"unknown encoding {encoding!r}") from None
    if "\0" in text:
        raise GeneratorError(f"{path} looks like a binary file, not text")
    return text.replace("\r\n", "\n")


def open_text(path: Path, encoding: str = "utf-8", documents: str = "files", column: str = "") -> Corpus:
    """A text corpus: one .txt file, or every .txt file under a directory.

    ``documents="files"`` makes each file one document; ``"lines"`` makes each non-empty line its own
    short document (titles, names, tweets). With ``column``, the corpus is .csv or .jsonl files and each
    row's value in that column (CSV header) or key (JSON object) is one short document. A short
    document keeps one newline at its end, which the model learns as the end of the document; newlines
    inside a value become spaces. ``dataset.tokenize`` streams whole-file documents in chunks, whatever
    their size, and so do line and column documents; ``read`` gives the documents as strings (whole
    files under the ``text_bytes`` limit).
    """
    path = Path(path)
    if documents not in DOCUMENTS:
        raise ArgumentError("documents", f"must be one of {', '.join(DOCUMENTS)}, not {documents!r}")
    if not column and path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        raise ArgumentError.sentence(
            f"{path} is a {path.suffix[1:].upper()} file: give column, the header (or key) whose values are the documents",
            "column",
        )
    files = _files_under(path, TABLE_SUFFIXES if column else TEXT_SUFFIXES)
    if not files:
        what = "no .csv or .jsonl files (--column reads those)" if column else "no .txt files"
        raise GeneratorError(f"corpus {path} holds {what}")
    fingerprint = _hash_files(files, path) + f":{encoding}:{documents}:{column}"

    def read() -> list[str]:
        from generator.data import text_stream

        if column:
            docs = [short_document(v) for p in files for v in column_values(p, column, encoding)]
        elif documents == "lines":
            docs = [short_document(line) for p in files for line in text_stream.text_lines(p, encoding)]
        else:
            docs = [read_text_file(p, encoding) for p in files]
        docs = [d for d in docs if d]
        if not docs:
            raise GeneratorError(f"corpus {path} is empty")
        return docs

    return Corpus(
        str(path),
        "text",
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        read,
        files=files,
        encoding=encoding,
        document_mode=documents,
        column=column,
    )


def short_document(text: str) -> str:
    """One line-sized document: inner newlines become spaces, ends trimmed, one newline at the end ("" if empty)."""
    text = " ".join(text.replace("\r", " ").split("\n")).strip()
    return text + "\n" if text else ""


def column_values(path: Path, column: str, encoding: str = "utf-8", progress=None) -> Iterator[str]:
    """The values of ``column`` in a CSV file (by its header) or a JSONL file (by key), in row order,
    read in chunks (``text_stream.text_lines``: ``\\r\\n`` read as ``\\n``), so a file of any size;
    ``progress(n)`` is called with the bytes read."""
    import csv
    import json

    from generator.data.text_stream import text_lines

    path = Path(path)
    lines = text_lines(path, encoding, progress)
    if path.suffix.lower() == ".csv":
        reader = csv.reader(lines)
        try:
            header = next(reader, None) or []
            if column not in header:
                raise GeneratorError(f"{path} has no column {column!r}; its columns are {', '.join(header) or 'none'}")
            index = len(header) - 1 - header[::-1].index(column)  # the last of that name, as a dict keeps it
            for row in reader:
                if row:
                    yield row[index] if index < len(row) else ""
        except csv.Error as e:
            raise GeneratorError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from None
        return
    seen = named = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise GeneratorError(f"{path}, line {number}: not a JSON object") from None
        if not isinstance(row, dict):
            raise GeneratorError(f"{path}, line {number}: not a JSON object")
        value = row.get(column)
        value = value if isinstance(value, str) else "" if value is None else json.dumps(value)
        seen, named = True, named or bool(value)
        yield value
    if seen and not named:
        raise GeneratorError(f"{path} has no key {column!r} in any of its rows")


# -- music -----------------------------------------------------------------------------------


def open_music(path: Path) -> Corpus:
    """A music corpus: one MIDI/MusicXML/ABC/kern file, or every such file under a directory."""
    files = _files_under(path, MUSIC_SUFFIXES)
    if not files:
        raise GeneratorError(f"corpus {path} holds no music files ({', '.join(MUSIC_SUFFIXES)})")
    fingerprint = _hash_files(files, path)
    # The two MIDI readers refuse different broken files, so the documents depend on the reader too.
    if any(f.suffix.lower() in (".mid", ".midi") for f in files):
        from generator.data import midi_fast

        reader = "symusic" if midi_fast.enabled() else "pretty_midi"
        fingerprint = hashlib.sha256(f"{fingerprint}:{reader}".encode()).hexdigest()
    return Corpus(str(path), "music", fingerprint, lambda: read_music_files(files), files=files)


def _parse_one(path: str) -> list:
    """Worker: every piece of one music file (a GeneratorError is reported by the parent)."""
    from generator.data import midi_io

    return midi_io.read_score_documents(path)


def read_music_files(files: list[Path], report: Callable[[str], None] | None = None) -> list:
    """Parse music files on every core with a progress bar; failures are reported and skipped.

    Each file is parsed in a worker process under the limits of ``generator.data.limits``: one
    that takes longer than ``parse_seconds`` has its worker killed, is reported and skipped, and
    the count of skipped files is reported at the end. Documents keep the order of ``files``.
    """
    return [doc for docs in each_music_file(files, _parse_one, report) for doc in docs if len(doc.notes)]


def each_music_file(
    files: list[Path],
    function: Callable = _parse_one,
    report: Callable[[str], None] | None = None,
    argument=None,
    label: str = "parsing",
) -> Iterator:
    """``function(name)`` (or ``function((name, argument))``) for every file, in worker processes as
    ``read_music_files`` says, yielding the results in the order of ``files``; a file that fails is
    reported with its name and reason and skipped, and the count of skipped files reported at the end."""
    from generator.data import limits, midi_io
    from generator.progress import progress_bar

    report = report or (lambda message: print(message, file=sys.stderr))
    names = [str(p) for p in files]
    to_parse, failures = [], 0
    for index, name in enumerate(names):  # size limits first: an oversized file costs no worker
        try:
            if Path(name).suffix.lower() in midi_io.SCORE_SUFFIXES:
                midi_io.check_score_size(name)
            to_parse.append(index)
        except GeneratorError as e:
            failures += _skip(str(e), report)
    tasks = [names[i] if argument is None else (names[i], argument) for i in to_parse]
    waiting: dict[int, object] = {}  # results that came before an earlier file's
    position = 0
    with progress_bar(len(names), label) as bar:
        bar.update(len(names) - len(to_parse))
        if to_parse and not limits.get("parse_seconds"):  # no time limit: parse here, one after another
            results: Iterator = (_parse_here(function, task, k) for k, task in enumerate(tasks))
        else:
            results = limits.map_bounded(function, tasks, [names[i] for i in to_parse])
        for k, ok, value in results:
            if ok:
                waiting[k] = value
            else:
                waiting[k] = None
                failures += _skip(value, report)
            bar.update(1)
            while position in waiting:
                value = waiting.pop(position)
                position += 1
                if value is not None:
                    yield value
    if failures:
        report(f"skipped {failures} of {len(names)} files that could not be read")


def _parse_here(function, task, index: int):
    try:
        return index, True, function(task)
    except GeneratorError as e:
        return index, False, str(e)


def _skip(message: str, report) -> int:
    report(f"skipping {message}")
    return 1


def open_grid_json(path: Path, split: str) -> Corpus:
    """JSB Chorales in the Boulanger-Lewandowski JSON layout: one SATB grid per chorale."""
    from generator.data import chorales

    from generator.data import limits

    limits.check("text_bytes", str(path), path.stat().st_size)
    fingerprint = _hash_files([path], path) + ":" + split
    return Corpus(
        f"{path}:{split}",
        "music",
        hashlib.sha256(fingerprint.encode()).hexdigest(),
        lambda: chorales.read_jsb_json(path, split),
    )
