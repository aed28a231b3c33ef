"""Rendering MIDI to WAV, piano-roll PNG and MusicXML: API, `generator render`, `generate-music --render`."""

import base64
import io
import re
import shutil
import sys
import wave
from pathlib import Path

import music21
import pytest

from generator.generation import render as rendering
from generator.cli.main import generate_music_main, generator_main, run
from tests.conftest import one_line_error

TEST_MIDI = Path(music21.__file__).parent / "midi" / "testPrimitive"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def midi(tmp_path):
    path = tmp_path / "song.mid"
    shutil.copy(TEST_MIDI / "test05.mid", path)
    return path


@pytest.fixture
def no_fluidsynth(tmp_path, monkeypatch):
    """A PATH without fluidsynth, whatever this machine has installed."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture
def fake_fluidsynth(tmp_path, monkeypatch):
    """A `fluidsynth` program that writes a one-second WAV to its -F argument and logs its arguments."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    script = folder / "fluidsynth"
    script.write_text(f"""#!{sys.executable}
import sys, wave
args = sys.argv[1:]
open(sys.argv[0] + ".args", "w").write("\\n".join(args))
if "FAIL" in " ".join(args):
    sys.exit("fluidsynth: error: cannot load the SoundFont")
with wave.open(args[args.index("-F") + 1], "wb") as out:
    out.setnchannels(2); out.setsampwidth(2); out.setframerate(44100); out.writeframes(bytes(4 * 44100))
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    font = tmp_path / "font.sf2"
    font.write_bytes(b"RIFF fake soundfont")
    return script, font


def read_wav(path):
    with wave.open(str(path), "rb") as f:
        return f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()


def test_render_writes_wav_png_and_musicxml_beside_the_midi(midi, no_fluidsynth):
    messages = []
    files = rendering.render(midi, log=messages.append)
    assert files == {
        "wav": midi.with_suffix(".wav"),
        "png": midi.with_suffix(".png"),
        "musicxml": midi.with_suffix(".musicxml"),
    }
    channels, width, rate, frames = read_wav(files["wav"])
    assert (channels, width, rate) == (1, 2, rendering.SINE_RATE) and frames > rate * 5  # the piece lasts ~7 s
    assert files["png"].read_bytes().startswith(PNG_MAGIC)

    def pitches(path):  # ties may split a note in two, so compare the pitches that sound
        return {p.midi for n in music21.converter.parse(str(path)).flatten().notes for p in n.pitches}

    assert pitches(files["musicxml"]) == pitches(midi) and len(pitches(midi)) > 3
    assert "pretty_midi" in messages[0] and "FluidSynth is not installed" in messages[0]
    assert not [p for p in midi.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_fluidsynth_is_used_with_a_soundfont_and_said_so(midi, fake_fluidsynth):
    script, font = fake_fluidsynth
    messages = []
    files = rendering.render(midi, ["wav"], soundfont=font, log=messages.append)
    assert list(files) == ["wav"] and read_wav(files["wav"]) == (2, 2, 44100, 44100)
    assert "FluidSynth" in messages[0] and str(font) in messages[0]
    args = Path(str(script) + ".args").read_text().splitlines()
    assert str(font) in args and args[-1].endswith(".mid")


def test_failing_fluidsynth_or_no_soundfont_falls_back_to_pretty_midi(midi, fake_fluidsynth, monkeypatch, tmp_path):
    _, font = fake_fluidsynth
    broken = tmp_path / "FAIL.sf2"
    broken.write_bytes(b"x")
    messages = []
    rendering.render(midi, ["wav"], soundfont=broken, log=messages.append)
    assert "pretty_midi" in messages[0] and "cannot load the SoundFont" in messages[0]
    assert read_wav(midi.with_suffix(".wav"))[2] == rendering.SINE_RATE
    monkeypatch.setattr(rendering, "SOUNDFONT_LOCATIONS", ())
    rendering.render(midi, ["wav"], log=messages.append, force=True)
    assert "pretty_midi" in messages[1] and "--soundfont" in messages[1]


def test_generator_render_refuses_to_overwrite_without_force(midi, no_fluidsynth, capsys):
    midi.with_suffix(".png").write_bytes(b"keep me")
    code = run(generator_main, ["render", str(midi), "--formats", "wav,png"])
    one_line_error(code, capsys.readouterr().err, "song.png", "--force")
    assert midi.with_suffix(".png").read_bytes() == b"keep me" and not midi.with_suffix(".wav").exists()
    assert run(generator_main, ["render", str(midi), "--formats", "png,wav", "--force"]) == 0
    out = capsys.readouterr().out
    assert midi.with_suffix(".png").read_bytes().startswith(PNG_MAGIC) and "pretty_midi" in out
    assert not midi.with_suffix(".musicxml").exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--formats", "wav,mp3"], "mp3"),
        (["--formats", ","], "choose among"),
        (["--soundfont", "missing.sf2"], "missing.sf2"),
    ],
)
def test_generator_render_bad_flags_exit_2(midi, capsys, argv, fragment):
    code = run(generator_main, ["render", str(midi), *argv])
    one_line_error(code, capsys.readouterr().err, fragment)
    assert [p.name for p in midi.parent.iterdir()] == ["song.mid"]


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("nothing.mid", None, "not found"),
        ("broken.mid", b"MThd this is not MIDI", "broken.mid"),
        ("score.xml", b"<score/>", "MIDI files"),
    ],
)
def test_generator_render_bad_files_exit_2(tmp_path, capsys, name, content, fragment):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code = run(generator_main, ["render", str(path)])
    one_line_error(code, capsys.readouterr().err, fragment)
    assert not path.with_suffix(".png").exists()


def test_generate_music_renders_beside_each_output(music_run, tmp_path, no_fluidsynth, capsys):
    out = tmp_path / "piece.mid"
    code = run(
        generate_music_main,
        [
            "--checkpoint",
            str(music_run),
            "--output",
            str(out),
            "--length",
            "150",
            "--random-seed",
            "1",
            "--num-samples",
            "2",
            "--render",
            "wav,png",
        ],
    )
    printed, err = capsys.readouterr()
    assert code == 0, err
    for i in (1, 2):
        assert read_wav(tmp_path / f"piece-{i}.wav")[3] > 0
        assert (tmp_path / f"piece-{i}.png").read_bytes().startswith(PNG_MAGIC)
    assert printed.count("pretty_midi sine-wave synthesis") == 2 and not list(tmp_path.glob("*.musicxml"))


def test_generate_music_checks_rendered_files_before_generating(music_run, tmp_path, capsys):
    out = tmp_path / "piece.mid"
    out.with_suffix(".musicxml").write_text("keep me")
    code = run(
        generate_music_main,
        ["--checkpoint", str(music_run), "--output", str(out), "--length", "20", "--render", "musicxml"],
    )
    one_line_error(code, capsys.readouterr().err, "piece.musicxml", "--force")
    assert not out.exists()
    code = run(generate_music_main, ["--checkpoint", str(music_run), "--output", str(out), "--render", "flac"])
    one_line_error(code, capsys.readouterr().err, "flac")


def test_music_results_save_convert_and_show_in_a_notebook(music_run, tmp_path):
    from generator import api

    piece = api.load(music_run).generate(seed=str(TEST_MIDI / "test05.mid"), temperature=0.9, length=120, random_seed=5)
    assert piece.save(tmp_path / "out.mid").exists()
    assert piece.to_pretty_midi().instruments and len(piece.to_music21().flatten().notes) > 0
    page = piece._repr_html_()
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    audio = base64.b64decode(re.search(r'<audio controls src="data:audio/wav;base64,([^"]+)"', page).group(1))
    assert png.startswith(PNG_MAGIC)
    with wave.open(io.BytesIO(audio)) as f:
        assert f.getframerate() == rendering.NOTEBOOK_RATE and f.getnframes() > 0
    assert "generated music starts at" in page
