"""The per-step recurrent products of the trainer's LSTM loops, alone: ``python -m benchmarks.recurrent_products``.

Each case is an XLA-compiled loop of 100 steps carrying one matrix, one product and a ``tanh``
per step, at the suite's sizes (batch 64, 256 units, two threads): the forward step's
``h @ R`` (``[64, 256] x [256, 1024]``), the backward step's ``dz @ R^T`` (``[64, 1024] x
[1024, 256]``, the same FLOPs) in the ways it can be written, and the loop without its product.
The backward cases repeat their ``[64, 256]`` result four times to carry ``[64, 1024]`` on.
Cases run in turn, ``ROUNDS`` times (default 30); microseconds per step, the fastest and the
median. One JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import time


def main() -> dict:
    from benchmarks.common import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    rng = tf.random.Generator.from_seed(0)
    r = tf.Variable(rng.normal([256, 1024]) * 0.05)
    r_t = tf.Variable(tf.transpose(r))
    h0, dz0 = rng.normal([64, 256]), rng.normal([64, 1024])

    def loop(step, start):
        return tf.while_loop(lambda t, _: t < 100, lambda t, v: (t + 1, step(v)), (0, start))[1]

    def back(product):
        return lambda dz: tf.tanh(tf.tile(product(dz), [1, 4]))

    cases = {
        "forward h @ R": lambda: loop(lambda h: tf.tanh(tf.matmul(h, r)[:, :256]), h0),
        "backward dz @ R^T, R^T stored (the trainer's)": lambda: loop(back(lambda dz: tf.matmul(dz, r_t)), dz0),
        "backward dz @ R^T, transpose_b": lambda: loop(back(lambda dz: tf.matmul(dz, r, transpose_b=True)), dz0),
        "backward (R @ dz^T)^T": lambda: loop(back(lambda dz: tf.transpose(tf.matmul(r, dz, transpose_b=True))), dz0),
        "backward, two K blocks summed": lambda: loop(
            back(lambda dz: tf.matmul(dz[:, :512], r_t[:512]) + tf.matmul(dz[:, 512:], r_t[512:])), dz0
        ),
        "backward, two batch halves": lambda: loop(
            back(lambda dz: tf.concat([tf.matmul(dz[:32], r_t), tf.matmul(dz[32:], r_t)], 0)), dz0
        ),
        "loop without a product": lambda: loop(lambda dz: tf.tanh(tf.tile(dz[:, :256], [1, 4])), dz0),
    }
    compiled = {name: tf.function(case, jit_compile=True) for name, case in cases.items()}
    for run in compiled.values():
        run().numpy()
    times = {name: [] for name in compiled}
    for _ in range(int(os.environ.get("ROUNDS", 30))):
        for name, run in compiled.items():
            start = time.perf_counter()
            run().numpy()
            times[name].append((time.perf_counter() - start) / 100 * 1e6)
    result = {
        name: {"min_us": round(min(v), 1), "median_us": round(statistics.median(v), 1)} for name, v in times.items()
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
