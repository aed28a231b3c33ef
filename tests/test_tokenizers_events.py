"""Tests of the MIDI performance-event tokenizer (generator.data.tokenizers.events)."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import music21
import numpy as np
import pytest

from generator.data import midi_io
from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.base import BOS, from_json
from generator.data.tokenizers.events import EventTokenizer, grid_to_sequence

TEST_MIDI = sorted((Path(music21.__file__).parent / "midi" / "testPrimitive").glob("*.mid"))
CHORALES = ("bach/bwv66.6", "bach/bwv269", "bach/bwv347")

TOKENIZERS = {
    "default": {},
    "chained-shifts": {"steps_per_second": 50, "max_shift_steps": 10, "velocity_bins": 0},
    "drums-coarse-velocity": {"velocity_bins": 8, "drums": True, "max_polyphony": 32},
    "two-tracks": {"velocity_bins": 8, "tracks": 2},
}


@functools.lru_cache(maxsize=None)
def _read(path: str) -> NoteSequence:
    return midi_io.read_midi(path)


@pytest.fixture(scope="module")
def chorale_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chorales")
    files = {}
    for name in CHORALES:
        path = folder / (name.replace("/", "_") + ".mid")
        music21.corpus.parse(name).write("midi", fp=str(path))
        files[name] = path
    return files


def _quantized(seq: NoteSequence, tok: EventTokenizer) -> list[tuple[int, int, int]]:
    sps = tok.steps_per_second
    notes = []
    for n in seq.notes:
        if n.is_drum or not tok.min_pitch <= n.pitch <= tok.max_pitch:
            continue
        start = round(n.start * sps)
        notes.append((n.pitch, start, max(round(n.end * sps), start + 1)))
    return notes


def _expected(seq: NoteSequence, tok: EventTokenizer) -> Counter:
    """What a round trip must give, computed independently of the tokenizer: each pitch sounds
    over the union of its notes' spans and is struck again at every distinct onset."""
    spans = defaultdict(list)
    for pitch, start, end in _quantized(seq, tok):
        spans[pitch].append((start, end))
    expected = Counter()
    for pitch, pitch_spans in spans.items():
        components = []  # union of the spans, as [start, end]
        for start, end in sorted(pitch_spans):
            if components and start <= components[-1][1]:
                components[-1][1] = max(components[-1][1], end)
            else:
                components.append([start, end])
        onsets = sorted({s for s, _ in pitch_spans})
        for i, onset in enumerate(onsets):
            component_end = next(e for s, e in components if s <= onset <= e)
            following = onsets[i + 1] if i + 1 < len(onsets) else component_end
            expected[(pitch, onset, min(following, component_end))] += 1
    return expected


def _distance(times: list[float], t: float) -> float:
    return min(abs(x - t) for x in times)


def _check_round_trip(seq: NoteSequence, tok: EventTokenizer) -> None:
    ids = tok.encode(seq)
    assert tok.last_dropped["out_of_range"] == 0 and tok.last_dropped["polyphony"] == 0
    assert tok.count_invalid_events(ids) == 0
    decoded = tok.decode([BOS] + ids)
    pitched = [n for n in decoded.notes if not n.is_drum]
    assert Counter(_quantized(decoded, tok)) == _expected(seq, tok)
    # Every decoded onset lies within one step of an original onset of the same pitch, and every
    # offset within one step of an original offset (or of an onset that cut a unison short).
    step = 1.0 / tok.steps_per_second
    onsets, boundaries = defaultdict(list), defaultdict(list)
    for n in seq.notes:
        onsets[n.pitch].append(n.start)
        boundaries[n.pitch] += [n.start, n.end]
    for n in pitched:
        assert _distance(onsets[n.pitch], n.start) <= step + 1e-9
        if n.end - n.start > step + 1e-9:  # a note shorter than a step was lengthened to one
            assert _distance(boundaries[n.pitch], n.end) <= step + 1e-9
    drums = [n for n in seq.notes if n.is_drum]
    if tok.drums:
        hits = {(round(n.start * tok.steps_per_second), n.pitch) for n in drums}
        assert {(round(n.start * tok.steps_per_second), n.pitch) for n in decoded.notes if n.is_drum} == hits
    else:
        assert tok.last_dropped["drum_notes"] == len(drums)
        assert not any(n.is_drum for n in decoded.notes)


