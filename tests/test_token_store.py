"""The memory-mapped token store, streamed text tokenization and windows over views (#29)."""

import numpy as np
import pytest

from generator.data import dataset, store, text_stream
from generator.data.order import LazyStarts
from generator.data.corpora import open_corpus, read_text_file
from generator.data.tokenizers.chars import CharTokenizer
from generator.errors import GeneratorError


def _write(folder, texts):
    folder.mkdir(exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"doc{i:02d}.txt").write_bytes(text.encode("utf-8"))
    return folder


TEXTS = ["héllo wörld\r\nline two\r", "", "€😀 mixed\r\n\r\n\rend", "plain ascii " * 40, "\r\n" * 5 + "é"]


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_streamed_text_gives_the_tokens_of_the_whole_file_reader(tmp_path, monkeypatch, chunk):
    folder = _write(tmp_path / "c", TEXTS)
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", chunk)
    data = dataset.tokenize(open_corpus(str(folder), "text"), dataset.TokenizerFactory("chars"), use_cache=False)
    docs = [read_text_file(p) for p in sorted(folder.glob("*.txt"))]
    docs = [d for d in docs if d]
    expected = dataset.concatenate([CharTokenizer.fit(docs).encode(d) for d in docs], CharTokenizer.fit(docs))
    assert data.tokenizer.chars == expected.tokenizer.chars
    np.testing.assert_array_equal(np.asarray(data.ids), expected.ids)
    np.testing.assert_array_equal(data.starts, expected.starts)
    assert isinstance(data.ids, np.memmap)


def test_store_is_reused_and_the_old_npz_cache_rebuilt_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GENERATOR_CACHE_DIR", str(tmp_path / "cache"))
    corpus = open_corpus(str(_write(tmp_path / "c", TEXTS)), "text")
    factory = dataset.TokenizerFactory("chars")
    first = dataset.tokenize(corpus, factory)
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    old = folder.with_name(folder.name + ".npz")
    old.write_bytes(b"old")
    import shutil

    shutil.rmtree(folder)
    said = []
    again = dataset.tokenize(corpus, factory, log=said.append)
    assert len(said) == 1 and "rebuilding" in said[0] and not old.exists()
    np.testing.assert_array_equal(first.ids, again.ids)
    monkeypatch.setattr(text_stream, "vocabulary", lambda *a, **k: pytest.fail("read again"))
    third = dataset.tokenize(corpus, factory, log=said.append)
    assert len(said) == 1 and isinstance(third.ids, np.memmap)


def test_bad_text_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.txt").write_bytes(b"fine \xff here")
    with pytest.raises(GeneratorError, match="not valid utf-8 .*offset 5.*pass encoding with"):
        dataset.tokenize(open_corpus(str(bad), "text"), dataset.TokenizerFactory("chars"), use_cache=False)
    (bad / "a.txt").write_bytes(b"bin\0ary")
    with pytest.raises(GeneratorError, match="binary"):
        dataset.tokenize(open_corpus(str(bad), "text"), dataset.TokenizerFactory("chars"), use_cache=False)
    (bad / "a.txt").write_text("abcz")
    fixed = dataset.TokenizerFactory("chars", fixed=CharTokenizer("abc"))
    with pytest.raises(GeneratorError, match="not in the vocabulary: 'z'"):
        dataset.tokenize(open_corpus(str(bad), "text"), fixed, use_cache=False)


def test_large_vocabularies_use_uint32():
    assert store.token_dtype(65_536) == np.uint16 and store.token_dtype(65_537) == np.uint32


def test_token_view_reads_pieces_as_one_array_without_copying():
    base = np.arange(100, dtype=np.uint16)
    view = store.TokenView(base, [(10, 20), (50, 55), (90, 100)])
    whole = np.concatenate([base[10:20], base[50:55], base[90:100]])
    assert len(view) == 25
    np.testing.assert_array_equal(np.asarray(view), whole)
    np.testing.assert_array_equal(view[np.array([[0, 9, 10], [14, 15, 24]])], whole[[[0, 9, 10], [14, 15, 24]]])
    np.testing.assert_array_equal(view[8:17], whole[8:17])
    assert view[-1] == 99 and np.shares_memory(view[0:5], base)


