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
    starts = np.array([0, 5, 100, 400, len(split.train_ids) - 12])
    np.testing.assert_array_equal(
        store.read_windows(split.train_ids, starts, 11), np.asarray(split.train_ids)[starts[:, None] + np.arange(11)]
    )
