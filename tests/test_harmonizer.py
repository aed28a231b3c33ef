"""The harmonizer: masked training windows, the pseudo-Gibbs sampler, generate-music --harmonize.

A tiny untrained harmonizer (1 layer of 16 units) stands in for the bundled one: every property
tested here (fixed cells, ranges, the melody kept, infill, errors, determinism) holds for any weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import call, one_line_error
from generator.cli.main import generate_music_main
from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.base import BOS
from generator.generation import harmonize as hz

MELODY = [
    (60, 0, 1),
    (62, 1, 2),
    (64, 2, 3),
    (64, 3, 4),
    (65, 4, 6),
    (67, 6, 8),
    (67, 8, 9),
    (65, 9, 9.5),
    (64, 9.5, 10),
    (62, 10, 12),
    (60, 12, 16),
]  # (pitch, start beat, end beat): repeated E and G kept apart


def melody_sequence(notes=MELODY, bpm=90.0, track_of=lambda i: 0, tracks=1) -> NoteSequence:
    beat = 60.0 / bpm
    return NoteSequence(
        notes=[Note(p, s * beat, e * beat, 80, 0, False, track_of(i)) for i, (p, s, e) in enumerate(notes)],
        tempos=[(0.0, bpm)],
        time_signature=(3, 4),
        instruments=[Instrument() for _ in range(tracks)],
    )


@pytest.fixture(scope="module")
def tiny_harmonizer(tmp_path_factory):
    import keras

    from generator.config import RunConfig
    from generator.data.tokenizers.voices import VoicesTokenizer
    from generator.models import build_model
    from generator.training.checkpoints import save_run

    keras.utils.set_random_seed(7)
    tokenizer = VoicesTokenizer()
    config = RunConfig(
        modality="music",
        tokenizer="voices",
        arch="harmonizer",
        layers=1,
        units=16,
        embedding=4,
        dropout=0.0,
        vocab_size=tokenizer.vocab_size,
    )
    return save_run(tmp_path_factory.mktemp("runs") / "harmonizer", build_model(config), tokenizer, config)


@pytest.fixture(scope="module")
def melody_mid(tmp_path_factory):
    from generator.data.midi_io import write_midi

    return write_midi(melody_sequence(), tmp_path_factory.mktemp("melody") / "melody.mid")


@pytest.fixture(scope="module")
def jsb_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    chorales = []
    for _ in range(3):
        steps = 64
        base = np.array([72, 64, 57, 48])
        grid = base + rng.integers(-3, 4, (steps // 4, 4)).repeat(4, axis=0)
        chorales.append(grid.tolist())
    path = tmp_path_factory.mktemp("jsb") / "tiny.json"
    path.write_text(json.dumps({"train": chorales, "valid": chorales[:1], "test": chorales[:1]}))
    return path


def read_grid(path):
    from generator.data.midi_io import read_midi
    from generator.data.tokenizers.voices import grid_from_note_sequence

    return grid_from_note_sequence(read_midi(path))


# -- training data ------------------------------------------------------------------------------------


def test_masked_windows_hide_cells_and_target_only_them():
    from generator.models.harmonizer import WindowSampler, mask_id

    vocab = 48
    docs = [np.arange(2, 2 + 4 * n) % 46 + 2 for n in (40, 30)]
    ids = np.concatenate([np.concatenate([[BOS], d]) for d in docs])
    sampler = WindowSampler(ids, 16, 4, seed=3, vocab_size=vocab)
    x, y = next(sampler.batches(0))
    rows = len(x)
    assert rows >= 2 and x.shape == (rows, 16 * 5) and y.shape == (rows, 16 * 4)
    cells = x.reshape(rows, 16, 5)[..., :4].reshape(rows, -1)
    hidden = cells == mask_id(vocab)
    assert hidden.any(axis=1).all()  # every window has something to predict
    assert ((y >= 0) == hidden).all()  # targets exactly at the hidden cells
    assert (y[hidden] != BOS).all() and (y[hidden] < vocab).all()
    again = next(WindowSampler(ids, 16, 4, seed=3, vocab_size=vocab).batches(0))
    assert (again[0] == x).all() and (again[1] == y).all()  # seeded: a resumed run sees the same batches


@pytest.mark.slow
def test_trainer_trains_and_resumes_a_harmonizer(tmp_path, jsb_file):
    """The project's trainer, interrupted after epoch 1 and resumed by the same call (about a minute)."""
    from conftest import interrupt_after_first_epoch
    from generator import api

    settings = dict(
        arch="harmonizer",
        tokenizer="voices",
        split="train",
        val_split="valid",
        layers=1,
        units=16,
        embedding=4,
        dropout=0.0,
        seq_len=16,
        batch_size=4,
        learning_rate=0.01,
        epochs=2,
    )
    with pytest.raises(KeyboardInterrupt):
        api.train(
            str(jsb_file),
            tmp_path / "run",
            modality="music",
            log=interrupt_after_first_epoch,
            progress=False,
            **settings,
        )
    assert (tmp_path / "run" / "resume.npz").exists()
    lines = []
    metrics = api.train(str(jsb_file), tmp_path / "run", modality="music", log=lines.append, progress=False, **settings)
    assert any(line.startswith("resuming") for line in lines)
    assert metrics["epochs_run"] == 2 and np.isfinite(metrics["val_loss_nats"])
    g = api.load(tmp_path / "run")  # safe_mode loading
    assert g.config.arch == "harmonizer"
    assert len(g.harmonize(np.repeat([67, 69, 71, 72], 4), iterations=2, random_seed=0).notes) > 4