def test_lazy_window_order_is_a_reproducible_permutation(monkeypatch):
    ids = (np.arange(20_000) % 30 + 1).astype(np.uint16)
    exact = len(dataset.WindowSampler(ids, 16, 8, seed=7).window_starts(3))
    monkeypatch.setattr(dataset, "LAZY_WINDOWS", 10)
    lazy = dataset.WindowSampler(ids, 16, 8, seed=7)
    starts = lazy.window_starts(3)
    assert isinstance(starts, LazyStarts) and len(starts) == exact
    order = starts[:]
    assert len(np.unique(order)) == len(order) and np.all(np.diff(np.sort(order)) == 16)
    np.testing.assert_array_equal(order, lazy.window_starts(3)[:])
    assert not np.array_equal(order, lazy.window_starts(4)[:])
    resumed = [x for x, _ in lazy.batches(3, start_batch=4)]
    np.testing.assert_array_equal(resumed[0], [x for x, _ in lazy.batches(3)][4])


def test_validation_sample_is_fixed_seeded_and_capped():
    ids = (np.arange(50_000) % 30 + 1).astype(np.uint16)
    windows = dataset.WindowSampler(ids, 10, 8, shuffle=False, drop_remainder=False)
    everything = len(windows.window_starts(0))
    windows.keep_sample(100, seed=3)
    kept = windows.window_starts(0)
    assert len(kept) == 100 < everything and np.all(np.diff(kept) > 0)
    np.testing.assert_array_equal(kept, windows.window_starts(5))
    again = dataset.WindowSampler(ids, 10, 8, shuffle=False, drop_remainder=False)
    again.keep_sample(100, seed=3)
    np.testing.assert_array_equal(kept, again.window_starts(0))
    assert sum(len(x) for x, _ in windows.batches(0)) == 100
    assert sum(len(x) for k in range(2) for x, _ in windows.batches(0, shard=(k, 2))) == 100


def test_windows_are_read_from_the_store_file_also_across_held_out_gaps(tmp_path):
    folder = _write(tmp_path / "c", [f"document {i} " * (i + 3) for i in range(30)])
    data = dataset.tokenize(open_corpus(str(folder), "text"), dataset.TokenizerFactory("chars"), use_cache=False)
    split = dataset.split_segments(data, 0.3, seed=1, holdout="documents")
    assert len(split.train_ids.spans) > 1 and store._file_of(data.ids) is not None
    whole = np.asarray(split.train_ids)
    for length in (11, 80):  # across one gap, and across several short pieces
        starts = np.arange(len(whole) - length + 1)
        np.testing.assert_array_equal(
            store.read_windows(split.train_ids, starts, length), whole[starts[:, None] + np.arange(length)]
        )


# -- short documents and grown vocabularies, streamed -----------------------------------------


def _old_documents(files, documents="files", column=""):
    """The documents as the whole-file reader made them before they were streamed (the reference)."""
    import csv
    import io
    import json

    from generator.data.corpora import short_document

    docs = []
    for path in files:
        text = read_text_file(path)
        if column and path.suffix == ".csv":
            docs += [short_document(row[column] or "") for row in csv.DictReader(io.StringIO(text))]
        elif column:
            for line in text.split("\n"):
                if line.strip():
                    value = json.loads(line).get(column)
                    docs.append(
                        short_document(value if isinstance(value, str) else "" if value is None else json.dumps(value))
                    )
        elif documents == "lines":
            docs += [short_document(line) for line in text.split("\n")]
        else:
            docs.append(text)
    return [d for d in docs if d]


LINES = [
    "First title\n\n  Second\ttitle \r\nthird\rpart\n \u3000\xa0\n\x1c x \x1d\r\n\r\n\r",
    "no newline at the end ébc 😀",
    "",
    "\n\n\n" + "a line " * 30 + "\r\n" * 3 + "last\n",
]
CSV = 'id,title,title\n1,x,First title\n2,y,"Two\r\nlines\n  here"\n\n3,z\n4,w,  \u3000 \n5,v,"é, ""quoted"""\r\n'
JSONL = '{"title": "First"}\n{"other": 1}\n\n  \n{"title": 7}\r\n{"title": ["a", "b"]}\n{"title": "two\\nlines é"}'


