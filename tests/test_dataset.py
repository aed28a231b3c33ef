import numpy as np
import pytest

from generator.data import dataset
from generator.data.corpora import open_corpus
from generator.data.tokenizers import BOS
from generator.data.tokenizers.chars import CharTokenizer


def make_corpus(docs):
    tok = CharTokenizer.fit(docs)
    return dataset.concatenate([tok.encode(d) for d in docs], tok)


def test_concatenate_puts_bos_before_each_document():
    data = make_corpus(["abc", "de"])
    assert data.ids.tolist()[:1] == [BOS]
    assert data.starts.tolist() == [0, 4]
    assert data.tokenizer.decode(data.document(1)) == "de"
    assert data.ids.dtype == np.uint16  # small vocabularies stay compact


def test_windows_y_is_x_shifted_by_one():
    ids = np.arange(1000, dtype=np.uint16) % 50 + 1
    sampler = dataset.WindowSampler(ids, seq_len=10, batch_size=4, seed=3)
    batches = list(sampler.batches(epoch=0))
    assert len(batches) == sampler.num_batches(0) > 0
    for x, y in batches:
        assert x.shape == y.shape == (4, 10)
        assert x.dtype == np.int32
        np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y):  # each row is a contiguous slice of the ids
            start = int(np.flatnonzero(ids == row_x[0])[0])
            del start  # values repeat; check contiguity instead
            assert np.all((np.diff(np.concatenate([row_x, row_y[-1:]])) % 50) == 1)


def test_epoch_order_is_reproducible_and_resumable():
    ids = (np.arange(5000) % 30 + 1).astype(np.uint16)
    sampler = dataset.WindowSampler(ids, seq_len=16, batch_size=8, seed=7)
    first = [x for x, _ in sampler.batches(2)]
    again = [x for x, _ in sampler.batches(2)]
    resumed = [x for x, _ in sampler.batches(2, start_batch=5)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first[5:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], [x for x, _ in sampler.batches(3)][0])


def test_tail_split_for_few_documents_and_whole_documents_for_many():
    few = make_corpus(["a" * 100, "b" * 50])
    train, val = dataset.split_segments(few, 0.1, holdout="tail")
    assert len(val) == 10 + 5 and len(train) + len(val) == len(few.ids)
    assert set(val.tolist()) == set(few.tokenizer.encode("ab"))  # the tail of each
    many = make_corpus([f"{chr(97 + i % 26)}" * 10 for i in range(40)])
    train, val = dataset.split_segments(many, 0.1, seed=1)
    assert len(val) == 4 * 11  # four whole documents, BOS included
    assert (val == BOS).sum() == 4


def test_tokenized_corpus_is_cached(tiny_corpus, monkeypatch):
    from generator.api import TokenizerFactory

    corpus = open_corpus(str(tiny_corpus), "text")
    first = dataset.tokenize(corpus, TokenizerFactory("chars"))
    calls = []
    monkeypatch.setattr(corpus, "read", lambda: calls.append(1) or [])
    second = dataset.tokenize(corpus, TokenizerFactory("chars"))
    assert not calls  # served from the cache, the corpus was not read again
    np.testing.assert_array_equal(first.ids, second.ids)
    assert second.tokenizer.chars == first.tokenizer.chars


def test_too_small_corpus_is_an_error():
    from generator.errors import GeneratorError

    with pytest.raises(GeneratorError):
        dataset.WindowSampler(np.array([0], dtype=np.uint16), 10, 4)


def test_music_token_store_is_kept_per_midi_reader(tmp_path, monkeypatch):
    """The symusic and pretty_midi readers refuse different broken files, so a corpus read by one
    never reuses the store the other wrote."""
    from generator.api import TokenizerFactory
    from generator.data import midi_fast
    from tests.test_band import write_midi

    songs = tmp_path / "songs"
    songs.mkdir()
    write_midi(songs / "a.mid", [(0, False, [(60 + b % 7, b, 1) for b in range(16)])])
    monkeypatch.setenv(midi_fast.READER_ENV, "pretty_midi")
    before = set(dataset.cache_dir().iterdir())
    slow = dataset.tokenize(open_corpus(str(songs), "music"), TokenizerFactory("events"))
    monkeypatch.delenv(midi_fast.READER_ENV)
    fast = dataset.tokenize(open_corpus(str(songs), "music"), TokenizerFactory("events"))
    stores = set(dataset.cache_dir().iterdir()) - before
    assert len(stores) == (2 if midi_fast.enabled() else 1)  # one store per reader
    np.testing.assert_array_equal(slow.ids, fast.ids)  # and both read this clean file alike
