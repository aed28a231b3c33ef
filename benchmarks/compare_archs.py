"""LSTM, LSTM with attention and Transformer side by side on one corpus, at equal parameter count and
equal wall-clock training budget (``generator compare``).

Every arch trains with the project's trainer on the same corpus, tokenizer, training windows and
validation split. The LSTM's sizes are given; lstm-attention and the Transformer get the widths
whose parameter count is closest to the LSTM's (within 10 %, checked). Each run validates every
``--steps-per-epoch`` steps and stops at the first validation after ``--minutes`` of training
(wall-clock: validation passes count; the first epoch counts as long as the median later one, since
its excess is XLA's one-off compilation). With a wall-clock budget the archs train one after the
other, each with the machine to itself; with ``--clock cpu`` they train at once. Then, from the best weights reached within
the budget, it measures:

- validation loss (nats and bits per token) at the budget, interpolated on the validation curve;
- training tokens per second (steps after the first epoch, which holds XLA's compilation);
- sampling tokens per second at batch 1 and 64, for generated lengths 256, 2,048 and 8,192
  (the compiled decode loop, random sampling at temperature 1, no constraint), and the decode
  state's bytes per sample after each length;
- the wall-clock time of ``generator evaluate`` (a fresh process, as a user runs it) over the
  validation text.

Writes ``compare.json``, ``compare.txt``, ``compare.md`` (Markdown tables) and ``compare.png``
(validation loss against training seconds) into ``--output`` and prints a table. The runs are kept in ``--output/<arch>`` (resumed when present).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import child_env, int_range, positive_float

ARCHS = ("lstm", "lstm-attention", "transformer")
LENGTHS = (256, 2048, 8192)
BATCHES = (1, 64)
TRANSFORMER_LEARNING_RATE = 1e-3  # the Transformer presets' (nanoGPT's for its small models); the LSTMs keep 2e-3


class BudgetReached(KeyboardInterrupt):
    """Raised from the trainer's log once the wall-clock budget is spent (the trainer saves and stops)."""


def count_params(config) -> int:
    import keras

    from generator.models import build_model

    model = build_model(config)
    n = int(sum(math.prod(v.shape) for v in model.trainable_variables))
    del model
    keras.backend.clear_session()
    return n


def matched(config, arch: str, target: int, step: int, choices: range):
    """``config`` for ``arch`` with the ``units`` (multiple of ``step``) whose parameter count is nearest ``target``
    (bisection: the count grows with the width)."""
    widths = [u for u in choices if u % step == 0]

    def sized(units):
        changes = dict(arch=arch, units=units, **({"embedding": units} if arch == "transformer" else {}))
        candidate = config.replace(**changes)
        return candidate, count_params(candidate)

    lo, hi = 0, len(widths) - 1
    while lo < hi:  # the first width with at least ``target`` parameters
        mid = (lo + hi) // 2
        if sized(widths[mid])[1] < target:
            lo = mid + 1
        else:
            hi = mid
    return min((sized(widths[i]) for i in {max(lo - 1, 0), lo}), key=lambda c: abs(c[1] - target))


