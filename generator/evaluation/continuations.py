"""``generator evaluate --continuations K``: how a model continues pieces it never saw.

For every held-out piece the first ``prompt_beats`` quarter notes (beats found with the piece's
own tempo map) prime the model, and ``K`` continuations of ``continuation_beats`` beats (or
what is left of the piece, if less) are sampled with fixed seeds (piece ``i`` uses seed
``seed + i``; its ``K`` continuations are one batch). The continuations are compared with the
real continuations by ``compare_sets`` (features, OA, KLD, the real-halves reference), plus:

- prompt consistency: the L1 distance between the pitch-class histograms (note counts,
  normalised) of the prompt and of its continuation, for the generated continuations, for the
  real ones, and for shuffled pairings (every prompt with the real continuations of all other
  pieces: the floor a model that ignores its prompt would reach);
- the invalid-event rate: ill-formed tokens per generated token (the tokenizer's
  ``count_invalid_events``: at least ids outside the vocabulary and BOS after the start, and for
  events what the sampling constraint forbids), which the constraint should keep at 0.

Models whose tokenizer merges parts into one stream (events) are compared with both sets read
as one stream (``merge_tracks``). Same seed, checkpoint and options: the same figures.
"""

from __future__ import annotations

import copy
import sys

import numpy as np

from generator.data.notes import Note, NoteSequence
from generator.data.tokenizers.base import BOS
from generator.errors import ArgumentError, GeneratorError
from generator.evaluation.compare import compare_sets, feature_table
from generator.evaluation.features import beats_to_seconds

MAX_TOKENS_PER_SECOND = 200  # a continuation stops here even if its clock has not reached the end
CHECK_EVERY = 32  # tokens between checks of how far the samples' clocks have come


def as_note_sequence(piece) -> NoteSequence:
    """A ``NoteSequence`` of a piece (an SATB grid becomes four tracks at 120 bpm)."""
    if isinstance(piece, NoteSequence):
        return piece
    from generator.data.tokenizers.voices import note_sequence_from_grid

    return note_sequence_from_grid(piece)


def shifted_tempos(tempos, start: float) -> list[tuple[float, float]]:
    """The tempo map seen from ``start`` seconds on (the tempo in force at ``start`` at time 0)."""
    changes = sorted((float(t), float(b)) for t, b in tempos if b > 0) or [(0.0, 120.0)]
    current = [b for t, b in changes if t <= start]
    out = [(0.0, current[-1] if current else changes[0][1])]
    return out + [(t - start, b) for t, b in changes if t > start]


def excerpt(seq: NoteSequence, start: float, end: float) -> NoteSequence:
    """The notes of ``seq`` that start in ``[start, end)``, moved to begin at 0 and cut at ``end``."""
    out = copy.copy(seq)
    out.notes = [
        Note(n.pitch, n.start - start, min(n.end, end) - start, n.velocity, n.program, n.is_drum, n.track)
        for n in seq.notes
        if start <= n.start < end
    ]
    out.tempos = shifted_tempos(seq.tempos, start)
    return out


def pitch_class_histogram(seq: NoteSequence) -> np.ndarray | None:
    """Normalised note counts per pitch class (drums left out), or None without pitched notes."""
    pitches = np.array([n.pitch for n in seq.notes if not n.is_drum], dtype=np.int64)
    if len(pitches) == 0:
        return None
    counts = np.bincount(pitches % 12, minlength=12).astype(float)
    return counts / counts.sum()


def _l1(a, b) -> float | None:
    return None if a is None or b is None else float(np.abs(a - b).sum())


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def sample_continuations(generator, prompt: NoteSequence, seconds: float, samples: int, *, options, tempos=None):
    """``samples`` continuations of ``prompt`` lasting ``seconds``: (list of NoteSequence, invalid, tokens).

    ``tempos`` is the tempo map of the continuations (default: the prompt's, from its end on).
    """
    from generator.generation.compose import notes_after, prime_ids, tokenizer_for

    tokenizer = generator.constraint_tokenizer(options, tokenizer_for(generator.tokenizer, prompt))
    ids = prime_ids(tokenizer, prompt, None, None)
    if not ids:
        return None
    prompt_seconds = tokenizer.duration(ids)
    limit = max(CHECK_EVERY, int(seconds * MAX_TOKENS_PER_SECOND))
    chunks, done = [], 0
    stream = generator.stream(ids, limit, num_samples=samples, options=options, tokenizer=tokenizer)
    for chunk in stream:
        chunks.append(chunk)
        done += chunk.shape[1]
        if done % CHECK_EVERY == 0 or chunk.shape[1] > 1:
            rows = np.concatenate(chunks, axis=1)
            if min(tokenizer.duration(row) for row in rows) >= seconds:
                break
    rows = np.concatenate(chunks, axis=1)
    state = stream.constraint_state
    out, invalid = [], 0
    closed = list(ids)  # the prompt with its own sounding notes closed: its invalid events are not the model's
    if tokenizer.has_constraint:
        prompt_state = tokenizer.new_constraint_state(1)
        for token in [BOS] + list(ids):
            prompt_state = tokenizer.advance(prompt_state, np.array([token]))
        closed += tokenizer.closing_ids(prompt_state, 0)
    before = tokenizer.count_invalid_events([BOS] + closed)
    tempos = tempos or shifted_tempos(prompt.tempos, prompt.end_time)
    for index, row in enumerate(rows):
        row = list(row) + (tokenizer.closing_ids(state, index) if state is not None else [])
        invalid += tokenizer.count_invalid_events([BOS] + list(ids) + row) - before
        full = tokenizer.decode([BOS] + list(ids) + row)
        notes = [
            Note(n.pitch, n.start - prompt_seconds, n.end - prompt_seconds, n.velocity, n.program, n.is_drum, n.track)
            for n in notes_after(full, prompt_seconds, seconds)
        ]
        out.append(
            NoteSequence(
                notes=notes,
                tempos=tempos,
                time_signature=prompt.time_signature,
                instruments=list(full.instruments),
                source=f"{prompt.source} continuation {index + 1}",
            )
        )
    return out, invalid, int(rows.size)