# -- round trips on real files --------------------------------------------------------------
@pytest.mark.parametrize("params", TOKENIZERS.values(), ids=TOKENIZERS.keys())
@pytest.mark.parametrize("path", TEST_MIDI, ids=[p.name for p in TEST_MIDI])
def test_round_trip_music21_test_files(path, params):
    _check_round_trip(_read(str(path)), EventTokenizer(**params))


@pytest.mark.parametrize("params", TOKENIZERS.values(), ids=TOKENIZERS.keys())
@pytest.mark.parametrize("name", CHORALES)
def test_round_trip_bach_chorales(name, params, chorale_files):
    seq = _read(str(chorale_files[name]))
    assert len(seq.instruments) == 4
    _check_round_trip(seq, EventTokenizer(**params))


def test_test_files_are_there():
    assert len(TEST_MIDI) >= 20


# -- cases that do not round trip note for note, on purpose -----------------------------------
def _seq(*notes: Note) -> NoteSequence:
    return NoteSequence(notes=list(notes), instruments=[Instrument(0), Instrument(0, True, "drums")])


def _drum(pitch: int, start: float, end: float) -> Note:
    return Note(pitch, start, end, is_drum=True, track=1)


def test_drums_are_dropped_and_counted_never_pitched():
    tok = EventTokenizer()
    seq = _seq(Note(60, 0, 1), _drum(36, 0, 0.1), _drum(38, 0.5, 0.6))
    decoded = tok.decode(tok.encode(seq))
    assert tok.last_dropped == {"drum_notes": 2, "out_of_range": 0, "polyphony": 0}
    assert [(n.pitch, n.is_drum) for n in decoded.notes] == [(60, False)]


def test_drum_tokens_keep_hits():
    tok = EventTokenizer(drums=True)
    seq = _seq(Note(60, 0, 1), _drum(36, 0, 0.05), _drum(38, 0.5, 0.6))
    ids = tok.encode(seq)
    assert "DRUM(36)" in [tok.token_name(i) for i in ids]
    decoded = tok.decode(ids)
    assert sorted((n.pitch, n.start, n.is_drum) for n in decoded.notes) == [
        (36, 0, True),
        (38, 0.5, True),
        (60, 0, False),
    ]
    assert decoded.instruments[1].is_drum and all(n.track == 1 for n in decoded.notes if n.is_drum)


def test_overlapping_unisons_are_merged():
    tok = EventTokenizer()
    seq = _seq(Note(60, 0, 2), Note(60, 1, 1.5), Note(60, 0, 0.5), Note(62, 0, 1))
    decoded = tok.decode(tok.encode(seq))
    assert sorted((n.pitch, n.start, n.end) for n in decoded.notes) == [(60, 0, 1), (60, 1, 2), (62, 0, 1)]


def test_polyphony_cap_drops_and_counts():
    tok = EventTokenizer(max_polyphony=4)
    seq = _seq(*[Note(60 + i, 0, 1) for i in range(6)], Note(80, 1, 2))
    ids = tok.encode(seq)
    assert tok.last_dropped["polyphony"] == 2
    assert tok.count_invalid_events(ids) == 0
    assert len(tok.decode(ids).notes) == 5


def test_out_of_range_pitches_are_dropped_and_counted():
    tok = EventTokenizer(min_pitch=21, max_pitch=108)
    decoded = tok.decode(tok.encode(_seq(Note(10, 0, 1), Note(60, 0, 1), Note(120, 0, 1))))
    assert tok.last_dropped["out_of_range"] == 2 and [n.pitch for n in decoded.notes] == [60]


def test_long_notes_and_rests_chain_time_shifts():
    tok = EventTokenizer(steps_per_second=100, max_shift_steps=100)
    seq = _seq(Note(60, 3.25, 9.0), Note(64, 9.0, 9.004))
    ids = tok.encode(seq)
    names = [tok.token_name(i) for i in ids]
    assert names.count("TIME_SHIFT(100)") == 3 + 5
    decoded = tok.decode(ids)
    assert [(n.pitch, n.start, n.end) for n in decoded.notes] == [(60, 3.25, 9.0), (64, 9.0, 9.01)]


