"""One harmonizer for all four voices, or one per voice (DeepBach's design)? A measurement.

    python -m benchmarks.harmonizer_voices \\
        --corpus $CORPORA/jsb-chorales/Jsb16thSeparated.train-valid.json \\
        --output runs/harmonizer/voices --steps 400

Trains, on the JSB train split, five harmonizer networks of the same sizes from the same initial
weights and on the same stream of masked windows (``generator.models.harmonizer.WindowSampler``,
same seed, transposition augmentation):

- ``shared``: the product's design, one network whose loss is the cross-entropy of every hidden cell;
- ``soprano``, ``alto``, ``tenor``, ``bass``: DeepBach's design, one network per voice, the same
  network trained with the loss restricted to its voice's hidden cells (at sampling time voice v
  would be drawn from network v, which reads the same masked grid).

Each runs ``--steps`` optimizer steps with the project's compiled train step
(``generator.training.steps``: Adam, gradient clipping, XLA, the loss averaged over the counted
cells) at a constant learning rate; the trainer's loop is not used because its learning-rate cuts
and early stopping react to the validation loss, which would give the five models different
schedules: here only the number of steps differs. The budget is in steps, not seconds, so that the
figures do not depend on what else the machine runs.

Validation: the JSB valid split (never trained on), cut and masked exactly as the trainer
validates (``shuffle=False``, the sampler's fixed seed), so every model is scored on the same
hidden cells. Reported: nats per hidden cell for each voice and over all cells, where the
per-voice design scores each voice's cells with that voice's network. Two comparisons:

- equal total training steps: the shared model after ``--steps`` against the per-voice models
  after ``--steps / 4`` each (evaluated on the way, so they cost nothing extra: the learning
  rate is constant, so a model evaluated at step k is a model trained for k steps);
- equal steps per model: both after ``--steps``.

Cost at sampling: forward passes per Gibbs iteration (the shared model scores every hidden cell
in one pass; per-voice needs one pass per voice being resampled: three when harmonizing a melody)
and the parameters those passes read (a per-voice network needs only its own output head, so its
count is given with the other three heads removed).

Each model's curve goes to ``OUTPUT/<model>.json`` as soon as it is trained, so a rerun with the same
settings skips the models already done (``--force`` starts over), and ``--models`` trains a subset, so
that the five can run as parallel processes into one ``--output``; once all five are there, the
comparison is printed and written with them to ``OUTPUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import fraction, int_range, positive_float

VOICE_NAMES = ("soprano", "alto", "tenor", "bass")
MODELS = ("shared",) + VOICE_NAMES
SETTING_KEYS = (
    "corpus",
    "steps",
    "layers",
    "units",
    "embedding",
    "dropout",
    "seq_len",
    "batch_size",
    "learning_rate",
    "seed",
    "eval_every",
)


def voice_only(targets: np.ndarray, voice: int) -> np.ndarray:
    """Targets ``[rows, steps * 4]`` (cells S, A, T, B of each step) with every voice but ``voice`` ignored (-1)."""
    out = np.array(targets, copy=True)
    out[:, np.arange(out.shape[1]) % 4 != voice] = -1
    return out


def load_splits(corpus: str):
    """(train ids, valid ids, tokenizer) of a JSB Chorales JSON file, tokenized as the trainer does."""
    from generator.data import corpora, dataset
    from generator.data.dataset import TokenizerFactory

    train = dataset.tokenize(corpora.open_corpus(corpus, "music", split="train"), TokenizerFactory("voices"))
    fixed = TokenizerFactory("voices", fixed=train.tokenizer)
    valid = dataset.tokenize(corpora.open_corpus(corpus, "music", split="valid"), fixed)
    return train.ids, valid.ids, train.tokenizer


def make_config(args, vocab_size: int):
    from generator.config import RunConfig

    return RunConfig(
        modality="music",
        tokenizer="voices",
        arch="harmonizer",
        layers=args.layers,
        units=args.units,
        embedding=args.embedding,
        dropout=args.dropout,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        random_seed=args.seed,
        vocab_size=vocab_size,
        jit=args.jit,
    )


def evaluate(model, val_windows, jit: bool) -> dict:
    """Nats per hidden cell of the validation windows, per voice: ``{"sums": [4], "cells": [4]}``."""
    import tensorflow as tf

    from generator.training.steps import cross_entropy

    @tf.function(reduce_retracing=True, jit_compile=jit)
    def per_cell(x, y):
        return cross_entropy(y, model(x, training=False))

    sums, cells = np.zeros(4), np.zeros(4, np.int64)
    for x, y in val_windows.batches(0):
        ce = np.asarray(per_cell(tf.constant(x), tf.constant(y)), np.float64).reshape(len(y), -1, 4)
        counted = (np.asarray(y) >= 0).reshape(len(y), -1, 4)
        sums += (ce * counted).sum(axis=(0, 1))
        cells += counted.sum(axis=(0, 1))
    return {"sums": sums.tolist(), "cells": cells.tolist()}


def train_one(name: str, config, train_ids, val_ids, steps: int, checkpoints_at, augment, log) -> dict:
    """Train model ``name`` (``shared`` or a voice) for ``steps`` steps; its validation at each of ``checkpoints_at``."""
    import keras
    import tensorflow as tf

    from generator.models.harmonizer import WindowSampler
    from generator.training import steps as compiled

    voice = VOICE_NAMES.index(name) if name in VOICE_NAMES else None
    keras.utils.set_random_seed(config.random_seed)  # every model starts from the same weights
    strategy = tf.distribute.get_strategy()
    model, optimizer = compiled.build(config, strategy)
    optimizer.learning_rate.assign(config.learning_rate)
    train_step = compiled.make_train_step(strategy, model, optimizer, config)
    sampler = WindowSampler(
        train_ids,
        config.seq_len,
        config.batch_size,
        seed=config.random_seed,
        augment=augment,
        vocab_size=config.vocab_size,
    )
    val_windows = WindowSampler(
        val_ids, config.seq_len, config.batch_size, shuffle=False, drop_remainder=False, vocab_size=config.vocab_size
    )
    unused = tf.constant(1.0)  # the harmonizer's step counts its own target cells
    curve, done, epoch, running = [], 0, 0, []
    wanted = sorted(set(checkpoints_at))
    while done < steps:
        for x, y in sampler.batches(epoch):
            if voice is not None:
                y = voice_only(y, voice)
                if not (y >= 0).any():  # no cell of this voice hidden in the whole batch: nothing to learn
                    continue
            running.append(float(train_step((tf.constant(x), tf.constant(y)), unused)))
            done += 1
            if done in wanted:
                result = evaluate(model, val_windows, compiled.use_jit(config))
                result.update(step=done, train_loss=float(np.mean(running)))
                running = []
                curve.append(result)
                log(
                    f"{name}: step {done}/{steps}: "
                    + ", ".join(
                        f"{v[0]} {s / max(c, 1):.4f}" for v, s, c in zip(VOICE_NAMES, result["sums"], result["cells"])
                    )
                    + f" nats per hidden cell (training {result['train_loss']:.4f} on its own cells)"
                )
            if done >= steps:
                break
        epoch += 1
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    head = model.get_layer("logits")
    head_params = int(sum(np.prod(w.shape) for w in head.trainable_weights))
    return {
        "curve": curve,
        "parameters": params,
        "parameters_one_head": params - head_params + head_params // 4,
        "epochs_started": epoch + 1,
    }


def per_voice(result: dict, step: int) -> tuple[np.ndarray, np.ndarray]:
    point = next(p for p in result["curve"] if p["step"] == step)
    return np.asarray(point["sums"]), np.asarray(point["cells"])


def compare(results: dict, steps: int) -> dict:
    """The comparisons (nats per hidden cell per voice and overall) from the models' curves."""

    def row(shared_step, voice_step):
        s_sums, s_cells = per_voice(results["shared"], shared_step)
        v_sums = np.array([per_voice(results[v], voice_step)[0][i] for i, v in enumerate(VOICE_NAMES)])
        shared = dict(zip(VOICE_NAMES, (s_sums / s_cells).tolist()), overall=float(s_sums.sum() / s_cells.sum()))
        split = dict(zip(VOICE_NAMES, (v_sums / s_cells).tolist()), overall=float(v_sums.sum() / s_cells.sum()))
        return {
            "shared_steps": shared_step,
            "per_voice_steps_each": voice_step,
            "shared": shared,
            "per_voice": split,
            "hidden_cells": dict(zip(VOICE_NAMES, s_cells.tolist())),
        }

    quarter = max(steps // 4, 1)
    p_shared, p_voice = results["shared"]["parameters"], results["soprano"]["parameters_one_head"]
    return {
        "equal_total_steps": row(steps, quarter),
        "equal_steps_per_model": row(steps, steps),
        "equal_steps_per_model_at_quarter": row(quarter, quarter),
        "sampling_cost": {
            "shared": {
                "forward_passes_per_iteration": 1,
                "parameters_read_per_iteration": p_shared,
                "parameters_stored": p_shared,
            },
            "per_voice_harmonizing_a_melody": {
                "forward_passes_per_iteration": 3,
                "parameters_read_per_iteration": 3 * p_voice,
                "parameters_stored": 3 * p_voice,
            },
            "per_voice_all_four_voices": {
                "forward_passes_per_iteration": 4,
                "parameters_read_per_iteration": 4 * p_voice,
                "parameters_stored": 4 * p_voice,
            },
        },
    }


def report_lines(summary: dict) -> list[str]:
    lines = []
    titles = {
        "equal_total_steps": "equal total training steps",
        "equal_steps_per_model": "equal steps per model",
        "equal_steps_per_model_at_quarter": "equal steps per model, a quarter of the budget",
    }
    lines.append("| comparison | design | steps per model | " + " | ".join(VOICE_NAMES) + " | overall |")
    lines.append("|---|---|---|" + "---|" * (len(VOICE_NAMES) + 1))
    for key, title in titles.items():
        r = summary[key]
        for design, steps in (("shared", r["shared_steps"]), ("per_voice", r["per_voice_steps_each"])):
            values = " | ".join(f"{r[design][v]:.4f}" for v in VOICE_NAMES + ("overall",))
            lines.append(f"| {title} | {design.replace('_', '-')} | {steps:,} | {values} |")
    lines.append("")
    lines.append(
        "| sampling | forward passes per Gibbs iteration | parameters read per iteration | parameters stored |"
    )
    lines.append("|---|---|---|---|")
    for key, c in summary["sampling_cost"].items():
        lines.append(
            f"| {key.replace('_', ' ')} | {c['forward_passes_per_iteration']} | "
            f"{c['parameters_read_per_iteration']:,} | {c['parameters_stored']:,} |"
        )
    return lines


def run(args, log=print) -> dict:
    """Train the models of ``args.models`` not yet done (each written to ``OUTPUT/<model>.json``); once all five
    are measured, the report with the comparison (also written to ``OUTPUT/results.json``), else without it."""
    from generator.errors import GeneratorError

    output = Path(args.output).expanduser()
    settings = {k: getattr(args, k) for k in SETTING_KEYS}
    settings["corpus"] = str(Path(args.corpus).expanduser().resolve())
    chosen = parse_models(args.models)
    report = {"settings": settings, "models": {}}
    for name in MODELS:
        path = output / f"{name}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("settings") != settings:
                if not args.force:
                    raise GeneratorError(
                        f"{path} holds a measurement with other settings; use --force to start "
                        "over or choose another --output"
                    )
            elif not (args.force and name in chosen):
                report["models"][name] = saved["result"]
    output.mkdir(parents=True, exist_ok=True)
    todo = [name for name in chosen if name not in report["models"]]
    for name in chosen:
        if name not in todo:
            log(f"{name}: already measured in {output / (name + '.json')}")
    if todo:
        train_ids, val_ids, tokenizer = load_splits(settings["corpus"])
        config = make_config(args, tokenizer.vocab_size)
        quarter = max(args.steps // 4, 1)
        at = set(range(args.eval_every, args.steps + 1, args.eval_every)) if args.eval_every else set()
        at |= {quarter, args.steps}
        for name in todo:
            result = train_one(name, config, train_ids, val_ids, args.steps, at, tokenizer.augment, log)
            (output / f"{name}.json").write_text(json.dumps({"settings": settings, "result": result}, indent=1) + "\n")
            report["models"][name] = result
    if all(name in report["models"] for name in MODELS):
        report["summary"] = compare(report["models"], args.steps)
        (output / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def parse_models(text: str) -> list[str]:
    """``--models``: comma-separated names among shared, soprano, alto, tenor, bass ("all" for the five)."""
    from generator.errors import GeneratorError

    names = list(MODELS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise GeneratorError(f"--models {text!r}: choose among {', '.join(MODELS)} (comma-separated), or all")
    return names


POSITIVE_INT = int_range(1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.harmonizer_voices",
        description="Train the harmonizer as one shared model and as one model per voice "
        "(DeepBach) on the JSB train split, and compare their validation loss per "
        "hidden cell and their cost at sampling.",
    )
    p.add_argument("--corpus", required=True, help="The JSB Chorales JSON file (its train and valid splits are used).")
    p.add_argument(
        "--output",
        required=True,
        help="The directory for each model's <model>.json and for results.json (reruns skip the models done).",
    )
    p.add_argument(
        "--models",
        default="all",
        help="The models to train in this process, comma-separated among shared, soprano, alto, tenor and "
        "bass (default all); processes given different models may share one --output.",
    )
    p.add_argument(
        "--steps",
        type=POSITIVE_INT,
        default=400,
        help="Training steps of the shared model and of each per-voice model (default 400); the per-voice "
        "models are also evaluated after a quarter of them, the equal-total-steps comparison.",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="Also evaluate every N steps, for the curves in results.json (default 0: only at a quarter "
        "and at the end).",
    )
    p.add_argument(
        "--layers", type=POSITIVE_INT, default=2, help="LSTM layers in each direction (default 2, as bundled)."
    )
    p.add_argument("--units", type=POSITIVE_INT, default=128, help="Units per LSTM layer (default 128, as bundled).")
    p.add_argument(
        "--embedding", type=POSITIVE_INT, default=32, help="Embedding size per cell (default 32, as bundled)."
    )
    p.add_argument("--dropout", type=fraction, default=0.2, help="Dropout rate (default 0.2, as bundled).")
    p.add_argument(
        "--seq-len", type=POSITIVE_INT, default=64, help="Steps per training window (default 64, as bundled)."
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="Windows per step (default 32, as bundled).")
    p.add_argument(
        "--learning-rate",
        type=positive_float,
        default=0.003,
        help="The constant Adam learning rate (default 0.003, the bundled run's starting rate).",
    )
    p.add_argument(
        "--seed", type=int, default=1234, help="The seed of the initial weights and of the windows (default 1234)."
    )
    p.add_argument(
        "--no-jit",
        dest="jit",
        action="store_false",
        default=None,
        help="Do not compile the steps with XLA (by default they are compiled when no GPU is visible).",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="Train the chosen models again even where --output already holds them (other settings included).",
    )
    p.add_argument("--json", action="store_true", help="Print the whole report as one JSON object instead of tables.")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from generator.errors import GeneratorError

    if args.eval_every < 0:
        print("error: --eval-every must be 0 or a positive number of steps", file=sys.stderr)
        return 2
    corpus = Path(args.corpus).expanduser()
    if not corpus.is_file() or corpus.suffix.lower() != ".json":
        print(f"error: --corpus {args.corpus} is not a JSB Chorales .json file", file=sys.stderr)
        return 2
    from benchmarks.common import quiet_tensorflow

    quiet_tensorflow()
    try:
        report = run(args, log=lambda m: print(m, file=sys.stderr, flush=True))
    except GeneratorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    elif "summary" not in report:
        missing = [name for name in MODELS if name not in report["models"]]
        print(
            f"measured {', '.join(report['models']) or 'nothing yet'}; still to train: {', '.join(missing)} "
            f"(the comparison is printed once all five are in {args.output})"
        )
    else:
        s = report["settings"]
        print(
            f"harmonizer, {s['layers']} layers of {s['units']}, embedding {s['embedding']}, windows of "
            f"{s['seq_len']} steps, batches of {s['batch_size']}, learning rate {s['learning_rate']}; validation: "
            f"JSB valid split, nats per hidden cell"
        )
        print("\n".join(report_lines(report["summary"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
