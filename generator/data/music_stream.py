"""Music files -> token ids in worker processes, streamed into a token store.

Each worker reads a file (symusic first, ``midi_fast``), tokenizes every piece in it and sends
back only the ids (a uint16 or uint32 array per piece) and what the tokenizer dropped, never the
notes, so the parent holds no more than the results of the files in flight, whatever the corpus's
size. The parent writes them in the order of the files; a file that cannot be read is skipped
with its name and reason, and the skipped files are counted at the end (``corpora.each_music_file``).

No TensorFlow here.
"""

from __future__ import annotations

import sys

import numpy as np

from generator.errors import GeneratorError

_tokenizers: dict[str, object] = {}  # a worker's tokenizer, by its JSON


def _encode_one(task: tuple[str, str]) -> list[tuple[np.ndarray, dict]]:
    """Worker: (ids, dropped counts) of every piece of one music file with notes."""
    from generator.data import midi_io
    from generator.data.store import token_dtype
    from generator.data.tokenizers.base import from_json

    name, tokenizer_json = task
    tokenizer = _tokenizers.get(tokenizer_json)
    if tokenizer is None:
        try:  # every tokenizer registers itself when imported
            from generator.data.tokenizers import band, events, voices  # noqa: F401
        except ImportError:
            pass
        tokenizer = _tokenizers[tokenizer_json] = from_json(tokenizer_json)
    dtype = token_dtype(tokenizer.vocab_size)
    out = []
    for piece in midi_io.read_score_documents(name):
        if not len(piece.notes):
            continue
        try:
            ids = tokenizer.encode(piece)
        except ValueError as e:
            raise GeneratorError(f"{name}: {e}") from None
        out.append((np.asarray(ids, dtype), dict(getattr(tokenizer, "last_dropped", None) or {})))
    return out


def streams(corpus, make_tokenizer) -> bool:
    """Whether ``dataset.tokenize`` encodes ``corpus`` file by file in workers: music files under a
    tokenizer whose vocabulary does not depend on the documents."""
    from generator.data.dataset import TokenizerFactory

    return (
        corpus.modality == "music"
        and bool(getattr(corpus, "files", None))
        and isinstance(make_tokenizer, TokenizerFactory)
        and make_tokenizer.kind != "chars"
    )


def write_store(corpus, make_tokenizer, target, log=None):
    """Encode the files of ``corpus`` into a ``store.StoreWriter`` at ``target``; (the tokenizer, the
    unfinished writer)."""
    from generator.data import corpora, store

    report = log or (lambda message: print(message, file=sys.stderr))
    tokenizer = make_tokenizer(None)
    writer = store.StoreWriter(target, tokenizer.vocab_size)
    dropped: dict[str, int] = {}
    try:
        for pieces in corpora.each_music_file(
            corpus.files, _encode_one, report, argument=tokenizer.to_json(), label="tokenizing"
        ):
            for ids, counts in pieces:
                writer.add_document(ids)
                for reason, count in counts.items():
                    dropped[reason] = dropped.get(reason, 0) + count
        if not writer.documents:
            raise GeneratorError(f"corpus {corpus.name} has no usable documents")
    except BaseException:
        writer.abort()
        raise
    if any(dropped.values()):
        what = ", ".join(f"{count:,} {reason.replace('_', ' ')}" for reason, count in dropped.items() if count)
        report(f"corpus {corpus.name}: the tokenizer dropped {what}")
    return tokenizer, writer
