"""Objective statistics of sets of pieces: what ``generator music-stats`` computes.

The public API, for the command line, notebooks and other evaluations::

    >>> from generator.evaluation.music_stats import piece_features, compare_sets, load_set
    >>> piece_features(grid_or_note_sequence)          # {"pitch_class_entropy": 2.9, ...}
    >>> real = load_set("chorales.json", split="valid")
    >>> generated = load_set("samples/")
    >>> report = compare_sets(real, generated)        # the JSON object of `music-stats --json`

Features are defined in ``generator.evaluation.features``, the set comparison (overlapping
area and KL divergence of distance distributions, Yang & Lerch 2018) in
``generator.evaluation.compare``. A *set* is read from a spec (``load_set``): a directory or
file of MIDI/MusicXML/ABC/kern pieces, a built-in corpus name, a JSB Chorales JSON file with a
split, or ``heldout:CHECKPOINT`` (the whole pieces that checkpoint held out for validation).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from generator.errors import ArgumentError, GeneratorError
from generator.evaluation.compare import compare_sets, feature_table, overlap_and_kld  # noqa: F401  (API)
from generator.evaluation.features import FEATURES, VOICE_FEATURES, as_grid_piece, piece_features  # noqa: F401

__all__ = ["piece_features", "compare_sets", "load_set", "held_out_corpus", "format_report", "plot_report", "FEATURES"]

HELD_OUT_PREFIX = "heldout:"


def load_set(spec: str, *, split: str = "", report=None) -> list:
    """The pieces of a set spec (see the module docstring): ``NoteSequence`` objects or SATB grids.

    Files that cannot be read are reported through ``report`` (default: stderr) and skipped;
    a spec that names nothing readable is a ``GeneratorError``.
    """
    from generator.data import corpora

    report = report or (lambda message: print(message, file=sys.stderr))
    if spec.startswith(HELD_OUT_PREFIX):
        return held_out_corpus(spec[len(HELD_OUT_PREFIX) :]).documents()
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".json" and path.is_file() and not split:
        raise ArgumentError.sentence(f"{spec} is a JSON corpus: name the part to read with split (e.g. valid)", "split")
    if path.is_file() and path.suffix.lower() not in corpora.MUSIC_SUFFIXES + (".json",):
        raise GeneratorError(
            f"{spec}: unsupported file type {path.suffix or '(none)'}; use a directory of "
            f"pieces or one of {', '.join(corpora.MUSIC_SUFFIXES)}, .json"
        )
    corpus = corpora.open_corpus(spec, "music", split=split)  # a missing spec fails here
    if path.exists() and path.suffix.lower() != ".json":  # music files: report the unreadable ones
        pieces = corpora.read_music_files(corpora._files_under(path, corpora.MUSIC_SUFFIXES), report)
    else:
        pieces = corpus.documents()
    pieces = [p for p in pieces if _has_notes(p)]
    if not pieces:
        raise GeneratorError(f"{spec} holds no readable pieces with notes")
    return pieces


def _has_notes(piece) -> bool:
    if isinstance(piece, np.ndarray):
        return bool((piece >= 0).any())
    return any(not n.is_drum for n in piece.notes)


def held_out_corpus(checkpoint: str):
    """The pieces a checkpoint never trained on, as a ``Corpus`` named ``heldout:CHECKPOINT``: its
    validation split, or the whole documents it held out (read only when its documents are)."""
    import dataclasses
    import hashlib

    from generator.data import corpora
    from generator.data.dataset import held_out_documents, resolve_holdout
    from generator.training import checkpoints

    run_dir = checkpoints.resolve(checkpoint)
    config = checkpoints.read_config(run_dir)
    if config.modality != "music":
        raise GeneratorError(f"checkpoint {checkpoint} is a {config.modality} model, not music")
    name = HELD_OUT_PREFIX + str(checkpoint)
    if config.val_split:
        return dataclasses.replace(corpora.open_corpus(config.corpus, "music", split=config.val_split), name=name)
    source = corpora.open_corpus(config.corpus, "music", split=config.split)

    def read() -> list:
        documents = source.documents()
        if config.val_fraction <= 0 or resolve_holdout(config.holdout, len(documents)) != "documents":
            raise GeneratorError(
                f"checkpoint {checkpoint} did not hold out whole pieces of {config.corpus} "
                "(it validated on parts of pieces); give the held-out pieces as a corpus instead"
            )
        return [documents[i] for i in held_out_documents(len(documents), config.val_fraction, config.random_seed)]

    selection = f"{source.fingerprint}:heldout:{config.holdout}:{config.val_fraction}:{config.random_seed}"
    return corpora.Corpus(name, "music", hashlib.sha256(selection.encode()).hexdigest(), read)


# -- presenting a comparison -----------------------------------------------------------------------
def _cell(stats) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.3g} ± {stats['sd']:.2g}"


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_report(report: dict, real_name: str = "real", generated_name: str = "generated") -> str:
    """The comparison as a plain-text table, one line per feature."""
    header = ("feature", "real mean ± sd", "generated mean ± sd", "OA", "KLD", "ref OA", "ref KLD")
    rows = [header]
    for name, f in report["features"].items():
        if f["real"] is None and f["generated"] is None:
            continue
        rows.append(
            (
                name,
                _cell(f["real"]),
                _cell(f["generated"]),
                _number(f["oa"]),
                _number(f["kld"]),
                _number(f["reference_oa"]),
                _number(f["reference_kld"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"real: {report['real_pieces']} pieces ({real_name}); generated: {report['generated_pieces']} pieces "
        f"({generated_name})"
    ]
    for k, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        f"mean OA {_number(report['mean_oa'])} (real against real: {_number(report['mean_reference_oa'])}); "
        "OA 1 and KLD 0 mean the same distribution"
    )
    lines.append(
        "OA, KLD: the real set's distances among its pieces against its distances to the generated pieces; "
        "ref: the same between two halves of the real set"
    )
    return "\n".join(lines)


def plot_report(
    real_table: np.ndarray, generated_table: np.ndarray, path, names=FEATURES, labels=("real", "generated")
) -> Path:
    """Draw each feature's distribution in the two sets side by side (histograms) into a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        k for k in range(len(names)) if not (np.isnan(real_table[:, k]).all() and np.isnan(generated_table[:, k]).all())
    ]
    cols = 4
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    for ax, k in zip(axes.ravel(), shown):
        r, g = real_table[:, k], generated_table[:, k]
        r, g = r[~np.isnan(r)], g[~np.isnan(g)]
        both = np.concatenate([r, g])
        lo, hi = float(both.min()), float(both.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 21)
        ax.hist([r, g], bins=edges, density=True, label=list(labels), color=["#1f77b4", "#ff7f0e"])
        ax.set_title(names[k], fontsize=9)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
