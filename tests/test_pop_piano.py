"""The pop-piano model and what it rests on: POP909's three-track files, the note-length cap under
real sampling, and continuations that keep a seed's melody over its accompaniment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from generator.cli.main import generate_music_main, music_parser, run
from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.events import EventTokenizer

REPO = Path(__file__).resolve().parent.parent
POP909 = REPO.parent / "shared" / "corpora" / "pop909"
POP_OPTIONS = dict(steps_per_beat=12, max_shift_steps=48, velocity_bins=8, tracks=2, transpose=6, stretch=0.0)

needs_pop909 = pytest.mark.skipif(not POP909.is_dir(), reason="../shared/corpora/pop909 is not here")
needs_bundled = pytest.mark.skipif(
    not (REPO / "checkpoints" / "pop-piano" / "model.keras").exists(), reason="the pop-piano checkpoint is not bundled"
)


def _call(argv, capsys):
    code = run(generate_music_main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def pop_seed(bpm: float = 96.0, bars: int = 4, programs=(73, 0)) -> NoteSequence:
    """A pop-like seed: a melody (quarter and eighth notes) over block chords, one bar each, in 3/4."""
    beat = 60.0 / bpm
    chords = [(48, 55, 64), (45, 52, 60), (41, 53, 57), (43, 50, 59)]
    tune = [76, 79, 81, 79, 76, 74, 72, 74, 76, 72, 71, 72]
    notes = []
    for bar in range(bars):
        start = bar * 3 * beat
        notes += [Note(p, start, start + 3 * beat, 56, programs[1], False, 1) for p in chords[bar % 4]]
        for i in range(3):
            notes.append(
                Note(
                    tune[(bar * 3 + i) % len(tune)],
                    start + i * beat,
                    start + (i + 0.9) * beat,
                    92,
                    programs[0],
                    False,
                    0,
                )
            )
    notes.sort(key=lambda n: (n.start, n.pitch))
    return NoteSequence(
        notes=notes,
        tempos=[(0.0, bpm)],
        time_signature=(3, 4),
        instruments=[Instrument(programs[0], name="melody"), Instrument(programs[1], name="chords")],
    )


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory) -> Path:
    """An untrained model with the pop-piano tokenizer (capped at 2 beats) saved as a run directory."""
    from generator.config import RunConfig
    from generator.models import build_model
    from generator.training.checkpoints import save_run

    tokenizer = EventTokenizer(**POP_OPTIONS, max_note_steps=24)
    config = RunConfig(
        modality="music", tokenizer="events", layers=1, units=16, embedding=8, vocab_size=tokenizer.vocab_size
    )
    return save_run(tmp_path_factory.mktemp("runs") / "pop", build_model(config), tokenizer, config)


# -- the corpus ---------------------------------------------------------------------------------
@needs_pop909
def test_pop909_three_track_files_are_read_and_keep_their_melody(tmp_path):
    from generator.data import corpora

    files = sorted(POP909.glob("*.mid"))
    assert len(files) >= 800
    for f in files[:2]:
        (tmp_path / f.name).symlink_to(f)
    documents = corpora.open_music(tmp_path).documents()
    assert len(documents) == 2
    tok = EventTokenizer(**POP_OPTIONS)
    for seq in documents:
        assert [i.name for i in seq.instruments] == ["MELODY", "BRIDGE", "PIANO"]
        assert set(Counter(n.track for n in seq.notes)) == {0, 1, 2}
        assert tok.slots(seq) == {0: 0, 1: 1, 2: 1}
        ids = tok.encode(seq)
        assert tok.count_invalid_events(ids) == 0 and not any(tok.last_dropped.values())
        decoded = tok.decode(ids)
        melody = [n for n in decoded.notes if n.track == 0]
        # the melody comes back as the melody (a unison shared with the accompaniment may merge)
        assert len(melody) >= 0.95 * sum(n.track == 0 for n in seq.notes)
        assert Counter(n.pitch for n in melody) <= Counter(n.pitch for n in seq.notes if n.track == 0)
        assert sum(n.track == 1 for n in decoded.notes) > len(melody)


# -- the note-length cap under real sampling ----------------------------------------------------------
def test_longest_note_cap_holds_on_1000_sampled_sequences_from_an_untrained_model(pop_run):
    from generator import api

    g = api.load(pop_run)
    tok = g.tokenizer
    assert tok.max_note_steps == 24

    def longest(tokenizer):
        stream = g.stream([], 150, num_samples=1000, temperature=1.5, random_seed=0, tokenizer=tokenizer)
        tokens = np.concatenate(list(stream), axis=1)
        state = stream.constraint_state
        rows = [list(row) + tokenizer.closing_ids(state, i) for i, row in enumerate(tokens)]
        assert sum(tok.count_invalid_events(row) for row in rows) == 0
        return [tok.longest_note(row) for row in rows]

    capped = longest(tok)
    assert len(capped) == 1000 and max(capped) <= 24
    assert max(longest(tok.without_note_limit())) > 24  # the same model holds notes longer without it


# -- continuations ------------------------------------------------------------------------------
def _continuation(path: Path, seed_end: float) -> list[tuple[int, pretty_midi.Note]]:
    pm = pretty_midi.PrettyMIDI(str(path))
    return [(inst.program, n) for inst in pm.instruments for n in inst.notes if n.start >= seed_end - 1e-3]


def test_continuation_keeps_the_seeds_tracks_tempo_metre_and_programs(tmp_path, capsys, pop_run):
    from generator.data.midi_io import write_midi

    seed_path = write_midi(pop_seed(), tmp_path / "seed.mid")
    seed_end = pop_seed().end_time
    out = tmp_path / "out.mid"
    code, printed, err = _call(
        [
            "--checkpoint",
            str(pop_run),
            "--seed",
            str(seed_path),
            "--output",
            str(out),
            "--seconds",
            "6",
            "--random-seed",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    pm = pretty_midi.PrettyMIDI(str(out))
    assert pm.get_tempo_changes()[1][0] == pytest.approx(96.0, rel=1e-3)
    ts = pm.time_signature_changes[0]
    assert (ts.numerator, ts.denominator) == (3, 4)
    programs = Counter(program for program, _ in _continuation(out, seed_end))
    assert set(programs) == {73, 0}  # melody and accompaniment both go on, each on its own track
    assert max(n.end - n.start for _, n in _continuation(out, seed_end)) <= 24 * 60 / (96 * 12) + 1e-3


def three_track_seed() -> NoteSequence:
    """POP909's layout with the melody second: a sparse bridge line first, the melody, a busy piano part."""
    seq = pop_seed(programs=(73, 0))
    melody = [Note(n.pitch, n.start, n.end, n.velocity, 73, False, 1) for n in seq.notes if n.track == 0]
    piano = [Note(n.pitch, n.start, n.end, n.velocity, 1, False, 2) for n in seq.notes if n.track == 1]
    bridge = [Note(67, 0.0, 1.0, 60, 40, False, 0)]
    return NoteSequence(
        notes=sorted(bridge + melody + piano, key=lambda n: (n.start, n.pitch)),
        tempos=seq.tempos,
        time_signature=seq.time_signature,
        instruments=[Instrument(40, name="BRIDGE"), Instrument(73, name="MELODY"), Instrument(1, name="PIANO")],
    )


