"""Music generation on top of ``Generator.stream``: seeds, priming, continuation, results.

A seed file is read into a ``NoteSequence``, its tail is encoded to prime the model, the
sampler continues it under the tokenizer's constraint, every note left sounding is closed,
and the continuation is put after the seed in the seed's own tempo, time signature and
instruments.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generator.errors import ArgumentError, GeneratorError
from generator.data import limits
from generator.data.notes import Instrument, Note, NoteSequence
from generator.data.tokenizers.base import BOS

MAX_SECONDS = 3600.0


@dataclass
class Music:
    """A generated piece: ``save(path)``, ``to_pretty_midi()``, ``to_music21()``, and a notebook view."""

    sequence: NoteSequence
    continuation_start: float = 0.0  # where the new music begins (after the seed), in seconds
    notices: list[str] = field(default_factory=list)

    def save(self, path, force: bool = False) -> Path:
        """Write a standard MIDI file (atomically; an existing file only with ``force``)."""
        from generator.data.midi_io import write_midi

        return write_midi(self.sequence, path, force=force)

    def to_pretty_midi(self):
        from generator.data.midi_io import to_pretty_midi

        return to_pretty_midi(self.sequence)

    def to_music21(self):
        """A music21 score of the piece (through MIDI)."""
        import io

        import music21

        buffer = io.BytesIO()
        self.to_pretty_midi().write(buffer)
        return music21.converter.parseData(buffer.getvalue(), format="midi")

    @property
    def notes(self) -> list[Note]:
        return self.sequence.notes

    def __repr__(self) -> str:
        return f"Music({len(self.notes)} notes, {self.sequence.end_time:.1f} s)"

    def _repr_html_(self) -> str:
        try:
            from generator.generation.render import notebook_html
        except ImportError:
            return f"<pre>{self!r}</pre>"
        return notebook_html(self)


def read_seed(path) -> NoteSequence:
    """Read a seed score (.mid/.midi/.musicxml/.mxl/.xml/.abc/.krn) once, with each track's role
    found from its notes (``generator.data.score``): encoding, priming and writing back use it."""
    from generator.data import midi_io

    path = Path(path)
    if not path.exists():
        raise GeneratorError(f"seed {path} not found")
    if path.is_dir():
        raise GeneratorError(f"seed {path} is a directory, not a score file")
    if path.suffix.lower() not in midi_io.MUSIC_SUFFIXES:
        raise GeneratorError(
            f"seed {path}: unsupported file type {path.suffix or '(none)'}; "
            f"use one of {', '.join(midi_io.MUSIC_SUFFIXES)}"
        )
    from generator.data.score import assign_roles

    return assign_roles(midi_io.read_score(path))


def tail_seconds(seq: NoteSequence, seconds: float) -> NoteSequence:
    """The notes of the last ``seconds`` of ``seq`` (notes that sound then, cut at the window start)."""
    end = seq.end_time
    start = max(0.0, end - seconds)
    out = copy.copy(seq)
    out.notes = [
        Note(n.pitch, max(n.start, start) - start, n.end - start, n.velocity, n.program, n.is_drum, n.track)
        for n in seq.notes
        if n.end > start
    ]
    return out


def tokenizer_for(tokenizer, seed: NoteSequence | None):
    """The tokenizer set up to continue ``seed`` (its tempo, for the tokenizers that decode at one)."""
    return tokenizer.for_seed(seed) if seed is not None else tokenizer


def notes_after(seq: NoteSequence, start: float, seconds: float = float("inf")) -> list[Note]:
    """The notes of ``seq`` that start in ``[start, start + seconds)`` (to within 1e-9 s, the
    rounding of decoded times), in ``seq``'s time, each cut at ``start + seconds``."""
    end = start + seconds
    return [dataclasses.replace(n, end=min(n.end, end)) for n in seq.notes if start - 1e-9 <= n.start < end - 1e-9]


