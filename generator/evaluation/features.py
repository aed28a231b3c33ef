"""Per-piece music features on the beat grid (pure numpy; no TensorFlow, no MIDI library).

A piece is a ``NoteSequence`` (any reader of ``generator.data``) or an SATB grid ``[steps, 4]``
(JSB chorales, 16th notes). Every note is first put on a grid of ``STEPS_PER_BEAT`` steps per
quarter note, using the piece's tempo map, so that rhythm features count musical positions and
not MIDI ticks. ``piece_features`` returns one number per feature (``None`` where a feature
does not apply, e.g. four-voice features of a melody):

pitch
    ``pitch_class_entropy`` (bits, of the note count per pitch class), ``scale_consistency``
    (the largest share of notes inside one major or natural-minor scale), ``pitch_range``
    (semitones), ``distinct_pitches``, ``polyphony`` (mean number of notes sounding on the
    steps where at least one sounds).
rhythm
    ``notes_per_beat``, ``mean_ioi`` (mean beats between successive distinct onsets),
    ``groove_consistency`` (1 minus the mean Hamming distance between the onset patterns of
    neighbouring bars, over the steps of a bar), ``empty_beat_rate`` (share of beats with no
    onset).
lines
    ``mean_abs_interval``: mean absolute interval (semitones) between consecutive notes of a
    voice: each SATB part when the piece has four voices, else each track's top line.
four voices (only when the piece has four voices; see ``four_voice_grid``)
    ``parallel_fifths``, ``parallel_octaves`` and ``parallel_fifths_octaves``: pairs of voices
    moving in the same direction from a (compound) fifth, or octave/unison, to the same interval
    class, per chord change; ``voice_crossing`` (share of chords where a voice is above the one
    it should be under), ``spacing`` (share of chords with soprano-alto or alto-tenor more
    than an octave apart), ``out_of_range`` (share of chords with a voice outside its range,
    ``VOICE_RANGES``). A *chord* is a grid step where all four voices sound and some voice
    differs from the previous such step; a chord change is a pair of successive chords.
    ``voice_crossing`` is ``None`` where the voices were taken by pitch order (they cannot cross).
"""

from __future__ import annotations

import math

import numpy as np

from generator.data.tokenizers.voices import VOICE_RANGES  # noqa: F401  S, A, T, B: textbook ranges widened a tone

STEPS_PER_BEAT = 4  # the grid: 16th notes
FOUR_PART_SHARE = 0.5  # a one-stream piece counts as four-part when this share of its sounding steps has 4 pitches

PITCH_FEATURES = ("pitch_class_entropy", "scale_consistency", "pitch_range", "distinct_pitches", "polyphony")
RHYTHM_FEATURES = ("notes_per_beat", "mean_ioi", "groove_consistency", "empty_beat_rate")
LINE_FEATURES = ("mean_abs_interval",)
VOICE_FEATURES = (
    "parallel_fifths",
    "parallel_octaves",
    "parallel_fifths_octaves",
    "voice_crossing",
    "spacing",
    "out_of_range",
)
FEATURES = PITCH_FEATURES + RHYTHM_FEATURES + LINE_FEATURES + VOICE_FEATURES

_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
_MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
# [24, 12]: pitch-class membership of every major and natural-minor scale
_SCALES = np.stack([np.roll(_MAJOR, k) for k in range(12)] + [np.roll(_MINOR, k) for k in range(12)])


class GridPiece:
    """A piece on the step grid: note arrays plus, for four-part music, the SATB grid."""

    def __init__(self, pitch, onset, end, line, bar_steps: int, grid: np.ndarray | None, name: str = ""):
        self.pitch = np.asarray(pitch, dtype=np.int64)
        self.onset = np.asarray(onset, dtype=np.int64)
        self.end = np.maximum(np.asarray(end, dtype=np.int64), self.onset + 1)
        self.line = np.asarray(line, dtype=np.int64)  # voice or track of each note
        self.bar_steps = int(bar_steps)
        self.grid = grid  # int64 [steps, 4] or None
        self.name = name
        self.voices_by_pitch = False  # True when the voices were taken by pitch order (they cannot cross)