def sized_configs(lstm_config, transformer_layers: int) -> dict:
    """Each arch's config at the LSTM's parameter count (within 10 %)."""
    target = count_params(lstm_config)
    out = {"lstm": (lstm_config, target)}
    heads = lstm_config.heads
    units = lstm_config.units
    out["lstm-attention"] = matched(
        lstm_config, "lstm-attention", target, heads, range(max(heads, units // 2), units + 1, heads)
    )
    transformer = lstm_config.replace(layers=transformer_layers, learning_rate=TRANSFORMER_LEARNING_RATE)
    out["transformer"] = matched(
        transformer, "transformer", target, 2 * heads, range(2 * heads, 2 * units + 1, 2 * heads)
    )
    for arch, (_, n) in out.items():
        if abs(n - target) > 0.1 * target:
            raise ValueError(f"{arch} could not be sized within 10 % of {target:,} parameters ({n:,})")
    return out


def train_within(corpus: str, run_dir: Path, config, budget_s: float, log, measure: str = "wall") -> list[dict]:
    """Train ``config`` until the first validation after ``budget_s`` seconds; the run's history."""
    from generator import api

    run_dir = Path(run_dir)

    cpu_file = Path(run_dir) / "cpu_seconds.json"

    def watch(message: str):
        log(f"[{config.arch}] {message}")
        if message.startswith("epoch "):
            cpu = json.loads(cpu_file.read_text()) if cpu_file.exists() else []
            cpu_file.write_text(json.dumps(cpu + [cpu_offset + time.process_time()]))
            if len(read_history(run_dir)) > 1 and spent(run_dir, measure) >= budget_s:
                raise BudgetReached

    previous = json.loads(cpu_file.read_text()) if cpu_file.exists() else []
    cpu_offset = (previous[-1] if previous else 0.0) - time.process_time()  # a resumed run goes on counting

    settings = {
        k: getattr(config, k)
        for k in (
            "arch",
            "layers",
            "units",
            "embedding",
            "heads",
            "attention_window",
            "dropout",
            "seq_len",
            "batch_size",
            "learning_rate",
            "epochs",
            "patience",
            "lr_patience",
            "steps_per_epoch",
            "seed",
            "tokenizer",
            "val_fraction",
            "holdout",
            "split",
            "val_split",
        )
    }
    done = read_history(run_dir)
    if not (len(done) > 1 and spent(run_dir, measure) >= budget_s):
        try:
            api.train(corpus, run_dir, modality=config.modality, log=watch, progress=False, **settings)
        except BudgetReached:
            pass
    return read_history(run_dir)


EVALUATE = "import sys; from generator.cli.main import generator; sys.argv[0] = 'generator'; generator()"
WORKER = """
import json, sys
from benchmarks.compare_archs import train_within
from generator.config import RunConfig
train_within(sys.argv[1], sys.argv[2], RunConfig.from_dict(json.loads(sys.argv[3])), float(sys.argv[4]), print,
             sys.argv[5])
"""


def vocabulary_size(corpus: str, modality: str, tokenizer: str, split: str) -> int:
    """The vocabulary the trainer's tokenizer will have on ``corpus`` (tokenized once and cached)."""
    from generator.data import corpora, dataset

    source = corpora.open_corpus(corpus, modality, split=split)
    return dataset.tokenize(source, dataset.TokenizerFactory(tokenizer)).tokenizer.vocab_size


def read_history(run_dir: Path) -> list[dict]:
    import csv

    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def spent(run_dir: Path, measure: str) -> float:
    """Seconds of ``measure`` (wall or cpu) a run has trained for, as ``clock`` counts them."""
    return clock(read_history(run_dir), read_cpu(run_dir) if measure == "cpu" else None)[-1]


def read_cpu(run_dir: Path) -> list[float]:
    path = Path(run_dir) / "cpu_seconds.json"
    return json.loads(path.read_text()) if path.exists() else []


def clock(history: list[dict], cpu: list[float] | None = None) -> list[float]:
    """Seconds at each validation: wall-clock, or with ``cpu`` (the training process's cumulative CPU
    seconds at each validation) CPU time. The first epoch counts as long as the median later one
    (its excess is XLA compiling the steps, a fixed cost that would swamp short budgets)."""
    seconds = (
        [h["seconds"] for h in history]
        if cpu is None
        else [b - a for a, b in zip([0.0] + cpu[: len(history) - 1], cpu[: len(history)])]
    )
    if len(seconds) > 1:
        later = sorted(seconds[1:])
        seconds[0] = min(seconds[0], later[len(later) // 2])
    out, t = [], 0.0
    for s in seconds:
        t += s
        out.append(t)
    return out


def loss_at(history: list[dict], seconds: float, cpu: list[float] | None = None) -> float:
    """The validation loss at ``seconds`` (of ``clock``), linearly interpolated between validations."""
    prev = None
    for h, now in zip(history, clock(history, cpu)):
        if now >= seconds:
            if prev is None:
                return h["val_loss"]
            return prev[1] + (h["val_loss"] - prev[1]) * (seconds - prev[0]) / (now - prev[0])
        prev = (now, h["val_loss"])
    return history[-1]["val_loss"]


def training_rate(history: list[dict], config) -> float:
    """Training tokens per second over the epochs after the first (validation passes included)."""
    later = history[1:] or history
    return len(later) * config.steps_per_epoch * config.batch_size * config.seq_len / sum(h["seconds"] for h in later)


def sampling_rates(generator) -> dict:
    """Tokens per second and decode-state bytes per sample for every batch and length."""
    import numpy as np
    import tensorflow as tf

    from generator.generation import sampling

    def run(loop, prompts, length):
        logits, states = loop.prime(prompts)
        history = loop._history(prompts)
        seed = tf.constant([1, 0], tf.int32)
        done = 0
        while done < length:
            n = min(loop.chunk, length - done)
            tokens, logits, states, history = loop._run_chunk(
                logits, states, history, seed, tf.constant(done), tf.constant(n)
            )
            done += n
        tokens.numpy()
        return states

    out = {}
    for batch in BATCHES:
        loop = sampling.DecodeLoop(generator.decoder, sampling.Sampler(1.0))
        prompts = np.zeros((batch, 1), np.int32)  # BOS
        run(loop, prompts, 2 * loop.chunk)  # compile: priming, a first chunk and a later one
        for length in LENGTHS:
            started, cpu_started = time.perf_counter(), time.process_time()
            states = run(loop, prompts, length)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            state_bytes = sum(int(np.prod(t.shape)) * t.dtype.size for t in tf.nest.flatten(states) if t.shape.rank)
            out[f"batch {batch}, {length} tokens"] = {
                "tokens_per_s": batch * length / seconds,
                "tokens_per_cpu_s": batch * length / cpu_seconds,
                "state_bytes_per_sample": state_bytes // batch,
            }
    return out


def evaluate_time(run_dir: Path, corpus: str, split: str) -> dict:
    """Wall-clock seconds of ``generator evaluate --json`` in a fresh process, and its result."""
    argv = [
        sys.executable,
        "-c",
        EVALUATE,
        "evaluate",  # the command, in a child process, as a user runs it
        "--checkpoint",
        str(run_dir),
        "--corpus",
        corpus,
        "--json",
    ] + (["--split", split] if split else [])
    import resource

    def children_cpu():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    started, cpu_started = time.perf_counter(), children_cpu()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - started, children_cpu() - cpu_started
    if done.returncode:
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "error": done.stderr.strip()[-300:]}
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, **json.loads(done.stdout.strip().splitlines()[-1])}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for arch, r in results.items():
        xs, ys = (
            clock(r["history"], r["cpu_seconds"] if r["clock"] == "cpu" else None),
            [h["val_loss"] for h in r["history"]],
        )
        ax.plot(xs, ys, marker=".", label=f"{arch} ({r['parameters']:,} parameters)")
    ax.axvline(results[next(iter(results))]["budget_s"], color="grey", linestyle=":", linewidth=1)
    r = next(iter(results.values()))
    ax.set_xlabel("CPU seconds of the training process" if r["clock"] == "cpu" else "wall-clock training seconds")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(results: dict) -> str:
    rows = [
        f"{'arch':<15} {'params':>9} {'val nats':>9} {'val bits':>9} {'best nats':>9} {'train tok/s':>12} "
        f"{'tok/CPU-s':>10} {'evaluate s':>11}"
    ]
    for arch, r in results.items():
        rows.append(
            f"{arch:<15} {r['parameters']:>9,} {r['val_loss_nats_at_budget']:>9.4f} "
            f"{r['val_bits_at_budget']:>9.3f} {r['best_val_loss_nats']:>9.4f} {r['train_tokens_per_s']:>12,.0f} "
            f"{r['train_tokens_per_cpu_s'] or 0:>10,.0f} {r['evaluate']['seconds']:>6.1f} "
            f"({r['evaluate']['cpu_seconds']:.1f} CPU)"
        )
    rows.append("")
    rows.append(
        f"{'sampling tokens/s, per CPU-s, (state bytes per sample)':<30}" + "".join(f"{a:>34}" for a in results)
    )
    for key in next(iter(results.values()))["sampling"]:
        rows.append(
            f"{key:<30}"
            + "".join(
                f"{r['sampling'][key]['tokens_per_s']:>12,.0f} {r['sampling'][key]['tokens_per_cpu_s']:>10,.0f} "
                f"({r['sampling'][key]['state_bytes_per_sample']:>8,})"
                for r in results.values()
            )
        )
    return "\n".join(rows)


def markdown(results: dict) -> str:
    """The results as two Markdown tables (training and evaluation; sampling and decode state)."""
    archs = list(results)
    unit = "CPU s" if next(iter(results.values()))["clock"] == "cpu" else "s"
    lines = ["| | " + " | ".join(archs) + " |", "|---" * (len(archs) + 1) + "|"]

    def row(name, cell):
        lines.append(f"| {name} | " + " | ".join(cell(results[a]) for a in archs) + " |")

    row("parameters", lambda r: f"{r['parameters']:,}")
    row("sizes", lambda r: f"{r['config']['layers']} x {r['config']['units']}, embedding {r['config']['embedding']}")
    row(
        f"validation loss at the budget ({r0(results)['budget_s']:g} {unit}), nats / bits per token",
        lambda r: f"**{r['val_loss_nats_at_budget']:.4f}** / {r['val_bits_at_budget']:.3f}",
    )
    row(
        "training tokens per second (wall; per CPU-second)",
        lambda r: f"{r['train_tokens_per_s']:,.0f}; {r['train_tokens_per_cpu_s'] or 0:,.0f}",
    )
    row(
        "`generator evaluate` on the validation text, seconds (wall; CPU)",
        lambda r: f"{r['evaluate']['seconds']:.1f}; {r['evaluate']['cpu_seconds']:.1f}",
    )
    row(
        "`generator evaluate` result, nats per token",
        lambda r: f"{r['evaluate'].get('nll_per_token', float('nan')):.4f}",
    )
    lines += [
        "",
        "| sampling tokens per second (wall; per CPU-second) | " + " | ".join(archs) + " |",
        "|---" * (len(archs) + 1) + "|",
    ]
    for key in r0(results)["sampling"]:
        row(
            key,
            lambda r, key=key: (
                f"{r['sampling'][key]['tokens_per_s']:,.0f}; {r['sampling'][key]['tokens_per_cpu_s']:,.0f}"
            ),
        )
    lines += ["", "| decode state, bytes per sample | " + " | ".join(archs) + " |", "|---" * (len(archs) + 1) + "|"]
    for key in r0(results)["sampling"]:
        if key.startswith("batch 1,"):
            row(f"after {key.split(', ')[1]}", lambda r, key=key: f"{r['sampling'][key]['state_bytes_per_sample']:,}")
    return "\n".join(lines)


def r0(results: dict) -> dict:
    return next(iter(results.values()))


def compare(
    corpus: str,
    output: Path,
    modality: str,
    minutes: float,
    units: int,
    layers: int,
    transformer_layers: int,
    embedding: int,
    heads: int,
    window: int,
    seq_len: int,
    batch_size: int,
    dropout: float,
    steps_per_epoch: int,
    split: str = "",
    val_split: str = "",
    eval_corpus: str = "",
    eval_split: str = "",
    archs=ARCHS,
    log=print,
    val_fraction: float = 0.1,
    measure: str = "wall",
) -> dict:
    """Train and measure every arch; returns (and writes) the results."""
    from generator.config import preset

    output.mkdir(parents=True, exist_ok=True)
    name = "chorales" if modality == "music" and (corpus.endswith(".json") or corpus == "chorales") else modality
    vocab = vocabulary_size(corpus, modality, preset(name).tokenizer, split)
    base = preset(name).replace(
        vocab_size=vocab,
        corpus=corpus,
        layers=layers,
        units=units,
        embedding=embedding,
        heads=heads,
        attention_window=window,
        seq_len=seq_len,
        batch_size=batch_size,
        dropout=dropout,
        epochs=100_000,
        patience=100_000,
        lr_patience=4,
        steps_per_epoch=steps_per_epoch,
        split=split,
        val_split=val_split,
    )
    if not val_split:
        base = base.replace(
            holdout="tail", val_fraction=val_fraction
        )  # the last share of each document, like nanoGPT's last 10 %
    budget = 60 * minutes
    if not val_split and not eval_corpus and modality == "text" and Path(corpus).is_file():
        # evaluate is timed on the validation text: the held-out tail of the one document
        text = Path(corpus).read_text(encoding="utf-8")
        eval_corpus = str(output / "validation.txt")
        Path(eval_corpus).write_text(text[len(text) - round(len(text) * val_fraction) :], encoding="utf-8")
    try:
        sized = sized_configs(base, transformer_layers)
    except ValueError as e:
        from generator.errors import GeneratorError

        raise GeneratorError(str(e)) from None

    # one process per arch. A wall-clock budget means the machine to itself: the archs train one after
    # the other. A CPU-second budget is for a shared machine: they train at once, so they share it alike.
    def worker(arch):
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, corpus, str(output / arch), sized[arch][0].to_json(), str(budget), measure],
            env=child_env(),
        )

    if measure == "wall":
        failed = any(worker(arch).wait() for arch in archs)
    else:
        failed = any([w.wait() for w in [worker(arch) for arch in archs]])
    if failed:
        raise RuntimeError("a training process failed (see its output above)")
    results = {}
    for arch in archs:
        config, n = sized[arch]
        history = read_history(output / arch)
        cpu = json.loads((output / arch / "cpu_seconds.json").read_text())
        results[arch] = {
            "cpu_seconds": cpu,
            "clock": measure,
            "config": {
                k: getattr(config, k)
                for k in (
                    "layers",
                    "units",
                    "embedding",
                    "heads",
                    "attention_window",
                    "seq_len",
                    "batch_size",
                    "dropout",
                    "learning_rate",
                )
            },
            "parameters": n,
            "history": history,
            "budget_s": budget,
        }
    from generator import api
    from generator.training.checkpoints import load_run

    for arch, r in results.items():
        run_dir = output / arch
        nats = loss_at(r["history"], budget, r["cpu_seconds"] if measure == "cpu" else None)
        config = sized[arch][0]
        later = r["cpu_seconds"][-1] - r["cpu_seconds"][0]
        r.update(
            val_loss_nats_at_budget=nats,
            val_bits_at_budget=nats / math.log(2),
            best_val_loss_nats=min(h["val_loss"] for h in r["history"]),
            train_tokens_per_s=training_rate(r["history"], config),
            train_tokens_per_cpu_s=(len(r["history"]) - 1)
            * config.steps_per_epoch
            * config.batch_size
            * config.seq_len
            / later
            if later > 0
            else None,
        )
        log(f"{arch}: measuring sampling")
        r["sampling"] = sampling_rates(api.Generator(load_run(run_dir)))
        log(f"{arch}: timing generator evaluate")
        r["evaluate"] = evaluate_time(run_dir, eval_corpus or corpus, eval_split)
        (output / "compare.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, output / "compare.png", f"{Path(corpus).name}: equal parameters, {minutes:g} min each")
    text = table(results)
    (output / "compare.txt").write_text(text + "\n")
    (output / "compare.md").write_text(markdown(results) + "\n")
    log(text)
    return results


def _archs(text: str) -> tuple:
    chosen = tuple(a.strip() for a in text.split(",") if a.strip())
    unknown = [a for a in chosen if a not in ARCHS]
    if unknown or not chosen or "lstm" not in chosen:
        raise argparse.ArgumentTypeError(
            f"choose among {', '.join(ARCHS)}, lstm included (it sets the size), not {text!r}"
        )
    return chosen


POSITIVE_INT = int_range(1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``generator compare``."""
    p.add_argument(
        "--corpus", required=True, help="The corpus every arch trains on (file, directory or built-in name)."
    )
    p.add_argument(
        "--output",
        required=True,
        help="Directory for the runs (one per arch), compare.json, compare.txt and compare.png. Runs "
        "already there are resumed or reused; --force starts over.",
    )
    p.add_argument("--modality", choices=["text", "music"], default="text", help="Whether the corpus is text or music.")
    p.add_argument(
        "--minutes",
        type=positive_float,
        default=4.0,
        help="Training budget of each arch, in minutes of --clock (default 4).",
    )
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="What the budget counts: wall-clock seconds (the default, for a machine of one's own; "
        "the archs then train one after the other), or the CPU seconds of each training process, "
        "which stay comparable when other jobs share the machine (the archs then train at once; on "
        "an idle 2-core machine a CPU minute is 30 to 60 wall seconds).",
    )
    p.add_argument(
        "--units",
        type=POSITIVE_INT,
        default=256,
        help="The LSTM's units per layer (default 256); the other archs are sized to its parameter count.",
    )
    p.add_argument("--layers", type=POSITIVE_INT, default=2, help="LSTM layers of lstm and lstm-attention (default 2).")
    p.add_argument("--transformer-layers", type=POSITIVE_INT, default=4, help="Transformer blocks (default 4).")
    p.add_argument(
        "--embedding", type=POSITIVE_INT, default=64, help="Token embedding width of the LSTMs (default 64)."
    )
    p.add_argument(
        "--heads", type=POSITIVE_INT, default=4, help="Attention heads of lstm-attention and transformer (default 4)."
    )
    p.add_argument(
        "--attention-window",
        type=POSITIVE_INT,
        default=128,
        help="How many previous LSTM outputs lstm-attention attends to (default 128).",
    )
    p.add_argument(
        "--seq-len",
        type=POSITIVE_INT,
        default=128,
        help="Tokens per training window for every arch, which is also the Transformer's context (default 128).",
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="Windows per training step (default 64).")
    p.add_argument("--dropout", type=float, default=0.1, help="Dropout rate of every arch (default 0.1).")
    p.add_argument(
        "--steps-per-epoch", type=POSITIVE_INT, default=40, help="Training steps between two validations (default 40)."
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="Share held out for validation at the end of each document when there is no --val-split "
        "(default 0.1, nanoGPT's last 10 %%).",
    )
    p.add_argument("--split", default="", help="The split of a JSON corpus to train on (train, valid or test).")
    p.add_argument(
        "--val-split",
        default="",
        help="Validate on this split of the JSON corpus; without it the last --val-fraction of each "
        "document is held out.",
    )
    p.add_argument(
        "--eval-corpus", default="", help="The corpus that `generator evaluate` is timed on (default --corpus)."
    )
    p.add_argument("--eval-split", default="", help="The split of the evaluated JSON corpus (e.g. valid).")
    p.add_argument(
        "--archs",
        type=_archs,
        default=ARCHS,
        help="Comma-separated architectures to compare (default lstm,lstm-attention,transformer).",
    )
    p.add_argument("--force", action="store_true", help="Delete what --output holds and start over.")


def run_args(args) -> dict:
    """Run ``generator compare`` from parsed arguments."""
    import shutil

    from generator.errors import GeneratorError

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise GeneratorError(f"--output {output} is a file, not a directory")
    if args.force and output.exists():
        shutil.rmtree(output)
    if not 0 <= args.dropout < 1:
        raise GeneratorError(f"--dropout must be at least 0 and below 1, not {args.dropout}")
    return compare(
        args.corpus,
        output,
        args.modality,
        args.minutes,
        args.units,
        args.layers,
        args.transformer_layers,
        args.embedding,
        args.heads,
        args.attention_window,
        args.seq_len,
        args.batch_size,
        args.dropout,
        args.steps_per_epoch,
        args.split,
        args.val_split,
        args.eval_corpus,
        args.eval_split,
        args.archs,
        val_fraction=args.val_fraction,
        measure=args.clock,
    )


def main(argv=None, prog: str = "python -m benchmarks.compare_archs") -> None:
    """What ``generator compare`` runs."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")
    args = p.parse_args(argv)
    if not args.verbose:
        from benchmarks.common import quiet_tensorflow

        quiet_tensorflow()
    run_args(args)


if __name__ == "__main__":
    main()