# -- the sampler ------------------------------------------------------------------------------------------


def test_fixed_cells_never_change(tiny_harmonizer):
    from generator import api

    g = api.load(tiny_harmonizer)
    rng = np.random.default_rng(1)
    cells = rng.integers(1, g.tokenizer.vocab_size, (2, 24, 4))
    free = rng.random((24, 4)) < 0.5
    sampler = hz.GibbsSampler(g.run.model, g.tokenizer)
    seen = []
    out = sampler.sample(cells, free, 12, 1.5, rng, progress=lambda n: seen.append(n))
    assert seen == list(range(1, 13))
    assert (out[:, ~free] == cells[:, ~free]).all()
    assert (out[:, free] != BOS).all()


def test_schedules_anneal():
    assert hz.block_probability(0, 100) == 1.0
    probabilities = [hz.block_probability(n, 100) for n in range(1, 100)]
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[-1] == hz.BLOCK_MIN
    assert hz.temperature_at(0, 100, 0.8) == pytest.approx(0.8 * hz.START_TEMPERATURE)
    assert hz.temperature_at(99, 100, 0.8) == pytest.approx(0.8)


# -- the voice-leading rules ---------------------------------------------------------------------------------

FIFTHS = np.array([[[67, 64, 60, 48], [69, 65, 62, -1]]])  # G4/C3 then A4 over a free bass: D3 would be parallel