def _tokens_match(corpus, factory, expected_docs, expected_tokenizer):
    data = dataset.tokenize(corpus, factory, use_cache=False)
    expected = dataset.concatenate([expected_tokenizer.encode(d) for d in expected_docs], expected_tokenizer)
    assert data.tokenizer.chars == expected.tokenizer.chars
    np.testing.assert_array_equal(np.asarray(data.ids), expected.ids)
    np.testing.assert_array_equal(data.starts, expected.starts)


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 16, 1 << 20])
def test_streamed_lines_and_columns_give_the_tokens_of_the_whole_file_reader(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(text_stream, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(text_stream, "PACK_CHARS", 7 if chunk < 10 else 1 << 20)
    monkeypatch.setattr(text_stream, "LINE_BLOCK", {5: 1, 1 << 16: 3}.get(chunk, 1 << 20))
    lines = _write(tmp_path / "lines", LINES)
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "a.csv").write_bytes(CSV.encode())
    (tables / "b.jsonl").write_bytes(JSONL.encode())
    for folder, options in ((lines, {"documents": "lines"}), (tables, {"column": "title"})):
        files = sorted(p for p in folder.iterdir())
        docs = _old_documents(files, **options)
        corpus = open_corpus(str(folder), "text", **options)
        assert corpus.documents() == docs
        _tokens_match(corpus, dataset.TokenizerFactory("chars"), docs, CharTokenizer.fit(docs))


def test_a_grown_vocabulary_is_streamed_with_the_tokens_of_the_whole_file_reader(tmp_path, monkeypatch):
    from generator.training.finetune import GrowingChars

    monkeypatch.setattr(text_stream, "CHUNK_BYTES", 3)
    folder = _write(tmp_path / "c", TEXTS)
    monkeypatch.setattr(
        dataset, "_encode_documents", lambda *a: pytest.fail("read whole")
    )  # the grown vocabulary streams too
    for options in ({}, {"documents": "lines"}):
        docs = _old_documents(sorted(folder.glob("*.txt")), **options)
        grow = GrowingChars(CharTokenizer(" aeh\n"))
        _tokens_match(open_corpus(str(folder), "text", **options), grow, docs, grow(docs))
        assert grow(docs).chars.startswith(" aeh\n")
    same = GrowingChars(CharTokenizer("".join(sorted(set("".join(TEXTS).replace("\r\n", "\n"))))))
    assert same.from_chars("ace") is same.tokenizer


def test_a_text_file_over_the_whole_file_limit_streams_as_lines_and_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("GENERATOR_MAX_TEXT_BYTES", "10")
    (tmp_path / "t.txt").write_text("one line\nanother line\n" * 5)
    (tmp_path / "t.jsonl").write_text('{"t": "a value"}\n' * 5)
    for options in ({"documents": "lines"}, {"column": "t"}):
        name = "t.jsonl" if "column" in options else "t.txt"
        data = dataset.tokenize(
            open_corpus(str(tmp_path / name), "text", **options), dataset.TokenizerFactory("chars"), use_cache=False
        )
        assert data.num_documents == 10 if "documents" in options else data.num_documents == 5


def test_bad_rows_are_one_clear_error(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"t": "fine"}\n[1, 2]\n')
    with pytest.raises(GeneratorError, match="line 2: not a JSON object"):
        dataset.tokenize(open_corpus(str(tmp_path / "t.jsonl"), "text", column="t"), dataset.TokenizerFactory("chars"))
    (tmp_path / "t.jsonl").write_text('{"u": "x"}\n')
    with pytest.raises(GeneratorError, match="no key 't' in any of its rows"):
        dataset.tokenize(open_corpus(str(tmp_path / "t.jsonl"), "text", column="t"), dataset.TokenizerFactory("chars"))
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(GeneratorError, match="no column 't'; its columns are a, b"):
        dataset.tokenize(open_corpus(str(tmp_path / "t.csv"), "text", column="t"), dataset.TokenizerFactory("chars"))


def test_a_store_with_its_starts_in_the_manifest_still_opens(tmp_path):
    import json

    store.write_array(tmp_path / "s", np.array([0, 1, 2, 0, 3], np.uint16), [0, 3], {"x": 1}, 4)
    ids, manifest = store.open_store(tmp_path / "s")
    np.testing.assert_array_equal(manifest["starts"], [0, 3])
    path = tmp_path / "s" / "manifest.json"
    old = json.loads(path.read_text())
    old["starts"] = [0, 3]
    del old["documents"]
    path.write_text(json.dumps(old))
    (tmp_path / "s" / "starts.npy").unlink()
    np.testing.assert_array_equal(store.open_store(tmp_path / "s")[1]["starts"], [0, 3])