def prime_ids(
    tokenizer,
    seed: NoteSequence,
    prime_seconds: float | None,
    prime_tokens: int | None,
    notices: list[str] | None = None,
) -> list[int]:
    if prime_seconds is not None:
        seed = tail_seconds(seed, prime_seconds)
    try:
        ids = tokenizer.encode(seed)
    except ValueError as e:
        raise GeneratorError(f"seed {seed.source}: {e}") from None
    for line in tokenizer.last_reduced if notices is not None else []:
        notices.append(
            f"more tracks than the model holds: {line}; each continued note goes to the one it is nearest in pitch"
        )
    if prime_tokens is None:  # the prompt_tokens limit, as for text prompts (GENERATOR_PROMPT_TOKENS; 0: all)
        prime_tokens = int(limits.get("prompt_tokens")) or len(ids)
    limit = prime_tokens
    limit -= limit % tokenizer.prompt_multiple
    if notices is not None and limit and len(ids) > limit:
        notices.append(
            f"the seed is {len(ids):,} tokens long; only its last {limit:,} prime the model "
            f"(--prime-tokens, --prime-seconds or GENERATOR_PROMPT_TOKENS changes how much)"
        )
    return tokenizer.cut_prompt(ids, limit)


def compose(
    generator,
    seed=None,
    *,
    options,
    length: int | None = None,
    seconds: float | None = None,
    prime_seconds: float | None = None,
    prime_tokens: int | None = None,
    num_samples: int = 1,
    continuation_only: bool = False,
    log=None,
) -> list[Music]:
    """Continue ``seed`` (a path or NoteSequence; None composes from scratch) ``num_samples`` times,
    sampling as ``options`` (a ``SamplingOptions``) say; ``note_limit=False`` there lifts the
    tokenizer's cap on note length, if it has one."""
    log = log or (lambda message: print(message, file=sys.stderr))
    if seconds is not None and not (0 < seconds <= MAX_SECONDS):
        raise ArgumentError("seconds", f"must be greater than 0 and at most {MAX_SECONDS:.0f}, not {seconds}")
    if prime_seconds is not None and not prime_seconds > 0:
        raise ArgumentError("prime_seconds", f"must be greater than 0, not {prime_seconds}")
    notices: list[str] = []
    seq = read_seed(seed) if isinstance(seed, (str, Path)) else seed
    tokenizer = generator.constraint_tokenizer(options, tokenizer_for(generator.tokenizer, seq))
    prompt = prime_ids(tokenizer, seq, prime_seconds, prime_tokens, notices) if seq is not None else []
    if seq is not None and not prompt:
        only_drums = not any(not n.is_drum for n in seq.notes)
        notices.append(
            "the seed has only drums, which this model does not play (the band model does); composing from scratch"
            if only_drums
            else "nothing of the seed could be encoded; composing from scratch"
        )
        seq = None
    for notice in notices:
        log(notice)
    budget = length if length is not None else (None if seconds is not None else 1000)
    max_tokens = budget if budget is not None else 200_000
    prompt_seconds = tokenizer.duration(prompt)
    chunks, done = [], 0
    stream = generator.stream(prompt, max_tokens, num_samples=num_samples, options=options, tokenizer=tokenizer)
    from generator.progress import progress_bar

    with progress_bar(max_tokens if budget is not None else int(seconds * 10), "generating") as bar:
        for chunk in stream:
            chunks.append(chunk)
            done += chunk.shape[1]
            if budget is not None:
                bar.update(chunk.shape[1])
            elif done % 64 == 0:
                reached = min(tokenizer.duration(row) for row in np.concatenate(chunks, axis=1))
                bar.count = int(min(reached, seconds) * 10)
                bar.update(0)
                if reached >= seconds:
                    break
    new = np.concatenate(chunks, axis=1) if chunks else np.zeros((num_samples, 0), np.int32)
    state = stream.constraint_state
    slot_tracks = tokenizer.slot_tracks(seq) if seq is not None else None
    results = []
    for index, row in enumerate(new):
        row = list(row) + (tokenizer.closing_ids(state, index) if state is not None else [])
        full = tokenizer.decode([BOS] + prompt + row)
        # with --seconds every sample ran until the slowest had that much: cut each one there
        continuation = notes_after(full, prompt_seconds, seconds if budget is None else float("inf"))
        results.append(
            assemble(seq, continuation, prompt_seconds, continuation_only, notices, slot_tracks, full.instruments)
        )
    return results


