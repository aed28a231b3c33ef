"""Rotary against learned absolute positions in the Transformer, at equal training steps.

For each of ``rotary`` and ``learned`` it trains ``--arch transformer`` with the project's trainer
(same corpus, tokenizer, sizes, seed, batches and number of steps), then scores held-out sequences
of ``--past`` contexts' length three ways:

- ``in context``: the trainer's validation loss (windows of ``seq_len``), at the last epoch;
- ``rolling``: one pass of the decoder over each sequence, the key/value cache sliding past the
  context without re-encoding (what ``generate-text`` and ``generator evaluate`` do): rotary keys
  stay valid; learned positions wrap around (position ``p`` uses row ``p mod seq_len``);
- ``re-encoded``: every token past the context scored by a fresh pass over the last ``seq_len``
  tokens (what learned absolute positions need to generate past the context: a whole window per
  token instead of one step).

The rolling and re-encoded NLLs are split into tokens inside the first context (``< seq_len``) and
tokens past it. Writes ``positions.json`` and prints a Markdown table::

    python -m benchmarks.positions --corpus $CORPORA/tinyshakespeare/train.txt \\
        --output runs/positions/shakespeare --steps 600
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

POSITIONS = ("rotary", "learned")


def held_out_sequences(g, config, length: int, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` held-out pieces of ``length`` tokens: from the validation split's documents
    (``val_split``) or from the held-out blocks of the training corpus, the same ones the trainer held out."""
    from generator.data import corpora, dataset
    from generator.data.dataset import TokenizerFactory

    factory = TokenizerFactory(config.tokenizer, fixed=g.tokenizer)
    if config.val_split:
        source = corpora.open_corpus(config.corpus, config.modality, split=config.val_split)
        data = dataset.tokenize(source, factory)
        segments = [data.document(i) for i in range(data.num_documents)]
    else:
        data = dataset.tokenize(corpora.open_corpus(config.corpus, config.modality), factory)
        split = dataset.split_segments(
            data, config.val_fraction, config.random_seed, config.holdout, config.holdout_block
        )
        bounds = list(split.val_segments) + [len(split.val_ids)]
        segments = [split.val_ids[s:e] for s, e in zip(bounds[:-1], bounds[1:])]
    pieces = [seg[i : i + length] for seg in segments for i in range(0, len(seg) - length + 1, length)]
    step = max(1, len(pieces) // limit)
    return [np.asarray(p, np.int32) for p in pieces[::step][:limit]]


def token_nll(logits, targets) -> np.ndarray:
    """-log p(target) per position, float64."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    log_z = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    return log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


def score(g, sequences: list[np.ndarray], context: int, batch: int = 256) -> dict:
    """Mean NLL (nats) of the rolling pass and of re-encoded windows, inside and past the first context."""
    import tensorflow as tf

    x = np.stack(sequences)  # [N, L]
    n, length = x.shape
    from generator import models

    decoder = models.decoder(g.run.model)
    forward = tf.function(decoder.forward, reduce_retracing=True)
    logits, _ = forward(tf.constant(x[:, :-1]), decoder.zero_states(n))
    rolling = token_nll(logits.numpy(), x[:, 1:])  # [N, L-1]: the prediction made at position t, for t < L-1
    t = np.arange(length - 1)
    model = tf.function(lambda w: g.run.model(w, training=False)[:, -1], reduce_retracing=True)
    windows = [(i, s) for i in range(n) for s in range(context, length - 1)]  # token s predicts s+1 from s-context+1..s
    reencoded = np.zeros_like(rolling)
    for k in range(0, len(windows), batch):
        part = windows[k : k + batch]
        w = np.stack([x[i, s - context + 1 : s + 1] for i, s in part])
        nll = token_nll(model(tf.constant(w)).numpy(), np.array([x[i, s + 1] for i, s in part]))
        for (i, s), v in zip(part, nll):
            reencoded[i, s] = v
    inside, past = t < context, t >= context
    return {
        "sequences": int(n),
        "length": int(length),
        "rolling_in_context": float(rolling[:, inside].mean()),
        "rolling_past_context": float(rolling[:, past].mean()),
        "reencoded_past_context": float(reencoded[:, past].mean()),
        "tokens_in_context": int(n * inside.sum()),
        "tokens_past_context": int(n * past.sum()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="The corpus to train on (a text file, or a JSB json with --split).")
    p.add_argument("--modality", default="text", choices=["text", "music"], help="Text or music (JSB json: music).")
    p.add_argument("--tokenizer", default=None, help="The tokenizer (default: the modality preset's).")
    p.add_argument("--split", default="", help="The JSON corpus's training split.")
    p.add_argument("--val-split", default="", help="Validate on this split of the same JSON corpus.")
    p.add_argument("--output", required=True, help="A folder for the two runs and positions.json.")
    p.add_argument("--steps", type=int, default=600, help="Training steps of each run.")
    p.add_argument("--epochs", type=int, default=6, help="Validations over the run (steps per epoch = steps / epochs).")
    p.add_argument("--layers", type=int, default=4, help="Transformer blocks.")
    p.add_argument("--units", type=int, default=64, help="Model width (the embedding is as wide).")
    p.add_argument("--heads", type=int, default=4, help="Attention heads.")
    p.add_argument("--seq-len", type=int, default=128, help="The context: tokens per training window.")
    p.add_argument("--batch-size", type=int, default=32, help="Windows per training batch.")
    p.add_argument("--dropout", type=float, default=0.1, help="Dropout rate.")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's learning rate.")
    p.add_argument("--past", type=int, default=4, help="Held-out sequences are this many contexts long.")
    p.add_argument("--sequences", type=int, default=24, help="How many held-out sequences to score.")
    p.add_argument("--only", choices=POSITIONS, help="Train and score only this kind of positions.")
    args = p.parse_args(argv)

    from generator import api

    out = Path(args.output).expanduser()
    settings = dict(
        arch="transformer",
        layers=args.layers,
        units=args.units,
        embedding=args.units,
        heads=args.heads,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        dropout=args.dropout,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        steps_per_epoch=args.steps // args.epochs,
        patience=10**6,
        lr_patience=10**6,
        val_fraction=0.1,
    )
    if args.tokenizer:
        settings["tokenizer"] = args.tokenizer
    if args.split:
        settings.update(split=args.split, val_split=args.val_split)
    results = {}
    for positions in [args.only] if args.only else POSITIONS:
        run = out / positions
        api.train(args.corpus, run, modality=args.modality, positions=positions, progress=False, **settings)
        with open(run / "history.csv") as f:
            rows = list(csv.DictReader(f))
        g = api.load(run)
        sequences = held_out_sequences(g, g.config, args.past * args.seq_len + 1, args.sequences)
        results[positions] = {
            "val_loss_in_context": float(rows[-1]["val_loss"]),
            "steps": int(args.steps),
            "parameters": int(g.run.model.count_params()),
            **score(g, sequences, args.seq_len),
        }
        print(positions, json.dumps(results[positions]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    name = "positions.json" if not args.only else f"positions-{args.only}.json"
    (out / name).write_text(
        json.dumps({"settings": settings, "corpus": args.corpus, "command": sys.argv, "results": results}, indent=1)
    )
    for other in POSITIONS:  # runs made separately (--only) go into one table
        path = out / f"positions-{other}.json"
        if other not in results and path.exists():
            results[other] = json.loads(path.read_text())["results"][other]
    print(
        "| positions | parameters | val loss in context (nats) | rolling, first context | rolling, past it | "
        "re-encoded windows, past it |"
    )
    print("|---|---|---|---|---|---|")
    for positions in [p for p in POSITIONS if p in results]:
        r = results[positions]
        print(
            f"| {positions} | {r['parameters']:,} | {r['val_loss_in_context']:.4f} | {r['rolling_in_context']:.4f} | "
            f"{r['rolling_past_context']:.4f} | {r['reencoded_past_context']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