def evaluate_continuations(
    generator,
    pieces: list,
    *,
    samples: int = 4,
    prompt_beats: float = 8.0,
    continuation_beats: float = 16.0,
    options,
    log=None,
) -> dict:
    """Prompt the model with the start of every piece and compare its continuations with the real ones,
    sampled as ``options`` (a ``SamplingOptions`` with its ``random_seed``: piece i uses that + i) say."""
    log = log or (lambda message: print(message, file=sys.stderr))
    for name, value in (
        ("continuations", samples),
        ("prompt_beats", prompt_beats),
        ("continuation_beats", continuation_beats),
    ):
        if not value > 0:
            raise ArgumentError(name, f"must be greater than 0, not {value}")
    seed = options.random_seed
    merge = getattr(generator.tokenizer, "kind", "") == "events"  # one stream of notes: compare both as one
    real, generated, prompts, skipped = [], [], [], 0
    invalid = tokens = 0
    from generator.progress import progress_bar

    with progress_bar(len(pieces), "continuing") as bar:
        for index, piece in enumerate(pieces):
            bar.update(1)
            seq = as_note_sequence(piece)
            pitched = [n for n in seq.notes if not n.is_drum]
            cut, stop = beats_to_seconds([prompt_beats, prompt_beats + continuation_beats], seq.tempos)
            last_onset = max((n.start for n in pitched), default=0.0)
            prompt = excerpt(seq, 0.0, float(cut))
            prompt.tempos = list(seq.tempos)
            if last_onset < cut or pitch_class_histogram(prompt) is None:
                skipped += 1
                continue
            stop = min(float(stop), seq.end_time)
            result = sample_continuations(
                generator,
                prompt,
                stop - float(cut),
                samples,
                options=options.replace(random_seed=seed + index),
                tempos=shifted_tempos(seq.tempos, float(cut)),
            )
            if result is None:
                skipped += 1
                continue
            continuations, bad, count = result
            invalid, tokens = invalid + bad, tokens + count
            real.append(excerpt(seq, float(cut), stop))
            generated.append(continuations)
            prompts.append(prompt)
    if not real:
        raise GeneratorError(f"none of the {len(pieces)} pieces is longer than the {prompt_beats:g}-beat prompt")
    if skipped:
        log(f"skipped {skipped} of {len(pieces)} pieces with no notes in the prompt or none after it")
    prompt_hist = [pitch_class_histogram(p) for p in prompts]
    real_hist = [pitch_class_histogram(r) for r in real]
    gen_l1 = [_l1(prompt_hist[i], pitch_class_histogram(g)) for i, group in enumerate(generated) for g in group]
    real_l1 = [_l1(prompt_hist[i], real_hist[i]) for i in range(len(real))]
    shuffled = [_l1(prompt_hist[i], real_hist[j]) for i in range(len(real)) for j in range(len(real)) if i != j]
    flat = [g for group in generated for g in group]
    comparison = compare_sets(
        feature_table(real, merge_tracks=merge), feature_table(flat, merge_tracks=merge), seed=seed
    )
    return {
        "pieces": len(real),
        "skipped": skipped,
        "continuations_per_piece": samples,
        "prompt_beats": prompt_beats,
        "continuation_beats": continuation_beats,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": generator.top_p(options.top_p),
        "seed": seed,
        "merge_tracks": merge,
        "tokens": tokens,
        "invalid_events": invalid,
        "invalid_event_rate": invalid / max(tokens, 1),
        "prompt_consistency": {"generated": _mean(gen_l1), "real": _mean(real_l1), "shuffled": _mean(shuffled)},
        **comparison,
    }


def format_continuations(result: dict) -> str:
    """The result of ``evaluate_continuations`` as text: settings, prompt consistency, the feature table."""
    from generator.evaluation.music_stats import format_report

    pc = result["prompt_consistency"]
    top = []
    if result["top_k"] is not None:
        top.append(f"top-k {result['top_k']}")
    if result["top_p"] is not None:
        top.append(f"top-p {result['top_p']}")
    lines = [
        f"{result['corpus']}: {result['pieces']} pieces ({result['skipped']} skipped), "
        f"{result['continuations_per_piece']} continuations each of up to {result['continuation_beats']:g} beats "
        f"after a {result['prompt_beats']:g}-beat prompt; temperature {result['temperature']:g}"
        + (", " + ", ".join(top) if top else ", no top-k/top-p")
        + f", seeds {result['seed']}.."
        f"{result['seed'] + result['pieces'] + result['skipped'] - 1}",
        f"invalid events: {result['invalid_events']} of {result['tokens']:,} tokens "
        f"({100 * result['invalid_event_rate']:.2f} %)",
        "prompt consistency (L1 between pitch-class histograms of prompt and continuation, 0 = same, 2 = disjoint): "
        f"generated {_fmt(pc['generated'])}, real {_fmt(pc['real'])}, shuffled pairings {_fmt(pc['shuffled'])}",
        format_report(result, "real continuations", "generated continuations"),
    ]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