def test_velocity_bins():
    tok = EventTokenizer(velocity_bins=32)
    seq = _seq(Note(60, 0, 1, velocity=1), Note(62, 0, 1, velocity=127), Note(64, 1, 2, velocity=64))
    decoded = tok.decode(tok.encode(seq))
    by_pitch = lambda notes: sorted(notes, key=lambda n: n.pitch)  # noqa: E731
    for original, note in zip(by_pitch(seq.notes), by_pitch(decoded.notes)):
        assert abs(original.velocity - note.velocity) < 127 / 32
    flat = EventTokenizer(velocity_bins=0)
    assert {n.velocity for n in flat.decode(flat.encode(seq)).notes} == {80}


def test_jsb_grid_input():
    grid = [[60, 55, 52, 48], [60, 55, 52, 48], [62, -1, 53, 47]]
    expected = grid_to_sequence(grid)
    assert (60, 0.0, 0.25) in [(n.pitch, n.start, n.end) for n in expected.notes]  # repeats are held
    assert len(expected.notes) == 7
    tok = EventTokenizer()
    _check_round_trip(expected, tok)
    assert tok.encode(grid) == tok.encode(expected)


def test_decode_closes_open_notes_and_skips_bos():
    tok = EventTokenizer()
    on, shift = tok.event_id("NOTE_ON", 60), tok.event_id("TIME_SHIFT", 50)
    decoded = tok.decode([BOS, on, shift, on])
    assert [(n.start, n.end) for n in decoded.notes] == [(0.0, 0.5), (0.5, 0.51)]
    with pytest.raises(ValueError):
        tok.decode([tok.vocab_size])


# -- vocabulary and serialization ---------------------------------------------------------------
@pytest.mark.parametrize("params", TOKENIZERS.values(), ids=TOKENIZERS.keys())
def test_json_round_trip(params):
    tok = EventTokenizer(**params)
    again = from_json(tok.to_json())
    assert isinstance(again, EventTokenizer) and again.config() == tok.config()
    assert again.vocab_size == tok.vocab_size
    seq = _read(str(TEST_MIDI[2]))
    assert again.encode(seq) == tok.encode(seq)


def test_vocabulary_layout():
    tok = EventTokenizer()
    assert tok.vocab_size == 1 + 128 + 128 + 100 + 32
    assert tok.token_name(0) == "<bos>"
    names = [tok.token_name(i) for i in range(tok.vocab_size)]
    assert len(set(names)) == tok.vocab_size
    assert names[tok.event_id("NOTE_OFF", 60)] == "NOTE_OFF(60)"
    assert tok.ranges[0].offset == 1 and tok.ranges[-1].offset + tok.ranges[-1].size == tok.vocab_size


# -- augmentation -------------------------------------------------------------------------------
def _windows(tok: EventTokenizer, batch: int = 64, length: int = 128, seed: int = 0) -> np.ndarray:
    ids = np.array([BOS] + tok.encode(_read(str(TEST_MIDI[2]))))
    starts = np.random.default_rng(seed).integers(0, len(ids) - length, batch)
    return np.stack([ids[s : s + length] for s in starts])


def _kinds(tok: EventTokenizer, windows: np.ndarray) -> np.ndarray:
    names = np.array([tok.token_name(i).split("(")[0] for i in range(tok.vocab_size)])
    return names[windows]


def test_augment_transposes_notes_together_within_range():
    tok = EventTokenizer(transpose=5, stretch=0.0, drums=True)
    windows = _windows(tok)
    windows[0, :4] = [tok.event_id("NOTE_ON", 127), tok.event_id("NOTE_OFF", 0), tok.event_id("DRUM", 36), 0]
    out = tok.augment(windows, np.random.default_rng(1))
    assert out.shape == windows.shape and out.dtype == windows.dtype
    assert (_kinds(tok, out) == _kinds(tok, windows)).all()  # NOTE_ON stays NOTE_ON, etc.
    notes = np.isin(_kinds(tok, windows), ["NOTE_ON", "NOTE_OFF"])
    assert (out[~notes] == windows[~notes]).all()  # drums, shifts, velocities and BOS untouched
    shifts = set()
    for row in range(len(windows)):
        delta = set((out[row] - windows[row])[notes[row]].tolist())
        assert len(delta) <= 1 and all(abs(d) <= 5 for d in delta)
        shifts |= delta
    assert len(shifts) > 5
    assert (out[0] == windows[0]).all()  # pitches 0 and 127 in one window: no room to move