def test_voice_leading_rules_remove_parallels_crossing_and_wide_spacing():
    pitches = np.arange(36, 82)
    strict, relaxed = hz.voice_leading_rules(FIFTHS, np.array([0]), np.array([1]), 3, pitches)
    allowed = set(pitches[strict[0]])
    assert 50 not in allowed and 50 in set(pitches[relaxed[0]])  # D3: fifth with the soprano, octave with the tenor
    assert {41, 45, 53} <= allowed and not allowed & set(range(63, 82))  # F2, A2, F3 fine; nothing above the tenor
    # the next chord constrains too: an alto moving with the soprano into unisons is masked from both sides
    grid = np.array([[[72, 65, 64, 48], [74, -1, 64, 50], [76, 76, 64, 52]]])
    strict, relaxed = hz.voice_leading_rules(grid, np.array([0]), np.array([1]), 1, pitches)
    assert not strict[0, pitches == 67][0]  # F4 -> G4 under C5 -> D5: parallel fifths with the soprano
    assert not strict[0, pitches == 74][0] and relaxed[0, pitches == 74][0]  # D5 -> E5 against D5 -> E5: unisons
    assert strict[0, pitches == 71][0]
    assert set(pitches[relaxed[0]]) == set(range(64, 75))  # between the tenor and the soprano
    spaced = np.array([[[72, -1, 55, 48]]])  # alto within an octave of the soprano, tenor within one of the alto
    _, relaxed = hz.voice_leading_rules(spaced, np.array([0]), np.array([0]), 1, pitches)
    assert set(pitches[relaxed[0]]) == set(range(60, 68))


def stub_sampler(tiny_harmonizer, favourite, voice_leading=True):
    """A sampler whose model always prefers the pitch ``favourite`` (all else 20 nats below)."""
    from generator import api

    g = api.load(tiny_harmonizer)
    sampler = hz.GibbsSampler(g.run.model, g.tokenizer, voice_leading=voice_leading)
    favourite_id = favourite - g.tokenizer.low + 2

    def logits(cells):
        out = np.full(cells.shape + (g.tokenizer.vocab_size,), -20.0)
        out[..., favourite_id] = 0.0
        return out

    sampler.logits = logits
    return g, sampler


def test_sampler_mask_removes_a_parallel_fifth_and_can_be_turned_off(tiny_harmonizer):
    for voice_leading, expected in ((True, False), (False, True)):
        g, sampler = stub_sampler(tiny_harmonizer, 50, voice_leading)
        cells = np.asarray(g.tokenizer.ids_from_grid(FIFTHS[0]), np.int64).reshape(1, 2, 4)
        free = np.zeros((2, 4), bool)
        free[1, 3] = True
        out = sampler.sample(cells, free, 5, 1.0, np.random.default_rng(0))
        assert (out[0, ~free] == cells[0, ~free]).all()  # the rules only mask free cells
        bass = g.tokenizer.grid_from_ids(out[0].ravel())[1, 3]
        assert (bass == 50) == expected, (voice_leading, bass)


def test_rules_relax_parallels_first_when_nothing_else_is_left(tiny_harmonizer):
    # an alto between a soprano and a tenor a tone apart can only make parallel unisons with one of them:
    # the parallels give way, never the crossing
    grid = np.array([[64, 64, 52, 48], [69, -1, 68, 48]])
    pitches = np.arange(36, 82)
    strict, relaxed = hz.voice_leading_rules(grid[None], np.array([0]), np.array([1]), 1, pitches)
    assert not strict.any() and set(pitches[relaxed[0]]) == {68, 69}
    g, sampler = stub_sampler(tiny_harmonizer, 74)
    cells = np.asarray(g.tokenizer.ids_from_grid(grid), np.int64).reshape(1, 2, 4)
    free = np.zeros((2, 4), bool)
    free[1, 1] = True
    for seed in range(4):
        out = sampler.sample(cells, free, 3, 1.0, np.random.default_rng(seed))
        assert g.tokenizer.grid_from_ids(out[0].ravel())[1, 1] in (68, 69, -1)


# -- the command line --------------------------------------------------------------------------------------


