"""Batch-1 decoding in C (generator/generation/native.py) at each thread count, against the XLA loop.

    python -m benchmarks.native_decode            # the suite's text model: 2 x LSTM 256, vocabulary 65
    python -m benchmarks.native_decode band       # the bundled band model

Prints tokens per second and microseconds per token, best of five passes in turn, and checks that
greedy decoding picks the same tokens as the TensorFlow decoder's own steps.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(which: str = "text") -> None:
    import tensorflow as tf

    from benchmarks import sampling_speed, suite
    from generator.generation import native, sampling
    from generator.models import decoder as make_decoder

    if which == "band":
        import generator

        model = generator.load("band", key_average=0).run.model
    else:
        model = suite._model(suite.FULL)
    decoder = make_decoder(model)
    vocab = decoder.vocab_size
    prompt = np.random.default_rng(1).integers(0, vocab, (1, 100)).astype(np.int32)
    logits, states = sampling.DecodeLoop(decoder, sampling.get()).prime(prompt)
    logits, states = logits.numpy(), [(h.numpy(), c.numpy()) for h, c in states]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    nets = {threads: native.NativeLSTM(decoder, threads=threads) for threads in range(1, cores + 1)}

    tokens = nets[cores].generate(logits, states, 64, 0, 0, sampling.get(greedy=True))[0]
    tf_logits, tf_states, agree = tf.constant(logits), tuple((tf.constant(h), tf.constant(c)) for h, c in states), 0
    for token in tokens:
        agree += int(tf.argmax(tf_logits[0])) == token
        tf_logits, tf_states = decoder.step(tf.constant([token]), tf_states)
    print(f"greedy: {agree} of {len(tokens)} tokens as TensorFlow's steps pick them")

    length = 4096

    def timer(net):
        def once():
            start = time.perf_counter()
            net.generate(logits, states, length, 1, 0, sampling.get())
            return length / (time.perf_counter() - start)

        return once

    timers = {f"C, {t} thread{'s' if t > 1 else ''}": timer(net) for t, net in nets.items()}
    timers["XLA loop"] = sampling_speed.decode_rate(decoder, vocab, 100, 1, length, native=False)[0]
    best = sampling_speed.interleaved_best(timers, 5)
    print(f"{which} model, batch 1, {length} tokens, load average {os.getloadavg()[0]:.2f}:")
    for name, rate in best.items():
        print(f"  {name:<12} {rate:>9,.0f} tokens/s  {1e6 / rate:6.1f} us/token")


if __name__ == "__main__":
    main(*sys.argv[1:])