def test_augment_stretch_changes_only_time_shifts():
    tok = EventTokenizer(transpose=0, stretch=0.1)
    windows = _windows(tok)
    out = tok.augment(windows, np.random.default_rng(2))
    kinds = _kinds(tok, windows)
    assert (_kinds(tok, out) == kinds).all()
    assert (out[kinds != "TIME_SHIFT"] == windows[kinds != "TIME_SHIFT"]).all()
    assert (out != windows).any()


def test_augment_is_fast():
    tok = EventTokenizer()
    windows = np.random.default_rng(0).integers(0, tok.vocab_size, (64, 512))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(10):
        tok.augment(windows, rng)
    assert (time.perf_counter() - started) / 10 < 0.1


# -- constrained sampling -------------------------------------------------------------------
CONSTRAINED = {
    "default": {},
    "small": {"max_polyphony": 3, "drums": True, "velocity_bins": 0, "min_pitch": 60, "max_pitch": 72},
}


@pytest.mark.parametrize("params", CONSTRAINED.values(), ids=CONSTRAINED.keys())
def test_constrained_random_sampling_is_always_valid(params):
    tok = EventTokenizer(**params)
    rng = np.random.default_rng(0)
    batch, length = 1000, 200
    state = tok.new_constraint_state(batch)
    rows = [[BOS] for _ in range(batch)]
    for _ in range(length):
        mask = tok.allowed(state)
        assert mask.shape == (batch, tok.vocab_size) and mask.any(axis=1).all() and not mask[:, BOS].any()
        logits = np.where(mask, rng.normal(size=mask.shape), -np.inf)
        ids = np.argmax(logits + rng.gumbel(size=mask.shape), axis=1)
        state = tok.advance(state, ids)
        for row, token in zip(rows, ids.tolist()):
            row.append(token)
    assert max((state >= 0).sum(axis=1)) == tok.max_polyphony  # the cap was reached, and held
    for index, row in enumerate(rows):
        assert tok.count_invalid_events(row + tok.closing_ids(state, index)) == 0
    decoded = tok.decode(rows[0] + tok.closing_ids(state, 0))
    assert decoded.notes and tok.count_invalid_events(tok.encode(decoded)) == 0


def test_count_invalid_events_finds_each_kind():
    tok = EventTokenizer(max_polyphony=2)
    on = lambda p: tok.event_id("NOTE_ON", p)  # noqa: E731
    off = lambda p: tok.event_id("NOTE_OFF", p)  # noqa: E731
    assert tok.count_invalid_events([BOS, on(60), off(60)]) == 0
    assert tok.count_invalid_events([off(60)]) == 1  # release of a silent pitch
    assert tok.count_invalid_events([on(60), on(60), off(60)]) == 1  # strike of a sounding pitch
    assert tok.count_invalid_events([on(60), on(61), on(62), off(60), off(61), off(62)]) == 1  # over the cap
    assert tok.count_invalid_events([on(60)]) == 1  # left sounding
    assert tok.count_invalid_events([on(60), BOS, off(60)]) == 1  # BOS after the start


def test_constraint_rules_and_closing():
    tok = EventTokenizer(max_polyphony=2)
    state = tok.new_constraint_state(2)
    state = tok.advance(state, np.array([tok.event_id("NOTE_ON", 60), tok.event_id("TIME_SHIFT", 1)]))
    mask = tok.allowed(state)
    assert not mask[0, tok.event_id("NOTE_ON", 60)] and not mask[0, tok.event_id("NOTE_OFF", 60)]  # not yet: no time
    state = tok.advance(state, np.array([tok.event_id("TIME_SHIFT", 1), tok.event_id("TIME_SHIFT", 1)]))
    mask = tok.allowed(state)
    assert not mask[0, tok.event_id("NOTE_ON", 60)] and mask[0, tok.event_id("NOTE_OFF", 60)]
    assert mask[1, tok.event_id("NOTE_ON", 60)] and not mask[1, tok.event_id("NOTE_OFF", 60)]
    state = tok.advance(state, np.array([tok.event_id("NOTE_ON", 64), tok.event_id("NOTE_ON", 64)]))
    mask = tok.allowed(state)
    assert not mask[0, tok.on.offset : tok.on.offset + tok.num_pitches].any()  # at the cap
    assert mask[1, tok.event_id("NOTE_ON", 60)]
    closing = tok.closing_ids(state, 0)
    assert [tok.token_name(i) for i in closing] == ["TIME_SHIFT(50)", "NOTE_OFF(60)", "NOTE_OFF(64)"]
    assert tok.closing_ids(tok.new_constraint_state(1), 0) == []