def assemble(
    seed: NoteSequence | None,
    continuation: list[Note],
    prompt_seconds: float,
    continuation_only: bool,
    notices: list[str],
    slot_tracks: dict[int, list[int]] | None = None,
    decoded: list[Instrument] | None = None,
) -> Music:
    """Put the continuation after the seed, in the seed's tempo, metre and own tracks.

    ``slot_tracks`` maps a continuation note's ``track`` (the tokenizer's slot) to the seed tracks
    it continues; where several share a slot, each note goes to the track whose last notes it is
    nearest in pitch, and a slot the seed did not fill goes to the nearest slot's tracks. Without
    it, note track i goes on the seed's i-th pitched track (voices: soprano on the first, ...).
    Drum hits go to the seed's drum track. ``decoded`` names the instruments when there is no seed."""
    if seed is None:
        seq = NoteSequence(notes=[copy.copy(n) for n in continuation])
        tracks = sorted({n.track for n in continuation}) or [0]
        if decoded is not None and len(decoded) > max(tracks):
            seq.instruments = [copy.copy(i) for i in decoded]
        else:
            seq.instruments = [Instrument(program=_program_of(continuation, t)) for t in range(max(tracks) + 1)]
        return Music(seq, 0.0, list(notices))
    pitched = [i for i, inst in enumerate(seed.instruments) if not inst.is_drum] or [0]
    drum_tracks = sorted({n.track for n in seed.notes if n.is_drum})
    centres = _recent_pitches(seed)
    offset = 0.0 if continuation_only else seed.end_time
    notes = [] if continuation_only else [copy.copy(n) for n in seed.notes]
    instruments = list(seed.instruments) or [Instrument()]
    for n in continuation:
        if n.is_drum and not drum_tracks:  # a model that adds drums to a seed without them: a new track
            instruments.append(Instrument(program=0, is_drum=True, name="drums", channel=9, role="drums"))
            drum_tracks = [len(instruments) - 1]
        if n.is_drum:
            track = drum_tracks[0] if len(drum_tracks) == 1 else _nearest(drum_tracks, centres, n.pitch)
        elif slot_tracks:
            candidates = (
                slot_tracks.get(n.track) or slot_tracks[min(slot_tracks, key=lambda slot: (abs(slot - n.track), -slot))]
            )
            track = candidates[0] if len(candidates) == 1 else _nearest(candidates, centres, n.pitch)
        else:
            track = pitched[n.track % len(pitched)]
        inst = instruments[track] if track < len(instruments) else None
        program = inst.program if inst is not None else n.program
        is_drum = inst.is_drum if inst is not None else n.is_drum
        notes.append(
            Note(
                n.pitch,
                n.start - prompt_seconds + offset,
                n.end - prompt_seconds + offset,
                n.velocity,
                program,
                is_drum,
                track,
            )
        )
    seq = NoteSequence(
        notes=notes,
        tempos=list(seed.tempos),
        time_signature=seed.time_signature,
        instruments=instruments,
        source=seed.source,
    )
    return Music(seq, offset, list(notices))


RECENT_SECONDS = 20.0  # a track's register for the write-back: its notes in the seed's last 20 s


def _recent_pitches(seed: NoteSequence) -> dict[int, float]:
    """Each track's median pitch over the seed's last ``RECENT_SECONDS`` (all its notes if silent then)."""
    start = seed.end_time - RECENT_SECONDS
    by_track: dict[int, list[int]] = {}
    recent: dict[int, list[int]] = {}
    for n in seed.notes:
        by_track.setdefault(n.track, []).append(n.pitch)
        if n.end > start:
            recent.setdefault(n.track, []).append(n.pitch)
    return {t: float(np.median(recent.get(t) or pitches)) for t, pitches in by_track.items()}


def _nearest(tracks: list[int], centres: dict[int, float], pitch: int) -> int:
    """The track among ``tracks`` whose register is nearest ``pitch`` (a silent one last)."""
    return min(tracks, key=lambda t: (abs(centres.get(t, 1e9) - pitch), t))


def _program_of(notes: list[Note], track: int) -> int:
    return next((n.program for n in notes if n.track == track), 0)