def test_harmonize_a_melody_keeps_it_and_writes_four_voices_in_range(tiny_harmonizer, melody_mid, tmp_path, capsys):
    out = tmp_path / "chorale.mid"
    code, _, err = call(
        generate_music_main,
        [
            "--checkpoint",
            str(tiny_harmonizer),
            "--harmonize",
            str(melody_mid),
            "--output",
            str(out),
            "--iterations",
            "8",
            "--random-seed",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    from generator.data.midi_io import read_midi

    seq = read_midi(out)
    assert len({n.track for n in seq.notes}) == 4
    assert seq.initial_bpm == pytest.approx(90.0, rel=1e-4) and tuple(seq.time_signature) == (3, 4)
    grid = read_grid(out)
    for voice, (low, high) in enumerate(hz.VOICE_RANGES):
        sounding = grid[:, voice][grid[:, voice] >= 0]
        assert len(sounding) and sounding.min() >= low and sounding.max() <= high
    soprano = sorted(
        (n.pitch, round(n.start * 1.5 * 4), round(n.end * 1.5 * 4))
        for n in seq.notes
        if seq.instruments[n.track].name == "Soprano"
    )
    assert soprano == sorted((p, round(s * 4), round(e * 4)) for p, s, e in MELODY)  # note for note, repeats kept


def test_voice_leading_rules_on_by_default_and_off_with_the_flag(tiny_harmonizer, melody_mid, tmp_path, capsys):
    from generator.evaluation.features import voice_leading

    stats = {}
    for name, extra in (("rules", []), ("free", ["--no-voice-leading"])):
        out = tmp_path / f"{name}.mid"
        code, _, err = call(
            generate_music_main,
            [
                "--checkpoint",
                str(tiny_harmonizer),
                "--harmonize",
                str(melody_mid),
                "--output",
                str(out),
                "--iterations",
                "8",
                "--random-seed",
                "3",
                *extra,
            ],
            capsys,
        )
        assert code == 0, err
        stats[name] = voice_leading(read_grid(out))
    # the untrained model's voices cross at most chords; under the rules none does, none is spaced
    # wider than an octave and no two voices move in parallel fifths or octaves
    assert stats["rules"]["voice_crossing"] == 0 and stats["rules"]["spacing"] == 0
    assert stats["rules"]["parallel_fifths_octaves"] == 0
    assert stats["free"]["voice_crossing"] > 0.3 and stats["free"]["spacing"] > 0


def test_melody_out_of_range_is_moved_by_octaves_with_a_notice(tiny_harmonizer, tmp_path, capsys):
    from generator.data.midi_io import write_midi

    low = write_midi(melody_sequence([(p - 24, s, e) for p, s, e in MELODY]), tmp_path / "low.mid")
    code, _, err = call(
        generate_music_main,
        [
            "--checkpoint",
            str(tiny_harmonizer),
            "--harmonize",
            str(low),
            "--output",
            str(tmp_path / "o.mid"),
            "--iterations",
            "2",
        ],
        capsys,
    )
    assert code == 0 and "moved up 2 octaves" in err
    assert sorted(set(read_grid(tmp_path / "o.mid")[:, 0]) - {-1}) == sorted({p for p, _, _ in MELODY})


def test_folk_melody_from_music21_abc_harmonizes(tiny_harmonizer, tmp_path, capsys):
    music21 = pytest.importorskip("music21")
    from pathlib import Path

    book = Path(music21.__file__).parent / "corpus" / "essenFolksong" / "han1.abc"
    if not book.exists():
        pytest.skip("music21's Essen folksong corpus is not installed")
    text = book.read_text(encoding="latin-1")
    tunes = text.split("\nX:")
    (tmp_path / "folk.abc").write_text(
        tunes[0] if tunes[0].lstrip().startswith("X:") else "X:" + tunes[1], encoding="utf-8"
    )
    out = tmp_path / "folk.mid"
    code, _, err = call(
        generate_music_main,
        [
            "--checkpoint",
            str(tiny_harmonizer),
            "--harmonize",
            str(tmp_path / "folk.abc"),
            "--output",
            str(out),
            "--iterations",
            "4",
            "--random-seed",
            "1",
            "--render",
            "musicxml",
        ],
        capsys,
    )
    assert code == 0, err
    assert (tmp_path / "folk.musicxml").exists()
    assert (read_grid(out) >= 0).all(axis=1).mean() > 0.5


def test_infill_changes_nothing_outside_the_passage(tiny_harmonizer, jsb_file, tmp_path, capsys):
    from generator.data.chorales import read_jsb_json

    original = read_jsb_json(jsb_file, "valid")[0]
    out = tmp_path / "infill.mid"
    code, _, err = call(
        generate_music_main,
        [
            "--checkpoint",
            str(tiny_harmonizer),
            "--harmonize",
            str(jsb_file),
            "--split",
            "valid",
            "--index",
            "0",
            "--infill",
            "4-8",
            "--output",
            str(out),
            "--iterations",
            "6",
            "--random-seed",
            "2",
            "--temperature",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    grid = read_grid(out)
    assert grid.shape == original.shape
    outside = np.ones(len(grid), bool)
    outside[16:32] = False
    assert (grid[outside] == original[outside]).all()
    assert (grid[~outside] != original[~outside]).any()  # at temperature 3 the passage was rewritten

    chorale = tmp_path / "chorale.mid"  # a four-track MIDI chorale: only the tenor of beats 2-6 changes
    code, _, err = call(
        generate_music_main,
        [
            "--checkpoint",
            str(tiny_harmonizer),
            "--harmonize",
            str(out),
            "--infill",
            "2-6",
            "--voices",
            "tenor",
            "--output",
            str(chorale),
            "--iterations",
            "4",
        ],
        capsys,
    )
    assert code == 0, err
    again = read_grid(chorale)
    keep = np.ones(grid.shape, bool)
    keep[8:24, 2] = False
    assert (again[keep] == grid[keep]).all()


def test_same_seed_same_bytes(tiny_harmonizer, melody_mid, tmp_path, capsys):
    outputs = []
    for name in ("a.mid", "b.mid"):
        code, _, err = call(
            generate_music_main,
            [
                "--checkpoint",
                str(tiny_harmonizer),
                "--harmonize",
                str(melody_mid),
                "--output",
                str(tmp_path / name),
                "--iterations",
                "5",
                "--random-seed",
                "11",
                "--num-samples",
                "2",
            ],
            capsys,
        )
        assert code == 0, err
        outputs.append([(tmp_path / f"{name[0]}-{i}.mid").read_bytes() for i in (1, 2)])
    assert outputs[0] == outputs[1]
    assert outputs[0][0] != outputs[0][1]  # two samples, two harmonizations


def test_python_api_returns_music(tiny_harmonizer):
    from generator import api
    from generator.generation.compose import Music

    music = api.load(tiny_harmonizer).harmonize(melody_sequence(), iterations=3, random_seed=4)
    assert isinstance(music, Music) and len({n.track for n in music.notes}) == 4


def test_the_task_refuses_the_calls_it_does_not_serve(tiny_harmonizer, melody_mid, tmp_path, capsys):
    """The harmonizer's task says it is sampled by harmonize: generate, stream and evaluate refuse it
    in the library with the call to use, and generate-music without --harmonize names the flag."""
    from generator import api, models
    from generator.errors import GeneratorError
    from generator.models import tasks

    assert models.task("harmonizer") is tasks.HARMONIZER and models.task("lstm") is tasks.LANGUAGE_MODEL
    g = api.load(tiny_harmonizer)
    assert g.task is tasks.HARMONIZER and not g.decodes_left_to_right
    for call_it in (lambda: g.generate(length=4), lambda: g.stream([], 4)):
        with pytest.raises(
            GeneratorError, match="^harmonizer is a harmonizer model, not a music model: sample it with harmonize"
        ):
            call_it()
    code, _, err = call(
        generate_music_main, ["--checkpoint", str(tiny_harmonizer), "--output", str(tmp_path / "o.mid")], capsys
    )
    one_line_error(code, err, "is a harmonizer model", "--harmonize FILE")


def unsuitable_files(tmp_path):
    from generator.data.midi_io import write_midi

    chords = write_midi(melody_sequence([(60, 0, 2), (64, 1, 3), (67, 3, 4)]), tmp_path / "chords.mid")
    drums = NoteSequence(notes=[Note(36, 0.0, 0.5, 80, 0, True, 0)], instruments=[Instrument(0, True)])
    drums_only = write_midi(drums, tmp_path / "drums.mid")
    (tmp_path / "garbage.mid").write_bytes(b"not a midi file at all")
    (tmp_path / "empty.abc").write_text("")
    return [
        (chords, "more than one note at a time"),
        (drums_only, ""),
        (tmp_path / "garbage.mid", "garbage.mid"),
        (tmp_path / "empty.abc", "empty.abc"),
        (tmp_path / "missing.mid", "missing.mid"),
    ]


def test_broken_or_unsuitable_melodies_exit_2_with_one_line(tiny_harmonizer, melody_mid, jsb_file, tmp_path, capsys):
    for path, fragment in unsuitable_files(tmp_path):
        code, _, err = call(
            generate_music_main,
            ["--checkpoint", str(tiny_harmonizer), "--harmonize", str(path), "--output", str(tmp_path / "out.mid")],
            capsys,
        )
        one_line_error(code, err, fragment)
    bad_requests = [
        (["--harmonize", str(melody_mid), "--voices", "alto"], "--voices must also name tenor, bass"),
        (["--harmonize", str(melody_mid), "--voices", "soprano,alto,tenor,bass"], "the melody is the soprano"),
        (["--harmonize", str(melody_mid), "--voices", "descant"], "unknown voice"),
        (["--harmonize", str(melody_mid), "--infill", "1-2"], "four-voice"),
        (["--harmonize", str(jsb_file), "--split", "valid", "--index", "0", "--infill", "9-x"], "START-END"),
        (["--harmonize", str(jsb_file), "--split", "valid"], "--split and --index"),
        (["--harmonize", str(jsb_file), "--split", "valid", "--index", "5"], "not 5"),
        (["--harmonize", str(melody_mid), "--seed", str(melody_mid)], "--seed"),
        (["--infill", "1-2"], "only work with --harmonize"),
        (["--harmonize", str(melody_mid), "--checkpoint", "bach"], "not a harmonizer"),
    ]
    for argv, fragment in bad_requests:
        argv = (["--checkpoint", str(tiny_harmonizer)] if "--checkpoint" not in argv else []) + argv
        code, _, err = call(generate_music_main, argv + ["--output", str(tmp_path / "out.mid")], capsys)
        one_line_error(code, err, fragment)
    assert not (tmp_path / "out.mid").exists()


def test_bundled_harmonizer_loads_and_harmonizes():
    from generator import api
    from generator.training import checkpoints

    if "harmonizer" not in checkpoints.bundled_names():
        pytest.skip("no bundled harmonizer checkpoint")
    g = api.load("harmonizer")
    assert g.config.arch == "harmonizer" and g.run.metrics["val_loss_nats"] > 0
    assert (g.run.path / "model.keras").stat().st_size < 25 * 1024 * 1024
    assert not (g.run.path / "resume.npz").exists()
    melody = np.repeat([67, 67, 69, 71, 72, 71, 69, 67], 4)
    grid = g.tokenizer.grid_from_ids(g.tokenizer.encode(g.harmonize(melody, iterations=4, random_seed=0).sequence))
    assert (grid[:, 0] == melody).all() and (grid[:, 1:] >= 0).mean() > 0.9


def test_studio_catalogue_names_each_model_by_its_task():
    from generator.studio import session
    from generator.training import checkpoints

    if not {"harmonizer", "bach", "shakespeare"} <= set(checkpoints.bundled_names()):
        pytest.skip("the bundled checkpoints are not all here")
    kinds = {name: entry["kind"] for name, entry in session.catalogue().items()}
    assert (kinds["harmonizer"], kinds["bach"], kinds["shakespeare"]) == ("harmonizer", "music", "text")