# -- reading pieces onto the grid ------------------------------------------------------------
def _tempo_segments(tempos):
    """``(starts s, bpms, beats at each start)`` of a tempo map ``[(time s, bpm), ...]`` (120 bpm when empty)."""
    changes = sorted((float(t), float(b)) for t, b in tempos if b > 0) or [(0.0, 120.0)]
    starts = np.array([0.0] + [t for t, _ in changes[1:]])
    bpms = np.array([b for _, b in changes])
    return starts, bpms, np.concatenate([[0.0], np.cumsum(np.diff(starts) * bpms[:-1] / 60.0)])


def seconds_to_beats(times, tempos) -> np.ndarray:
    """Quarter-note positions of ``times`` (seconds) under a tempo map ``[(time s, bpm), ...]``."""
    times = np.asarray(times, dtype=float)
    starts, bpms, beats_at = _tempo_segments(tempos)
    segment = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(starts) - 1)
    return beats_at[segment] + (times - starts[segment]) * bpms[segment] / 60.0


def beats_to_seconds(beats, tempos) -> np.ndarray:
    """Seconds of quarter-note positions ``beats`` under a tempo map (the inverse of ``seconds_to_beats``)."""
    beats = np.asarray(beats, dtype=float)
    starts, bpms, beats_at = _tempo_segments(tempos)
    segment = np.clip(np.searchsorted(beats_at, beats, side="right") - 1, 0, len(starts) - 1)
    return starts[segment] + (beats - beats_at[segment]) * 60.0 / bpms[segment]


def _grid_notes(grid: np.ndarray):
    """Notes of an SATB grid: a run of one pitch in a voice is one note (the JSB convention)."""
    pitch, onset, end, line = [], [], [], []
    for voice in range(grid.shape[1]):
        column = grid[:, voice]
        changes = np.flatnonzero(np.diff(column, prepend=-2))
        ends = np.append(changes[1:], len(column))
        sounding = column[changes] >= 0
        pitch.append(column[changes][sounding])
        onset.append(changes[sounding])
        end.append(ends[sounding])
        line.append(np.full(int(sounding.sum()), voice))
    return [np.concatenate(a) if a else np.zeros(0, np.int64) for a in (pitch, onset, end, line)]


def _sorted_voices(pitch, onset, end, steps: int) -> np.ndarray | None:
    """SATB by pitch order at each step (three highest and the lowest), when the texture is four-part."""
    if steps == 0 or len(pitch) == 0:
        return None
    notes_sounding = np.zeros(steps + 1, dtype=np.int64)  # cheap first look: notes (not pitches) per step
    np.add.at(notes_sounding, onset, 1)
    np.add.at(notes_sounding, end, -1)
    notes_sounding = np.cumsum(notes_sounding)[:-1]
    if ((notes_sounding >= 4) & (notes_sounding <= 8)).sum() < FOUR_PART_SHARE * (notes_sounding > 0).sum():
        return None  # not four-part: spare the [steps, 128] table
    table = np.zeros((steps + 1, 128), dtype=np.int16)
    np.add.at(table, (onset, pitch), 1)
    np.add.at(table, (end, pitch), -1)
    table = np.cumsum(table, axis=0)[:-1] > 0  # [steps, 128]: which pitches sound
    counts = table.sum(1)
    sounding = counts > 0
    if (counts[sounding] == 4).mean() < FOUR_PART_SHARE:
        return None
    grid = np.full((steps, 4), -1, dtype=np.int64)
    four = np.flatnonzero(counts >= 4)
    descending = np.sort(np.where(table[four], np.arange(128), -1), axis=1)[:, ::-1]
    grid[four, :3] = descending[:, :3]
    grid[four, 3] = descending[np.arange(len(four)), counts[four] - 1]
    return grid