def test_no_note_ends_where_it_starts_so_sampling_always_advances_time():
    """A model that loops on NOTE_ON/NOTE_OFF pairs of zero length (seen with the bach checkpoint:
    one sample of 41 wrote 12,000 tokens without a time shift) cannot: a note may be released
    only after a time shift, and every mask leaves something to sample."""
    for tok in (EventTokenizer(max_polyphony=3), EventTokenizer(max_polyphony=3, max_note_steps=4, note_limit=False)):
        on, off, shift = (functools.partial(tok.event_id, kind) for kind in ("NOTE_ON", "NOTE_OFF", "TIME_SHIFT"))
        state = tok.advance(tok.new_constraint_state(1), np.array([on(60)]))
        assert not tok.allowed(state)[0, off(60)]
        state = tok.advance(tok.advance(state, np.array([on(62)])), np.array([on(64)]))  # at the polyphony cap
        mask = tok.allowed(state)[0]
        assert not mask[tok.on.offset : tok.on.offset + tok.num_pitches].any()
        assert not mask[tok.off.offset : tok.off.offset + tok.num_pitches].any() and mask[shift(1)]
        state = tok.advance(state, np.array([shift(1)]))
        assert tok.allowed(state)[0, [off(60), off(62), off(64)]].all()
        # random tokens under the mask: time advances, and every note lasts at least one step
        rng, state, ids = np.random.default_rng(0), tok.new_constraint_state(1), []
        for _ in range(2000):
            choices = np.flatnonzero(tok.allowed(state)[0])
            ids.append(int(rng.choice(choices)))
            state = tok.advance(state, np.array(ids[-1:]))
        ids += tok.closing_ids(state, 0)
        assert tok.count_invalid_events(ids) == 0 and tok.duration(ids) > 0
        assert all(n.end > n.start for n in tok.decode(ids).notes)


def test_dropped_drums_are_reported_when_a_corpus_is_tokenized(tmp_path, capsys):
    """Drums never become pitched notes: they are dropped, and the user is told."""
    import pretty_midi

    from generator.data import dataset
    from generator.api import TokenizerFactory
    from generator.data.corpora import open_music

    pm = pretty_midi.PrettyMIDI()
    piano, drums = pretty_midi.Instrument(0), pretty_midi.Instrument(0, is_drum=True)
    piano.notes.append(pretty_midi.Note(80, 60, 0.0, 1.0))
    drums.notes.extend(pretty_midi.Note(100, 36, t / 2, t / 2 + 0.1) for t in range(4))
    pm.instruments.extend([piano, drums])
    pm.write(str(tmp_path / "band.mid"))
    messages = []
    data = dataset.tokenize(
        open_music(tmp_path / "band.mid"), TokenizerFactory("events"), use_cache=False, log=messages.append
    )
    assert any("4 drum notes" in m for m in messages)
    assert len(data.tokenizer.decode(data.document(0)).notes) == 1


# -- track slots, beat-relative time, the note-length cap ------------------------------------
def _pop_seed(bpm: float = 90.0) -> NoteSequence:
    """Two bars of a melody (track 0) over block chords (track 1) at ``bpm``."""
    beat = 60.0 / bpm
    melody = [
        Note(p, i * beat, (i + 1) * beat, 90, 0, False, 0) for i, p in enumerate([72, 74, 76, 79, 76, 74, 72, 71])
    ]
    chords = [
        Note(p, bar * 4 * beat, (bar + 1) * 4 * beat, 60, 0, False, 1)
        for bar, chord in enumerate([(48, 55, 60, 64), (43, 55, 59, 62)])
        for p in chord
    ]
    return NoteSequence(
        notes=sorted(melody + chords, key=lambda n: (n.start, n.pitch)),
        tempos=[(0.0, bpm)],
        instruments=[Instrument(0, name="Melody"), Instrument(0, name="Piano")],
    )


