"""MIDI -> WAV audio, piano-roll PNG and MusicXML, written beside the MIDI file.

    >>> from generator.generation.render import render
    >>> render("out.mid")                        # out.wav, out.png, out.musicxml
    {'wav': PosixPath('out.wav'), 'png': PosixPath('out.png'), 'musicxml': PosixPath('out.musicxml')}
    >>> render("out.mid", ["wav"], soundfont="FluidR3_GM.sf2", force=True)

Audio comes from FluidSynth (the ``fluidsynth`` program) when it is installed and a SoundFont
is given or found in a usual place; otherwise from pretty_midi's own synthesis (one sine wave
per note: enough to hear the notes, nothing like an instrument). Every file is written under
a temporary name and renamed into place; existing files are kept unless ``force``. The MIDI
file is read through ``midi_io`` (hardened against hostile files) before anything else
touches it. ``notebook_html`` is the rich notebook view of a ``compose.Music``. No TensorFlow.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from generator.errors import ArgumentError, GeneratorError

FORMATS = ("wav", "png", "musicxml")
SUFFIXES = {"wav": ".wav", "png": ".png", "musicxml": ".musicxml"}
SAMPLE_RATE = 44100  # FluidSynth output
SINE_RATE = 22050  # pretty_midi's sine waves need no more
MAX_SYNTH_SECONDS = 3600.0  # longer audio would take gigabytes of memory
NOTEBOOK_RATE = 8000  # the notebook player's preview: small enough to embed
NOTEBOOK_SECONDS = 60.0  # at most this much audio is embedded in a notebook
FLUIDSYNTH_TIMEOUT = 600  # seconds
INSTALL_HINT = "sudo apt install fluidsynth fluid-soundfont-gm (macOS: brew install fluid-synth)"
SOUNDFONT_LOCATIONS = (  # where Linux distributions and Homebrew put a General MIDI SoundFont
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf3",
    "/usr/local/share/soundfonts/default.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)


def parse_formats(text: str | list | tuple) -> tuple[str, ...]:
    """``"wav,png"`` -> ``("wav", "png")``; an unknown name is a GeneratorError listing the valid ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        shown = ", ".join(unknown) if unknown else "nothing"
        raise GeneratorError(f"cannot render {shown}: choose among {', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(names))


def output_paths(midi_path, formats) -> dict[str, Path]:
    """The files ``render`` writes: beside the MIDI file, same stem, one suffix per format."""
    midi_path = Path(midi_path)
    return {f: midi_path.with_suffix(SUFFIXES[f]) for f in parse_formats(formats)}


def check_targets(paths, force: bool) -> None:
    for path in paths:
        if path.is_dir():
            raise GeneratorError(f"{path} is a directory")
        if path.exists() and not force:
            raise ArgumentError.sentence(f"{path} already exists; pass force=True to overwrite it", "force")


def render(midi_path, formats=FORMATS, soundfont=None, *, force: bool = False, log=None) -> dict[str, Path]:
    """Write ``formats`` of the MIDI file ``midi_path`` beside it; returns ``{format: path}``.

    ``soundfont`` is a .sf2/.sf3 file for FluidSynth; ``log`` (default: print to stdout)
    receives one line per file, naming the synthesizer used for the WAV.
    """
    from generator.data import midi_io

    log = log or print
    midi_path = Path(midi_path)
    targets = output_paths(midi_path, formats)
    if not midi_path.exists():
        raise GeneratorError(f"{midi_path} not found")
    if midi_path.suffix.lower() not in midi_io.MIDI_SUFFIXES:
        raise GeneratorError(f"{midi_path}: render reads MIDI files (.mid or .midi), not {midi_path.suffix or 'this'}")
    font = find_soundfont(soundfont) if "wav" in targets else None
    check_targets(targets.values(), force)
    sequence = midi_io.read_midi(midi_path)
    pm = midi_io.to_pretty_midi(sequence)
    for fmt, path in targets.items():
        if fmt == "wav":
            how = write_wav(pm, path, font)
            log(f"wrote {path} ({how})")
        elif fmt == "png":
            png = piano_roll_png(pm, title=midi_path.name)
            _atomic_write(path, lambda tmp, png=png: Path(tmp).write_bytes(png))
            log(f"wrote {path} (piano roll)")
        else:
            write_musicxml(pm, path)
            log(f"wrote {path} (MusicXML through music21)")
    return targets


def _atomic_write(path: Path, write) -> None:
    """Call ``write(temporary_path)`` and rename the result to ``path``."""
    if not path.parent.is_dir():
        raise GeneratorError(f"cannot write {path}: folder {path.parent} does not exist")
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- audio ----------------------------------------------------------------------------------------


def find_soundfont(soundfont=None) -> Path | None:
    """The SoundFont given (it must exist), else the first one found in ``SOUNDFONT_LOCATIONS``."""
    if soundfont is not None:
        path = Path(soundfont).expanduser()
        if not path.is_file():
            raise GeneratorError(f"SoundFont {soundfont} not found")
        return path
    return next((Path(p) for p in SOUNDFONT_LOCATIONS if Path(p).is_file()), None)


def write_wav(pm, path: Path, soundfont: Path | None) -> str:
    """Write ``pm`` as a WAV file; returns which synthesizer was used (and why)."""
    program = shutil.which("fluidsynth")
    if program and soundfont:
        problem = _fluidsynth(program, pm, path, soundfont)
        if problem is None:
            return f"FluidSynth with SoundFont {soundfont}"
        reason = f"FluidSynth failed: {problem}"
    elif program:
        reason = f"no SoundFont found; pass --soundfont FILE or install one ({INSTALL_HINT}) to use FluidSynth"
    else:
        reason = f"FluidSynth is not installed; for instrument sounds: {INSTALL_HINT}"
    data = wav_bytes(synthesize(pm, SINE_RATE), SINE_RATE)
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return f"pretty_midi sine-wave synthesis; {reason}"


def _fluidsynth(program: str, pm, path: Path, soundfont: Path) -> str | None:
    """Render with the fluidsynth program; returns None on success, else what went wrong."""
    with tempfile.TemporaryDirectory() as folder:
        midi = Path(folder) / "in.mid"
        pm.write(str(midi))  # the validated, rewritten MIDI, not the user's original bytes

        def run(tmp):
            command = [program, "-ni", "-F", tmp, "-T", "wav", "-r", str(SAMPLE_RATE), str(soundfont), str(midi)]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=FLUIDSYNTH_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise RuntimeError(str(e)) from None
            if result.returncode != 0 or os.path.getsize(tmp) <= 44:
                lines = (result.stderr or result.stdout or "").strip().splitlines()
                raise RuntimeError(lines[-1] if lines else f"exit status {result.returncode}")

        try:
            _atomic_write(path, run)
            return None
        except RuntimeError as e:
            return str(e)[:200]


def synthesize(pm, rate: int, max_seconds: float = MAX_SYNTH_SECONDS) -> np.ndarray:
    """pretty_midi's sine-wave synthesis of ``pm`` as float samples in [-1, 1], with drum hits as
    short noise bursts (pretty_midi leaves drums silent): kicks low, snares and toms in the middle,
    cymbals high."""
    if pm.get_end_time() > max_seconds:
        raise GeneratorError(
            f"the piece lasts {pm.get_end_time():.0f} s; audio is rendered for at most {max_seconds:.0f} s"
        )
    audio = np.nan_to_num(pm.synthesize(fs=rate)) if pm.instruments else np.zeros(0)  # drums alone: 0/0
    hits = [n for inst in pm.instruments if inst.is_drum for n in inst.notes]
    if hits:
        drums = _drum_hits(hits, rate, int(pm.get_end_time() * rate) + rate // 4)
        pitched = float(np.max(np.abs(audio))) if audio.size else 0.0
        scale = (pitched or 1.0) * 0.6 / max(float(np.max(np.abs(drums))), 1e-9)
        audio = np.pad(audio, (0, max(len(drums) - len(audio), 0)))
        audio[: len(drums)] += drums * scale
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio / peak * 0.9 if peak > 0 else audio


def _drum_hits(hits, rate: int, length: int) -> np.ndarray:
    """Noise bursts for General MIDI drum hits: a falling sine for kicks (35, 36), noise low-passed
    for toms and snares, high-passed noise for hi-hats and cymbals; loudness follows velocity."""
    rng = np.random.default_rng(0)
    out = np.zeros(length)
    for n in hits:
        start = int(n.start * rate)
        kind = (
            "kick"
            if n.pitch in (35, 36)
            else "cymbal"
            if n.pitch in (42, 44, 46, 49, 51, 52, 53, 55, 57, 59)
            else "drum"
        )
        seconds = {"kick": 0.25, "drum": 0.18, "cymbal": 0.12}[kind]
        t = np.arange(int(seconds * rate)) / rate
        envelope = np.exp(-t / (seconds / 5))
        if kind == "kick":
            wave_ = np.sin(2 * np.pi * (60 + 90 * np.exp(-t * 30)) * t)
        else:
            noise = rng.uniform(-1, 1, len(t))
            wave_ = np.diff(noise, prepend=0.0) if kind == "cymbal" else np.convolve(noise, np.ones(4) / 4, "same")
        burst = wave_ * envelope * (n.velocity / 127)
        end = min(start + len(burst), length)
        if start < end:
            out[start:end] += burst[: end - start]
    return out


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono float samples -> the bytes of a 16-bit PCM WAV file (stdlib ``wave``)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


# -- pictures and scores ------------------------------------------------------------------------------


def piano_roll_png(pm, continuation_start: float | None = None, title: str = "", dpi: int = 100) -> bytes:
    """A piano roll of ``pm`` as PNG bytes: one bar per note, coloured by instrument.

    A dashed line marks ``continuation_start`` (where generated music follows a seed).
    """
    import pretty_midi
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    end = max(pm.get_end_time(), 1.0)
    figure = Figure(figsize=(min(4 + end * 0.15, 16), 3.6), dpi=dpi)
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no pyplot state
    axes = figure.add_subplot()
    pitches = [n.pitch for i in pm.instruments for n in i.notes]
    for index, instrument in enumerate(pm.instruments):
        if not instrument.notes:
            continue
        sound = "drums" if instrument.is_drum else pretty_midi.program_to_instrument_name(instrument.program)
        name = instrument.name.strip()
        label = (
            f"{name} ({sound})" if name and name.lower() != sound.lower() else sound
        )  # names like "NewSong" say little
        axes.barh(
            [n.pitch for n in instrument.notes],
            [n.end - n.start for n in instrument.notes],
            left=[n.start for n in instrument.notes],
            height=0.8,
            color=f"C{index % 10}",
            label=f"{index + 1}: {label}",
        )
    low, high = (min(pitches), max(pitches)) if pitches else (60, 72)
    axes.set_ylim(low - 2, high + 2)
    axes.set_xlim(0, end)
    octaves = [p for p in range(0, 128, 12) if low - 2 <= p <= high + 2]
    axes.set_yticks(octaves, [pretty_midi.note_number_to_name(p) for p in octaves])
    axes.set_xlabel("seconds")
    axes.set_ylabel("pitch")
    if continuation_start:
        axes.axvline(continuation_start, color="black", linestyle="--", linewidth=1)
        axes.text(continuation_start, high + 1.5, " generated", va="top", fontsize=8)
    if len(pm.instruments) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    if title:
        axes.set_title(title, fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_musicxml(pm, path: Path) -> None:
    """A MusicXML score of ``pm`` through music21 (which quantizes the MIDI timing).

    music21 cannot notate every MIDI file it reads (notes held across many bars, two instruments
    on one track); those are notated again from each part's flat list of notes.
    """
    import music21

    buffer = io.BytesIO()
    pm.write(buffer)
    problem = None
    for attempt in (_as_read, _renotated):
        try:
            score = attempt(music21.converter.parseData(buffer.getvalue(), format="midi"))
            _atomic_write(path, lambda tmp, score=score: score.write("musicxml", fp=tmp))
            return
        except GeneratorError:
            raise
        except Exception as e:  # music21 raises many types on music it cannot notate
            problem = problem or e
    raise GeneratorError(f"{path}: music21 cannot write MusicXML ({type(problem).__name__}: {problem})"[:300])


def _as_read(score):
    """The score as music21 read it, keeping only the first instrument of each part."""
    import music21

    for part in score.parts:
        for extra in list(part.recurse().getElementsByClass(music21.instrument.Instrument))[1:]:
            extra.activeSite.remove(extra)
    return score


def _renotated(score):
    """Each part rebuilt from its flat notes and notated afresh (bars, ties, voices)."""
    import music21

    kept = (
        music21.instrument.Instrument,
        music21.meter.TimeSignature,
        music21.key.KeySignature,
        music21.tempo.MetronomeMark,
        music21.note.GeneralNote,
    )
    out = music21.stream.Score()
    for part in _as_read(score).parts:
        fresh = music21.stream.Part()
        for element in part.flatten().getElementsByClass(kept):
            if not isinstance(element, music21.note.Rest):
                fresh.insert(element.offset, element)
        out.insert(0, fresh)
    return out.makeNotation()


# -- notebooks --------------------------------------------------------------------------------------


def notebook_html(music) -> str:
    """HTML for Jupyter: the piano roll (embedded PNG) and an audio player (embedded WAV).

    The audio is a small sine-wave preview (``NOTEBOOK_RATE`` Hz, at most ``NOTEBOOK_SECONDS``);
    use ``render`` for full-quality files.
    """
    from generator.data.midi_io import to_pretty_midi

    sequence = music.sequence
    summary = html.escape(repr(music))
    if not sequence.notes:
        return f"<pre>{summary}: no notes to show</pre>"
    whole = to_pretty_midi(sequence)
    png = piano_roll_png(whole, music.continuation_start or None)
    clipped = sequence.end_time > NOTEBOOK_SECONDS
    if clipped:
        whole = to_pretty_midi(
            dataclasses.replace(
                sequence,
                notes=[
                    dataclasses.replace(n, end=min(n.end, NOTEBOOK_SECONDS))
                    for n in sequence.notes
                    if n.start < NOTEBOOK_SECONDS
                ],
            )
        )
    audio = wav_bytes(synthesize(whole, NOTEBOOK_RATE), NOTEBOOK_RATE)
    note = f"audio: sine-wave preview{f', first {NOTEBOOK_SECONDS:.0f} s' if clipped else ''}"
    if music.continuation_start:
        note += f"; generated music starts at {music.continuation_start:.1f} s"
    return (
        f'<div class="generator-music"><img alt="piano roll" style="max-width:100%" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/><br/>'
        f'<audio controls src="data:audio/wav;base64,{base64.b64encode(audio).decode()}"></audio>'
        f'<div style="font-size:smaller">{summary}, {note}</div></div>'
    )
