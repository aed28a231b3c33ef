"""Where a training step's time goes: ``python -m benchmarks.train_profile [SIZES-JSON]``.

Times, at the suite's sizes and in one process, each part of the step ``generator train`` runs
on a CPU, as compiled functions on the same batch: the forward pass alone (``fast_lstm``), the
forward and backward pass (what the trainer XLA-compiles), the whole step (gradients summed,
clipped and applied by Adam), and the batch pipeline (``to_tf_dataset``) alone; the differences
give the backward pass, the optimizer and the pipeline. Each part is timed in turn, ``rounds``
times, the best counting, with wall and CPU seconds (the CPU seconds of every thread, which a
shared machine's load moves less than the wall clock). One JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv=None) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from benchmarks.train_speed import DEFAULT_SIZES, run_config, set_tf_threads, synthetic_windows
    from generator import models
    from generator.data import dataset
    from generator.training import steps

    argv = sys.argv[1:] if argv is None else argv
    sizes = {**DEFAULT_SIZES, **(json.loads(argv[0]) if argv else {})}
    rounds = int(sizes.pop("rounds", 5))
    set_tf_threads(sizes)
    keras.utils.set_random_seed(0)
    config = run_config(sizes, mixed_precision=sizes.pop("mixed_precision", ""))
    strategy = tf.distribute.get_strategy()
    model, optimizer = steps.build(config, strategy)
    train_step = steps.make_train_step(strategy, model, optimizer, config)
    windows, _ = synthetic_windows(sizes)
    batches = iter(dataset.to_tf_dataset(windows, 0).repeat())
    x, y = next(batches)
    tokens = tf.constant(float(config.batch_size * config.seq_len))
    variables = model.trainable_variables

    @tf.function(jit_compile=True)
    def forward(x):
        return tf.reduce_sum(tf.cast(models.training_forward(model, x, training=True), tf.float32))

    @tf.function(jit_compile=True)
    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(steps.cross_entropy(y, models.training_forward(model, x, training=True))) / tokens
        return loss, tape.gradient(loss, variables)

    parts = {
        "forward": lambda: forward(x),
        "forward_backward": lambda: forward_backward(x, y)[0],
        "step": lambda: train_step((x, y), tokens),
        "pipeline": lambda: next(batches)[0],
    }
    for part in parts.values():  # trace and compile
        part().numpy()
    best = {name: (float("inf"), float("inf")) for name in parts}
    repeat = 5
    for _ in range(rounds):
        for name, part in parts.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(repeat):
                out = part()
            out.numpy()
            wall, cpu = (time.perf_counter() - wall) / repeat, (time.process_time() - cpu) / repeat
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    ms = {name: {"wall_ms": round(w * 1e3, 1), "cpu_ms": round(c * 1e3, 1)} for name, (w, c) in best.items()}
    result = {
        "sizes": sizes,
        "mixed_precision": config.mixed_precision,
        "parts": ms,
        "tokens_per_step": config.batch_size * config.seq_len,
        "step_tokens_per_s": round(config.batch_size * config.seq_len / best["step"][0]),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