def test_track_slots_keep_melody_and_accompaniment_apart():
    tok = EventTokenizer(tracks=2)
    seed = _pop_seed()
    ids = tok.encode(seed)
    names = {tok.token_name(i).split("(")[0] for i in ids}
    assert {"NOTE_ON", "NOTE_ON_1"} <= names
    decoded = tok.decode(ids)
    by_track = {t: sorted(n.pitch for n in decoded.notes if n.track == t) for t in (0, 1)}
    assert by_track[0] == sorted(n.pitch for n in seed.notes if n.track == 0)
    assert by_track[1] == sorted(n.pitch for n in seed.notes if n.track == 1)
    assert [i.name for i in decoded.instruments] == ["melody", "accompaniment"]
    # a single-track piece is a whole piano part: the accompaniment slot, not the melody's
    solo = NoteSequence(notes=[Note(60, 0.0, 1.0)], instruments=[Instrument(0)])
    assert tok.slots(solo) == {0: 1}
    # a track named like a melody is the lead wherever it is; the rest fill the other slots
    three = NoteSequence(
        notes=[Note(60, 0, 1, track=t) for t in range(3)],
        instruments=[Instrument(0, name=n) for n in ("PIANO", "BRIDGE", "MELODY")],
    )
    assert tok.slots(three) == {2: 0, 0: 1, 1: 1}
    assert EventTokenizer(tracks=3).slots(three) == {2: 0, 0: 1, 1: 2}
    # one merged stream by default, as before
    assert EventTokenizer().slots(three) == {0: 0, 1: 0, 2: 0}


def test_transposition_moves_every_tracks_notes():
    tok = EventTokenizer(tracks=2, transpose=4, stretch=0.0)
    windows = np.array([[BOS] + tok.encode(_pop_seed())] * 32)
    out = tok.augment(windows, np.random.default_rng(3))
    kinds = _kinds(tok, windows)
    assert (_kinds(tok, out) == kinds).all()
    notes = np.isin(kinds, ["NOTE_ON", "NOTE_ON_1", "NOTE_OFF"])
    for row in range(len(out)):
        assert len(set((out[row] - windows[row])[notes[row]].tolist())) == 1
    assert (out[~notes] == windows[~notes]).all()


@pytest.mark.parametrize("bpm", [60.0, 90.0, 137.0])
def test_beat_relative_time_is_the_same_at_any_tempo(bpm):
    tok = EventTokenizer(steps_per_beat=12, max_shift_steps=48, tracks=2)
    ids = tok.encode(_pop_seed(bpm))
    assert ids == EventTokenizer(steps_per_beat=12, max_shift_steps=48, tracks=2).encode(_pop_seed(120.0))
    assert tok.token_name(ids[ids.index(tok.event_id("NOTE_ON", 72)) + 1]).startswith(("TIME_SHIFT", "NOTE"))
    at_tempo = EventTokenizer.from_config({**tok.config(), "bpm": bpm})
    decoded = at_tempo.decode(ids)
    assert decoded.tempos == [(0.0, bpm)]
    assert abs(decoded.end_time - _pop_seed(bpm).end_time) < 1e-6
    assert abs(at_tempo.duration(ids) - 8 * 60.0 / bpm) < 1e-6


def test_beat_relative_time_follows_tempo_changes():
    tok = EventTokenizer(steps_per_beat=4, max_shift_steps=16, velocity_bins=0)
    # quarter notes at 60 bpm for 2 s, then at 120 bpm: every onset one beat (4 steps) apart
    notes = [Note(60 + i, t, t + 0.25) for i, t in enumerate([0.0, 1.0, 2.0, 2.5, 3.0])]
    seq = NoteSequence(notes=notes, tempos=[(0.0, 60.0), (2.0, 120.0)])
    decoded = tok.decode(tok.encode(seq))
    assert [round(n.start * 2) for n in decoded.notes] == [0, 1, 2, 3, 4]  # decoded at 120 bpm


