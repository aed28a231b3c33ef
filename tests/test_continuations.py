"""`generator evaluate --continuations`: prompts from held-out pieces, sampled continuations, statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import call, one_line_error
from generator.data.notes import Instrument, Note, NoteSequence
from generator.evaluation.continuations import excerpt, pitch_class_histogram, shifted_tempos
from generator.evaluation.features import beats_to_seconds, seconds_to_beats


def main(argv=None):
    from generator.cli.main import generator_main

    return generator_main(argv)


def song(rng, beats=24, tempos=((0.0, 100.0),)) -> NoteSequence:
    """A two-track song: a melody in eighths and half-note chords, under a tempo map."""
    tempos = list(tempos)
    notes = []
    for k in range(beats * 2):
        start, end = beats_to_seconds([k / 2, (k + 1) / 2], tempos)
        notes.append(Note(int(rng.choice([60, 62, 64, 65, 67, 69, 71, 72])), float(start), float(end), track=0))
    for k in range(0, beats, 2):
        start, end = beats_to_seconds([k, k + 2], tempos)
        for pitch in (48, 52, 55):
            notes.append(Note(pitch, float(start), float(end), program=33, track=1))
    notes.sort(key=lambda n: (n.start, n.pitch))
    return NoteSequence(
        notes=notes, tempos=tempos, instruments=[Instrument(0, False, "melody"), Instrument(33, False, "bass")]
    )


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    from generator.data.midi_io import write_midi

    folder = tmp_path_factory.mktemp("songs")
    rng = np.random.default_rng(0)
    write_midi(song(rng), folder / "a.mid")
    write_midi(song(rng, tempos=[(0.0, 90.0), (4.0, 140.0)]), folder / "b.mid")
    write_midi(song(rng, beats=3), folder / "short.mid")  # shorter than the prompt: skipped
    return folder


def test_tempo_map_round_trip_and_excerpts():
    tempos = [(0.0, 60.0), (2.0, 120.0)]
    beats = np.array([0.0, 1.0, 2.0, 3.0, 6.0])
    assert np.allclose(seconds_to_beats(beats_to_seconds(beats, tempos), tempos), beats)
    assert np.allclose(beats_to_seconds([2.0, 4.0], tempos), [2.0, 3.0])
    assert shifted_tempos(tempos, 2.5) == [(0.0, 120.0)] and shifted_tempos(tempos, 1.0) == [(0.0, 60.0), (1.0, 120.0)]
    seq = NoteSequence(notes=[Note(60, 0.0, 1.5), Note(64, 1.0, 3.0), Note(67, 2.5, 4.0)], tempos=tempos)
    part = excerpt(seq, 1.0, 3.0)
    assert [(n.pitch, n.start, n.end) for n in part.notes] == [(64, 0.0, 2.0), (67, 1.5, 2.0)]
    assert np.allclose(pitch_class_histogram(part)[[4, 7]], [0.5, 0.5])


def test_continuations_are_deterministic_for_the_same_seed(songs, music_run, capsys):
    argv = [
        "evaluate",
        "--checkpoint",
        str(music_run),
        "--corpus",
        str(songs),
        "--continuations",
        "2",
        "--prompt-beats",
        "4",
        "--continuation-beats",
        "4",
        "--random-seed",
        "7",
        "--json",
    ]
    code, first, err = call(main, argv, capsys)
    assert code == 0, err
    code, second, _ = call(main, argv, capsys)
    assert code == 0 and first == second
    result = json.loads(first)
    assert result["pieces"] == 2 and result["skipped"] == 1 and result["continuations_per_piece"] == 2
    assert result["real_pieces"] == 2 and result["generated_pieces"] == 4
    assert result["temperature"] == 1.0 and result["top_p"] is None and result["seed"] == 7
    assert result["merge_tracks"] is True  # an events model: both sets read as one stream
    assert result["invalid_events"] == 0 and result["tokens"] > 0  # the sampling constraint keeps events valid
    pc = result["prompt_consistency"]
    assert set(pc) == {"generated", "real", "shuffled"} and all(0 <= v <= 2 for v in pc.values())
    assert set(result["features"]["pitch_range"]) == {"real", "generated", "oa", "kld", "reference_oa", "reference_kld"}


def test_table_output_names_the_settings(songs, music_run, capsys):
    code, out, err = call(
        main,
        [
            "evaluate",
            "--checkpoint",
            str(music_run),
            "--corpus",
            str(songs),
            "--continuations",
            "1",
            "--prompt-beats",
            "4",
            "--continuation-beats",
            "2",
            "--top-p",
            "0.9",
        ],
        capsys,
    )
    assert code == 0, err
    assert "temperature 1, top-p 0.9" in out and "invalid events: 0" in out and "shuffled pairings" in out
    assert "skipped 1 of 3 pieces" in err


def test_voices_model_on_a_jsb_split(tmp_path, capsys):
    from generator.config import RunConfig
    from generator.models import build_model
    from generator.training.checkpoints import save_run
    from generator.data.tokenizers.voices import VoicesTokenizer

    tokenizer = VoicesTokenizer()
    config = RunConfig(
        modality="music", tokenizer="voices", layers=1, units=16, embedding=8, vocab_size=tokenizer.vocab_size
    )
    run = save_run(tmp_path / "voices", build_model(config), tokenizer, config)
    chords = [[72, 67, 64, 48], [72, 69, 65, 50], [71, 67, 62, 55], [72, 67, 64, 48]]
    grid = [row for chord in chords * 3 for row in [chord] * 4]
    corpus = tmp_path / "grids.json"
    corpus.write_text(json.dumps({"valid": [grid, grid[4:] + grid[:4]]}))
    argv = [
        "evaluate",
        "--checkpoint",
        str(run),
        "--corpus",
        str(corpus),
        "--split",
        "valid",
        "--continuations",
        "2",
        "--prompt-beats",
        "4",
        "--continuation-beats",
        "4",
        "--json",
    ]
    code, out, err = call(main, argv, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["pieces"] == 2 and result["merge_tracks"] is False
    assert result["features"]["voice_crossing"]["real"]["mean"] == 0.0
    assert result["features"]["voice_crossing"]["generated"] is not None
    code, _, err = call(main, argv[:5] + argv[7:], capsys)  # no --split for a JSON corpus
    one_line_error(code, err, "--split")


def test_missing_corpus_is_one_line(music_run, capsys):
    code, _, err = call(
        main, ["evaluate", "--checkpoint", str(music_run), "--corpus", "/no/such/dir", "--continuations", "2"], capsys
    )
    one_line_error(code, err, "/no/such/dir")


def test_continuation_flags_need_continuations(music_run, songs, capsys):
    code, _, err = call(
        main, ["evaluate", "--checkpoint", str(music_run), "--corpus", str(songs), "--prompt-beats", "4"], capsys
    )
    one_line_error(code, err, "--prompt-beats", "--continuations")
