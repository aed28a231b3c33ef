"""What each track of a piece does, read from its notes: the roles a band tokenizer and the
write-back of a continuation share.

A seed is read once (``generator.generation.compose.read_seed``) into a ``NoteSequence`` whose
``instruments`` keep each track's name, program, channel and drum flag; ``assign_roles`` then
fills ``Instrument.role`` from the notes alone, never from track order or names:

=========  ==========================================================================
role       how it is found
=========  ==========================================================================
drums      the drum flag (MIDI channel 10)
bass       a pitched track low and mostly one note at a time: median pitch below
           ``BASS_MEDIAN``, or a bass program (32-39) that is not chordal
lead       the track the file names as its tune (melody, vocal, ...) if it is not the
           bass; else, of the mostly-single-note tracks (polyphony under
           ``LEAD_POLYPHONY``) whose median pitch is within ``LEAD_OCTAVE`` of the highest
           track's, the busiest; when none is single-note (a right hand in chords), the
           highest track
chords     a chordal track (several notes per onset) with short notes
pad        a chordal track with notes of a beat or longer
melody     any other single-note track (a counter-melody, a second hand, a bridge)
=========  ==========================================================================

Tracks that play nothing get no role; a track's name counts only for the lead. No TensorFlow here; numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.data.notes import NoteSequence

BASS_MEDIAN = 52  # E3: a single-note track whose median pitch is below this is the bass
LEAD_POLYPHONY = 1.35  # mean notes per onset below which a track counts as single-note
LEAD_SHARE = 0.25  # a lead plays at least this share of the busiest single-note track's notes
LEAD_OCTAVE = 12  # of those within this many semitones of the highest median pitch, the busiest leads
LEAD_NAMES = ("melody", "vocal", "lead", "voice", "solo", "tune")
PAD_SECONDS = 0.45  # chordal tracks with a longer median note are pads, shorter ones chords


@dataclass(frozen=True)
class TrackStats:
    """Numbers that describe one track's notes."""

    track: int
    notes: int
    median_pitch: float
    mean_pitch: float
    polyphony: float  # mean notes per distinct onset
    median_seconds: float


def track_stats(seq: NoteSequence) -> dict[int, TrackStats]:
    """Per-track statistics of the pitched tracks of ``seq`` that have notes."""
    by_track: dict[int, list] = {}
    for n in seq.notes:
        if not n.is_drum:
            by_track.setdefault(n.track, []).append(n)
    stats = {}
    for track, notes in by_track.items():
        pitches = np.array([n.pitch for n in notes], dtype=float)
        onsets = np.round(np.array([n.start for n in notes]) * 50)  # 20 ms onset groups
        lengths = np.array([n.end - n.start for n in notes])
        stats[track] = TrackStats(
            track,
            len(notes),
            float(np.median(pitches)),
            float(pitches.mean()),
            len(notes) / max(len(np.unique(onsets)), 1),
            float(np.median(lengths)),
        )
    return stats


def assign_roles(seq: NoteSequence) -> NoteSequence:
    """Fill ``seq.instruments[i].role`` from the notes (see the module docstring); returns ``seq``."""
    stats = track_stats(seq)
    drums = {n.track for n in seq.notes if n.is_drum}
    for i, inst in enumerate(seq.instruments):
        inst.role = "drums" if (i in drums or inst.is_drum) else ""
    single = {t: s for t, s in stats.items() if s.polyphony < LEAD_POLYPHONY}
    roles: dict[int, str] = {}
    for t, s in stats.items():
        program = seq.instruments[t].program if t < len(seq.instruments) else 0
        if t in single and (s.median_pitch < BASS_MEDIAN or 32 <= program <= 39):
            roles[t] = "bass"
        elif t not in single:
            roles[t] = "pad" if s.median_seconds >= PAD_SECONDS else "chords"
    upper = [t for t in stats if roles.get(t) != "bass"]
    if upper:
        highest = max(stats[t].median_pitch for t in upper)
        candidates = [t for t in upper if t in single and stats[t].median_pitch >= highest - LEAD_OCTAVE]
        named = [t for t in upper if _sounds_like_lead(seq, t)]  # the file's own word for its tune
        if named:
            lead = max(named, key=lambda t: stats[t].notes)
        elif candidates:
            busiest = max(stats[t].notes for t in candidates)
            lead = max(
                (t for t in candidates if stats[t].notes >= LEAD_SHARE * busiest),
                key=lambda t: (stats[t].notes, stats[t].median_pitch),
            )
        else:  # only chordal tracks up there (a right hand in chords): the highest leads
            lead = max(upper, key=lambda t: stats[t].median_pitch)
        if len(stats) > 1 or lead in single:
            roles[lead] = "lead"
        for t in upper:
            if t in single:
                roles.setdefault(t, "melody")
    for t, role in roles.items():
        if t < len(seq.instruments):
            seq.instruments[t].role = role
    return seq


def _sounds_like_lead(seq: NoteSequence, track: int) -> bool:
    """Whether the file names ``track`` as its tune (melody, vocal, lead, voice, solo)."""
    name = seq.instruments[track].name.lower() if track < len(seq.instruments) else ""
    return any(word in name for word in LEAD_NAMES)


def roles_summary(seq: NoteSequence) -> str:
    """One line naming each playing track and its role, e.g. ``Bass (bass), Drums (drums)``."""
    playing = sorted({n.track for n in seq.notes})
    parts = []
    for t in playing:
        inst = seq.instruments[t] if t < len(seq.instruments) else None
        name = inst.name.strip() if inst and inst.name.strip() else f"track {t + 1}"
        parts.append(f"{name} ({inst.role or 'other'})" if inst else name)
    return ", ".join(parts)