def test_note_cap_is_learned_from_the_corpus_and_recorded():
    tok = EventTokenizer(steps_per_second=10, max_shift_steps=10)
    assert tok.max_note_steps is None
    tok.encode(NoteSequence(notes=[Note(60, 0.0, 2.0), Note(62, 0.0, 0.5)]))
    tok.encode(NoteSequence(notes=[Note(64, 1.0, 4.5)]))
    assert tok.max_note_steps == 35
    saved = from_json(tok.to_json())
    assert saved.max_note_steps == 35
    saved.encode(NoteSequence(notes=[Note(60, 0.0, 9.0)]))  # a seed never moves a saved cap
    assert saved.max_note_steps == 35
    assert saved.without_note_limit().max_note_steps is None
    assert EventTokenizer(note_limit=False, steps_per_second=10).max_note_steps is None
    off = EventTokenizer(note_limit=False)
    off.encode(NoteSequence(notes=[Note(60, 0.0, 2.0)]))
    assert off.max_note_steps is None


def test_learned_cap_leaves_out_the_rarest_outliers():
    from collections import Counter

    from generator.data.tokenizers.events import note_length_cap

    assert note_length_cap(Counter({4: 9_998, 500: 1})) == 500  # under 10,000 notes: the longest
    assert note_length_cap(Counter({4: 19_997, 12: 2, 500: 1})) == 12  # 2 of 20,000 may go: the 500 and one 12
    assert note_length_cap(Counter({4: 19_990, 12: 7, 500: 3})) == 500  # 3 of 20,000 above 12: only 2 may go
    tok = EventTokenizer(steps_per_second=10, max_shift_steps=10)
    tok.encode(NoteSequence(notes=[Note(60 + i % 24, i * 0.2, i * 0.2 + 0.1) for i in range(20_000)]))
    assert tok.max_note_steps == 1
    tok.encode(NoteSequence(notes=[Note(60, 0.0, 30.0)]))  # one outlier in 20,001 notes does not move it
    assert tok.max_note_steps == 1
    tok.encode(NoteSequence(notes=[Note(60 + i, 0.0, 3.0) for i in range(3)]))  # four long ones do
    assert tok.max_note_steps == 30


def test_tokenizer_json_from_before_the_cap_has_none():
    old = {
        "kind": "events",
        "steps_per_second": 100,
        "max_shift_steps": 100,
        "velocity_bins": 32,
        "min_pitch": 0,
        "max_pitch": 127,
        "max_polyphony": 16,
        "drums": False,
        "transpose": 5,
        "stretch": 0.05,
        "program": 0,
    }
    tok = from_json(dict(old))
    assert tok.max_note_steps is None and tok.tracks == 1 and tok.steps_per_beat == 0
    assert tok.vocab_size == 389
    tok.encode(NoteSequence(notes=[Note(60, 0.0, 2.0)]))
    assert tok.max_note_steps is None
    state = tok.advance(tok.new_constraint_state(1), np.array([tok.event_id("NOTE_ON", 60)]))
    for _ in range(20):  # a note held for 20 longest shifts: no cap, so every shift stays allowed
        state = tok.advance(state, np.array([tok.event_id("TIME_SHIFT", tok.max_shift_steps)]))
    assert tok.allowed(state)[0, tok.shift.offset : tok.shift.offset + tok.max_shift_steps].all()
    bundled = Path(__file__).resolve().parent.parent / "checkpoints" / "bach" / "tokenizer.json"
    if bundled.exists():  # retrained since the cap exists: its file records the corpus's longest note
        data = json.loads(bundled.read_text())
        assert from_json(bundled.read_text()).max_note_steps == data.get("max_note_steps")


def test_constrained_random_sampling_never_holds_a_note_past_the_cap():
    cap = 7
    tok = EventTokenizer(max_note_steps=cap, max_shift_steps=20, velocity_bins=4, tracks=2, max_polyphony=4)
    rng = np.random.default_rng(cap)
    batch, length = 300, 100
    state = tok.new_constraint_state(batch)
    rows = [[BOS] for _ in range(batch)]
    for _ in range(length):
        mask = tok.allowed(state)
        assert mask.any(axis=1).all() and not mask[:, BOS].any()
        logits = np.where(mask, rng.normal(size=mask.shape), -np.inf)
        ids = np.argmax(logits + rng.gumbel(size=mask.shape), axis=1)
        state = tok.advance(state, ids)
        assert state.max() <= cap
        for row, token in zip(rows, ids.tolist()):
            row.append(token)
    longest = [tok.longest_note(row + tok.closing_ids(state, i)) for i, row in enumerate(rows)]
    assert max(longest) == cap  # reached, never passed
    assert all(tok.count_invalid_events(row + tok.closing_ids(state, i)) == 0 for i, row in enumerate(rows))
    # the same draws without the cap hold notes longer
    free = tok.without_note_limit()
    state = free.new_constraint_state(batch)
    rows = [[BOS] for _ in range(batch)]
    for _ in range(length):
        mask = free.allowed(state)
        ids = np.argmax(np.where(mask, rng.normal(size=mask.shape), -np.inf) + rng.gumbel(size=mask.shape), axis=1)
        state = free.advance(state, ids)
        for row, token in zip(rows, ids.tolist()):
            row.append(token)
    assert max(free.longest_note(row) for row in rows) > cap