def as_grid_piece(piece, merge_tracks: bool = False) -> GridPiece:
    """A ``NoteSequence`` or SATB grid (or an already built ``GridPiece``) on the step grid.

    Drum notes are left out. A grid is four voices as it stands. A sequence has four voices when
    it has exactly four pitched tracks (each one a voice, assigned as ``voices`` does: by name,
    else by mean pitch) or, with ``merge_tracks`` or any other number of tracks, when at least
    half of its sounding steps hold exactly four pitches (the voices are then taken by pitch
    order, so they never cross). ``merge_tracks`` also makes the whole piece one line.
    """
    if isinstance(piece, GridPiece):
        return piece
    if isinstance(piece, np.ndarray) or isinstance(piece, list):
        grid = np.asarray(piece, dtype=np.int64)
        if grid.ndim != 2 or grid.shape[1] != 4:
            raise ValueError(f"a voice grid has shape [steps, 4], got {list(grid.shape)}")
        pitch, onset, end, line = _grid_notes(grid)
        return GridPiece(pitch, onset, end, line, 4 * STEPS_PER_BEAT, grid)
    notes = [n for n in piece.notes if not n.is_drum]
    numerator, denominator = getattr(piece, "time_signature", (4, 4)) or (4, 4)
    bar_steps = max(1, int(round(numerator * 4 / denominator * STEPS_PER_BEAT)))
    name = getattr(piece, "source", "")
    if not notes:
        empty = np.zeros(0, np.int64)
        return GridPiece(empty, empty, empty, empty, bar_steps, None, name)
    times = np.array([[n.start, n.end] for n in notes], dtype=float)
    steps = np.rint(seconds_to_beats(times.ravel(), piece.tempos) * STEPS_PER_BEAT).astype(np.int64).reshape(-1, 2)
    onset = np.maximum(steps[:, 0], 0)
    end = np.maximum(steps[:, 1], onset + 1)
    pitch = np.array([n.pitch for n in notes], dtype=np.int64)
    tracks = np.array([n.track for n in notes], dtype=np.int64)
    line = np.zeros_like(tracks) if merge_tracks else tracks
    grid = None
    if not merge_tracks and len(set(tracks.tolist())) == 4:
        from generator.data.tokenizers.voices import grid_from_note_sequence

        sequence = piece if len(notes) == len(piece.notes) else _without_drums(piece, notes)
        grid = grid_from_note_sequence(sequence, STEPS_PER_BEAT)
    else:
        grid = _sorted_voices(pitch, onset, end, int(end.max()))
    piece = GridPiece(pitch, onset, end, line, bar_steps, grid, name)
    piece.voices_by_pitch = grid is not None and (merge_tracks or len(set(tracks.tolist())) != 4)
    return piece


def _without_drums(piece, notes):
    import copy

    out = copy.copy(piece)
    out.notes = notes
    return out


# -- the features ------------------------------------------------------------------------------
def piece_features(piece, merge_tracks: bool = False) -> dict[str, float | None]:
    """Every feature of ``FEATURES`` for one piece (see the module docstring); ``None`` where it does not apply."""
    p = as_grid_piece(piece, merge_tracks)
    out: dict[str, float | None] = dict.fromkeys(FEATURES)
    if len(p.pitch) == 0:
        return out
    out.update(_pitch_features(p))
    out.update(_rhythm_features(p))
    out["mean_abs_interval"] = _mean_abs_interval(p)
    if p.grid is not None:
        out.update(voice_leading(p.grid))
        if p.voices_by_pitch:
            out["voice_crossing"] = None  # voices in pitch order never cross: the figure would say nothing
    return out


def _pitch_features(p: GridPiece) -> dict:
    counts = np.bincount(p.pitch % 12, minlength=12).astype(float)
    share = counts / counts.sum()
    nonzero = share[share > 0]
    sounding = np.zeros(int(p.end.max()) + 1, dtype=np.int64)
    np.add.at(sounding, p.onset, 1)
    np.add.at(sounding, p.end, -1)
    sounding = np.cumsum(sounding)[:-1]
    return {
        "pitch_class_entropy": float(-(nonzero * np.log2(nonzero)).sum()),
        "scale_consistency": float((_SCALES @ counts).max() / counts.sum()),
        "pitch_range": float(p.pitch.max() - p.pitch.min()),
        "distinct_pitches": float(len(np.unique(p.pitch))),
        "polyphony": float(sounding[sounding > 0].mean()),
    }


