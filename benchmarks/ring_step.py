"""The Transformer's single-token decode step: the ring write in place against concatenate-and-gather.

``Decoder.step`` writes the new key and value into slot ``position mod context`` of each block's
cache with a scatter (updated in place inside the sampler's XLA loop) and attends over the ring.
The earlier step ran ``Decoder.forward`` on one column: ``ring_attention`` concatenates cache and
new key, attends, and gathers a new cache, rewriting all of it every step. Both run here on the
same model in the sampler's compiled decode loop (random sampling at temperature 1, prompt BOS)::

    python -m benchmarks.ring_step --checkpoint runs/compare-shakespeare/transformer
    python -m benchmarks.ring_step --layers 4 --units 128 --seq-len 256   # an untrained model

Prints tokens per second for each step, batch and generated length, and the two steps' largest
logit difference over a stretch past the context.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def concatenating_step(decoder):
    """The step as it was: ``forward`` on a one-token chunk (concatenate, attend, gather)."""

    def step(tokens, states):
        logits, states = decoder.forward(tokens[:, None], states)
        return logits[:, 0], states

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="A Transformer run directory or bundled checkpoint (else an untrained model).")
    p.add_argument("--layers", type=int, default=4, help="Blocks of the untrained model.")
    p.add_argument("--units", type=int, default=128, help="Width of the untrained model.")
    p.add_argument("--heads", type=int, default=4, help="Heads of the untrained model.")
    p.add_argument("--seq-len", type=int, default=256, help="Context (cache size) of the untrained model.")
    p.add_argument("--vocab", type=int, default=65, help="Vocabulary of the untrained model.")
    p.add_argument("--batches", default="1,64", help="Comma-separated batch sizes.")
    p.add_argument("--lengths", default="256,2048", help="Comma-separated generated lengths.")
    p.add_argument("--json", help="Also write the figures to this JSON file.")
    args = p.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from generator import api, models
    from generator.config import RunConfig
    from generator.generation import sampling

    if args.checkpoint:
        model = api.load(args.checkpoint).run.model
    else:
        keras.utils.set_random_seed(0)
        model = models.build_model(
            RunConfig(
                arch="transformer",
                layers=args.layers,
                units=args.units,
                embedding=args.units,
                heads=args.heads,
                seq_len=args.seq_len,
                vocab_size=args.vocab,
                dropout=0.0,
            )
        )
    if models.arch_of(model) != "transformer":
        print(f"error: {args.checkpoint} is not a Transformer", file=sys.stderr)
        return 2
    decoder = models.decoder(model)
    print(
        f"model: {model.count_params():,} parameters, {len(decoder.blocks)} blocks of width {decoder.width}, "
        f"context {decoder.context}",
        flush=True,
    )

    # the two steps agree (past the context, wrap-around included)
    x = np.random.default_rng(0).integers(0, decoder.vocab_size, (2, decoder.context + 40)).astype(np.int32)
    steps = {
        "in place": tf.function(decoder.step, jit_compile=True),
        "concatenate + gather": tf.function(concatenating_step(decoder), jit_compile=True),
    }
    outs = {}
    for name, step in steps.items():
        states, logits = decoder.zero_states(2), []
        for t in range(x.shape[1]):
            out, states = step(tf.constant(x[:, t]), states)
            logits.append(out.numpy())
        outs[name] = np.stack(logits, 1)
    difference = float(np.max(np.abs(outs["in place"] - outs["concatenate + gather"])))
    print(f"largest logit difference between the two steps over {x.shape[1]} tokens: {difference:.2e}", flush=True)

    def run(loop, prompts, length):
        logits, states = loop.prime(prompts)
        history = loop._history(prompts)
        seed, done = tf.constant([1, 0], tf.int32), 0
        while done < length:
            n = min(loop.chunk, length - done)
            tokens, logits, states, history = loop._run_chunk(
                logits, states, history, seed, tf.constant(done), tf.constant(n)
            )
            done += n
        tokens.numpy()

    figures = {
        "parameters": int(model.count_params()),
        "context": decoder.context,
        "max_logit_difference": difference,
        "tokens_per_s": {},
    }
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = np.zeros((batch, 1), np.int32)
        for name, step in [("concatenate + gather", concatenating_step(decoder)), ("in place", decoder.step)]:
            view = type("View", (), {})()  # the decoder with this step
            view.zero_states, view.forward, view.step, view.vocab_size = (
                decoder.zero_states,
                decoder.forward,
                step,
                decoder.vocab_size,
            )
            loop = sampling.DecodeLoop(view, sampling.Sampler(1.0))
            run(loop, prompts, 2 * loop.chunk)  # compile: priming, a first chunk and a later one
            for length in [int(n) for n in args.lengths.split(",")]:
                started = time.perf_counter()
                run(loop, prompts, length)
                rate = batch * length / (time.perf_counter() - started)
                figures["tokens_per_s"][f"{name}, batch {batch}, {length} tokens"] = rate
                print(f"{name:>22}  batch {batch:>3}  {length:>6} tokens  {rate:>10,.0f} tokens/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