def test_a_note_at_the_cap_is_released_next_so_sampling_cannot_stall():
    """Where the cap binds, the model would rather shift time than release the note; were velocity
    and NOTE_ON tokens still allowed, a sampler preferring them to NOTE_OFF would loop without
    advancing time (seen with the pop-piano weights and a 10-beat cap: 4x the tokens)."""
    cap = 5
    tok = EventTokenizer(max_note_steps=cap, max_shift_steps=8, velocity_bins=4, max_polyphony=4, note_limit=False)
    on, off, shift = (functools.partial(tok.event_id, kind) for kind in ("NOTE_ON", "NOTE_OFF", "TIME_SHIFT"))
    state = tok.advance(tok.advance(tok.new_constraint_state(1), np.array([on(60)])), np.array([shift(3)]))
    state = tok.advance(tok.advance(state, np.array([on(64)])), np.array([shift(2)]))  # 60 at the cap, 64 not
    assert np.flatnonzero(tok.allowed(state)[0]).tolist() == [off(60)]
    # a sampler that prefers starting middle C, then a shift, then anything but a release
    preference = np.zeros(tok.vocab_size)
    preference[on(60)] = 5.0
    preference[tok.shift.offset : tok.shift.offset + tok.max_shift_steps] = 3.0
    preference[tok.off.offset : tok.off.offset + tok.num_pitches] = -3.0
    state, ids, run, longest_run = tok.new_constraint_state(1), [], 0, 0
    for _ in range(600):
        token = int(np.argmax(np.where(tok.allowed(state)[0], preference, -np.inf)))
        ids.append(token)
        run = 0 if tok.shift.offset <= token < tok.shift.offset + tok.max_shift_steps else run + 1
        longest_run = max(longest_run, run)
        state = tok.advance(state, np.array([token]))
        assert state.max() <= cap
    assert longest_run <= 2  # a release, then straight back to shifting time
    assert tok.duration(ids) >= 300 * tok.step_seconds and tok.longest_note(ids + tok.closing_ids(state, 0)) == cap


def test_note_cap_rules_and_closing():
    tok = EventTokenizer(max_note_steps=10, max_shift_steps=8)
    state = tok.advance(
        tok.new_constraint_state(2), np.array([tok.event_id("NOTE_ON", 60), tok.event_id("TIME_SHIFT", 3)])
    )
    state = tok.advance(state, np.array([tok.event_id("TIME_SHIFT", 6), tok.event_id("TIME_SHIFT", 8)]))
    mask = tok.allowed(state)
    shifts = lambda row: [k for k in range(1, 9) if mask[row, tok.event_id("TIME_SHIFT", k)]]  # noqa: E731
    assert shifts(0) == [1, 2, 3, 4] and shifts(1) == list(range(1, 9))  # row 1 has nothing sounding
    assert mask[0, tok.event_id("NOTE_OFF", 60)]
    state = tok.advance(state, np.array([tok.event_id("TIME_SHIFT", 4), tok.event_id("NOTE_ON", 61)]))
    mask = tok.allowed(state)
    assert not mask[0, tok.shift.offset : tok.shift.offset + 8].any() and mask[0, tok.event_id("NOTE_OFF", 60)]
    assert tok.closing_ids(state, 0) == [tok.event_id("NOTE_OFF", 60)]  # no tail past the cap
    assert [tok.token_name(i) for i in tok.closing_ids(state, 1)] == ["TIME_SHIFT(8)", "NOTE_OFF(61)"]
