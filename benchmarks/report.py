"""The benchmark suite's report: one row per figure with what it is compared with, as a text table,
as Markdown for docs/benchmarks.md, and as the figures of README.md's performance rows."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import ROOT

TARGETS = {
    "sampling_b1_vs_tf_tutorial": ">= 20x",
    "sampling_b64_fraction_of_tf_peak": ">= 0.70",
    "train_vs_torch": ">= 1.25x",
    "memory_100mb_peak_rss_mb": "< 2,048",
    "band_continuation_30s_s": "< 20 s",
    "band_continuation_phases_s": "< 15 s",
}


def _n(value, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _x(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}x"


def rows(r: dict) -> list[tuple[str, str, str, str, str]]:
    """(figure, project, compared with, ratio, target) for every figure of ``r``."""
    peak = "TensorFlow matmul at the step's shapes"
    out = [
        (
            "sampling, batch 1 (tokens/s)",
            _n(r["sampling_b1_tokens_per_s"]),
            f"{_n(r['tf_tutorial_b1_tokens_per_s'])} (TF tutorial's one-step loop)",
            _x(r["sampling_b1_vs_tf_tutorial"], 1),
            TARGETS["sampling_b1_vs_tf_tutorial"],
        ),
        (
            "",
            "",
            f"{_n(r['window_loop_tokens_per_s'], 1)} (predict on a 100-token window)",
            _x(r["sampling_b1_vs_window_loop"], 0),
            "",
        ),
        (
            "",
            "",
            f"{_n(r.get('sampling_b1_xla_tokens_per_s'))} (this project's XLA loop, GENERATOR_NATIVE=0)",
            _x(r["sampling_b1_tokens_per_s"] / r["sampling_b1_xla_tokens_per_s"], 2)
            if r.get("sampling_b1_xla_tokens_per_s")
            else "n/a",
            "",
        ),
        (
            "",
            "",
            f"{peak}, batch 1: {_n(r['tf_peak_b1_gflops'], 1)} GFLOP/s (one matmul, one thread)",
            f"{r['sampling_b1_fraction_of_tf_peak']:.2f} of peak",
            "",
        ),
        (
            "sampling, batch 64 (tokens/s)",
            _n(r["sampling_b64_tokens_per_s"]),
            f"{peak}, batch 64: {_n(r['tf_peak_b64_gflops'], 1)} GFLOP/s",
            f"{r['sampling_b64_fraction_of_tf_peak']:.2f} of peak",
            TARGETS["sampling_b64_fraction_of_tf_peak"],
        ),
        (
            "",
            "",
            f"{_n(r['tf_tutorial_b64_tokens_per_s'])} (TF tutorial's loop, batch 64)",
            _x(r["sampling_b64_vs_tf_tutorial"], 1),
            "",
        ),
    ]
    for batch in (1, 64):
        out.append(
            (
                f"band model sampling, batch {batch} (tokens/s)",
                _n(r[f"band_b{batch}_tokens_per_s"]),
                f"{peak}, batch {batch}: {_n(r[f'band_b{batch}_tf_peak_gflops'], 1)} GFLOP/s",
                f"{r[f'band_b{batch}_fraction_of_tf_peak']:.2f} of peak",
                "",
            )
        )
    out += [
        (
            "band: 30 s after a 4-minute 10-track song (s)",
            _n(r["band_continuation_30s_s"], 1),
            "whole generate-music command",
            "",
            TARGETS["band_continuation_30s_s"],
        ),
        (
            "",
            _n(r["band_continuation_phases_s"], 1),
            "in process: load, read, tokenize, prime, sample, write",
            "",
            TARGETS["band_continuation_phases_s"],
        ),
        (
            "training (tokens/s)",
            _n(r["train_tokens_per_s"]),
            f"{_n(r['torch_tokens_per_s'])} (PyTorch nn.LSTM, {r['train_threads']} threads, as ours)",
            _x(r["train_vs_torch"]),
            TARGETS["train_vs_torch"],
        ),
        ("", "", f"{_n(r['keras_fit_tokens_per_s'])} (Keras fit)", _x(r["train_vs_keras_fit"]), ""),
    ]
    extra = {
        "keras_fit_xla_tokens_per_s": "Keras fit, XLA",
        "train_no_xla_tokens_per_s": "trainer, --no-jit",
        "train_xla_keras_lstm_tokens_per_s": "trainer, XLA over Keras LSTM layers",
    }
    for key, label in extra.items():
        if r.get(key) is not None:
            out.append(("", "", f"{_n(r[key])} ({label})", _x(r["train_tokens_per_s"] / r[key]), ""))
    sizes = r["sizes"]
    out += [
        (
            f"peak memory, {sizes['corpus_mb']} MB corpus + {sizes['corpus_steps']} steps (MB)",
            _n(r["memory_100mb_peak_rss_mb"]),
            "",
            "",
            TARGETS["memory_100mb_peak_rss_mb"],
        ),
        (
            "MIDI tokenization, cold (files/s)",
            _n(r["midi_files_per_s_cold"], 1),
            f"{_n(r['midi_files_per_s_music21'], 1)} (music21 parse)",
            _x(r["midi_cold_vs_music21"], 1),
            "",
        ),
        ("MIDI tokenization, cached (files/s)", _n(r["midi_files_per_s_cached"], 1), "", "", ""),
    ]
    return out


def header(r: dict) -> str:
    m = r["machine"]
    loads = ", ".join(f"{k[len('load_average_') :]} {r[k]}" for k in r if k.startswith("load_average_"))
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['date']}; load average {m['load_average']} at the start, {loads}, "
        f"{m.get('load_average_end', 'n/a')} at the end; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    )


def table(r: dict) -> str:
    """The results as an aligned text table: figure, this project, compared with, ratio, target."""
    body = [("figure", "project", "compared with", "ratio", "target"), *rows(r)]
    widths = [max(len(row[i]) for row in body) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = "\n(--quick: toy sizes, the figures mean nothing)" if r["quick"] else ""
    return header(r) + "\n\n" + "\n".join(lines) + note


def markdown(r: dict) -> str:
    """The same table in Markdown, for README.md and docs/benchmarks.md (``--write-docs``)."""
    lines = ["| figure | project | compared with | ratio | target |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(r)]
    return f"{header(r)}; the whole run took {r.get('seconds', 0):.0f} s.\n\n" + "\n".join(lines)


DOCS_START, DOCS_END = "<!-- generator bench --write-docs: start -->", "<!-- generator bench --write-docs: end -->"
README_ROWS = {  # the README's performance rows: label -> the figure from a run
    "training speed against the same model in PyTorch, CPU, same threads": lambda r: (
        f"{_x(r['train_vs_torch'])} ({_n(r['train_tokens_per_s'])} vs {_n(r['torch_tokens_per_s'])} tokens/s)"
    ),
    "sampling at batch 1 against TensorFlow's one-step tutorial loop": lambda r: (
        f"{_x(r['sampling_b1_vs_tf_tutorial'], 1)} ({_n(r['sampling_b1_tokens_per_s'])} tokens/s)"
    ),
    "sampling at batch 64, share of TensorFlow's matmul peak at the step's shapes": lambda r: (
        f"{r['sampling_b64_fraction_of_tf_peak']:.2f} ({_n(r['sampling_b64_tokens_per_s'])} tokens/s)"
    ),
    "30 s band continuation of a 4-minute, 10-track song": lambda r: (
        f"{_n(r['band_continuation_30s_s'], 1)} s command, {_n(r['band_continuation_phases_s'], 1)} s in process"
    ),
}


def write_docs(r: dict, root: Path = ROOT) -> None:
    """Put this run's table between the markers of docs/benchmarks.md and its figures in README.md's rows."""
    page = root / "docs" / "benchmarks.md"
    text = page.read_text()
    if DOCS_START in text and DOCS_END in text:
        before, rest = text.split(DOCS_START, 1)
        page.write_text(before + DOCS_START + "\n" + markdown(r) + "\n" + DOCS_END + rest.split(DOCS_END, 1)[1])
    readme = root / "README.md"
    lines = readme.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        for label, figure in README_ROWS.items():
            if line.startswith(f"| {label} |"):
                cells = line.split(" | ")
                cells[1] = figure(r)
                lines[i] = " | ".join(cells)
    readme.write_text("".join(lines))
