"""Which bundled model continues a seed best, judged from the seed's content.

``choose_checkpoint(seq)`` looks at the tracks (after ``generator.data.score.assign_roles``):

- drums, or pitched instruments of three or more General MIDI families: ``band``;
- a four-part chorale (four single-note parts, no drums, stacked soprano over alto over tenor
  over bass, on piano, organ, choir or strings): ``bach``;
- piano only (any number of piano tracks, POP909's MELODY, BRIDGE and PIANO included): ``pop-piano``;
- anything else (one or two instruments that are not piano): ``band``, which keeps their programs.

It returns the name and a reason in words, which ``generate-music`` prints.
"""

from __future__ import annotations

from generator.data.notes import NoteSequence
from generator.data.score import LEAD_POLYPHONY, track_stats
from generator.resources import bundled_folder

PIANO_PROGRAMS = range(0, 8)
CHORALE_PROGRAMS = set(range(0, 8)) | set(range(16, 24)) | set(range(40, 56))  # piano, organ, strings, choir


def choose_checkpoint(seq: NoteSequence) -> tuple[str, str]:
    """``(checkpoint name, reason)`` for continuing ``seq``; falls back to pop-piano when the
    band model is not installed."""
    stats = track_stats(seq)
    programs = {t: (seq.instruments[t].program if t < len(seq.instruments) else 0) for t in stats}
    has_drums = any(n.is_drum for n in seq.notes)
    families = {p // 8 for p in programs.values()}
    band = (bundled_folder("_checkpoints", "checkpoints") / "band").is_dir()
    if has_drums or len(families) >= 3:
        why = "it has drums" if has_drums else f"it has {len(families)} kinds of instrument"
        if band:
            return "band", f"{why} ({len(stats)} pitched tracks{' and drums' if has_drums else ''})"
        return "pop-piano", f"{why}, but the band model is not installed"
    if _is_chorale(seq, stats, programs):
        return "bach", "it is a four-part chorale (four single-note voices, soprano to bass)"
    if all(p in PIANO_PROGRAMS for p in programs.values()):
        return "pop-piano", f"it is piano only ({len(stats)} track{'s' if len(stats) != 1 else ''})"
    if band:
        return "band", "its instruments are not piano, and the band model keeps their sounds"
    return "pop-piano", "the band model is not installed"


def _is_chorale(seq: NoteSequence, stats, programs) -> bool:
    if len(stats) != 4 or any(n.is_drum for n in seq.notes):
        return False
    if not all(s.polyphony < LEAD_POLYPHONY for s in stats.values()):
        return False
    if not all(p in CHORALE_PROGRAMS for p in programs.values()):
        return False
    medians = sorted((s.median_pitch for s in stats.values()), reverse=True)
    return all(a > b for a, b in zip(medians, medians[1:])) and medians[0] - medians[-1] >= 12
