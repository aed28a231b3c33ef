"""Does a continuation keep the band playing? Track-level figures for a seed and what follows it.

``arrangement_figures(seed, after)`` compares what plays at the end of a seed with what follows
it (a model's continuation, or the real next seconds of the song):

- ``tracks_kept``: the share of the tracks playing in the seed's last ``WINDOW`` seconds that
  play in ``after``;
- ``drums_continue``: whether drums play in ``after`` (None when the seed's end had none);
- ``lowest_stays_lowest``: whether the seed's lowest pitched track (median pitch over its
  last ``WINDOW`` seconds) is still the lowest in ``after`` (None with fewer than two);
- ``highest_plays_on``: whether the seed's highest pitched track plays in ``after``;
- ``roles_kept``: whether every pitched track playing at the seed's end plays on with the
  highest still the highest and the lowest still the lowest (a piano's two hands keep their
  parts: the melody stays in the right hand; None with fewer than two pitched tracks);
- ``density`` and ``polyphony``: notes per second and notes per onset of each kept track,
  for comparing with the real continuation (``density_ratio``);
- ``seed_repeats``: the share of ``after``'s notes that repeat a note of the seed in the same
  track, pitch and place in the bar, a whole number of bars earlier (songs repeat themselves:
  the real next seconds repeat much of the seed; a loop of the seed repeats all of it).

Times are the seed's own: ``after`` starts where the seed ends. No TensorFlow here.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from generator.data.notes import NoteSequence
from generator.evaluation.features import seconds_to_beats

WINDOW = 20.0  # seconds at the end of the seed whose tracks count as playing
ONSET_TOLERANCE = 1 / 12  # beats: two onsets this close are the same place in the bar


def _by_track(notes) -> dict[int, list]:
    found = defaultdict(list)
    for n in notes:
        found[n.track].append(n)
    return found


def arrangement_figures(seed: NoteSequence, after: NoteSequence, start: float | None = None) -> dict:
    """Figures for ``after`` (notes from ``start``, default the seed's end) following ``seed``."""
    start = seed.end_time if start is None else start
    tail = [n for n in seed.notes if n.end > start - WINDOW]
    playing = _by_track(tail)
    later = _by_track([n for n in after.notes if n.start >= start - 1e-6])
    kept = [t for t in playing if t in later]
    pitched = {t: float(np.median([n.pitch for n in ns])) for t, ns in playing.items() if not ns[0].is_drum}
    drums_before = any(n.is_drum for n in tail)
    drums_after = any(n.is_drum for n in after.notes if n.start >= start - 1e-6)
    lowest = highest = roles = None
    if len(pitched) >= 2:
        low, high = min(pitched, key=pitched.get), max(pitched, key=pitched.get)
        later_pitched = {t: float(np.median([n.pitch for n in ns])) for t, ns in later.items() if not ns[0].is_drum}
        lowest = bool(later_pitched) and min(later_pitched, key=later_pitched.get) == low
        roles = (
            lowest and all(t in later_pitched for t in pitched) and max(later_pitched, key=later_pitched.get) == high
        )
    if pitched:
        highest = max(pitched, key=pitched.get) in later
    span = max((n.end for n in after.notes), default=start) - start
    density = {t: len(later[t]) / max(span, 1e-9) for t in kept}
    polyphony = {t: len(later[t]) / max(len({round(n.start, 2) for n in later[t]}), 1) for t in kept}
    return {
        "tracks_playing": len(playing),
        "tracks_kept": len(kept) / len(playing) if playing else None,
        "drums_continue": drums_after if drums_before else None,
        "lowest_stays_lowest": lowest,
        "highest_plays_on": highest,
        "roles_kept": roles,
        "density": density,
        "polyphony": polyphony,
        "seed_repeats": seed_repeats(seed, after, start),
    }


def seed_repeats(seed: NoteSequence, after: NoteSequence, start: float) -> float | None:
    """The share of ``after``'s notes (from ``start``) that repeat a seed note of the same track
    and pitch whole bars earlier (within ``ONSET_TOLERANCE`` beats of the same place in the bar)."""
    new = [n for n in after.notes if n.start >= start - 1e-6]
    if not new:
        return None
    numerator, denominator = seed.time_signature or (4, 4)
    bar = numerator * 4 / denominator
    old_beats = seconds_to_beats([n.start for n in seed.notes], seed.tempos)
    places = defaultdict(list)  # (track, pitch) -> positions within the bar (beats) and bar numbers
    for n, beat in zip(seed.notes, old_beats):
        places[(n.track, n.pitch)].append(beat)
    new_beats = seconds_to_beats([n.start for n in new], seed.tempos)
    repeated = 0
    for n, beat in zip(new, new_beats):
        earlier = np.asarray(places.get((n.track, n.pitch), []))
        if earlier.size:
            gaps = (beat - earlier) / bar
            whole = np.abs(gaps - np.rint(gaps)) * bar <= ONSET_TOLERANCE
            repeated += bool(np.any(whole & (np.rint(gaps) >= 1)))
    return repeated / len(new)


def summarize(rows: list[dict]) -> dict:
    """Means over songs (None entries skipped) of each figure of ``arrangement_figures``."""
    out = {}
    for key in (
        "tracks_kept",
        "drums_continue",
        "lowest_stays_lowest",
        "highest_plays_on",
        "roles_kept",
        "seed_repeats",
    ):
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
        out[key + "_songs"] = len(values)
    return out


def density_ratio(generated: dict, real: dict, key: str = "density") -> float | None:
    """The median over tracks kept by both of generated / real ``key`` (1.0: alike)."""
    ratios = [generated[key][t] / real[key][t] for t in generated[key] if t in real[key] and real[key][t] > 0]
    return float(np.median(ratios)) if ratios else None