def _rhythm_features(p: GridPiece) -> dict:
    total_steps = int(p.end.max())
    beats = max(1, math.ceil(total_steps / STEPS_PER_BEAT))
    onsets = np.unique(p.onset)
    has_onset = np.zeros(beats, dtype=bool)
    has_onset[onsets // STEPS_PER_BEAT] = True
    bars = math.ceil(total_steps / p.bar_steps)
    groove = None
    if bars >= 2:
        pattern = np.zeros(bars * p.bar_steps, dtype=bool)
        pattern[onsets] = True
        pattern = pattern.reshape(bars, p.bar_steps)
        groove = float(1.0 - (pattern[1:] != pattern[:-1]).mean())
    return {
        "notes_per_beat": float(len(p.pitch) / beats),
        "mean_ioi": float(np.diff(onsets).mean() / STEPS_PER_BEAT) if len(onsets) >= 2 else None,
        "groove_consistency": groove,
        "empty_beat_rate": float(1.0 - has_onset.mean()),
    }


def _mean_abs_interval(p: GridPiece) -> float | None:
    """Lines are the SATB voices of a four-part piece, else each track's top notes."""
    intervals = []
    notes = (p.pitch, p.onset, p.line) if p.grid is None else [_grid_notes(p.grid)[i] for i in (0, 1, 3)]
    for line in np.unique(notes[2]):
        mine = notes[2] == line
        onset, pitch = notes[1][mine], notes[0][mine]
        order = np.lexsort((-pitch, onset))  # by onset, highest first
        onset, pitch = onset[order], pitch[order]
        first = np.ones(len(onset), dtype=bool)
        first[1:] = onset[1:] != onset[:-1]  # the top note of each onset
        intervals.append(np.abs(np.diff(pitch[first])))
    intervals = np.concatenate(intervals) if intervals else np.zeros(0)
    return float(intervals.mean()) if len(intervals) else None


def chords(grid) -> np.ndarray:
    """The chords of an SATB grid: steps where all four voices sound and something changed, ``[n, 4]``."""
    grid = np.asarray(grid, dtype=np.int64)
    full = grid[(grid >= 0).all(axis=1)]
    if len(full) == 0:
        return full
    keep = np.ones(len(full), dtype=bool)
    keep[1:] = (full[1:] != full[:-1]).any(axis=1)
    return full[keep]


_PAIRS = np.array([(u, v) for u in range(4) for v in range(u + 1, 4)])


def parallel_counts(grid) -> tuple[int, int, int]:
    """(parallel fifths, parallel octaves/unisons, chord changes) of an SATB grid."""
    c = chords(grid)
    if len(c) < 2:
        return 0, 0, 0
    a, b = c[:-1], c[1:]
    u, v = _PAIRS[:, 0], _PAIRS[:, 1]
    move_u, move_v = b[:, u] - a[:, u], b[:, v] - a[:, v]
    similar = (move_u != 0) & (np.sign(move_u) == np.sign(move_v))
    before = np.abs(a[:, u] - a[:, v]) % 12
    after = np.abs(b[:, u] - b[:, v]) % 12
    same = similar & (before == after)
    return int((same & (after == 7)).sum()), int((same & (after == 0)).sum()), len(c) - 1


def voice_leading(grid) -> dict[str, float | None]:
    """The four-voice features of an SATB grid (``None`` for all when it has no chord)."""
    c = chords(grid)
    out: dict[str, float | None] = dict.fromkeys(VOICE_FEATURES)
    if len(c) == 0:
        return out
    fifths, octaves, changes = parallel_counts(grid)
    if changes:
        out["parallel_fifths"] = fifths / changes
        out["parallel_octaves"] = octaves / changes
        out["parallel_fifths_octaves"] = (fifths + octaves) / changes
    out["voice_crossing"] = float((np.diff(c, axis=1) > 0).any(axis=1).mean())
    out["spacing"] = float(((c[:, 0] - c[:, 1] > 12) | (c[:, 1] - c[:, 2] > 12)).mean())
    low = np.array([r[0] for r in VOICE_RANGES])
    high = np.array([r[1] for r in VOICE_RANGES])
    out["out_of_range"] = float(((c < low) | (c > high)).any(axis=1).mean())
    return out
