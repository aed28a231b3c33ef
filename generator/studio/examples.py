"""The example seeds the studio offers, copied into its working folder when it starts.

Two come with music21 (a dependency): a two-hand piano piece from its MIDI test files and the
chorale BWV 66.6 from its corpus. The third, the tune of Beethoven's Ode to Joy (a melody for the
harmonizer), is written here from its notes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from generator.data.notes import Instrument, Note, NoteSequence

# (id, file name, description, where music21 keeps it: subfolder of the music21 package)
MUSIC21_EXAMPLES = (
    ("piano", "piano-two-hands.mid", "piano, two hands (2 min 41 s)", "midi/testPrimitive/test03.mid"),
    ("chorale", "bach-bwv66.6.mxl", "Bach chorale BWV 66.6, four voices", "corpus/bach/bwv66.6.mxl"),
)
ODE_TO_JOY = "E E F G G F E D C C D E E. D- D: E E F G G F E D C C D E D. C- C:"  # "." dotted, "-" eighth, ":" half
PITCHES = {"C": 60, "D": 62, "E": 64, "F": 65, "G": 67}


def ode_to_joy(bpm: float = 100.0) -> NoteSequence:
    """The melody of the Ode to Joy as one piano track, quarter notes at ``bpm``."""
    beat = 60.0 / bpm
    notes, time = [], 0.0
    for word in ODE_TO_JOY.split():
        beats = {".": 1.5, "-": 0.5, ":": 2.0}.get(word[-1], 1.0)
        notes.append(Note(PITCHES[word[0]], time, time + beats * beat * 0.95, 80, 0, False, 0))
        time += beats * beat
    return NoteSequence(
        notes=notes, tempos=[(0.0, bpm)], instruments=[Instrument(program=0, name="Melody")], source="ode-to-joy.mid"
    )


def install(folder: Path) -> list[dict]:
    """Write the examples into ``folder``; returns ``[{id, name, description, path}]`` of those
    that could be written (music21's files may be missing from a trimmed install)."""
    from generator.data.midi_io import write_midi

    folder.mkdir(parents=True, exist_ok=True)
    found = []
    try:
        import music21

        root = Path(music21.__file__).parent
    except ImportError:
        root = None
    for key, name, description, inside in MUSIC21_EXAMPLES:
        if root is not None and (root / inside).is_file():
            shutil.copyfile(root / inside, folder / name)
            found.append(dict(id=key, name=name, description=description, path=folder / name))
    write_midi(ode_to_joy(), folder / "ode-to-joy.mid", force=True)
    found.append(
        dict(
            id="melody",
            name="ode-to-joy.mid",
            path=folder / "ode-to-joy.mid",
            description="Ode to Joy, the tune alone (to harmonize)",
        )
    )
    return found
