"""generate-music end to end with an untrained model: seeds, outputs, constraint, bad seeds."""

from pathlib import Path

import mido
import music21
import numpy as np
import pretty_midi
import pytest

from generator.cli.main import generate_music_main, run

TEST_MIDI = Path(music21.__file__).parent / "midi" / "testPrimitive"


def call(argv, capsys):
    code = run(generate_music_main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_continuation_is_readable_everywhere_and_follows_the_seed(tmp_path, capsys, music_run):
    seed = TEST_MIDI / "test05.mid"
    out = tmp_path / "out.mid"
    code, printed, err = call(
        [
            "--checkpoint",
            str(music_run),
            "--seed",
            str(seed),
            "--output",
            str(out),
            "--length",
            "300",
            "--random-seed",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    assert "wrote" in printed
    seed_pm = pretty_midi.PrettyMIDI(str(seed))
    seed_end = max(n.end for i in seed_pm.instruments for n in i.notes)
    pm = pretty_midi.PrettyMIDI(str(out))
    notes = [n for i in pm.instruments for n in i.notes]
    assert any(n.start >= seed_end - 1e-3 for n in notes), "no notes after the end of the seed"
    assert len(notes) > sum(len(i.notes) for i in seed_pm.instruments)
    mido.MidiFile(str(out))
    assert len(music21.converter.parse(str(out)).flatten().notes) > 0
    # the seed's tempo, time signature and programs carry over
    assert pm.get_tempo_changes()[1][0] == pytest.approx(seed_pm.get_tempo_changes()[1][0], rel=1e-3)
    if seed_pm.time_signature_changes:
        ts, seed_ts = pm.time_signature_changes[0], seed_pm.time_signature_changes[0]
        assert (ts.numerator, ts.denominator) == (seed_ts.numerator, seed_ts.denominator)
    assert {i.program for i in pm.instruments if not i.is_drum} <= {i.program for i in seed_pm.instruments} | {0}


def test_same_seed_same_bytes_and_continuation_only(tmp_path, capsys, music_run):
    seed = TEST_MIDI / "test01.mid"
    argv = ["--checkpoint", str(music_run), "--seed", str(seed), "--length", "200", "--random-seed", "11"]
    assert call(argv + ["--output", str(tmp_path / "a.mid")], capsys)[0] == 0
    assert call(argv + ["--output", str(tmp_path / "b.mid")], capsys)[0] == 0
    assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
    assert call(argv + ["--output", str(tmp_path / "c.mid"), "--continuation-only"], capsys)[0] == 0
    full = pretty_midi.PrettyMIDI(str(tmp_path / "a.mid"))
    only = pretty_midi.PrettyMIDI(str(tmp_path / "c.mid"))
    assert sum(len(i.notes) for i in only.instruments) < sum(len(i.notes) for i in full.instruments)


def test_num_samples_and_seconds_without_seed(tmp_path, capsys, music_run):
    out = tmp_path / "piece.mid"
    code, _, err = call(
        [
            "--checkpoint",
            str(music_run),
            "--output",
            str(out),
            "--num-samples",
            "3",
            "--seconds",
            "5",
            "--random-seed",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    for i in (1, 2, 3):
        pm = pretty_midi.PrettyMIDI(str(tmp_path / f"piece-{i}.mid"))
        assert 5 - 0.01 <= pm.get_end_time() <= 5 + 0.01  # each sample is cut at 5 s, not only the slowest


@pytest.mark.parametrize("name", ["score.musicxml", "tune.abc"])
def test_musicxml_and_abc_seeds(tmp_path, capsys, music_run, name):
    seed = tmp_path / name
    if name.endswith(".abc"):
        seed.write_text("X:1\nT:Test\nM:4/4\nL:1/8\nK:G\nGABc d2e2|d2B2 G4|]\n")
    else:
        music21.corpus.parse("bach/bwv66.6").write("musicxml", fp=str(seed))
    out = tmp_path / "out.mid"
    code, _, err = call(
        [
            "--checkpoint",
            str(music_run),
            "--seed",
            str(seed),
            "--output",
            str(out),
            "--length",
            "100",
            "--random-seed",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert len(pretty_midi.PrettyMIDI(str(out)).instruments) >= 1


@pytest.mark.parametrize("content", [b"", b"this is not a MIDI file at all", "truncated"])
def test_broken_seeds_exit_2_with_one_line(tmp_path, capsys, music_run, content):
    seed = tmp_path / "broken.mid"
    if content == "truncated":
        data = (TEST_MIDI / "test05.mid").read_bytes()
        content = data[: len(data) // 2]
    seed.write_bytes(content)
    out = tmp_path / "out.mid"
    code, _, err = call(["--checkpoint", str(music_run), "--seed", str(seed), "--output", str(out)], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "broken.mid" in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_existing_output_needs_force(tmp_path, capsys, music_run):
    out = tmp_path / "out.mid"
    out.write_bytes(b"keep me")
    code, _, err = call(["--checkpoint", str(music_run), "--output", str(out), "--length", "10"], capsys)
    assert code == 2 and "--force" in err and out.read_bytes() == b"keep me"


def test_a_thousand_samples_from_an_untrained_model_are_well_formed(music_run):
    """The sampler consults the tokenizer's constraint: zero invalid events, notes closed."""
    from generator import api

    g = api.load(music_run)
    stream = g.stream([], 120, num_samples=1000, temperature=1.5, random_seed=0)
    tokens = np.concatenate(list(stream), axis=1)
    state = stream.constraint_state
    tok = g.tokenizer
    invalid = [tok.count_invalid_events(list(row) + tok.closing_ids(state, i)) for i, row in enumerate(tokens)]
    assert len(invalid) == 1000 and sum(invalid) == 0
    notes = sum(len(tok.decode(list(row) + tok.closing_ids(state, i)).notes) for i, row in enumerate(tokens[:50]))
    assert notes > 0
