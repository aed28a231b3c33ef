"""Tests of the SATB voice-grid tokenizer and the chorale readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator.data.chorales import music21_chorales, read_jsb_json
from generator.errors import GeneratorError
from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.base import BOS
from generator.data.tokenizers.voices import REST, VoicesTokenizer, grid_from_note_sequence

_JSB_NAMES = ("Jsb16thSeparated.train-valid.json", "Jsb16thSeparated.json")
_SHARED_DIRS = (
    Path("/work/shared/corpora/jsb-chorales"),
    Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "jsb-chorales",
)


def _jsb_path() -> Path | None:
    for folder in _SHARED_DIRS:
        for name in _JSB_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


JSB = _jsb_path()
needs_jsb = pytest.mark.skipif(JSB is None, reason="the shared JSB Chorales JSON is absent")


@pytest.fixture(scope="module")
def valid_split():
    return read_jsb_json(JSB, "valid")


@pytest.fixture(scope="module")
def few_music21_chorales():
    pytest.importorskip("music21")
    skipped = []
    chorales = music21_chorales(limit=3, skipped=skipped)
    assert len(chorales) == 3
    return chorales


def _round_trip(tokenizer: VoicesTokenizer, grid: np.ndarray) -> None:
    ids = tokenizer.encode(grid)
    assert len(ids) == 4 * len(grid)
    assert min(ids) >= 1 and max(ids) < tokenizer.vocab_size  # never BOS
    np.testing.assert_array_equal(tokenizer.grid_from_ids(ids), grid)
    np.testing.assert_array_equal(tokenizer.grid_from_ids([BOS] + ids), grid)
    seq = tokenizer.decode(ids)
    assert [i.name for i in seq.instruments] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert tokenizer.encode(seq) == ids  # held notes merge, then split back on the grid


# -- round trips on real chorales -------------------------------------------------------------
@needs_jsb
@pytest.mark.parametrize("bpm", [120.0, 73.0])
def test_jsb_valid_split_round_trip(valid_split, bpm):
    tokenizer = VoicesTokenizer(bpm=bpm)
    assert len(valid_split) > 0
    for grid in valid_split:
        assert grid.dtype == np.int64 and grid.shape[1] == 4
        _round_trip(tokenizer, grid)


@needs_jsb
def test_jsb_fits_default_range(valid_split):
    pitches = np.concatenate(valid_split)
    pitches = pitches[pitches >= 0]
    tokenizer = VoicesTokenizer()
    assert tokenizer.low <= pitches.min() and pitches.max() <= tokenizer.high


def test_music21_chorales_round_trip(few_music21_chorales):
    tokenizer = VoicesTokenizer()
    for grid in few_music21_chorales:
        assert grid.ndim == 2 and grid.shape[1] == 4 and len(grid) > 16
        assert grid[:, 0][grid[:, 0] >= 0].mean() > grid[:, 3][grid[:, 3] >= 0].mean()
        _round_trip(tokenizer, tokenizer.fit_range(grid))


# -- encoding NoteSequences ---------------------------------------------------------------------
def _seq(notes, names=("", "", "", ""), tempos=((0.0, 120.0),)) -> NoteSequence:
    return NoteSequence(
        notes=[Note(p, s, e, track=t) for p, s, e, t in notes],
        tempos=list(tempos),
        instruments=[Instrument(name=n) for n in names],
    )


def test_four_tracks_named_out_of_order_go_to_their_voices():
    # 16th = 0.125 s at 120 bpm; tracks listed Bass, Tenor, Alto, Soprano.
    seq = _seq(
        [(48, 0, 0.5, 0), (55, 0, 0.25, 1), (64, 0, 0.5, 2), (72, 0, 0.25, 3), (74, 0.25, 0.5, 3)],
        names=("Bass", "Tenor", "Alto", "Soprano"),
    )
    grid = grid_from_note_sequence(seq)
    np.testing.assert_array_equal(grid, [[72, 64, 55, 48]] * 2 + [[74, 64, -1, 48]] * 2)


def test_four_unnamed_tracks_are_ordered_by_mean_pitch():
    seq = _seq([(48, 0, 0.125, 0), (72, 0, 0.125, 1), (55, 0, 0.125, 2), (64, 0, 0.125, 3)])
    np.testing.assert_array_equal(grid_from_note_sequence(seq), [[72, 64, 55, 48]])


def test_one_track_splits_by_pitch_and_follows_tempo_changes():
    # 60 bpm for the first second (a 16th = 0.25 s), then 120 bpm (0.125 s).
    notes = [(p, 0, 0.5, 0) for p in (60, 64, 67, 72, 48)]  # five notes: S A T = top three
    notes += [(62, 1.0, 1.125, 0), (50, 1.0, 1.125, 0)]  # two notes: S and B
    seq = _seq(notes, names=("Piano",), tempos=((0.0, 60.0), (1.0, 120.0)))
    grid = grid_from_note_sequence(seq)
    np.testing.assert_array_equal(grid, [[72, 67, 64, 48]] * 2 + [[-1, -1, -1, -1]] * 2 + [[62, -1, -1, 50]])


def test_out_of_range_pitches_move_by_octaves_or_raise():
    grid = [[90, 60, 30, -1]]
    assert VoicesTokenizer().grid_from_ids(VoicesTokenizer().encode(grid)).tolist() == [[78, 60, 42, -1]]
    with pytest.raises(ValueError, match="outside"):
        VoicesTokenizer(out_of_range="error").encode(grid)
    with pytest.raises(ValueError, match="shape"):
        VoicesTokenizer().encode([[60, 60, 60]])
    with pytest.raises(ValueError, match="fractional"):
        VoicesTokenizer().encode([[60.5, 60, 60, 60]])


# -- decoding -----------------------------------------------------------------------------------
def test_decode_holds_repeated_pitches_and_pads_a_truncated_step():
    tokenizer = VoicesTokenizer(bpm=120.0)
    ids = tokenizer.encode([[72, 64, 55, 48], [72, 65, -1, 48], [74, 65, 50, 50]])[:-2]
    seq = tokenizer.decode(ids)
    soprano = sorted((n.pitch, n.start, n.end) for n in seq.notes if n.track == 0)
    assert soprano == [(72, 0.0, 0.25), (74, 0.25, 0.375)]
    bass = [(n.pitch, n.start, n.end) for n in seq.notes if n.track == 3]
    assert bass == [(48, 0.0, 0.25)]
    alto = [(n.pitch, n.start, n.end) for n in seq.notes if n.track == 1]
    assert alto == [(64, 0.0, 0.125), (65, 0.125, 0.375)]
    assert tokenizer.grid_from_ids(ids)[-1].tolist() == [74, 65, -1, -1]
    assert all(n.program == 52 for n in seq.notes) and seq.initial_bpm == 120.0
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])


def test_vocabulary_layout_and_names():
    tokenizer = VoicesTokenizer(low=36, high=81)
    assert tokenizer.vocab_size == 48
    assert tokenizer.token_name(BOS) == "<bos>" and tokenizer.token_name(REST) == "REST"
    assert tokenizer.token_name(2) == "C2" and tokenizer.token_name(47) == "A5"
    assert tokenizer.encode([[60, -1, 36, 81]]) == [26, REST, 2, 47]


# -- configuration ------------------------------------------------------------------------------
def test_config_json_round_trip():
    tokenizer = VoicesTokenizer(low=40, high=79, bpm=90.0, program=0, max_shift=3, out_of_range="error")
    data = json.loads(tokenizer.to_json())
    assert data.pop("kind") == "voices"
    again = VoicesTokenizer.from_config(data)
    assert again.config() == tokenizer.config() and again.vocab_size == tokenizer.vocab_size
    pytest.importorskip("generator.data.tokenizers.chars")
    from generator.data.tokenizers.base import from_json

    loaded = from_json(tokenizer.to_json())
    assert isinstance(loaded, VoicesTokenizer) and loaded.config() == tokenizer.config()


# -- augmentation -------------------------------------------------------------------------------
def test_augment_shifts_each_window_uniformly_within_range():
    tokenizer = VoicesTokenizer(max_shift=5)
    rng = np.random.default_rng(0)
    windows = rng.integers(0, tokenizer.vocab_size, size=(512, 64)).astype(np.int32)
    windows[:, 10] = BOS
    windows[:, 11] = REST
    windows[0, :] = REST  # no pitches at all
    windows[1, 20] = tokenizer.vocab_size - 1  # the top pitch: may only go down
    windows[2, 20] = 2  # the bottom pitch: may only go up
    out = tokenizer.augment(windows, rng)
    assert out.shape == windows.shape and out.dtype == windows.dtype
    assert out.min() >= 0 and out.max() < tokenizer.vocab_size
    is_pitch = windows >= 2
    np.testing.assert_array_equal(out[~is_pitch], windows[~is_pitch])
    shifts = out - windows
    for row in range(len(windows)):
        assert len(set(shifts[row][is_pitch[row]].tolist())) <= 1
    row_shift = np.where(is_pitch.any(1), shifts.max(1) + shifts.min(1), 0)
    assert np.abs(row_shift).max() <= 5
    assert len(set(row_shift[3:].tolist())) > 3  # shifts really vary


@needs_jsb
def test_augment_on_real_windows(valid_split):
    tokenizer = VoicesTokenizer()
    ids = np.array(tokenizer.encode(valid_split[0])[:256])
    windows = np.tile(ids, (32, 1))
    out = tokenizer.augment(windows, np.random.default_rng(1))
    shifts = (out - windows)[:, ids >= 2]
    assert (shifts == shifts[:, :1]).all() and np.abs(shifts).max() <= 5
    assert out.min() >= 1 and out.max() < tokenizer.vocab_size


# -- constraint -----------------------------------------------------------------------------------
def test_constraint_forbids_bos_and_closes_the_step():
    tokenizer = VoicesTokenizer(voice_leading=False)  # well-formedness only (rules: tests/test_voice_leading.py)
    state = tokenizer.new_constraint_state(2)
    mask = tokenizer.allowed(state)
    assert mask.shape == (2, tokenizer.vocab_size) and not mask[:, BOS].any() and mask[:, 1:].all()
    for _ in range(5):
        state = tokenizer.advance(state, np.array([REST, 30]))
    assert state[:, 0].tolist() == [5, 5]
    assert tokenizer.closing_ids(state, 0) == [REST] * 3
    state = tokenizer.advance(state, np.array([2, 2]))
    state = tokenizer.advance(state, np.array([2, 2]))
    state = tokenizer.advance(state, np.array([2, 2]))
    assert tokenizer.closing_ids(state, 1) == []


# -- malformed JSB files -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "expected a JSON object of splits"),
        ('{"train": [], "valid": []}', "no split 'test' \\(available: train, valid\\)"),
        ('{"test": {"a": 1}}', "not a list of chorales"),
        ('{"test": [[[60, 60, 60]]]}', "chorale 0 of split 'test' is not a non-empty"),
        ('{"test": [[[60, 60, 60, 60], [60, 60, 60]]]}', "chorale 0"),
        ('{"test": [[[60, 60, 60, 60]], []]}', "chorale 1"),
        ('{"test": [[[60, 60, 60, "x"]]]}', "chorale 0"),
        ('{"test": [[[60, 60, 60, 60.5]]]}', "step 0, voice 3"),
        ('{"test": [[[60, 60, 60, 60], [60, -3, 60, 60]]]}', "step 1, voice 1"),
    ],
)
def test_malformed_jsb_json_raises_generator_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(GeneratorError, match=message):
        read_jsb_json(path, "test")


def test_jsb_json_reader_accepts_floats_and_reports_missing_files(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"test": [[[60.0, 57.0, -1.0, 48.0]]]}')
    (grid,) = read_jsb_json(path, "test")
    assert grid.dtype == np.int64 and grid.tolist() == [[60, 57, -1, 48]]
    with pytest.raises(GeneratorError, match="cannot read"):
        read_jsb_json(tmp_path / "missing.json", "test")


def test_music21_chorales_match_their_midi_conversion():
    """The direct music21 reader and the MIDI path (music21 -> MIDI -> NoteSequence) agree."""
    pytest.importorskip("music21")
    midi_io = pytest.importorskip("generator.data.midi_io")
    from music21 import corpus

    names = list(corpus.chorales.Iterator(returnType="filename"))[:2]
    grids = music21_chorales(limit=2, expand_repeats=True)
    for name, grid in zip(names, grids):
        seq = midi_io.read_music21_score(corpus.parse(name))
        np.testing.assert_array_equal(grid_from_note_sequence(seq), grid)
