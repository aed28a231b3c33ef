"""Music statistics: features with known answers, OA/KLD, and the `generator music-stats` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SHARED, call, one_line_error
from generator.data.notes import Instrument, Note, NoteSequence
from generator.evaluation.compare import compare_sets, overlap_and_kld
from generator.evaluation.features import FEATURES, VOICE_FEATURES, parallel_counts, piece_features

JSB = SHARED / "corpora" / "jsb-chorales" / "Jsb16thSeparated.train-valid.json"


def melody(pitches, beat_seconds=0.5, bpm=120.0) -> NoteSequence:
    return NoteSequence(
        notes=[Note(p, i * beat_seconds, (i + 1) * beat_seconds) for i, p in enumerate(pitches)], tempos=[(0.0, bpm)]
    )


def random_grid(rng, steps=128) -> np.ndarray:
    """Four voices of random pitches, a new pitch every 1-8 steps."""
    grid = np.zeros((steps, 4), dtype=np.int64)
    for voice in range(4):
        step = 0
        while step < steps:
            length = int(rng.integers(1, 9))
            grid[step : step + length, voice] = rng.integers(36, 82)
            step += length
    return grid


def main(argv=None):
    from generator.cli.main import generator_main

    return generator_main(argv)


# -- features -------------------------------------------------------------------------------------
def test_c_major_scale_has_scale_consistency_one():
    f = piece_features(melody([60, 62, 64, 65, 67, 69, 71, 72]))
    assert f["scale_consistency"] == 1.0
    assert f["pitch_range"] == 12 and f["distinct_pitches"] == 8 and f["polyphony"] == 1.0
    assert f["notes_per_beat"] == 1.0 and f["mean_ioi"] == 1.0 and f["empty_beat_rate"] == 0.0
    assert f["pitch_class_entropy"] == pytest.approx(-(6 * (1 / 8) * np.log2(1 / 8) + (2 / 8) * np.log2(2 / 8)))
    assert f["mean_abs_interval"] == pytest.approx(12 / 7)
    assert all(f[name] is None for name in VOICE_FEATURES)  # a melody has no four voices


def test_a_chromatic_cluster_is_less_scale_consistent():
    assert piece_features(melody(range(60, 72)))["scale_consistency"] == pytest.approx(7 / 12)


def test_rhythm_is_counted_on_the_beat_grid_whatever_the_tempo():
    # The same quarter notes at 60 and 150 bpm, with a slight human timing jitter: same rhythm features.
    slow = piece_features(melody([60, 62, 64, 65] * 4, beat_seconds=1.0, bpm=60))
    fast = NoteSequence(
        notes=[Note(60, i * 0.4 + 0.01 * (i % 2), (i + 1) * 0.4) for i in range(16)], tempos=[(0.0, 150.0)]
    )
    fast_f = piece_features(fast)
    for name in ("notes_per_beat", "mean_ioi", "groove_consistency", "empty_beat_rate"):
        assert slow[name] == fast_f[name], name
    assert slow["groove_consistency"] == 1.0


def test_one_parallel_fifth_counts_one():
    # C5 G4 E4 C3 -> C5 A4 F4 D3: alto and bass move up a tone from a twelfth to a twelfth.
    grid = np.repeat(np.array([[72, 67, 64, 48], [72, 69, 65, 50]]), 4, axis=0)
    assert parallel_counts(grid) == (1, 0, 1)
    f = piece_features(grid)
    assert f["parallel_fifths"] == 1.0 and f["parallel_octaves"] == 0.0 and f["parallel_fifths_octaves"] == 1.0
    assert f["voice_crossing"] == 0.0 and f["spacing"] == 0.0


@pytest.mark.parametrize(
    "second, expected",
    [
        ([72, 69, 64, 46], (0, 0, 1)),  # alto up, bass down: contrary motion into the fifth is not parallel
        ([72, 67, 65, 50], (0, 0, 1)),  # the alto holds: oblique motion
        ([74, 69, 65, 50], (1, 1, 1)),  # soprano and bass in octaves (two octaves) as well
    ],
)
def test_only_similar_motion_between_perfect_intervals_counts(second, expected):
    grid = np.array([[72, 67, 64, 48], second])
    assert parallel_counts(grid) == expected


def test_crossing_spacing_and_range_shares_per_chord():
    grid = np.array([[72, 67, 64, 48], [72, 74, 64, 48], [79, 62, 60, 48], [72, 67, 64, 30]])
    f = piece_features(grid)
    assert f["voice_crossing"] == 0.25 and f["spacing"] == 0.25 and f["out_of_range"] == 0.25


def test_four_tracks_are_four_voices():
    parts = [[72, 74], [67, 69], [64, 65], [48, 50]]
    notes = [Note(p, i * 1.0, (i + 1) * 1.0, track=t) for t, line in enumerate(parts) for i, p in enumerate(line)]
    seq = NoteSequence(notes=notes, instruments=[Instrument(name=n) for n in ("S", "A", "T", "B")])
    assert piece_features(seq)["parallel_fifths"] == 1.0
    merged = piece_features(seq, merge_tracks=True)
    assert merged["parallel_fifths"] == 1.0 and merged["voice_crossing"] is None  # pitch order: never crosses


# -- OA and KLD -----------------------------------------------------------------------------------
def test_a_set_compared_with_itself_has_oa_one_and_kld_zero():
    rng = np.random.default_rng(0)
    pieces = [random_grid(rng) for _ in range(12)]
    result = compare_sets(pieces, pieces)
    for name, f in result["features"].items():
        assert f["oa"] == 1.0 and f["kld"] == 0.0, name


def test_overlap_of_shifted_distributions_falls():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=300), rng.normal(size=300)
    intra = np.abs(x[:, None] - x[None, :])[np.triu_indices(300, 1)]
    same_oa, same_kld = overlap_and_kld(intra, np.abs(x[:, None] - y[None, :]).ravel())
    far_oa, far_kld = overlap_and_kld(intra, np.abs(x[:, None] - (y + 3)[None, :]).ravel())
    assert same_oa > 0.95 and same_kld < 0.02
    assert far_oa < 0.5 and far_kld > 0.5


@pytest.mark.skipif(not JSB.exists(), reason="needs the JSB Chorales corpus in shared/corpora")
def test_random_notes_against_bach_chorales_score_well_below_the_reference():
    from generator.data.chorales import read_jsb_json

    bach = read_jsb_json(JSB, "valid")
    rng = np.random.default_rng(2)
    noise = [random_grid(rng, steps=int(rng.integers(128, 320))) for _ in range(50)]
    result = compare_sets(bach, noise)
    assert 0.85 < result["mean_reference_oa"] < 0.99
    assert result["mean_oa"] < result["mean_reference_oa"] - 0.3
    assert result["features"]["scale_consistency"]["oa"] < 0.2


# -- the command ----------------------------------------------------------------------------------
def write_set(folder, pieces):
    from generator.data.midi_io import write_midi

    folder.mkdir()
    for i, seq in enumerate(pieces):
        write_midi(seq, folder / f"piece{i}.mid")
    return folder


@pytest.fixture
def two_sets(tmp_path):
    rng = np.random.default_rng(3)
    real = write_set(tmp_path / "real", [melody(60 + rng.choice([0, 2, 4, 5, 7, 9, 11, 12], 24)) for _ in range(3)])
    generated = write_set(tmp_path / "generated", [melody(rng.integers(48, 84, 24)) for _ in range(3)])
    return real, generated


def test_json_keys_are_stable(two_sets, capsys):
    real, generated = two_sets
    code, out, err = call(main, ["music-stats", str(real), str(generated), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {
        "real_pieces",
        "generated_pieces",
        "features",
        "mean_oa",
        "mean_reference_oa",
        "real",
        "generated",
    }
    assert result["real_pieces"] == 3 and result["generated_pieces"] == 3
    assert list(result["features"]) == list(FEATURES)
    for name, f in result["features"].items():
        assert set(f) == {"real", "generated", "oa", "kld", "reference_oa", "reference_kld"}, name
    assert set(result["features"]["pitch_range"]["real"]) == {"mean", "sd", "pieces"}
    assert result["features"]["parallel_fifths"]["real"] is None  # melodies: no four voices
    assert result["features"]["parallel_fifths"]["oa"] is None
    assert result["features"]["scale_consistency"]["real"]["mean"] == 1.0


def test_table_and_plot(two_sets, tmp_path, capsys):
    real, generated = two_sets
    plot = tmp_path / "stats.png"
    code, out, err = call(main, ["music-stats", str(real), str(generated), "--plot", str(plot)], capsys)
    assert code == 0, err
    assert "scale_consistency" in out and "ref OA" in out and "parallel_fifths" not in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = call(main, ["music-stats", str(real), str(generated), "--plot", str(plot)], capsys)
    one_line_error(code, err, "--force")


def test_unreadable_files_are_reported_and_skipped(two_sets, capsys):
    real, generated = two_sets
    (real / "piece2.mid").unlink()  # three files in all: read in this process, not a pool
    (real / "broken.mid").write_bytes(b"this is not MIDI")
    code, out, err = call(main, ["music-stats", str(real), str(generated), "--json"], capsys)
    assert code == 0, err
    assert "broken.mid" in err and "skipped 1 of 3 files" in err and json.loads(out)["real_pieces"] == 2


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["music-stats", "/no/such/folder", "/no/such/other"], "not found"),
        (["music-stats", "{json}", "{json}"], "--split"),
        (["music-stats", "{real}", "{real}", "--plot", "stats.txt"], ".png"),
    ],
)
def test_bad_input_is_one_line_and_status_2(argv, fragment, two_sets, tmp_path, capsys):
    real, _ = two_sets
    corpus = tmp_path / "grids.json"
    corpus.write_text(json.dumps({"valid": [[[72, 67, 64, 48]] * 8]}))
    argv = [a.format(json=corpus, real=real) for a in argv]
    code, _, err = call(main, argv, capsys)
    one_line_error(code, err, fragment)


def test_jsb_json_split_is_a_set(tmp_path, capsys):
    rng = np.random.default_rng(4)
    corpus = tmp_path / "grids.json"
    corpus.write_text(
        json.dumps(
            {
                "valid": [random_grid(rng, 64).tolist() for _ in range(4)],
                "test": [random_grid(rng, 64).tolist() for _ in range(4)],
            }
        )
    )
    code, out, err = call(
        main,
        ["music-stats", str(corpus), str(corpus), "--real-split", "valid", "--generated-split", "test", "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["real_pieces"] == 4 and result["features"]["voice_crossing"]["generated"]["pieces"] == 4