def test_slots_map_back_to_the_seed_tracks_they_came_from():
    tok = EventTokenizer(**POP_OPTIONS)
    assert tok.slots(three_track_seed()) == {0: 1, 1: 0, 2: 1}
    assert tok.slot_tracks(three_track_seed()) == {0: [1], 1: [0, 2]}  # bridge and piano share the accompaniment
    assert tok.slot_tracks(NoteSequence(notes=[Note(60, 0.0, 1.0, 80, 0, False, 0)])) == {1: [0]}


def test_continuation_of_a_three_track_seed_keeps_melody_on_melody_and_accompaniment_on_piano(
    tmp_path, capsys, pop_run
):
    from generator.data.midi_io import write_midi

    seed = three_track_seed()
    seed_path = write_midi(seed, tmp_path / "seed.mid")
    out = tmp_path / "out.mid"
    code, _, err = _call(
        [
            "--checkpoint",
            str(pop_run),
            "--seed",
            str(seed_path),
            "--output",
            str(out),
            "--seconds",
            "6",
            "--random-seed",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    continuation = _continuation(out, seed.end_time)
    programs = Counter(program for program, _ in continuation)
    assert programs[73] > 0 and programs[1] > 0, programs  # melody slot -> MELODY, accompaniment -> PIANO
    # the accompaniment slot is shared by BRIDGE (one note, 67) and PIANO: each note goes to the nearer register
    piano = np.median([n.pitch for n in seed.notes if n.track == 2])
    assert all(abs(n.pitch - 67) <= abs(n.pitch - piano) for program, n in continuation if program == 40)


def test_generate_music_defaults_to_pop_piano_and_has_a_flag_to_lift_the_cap():
    args = music_parser().parse_args([])
    assert args.checkpoint is None and args.note_limit is None  # chosen from the seed; pop-piano without one
    assert music_parser().parse_args(["--no-note-limit"]).note_limit is False


@needs_bundled
def test_bundled_pop_piano_continues_a_melody_over_chords(tmp_path):
    import generator

    model = generator.load("pop-piano")
    assert model.run.metrics["complete"] and model.run.metrics["stopped_early"]  # trained to early stopping
    assert (model.run.path / "model.keras").stat().st_size < 25 * 1024 * 1024
    assert not (model.run.path / "resume.npz").exists()
    tok = model.tokenizer
    assert tok.tracks == 2 and tok.steps_per_beat == 12 and tok.max_note_steps is not None
    seed = pop_seed()
    piece = model.generate(seed=seed, seconds=12, random_seed=7, temperature=0.9, continuation_only=True)
    tracks = Counter(n.track for n in piece.notes)
    assert tracks[0] > 0 and tracks[1] > 0, tracks
    melody = np.mean([n.pitch for n in piece.notes if n.track == 0])
    accompaniment = np.mean([n.pitch for n in piece.notes if n.track == 1])
    assert melody > accompaniment  # the melody stays over its accompaniment
    limit = tok.max_note_steps * 60.0 / (seed.initial_bpm * tok.steps_per_beat)
    assert max(n.end - n.start for n in piece.notes) <= limit + 1e-3
    for name in ("bach", "jsb-chorales"):
        assert generator.load(name).config.modality == "music"


def test_a_checkpoints_recommended_top_p_is_the_default_and_1_samples_every_token(tmp_path):
    from generator.api import Generator
    from generator.config import RunConfig
    from generator.generation import sampling
    from generator.models import build_model
    from generator.training.checkpoints import load_run, save_run

    tokenizer = EventTokenizer(**POP_OPTIONS)
    config = RunConfig(
        modality="music",
        tokenizer="events",
        layers=1,
        units=16,
        embedding=8,
        vocab_size=tokenizer.vocab_size,
        extra={"top_p": 0.5},
    )
    model = Generator(load_run(save_run(tmp_path / "run", build_model(config), tokenizer, config)))
    assert (model.top_p(), model.top_p(0.8), model.top_p(1.0)) == (0.5, 0.8, None)
    stream = model.stream([], 4, random_seed=0)
    next(stream)
    assert isinstance(stream.loop.sampler, sampling.TopPSampler) and stream.loop.sampler.p == 0.5
    stream = model.stream([], 4, random_seed=0, top_p=1.0)
    next(stream)
    assert type(stream.loop.sampler) is sampling.Sampler  # every token may be sampled
    assert model.options(model.options(top_p=1.0)).top_p == 1.0  # filling in twice keeps "every token"
    piece = model.generate(seed=pop_seed(), length=40, random_seed=0)
    assert model.options().top_p == 0.5 and piece.notes


def test_bundled_pop_piano_recommends_the_nucleus_measured_in_the_readme():
    import json

    config = json.loads((REPO / "checkpoints" / "pop-piano" / "config.json").read_text())
    assert config["extra"]["top_p"] == 0.9
