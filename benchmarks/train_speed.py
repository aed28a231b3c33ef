"""Training throughput for ``generator bench``: the project's trainer, Keras ``fit`` and PyTorch.

Each measurement runs in its own process (``python -m benchmarks.train_speed VARIANT SIZES``) so
that thread pools, allocators and compiled functions of one never slow another; the process
prints one JSON line of tokens per second. Every measurement trains the same model (Embedding -> N x LSTM -> Dense,
dropout between layers and before the output, Adam with global-norm clipping) on the same
batches of a synthetic token stream, skips the warm-up steps (tracing, XLA compilation) and
reports the best of ``repeats`` windows of ``steps`` consecutive steps.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from unittest import mock

import numpy as np

DEFAULT_SIZES = dict(
    layers=2,
    units=256,
    embedding=64,
    vocab=65,
    seq_len=100,
    batch=64,
    dropout=0.2,
    warmup=5,
    steps=20,
    repeats=3,
    threads=0,
)  # threads 0: the cores this process may use


def thread_count(sizes: dict) -> int:
    """The threads each framework is given: ``sizes["threads"]``, or with 0 the cores this process may use."""
    import os

    return sizes.get("threads") or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )


def set_tf_threads(sizes: dict) -> None:
    """TensorFlow's intra-op pool to ``thread_count`` (its default, set explicitly for the comparison)."""
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() != thread_count(sizes):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(thread_count(sizes))
        except RuntimeError:  # a second variant in the same process (--quick): the pool is already set
            pass


def best_rate(ends: list[float], start: float, sizes: dict) -> float:
    """Tokens per second of the fastest window of ``sizes["steps"]`` steps after the warm-up (``ends``: step end times)."""
    times, steps = [start, *ends], sizes["steps"]
    return max(
        steps * sizes["batch"] * sizes["seq_len"] / (times[i + steps] - times[i])
        for i in range(sizes["warmup"], len(times) - steps, steps)
    )


def synthetic_windows(sizes: dict):
    """The same batches for every framework: windows of a seeded random token stream."""
    from generator.data.dataset import WindowSampler

    n_steps = sizes["warmup"] + sizes["steps"] * sizes["repeats"]
    length = (n_steps + 2) * sizes["batch"] * sizes["seq_len"] + 1
    ids = np.random.default_rng(0).integers(0, sizes["vocab"], length).astype(np.uint16)
    return WindowSampler(ids, sizes["seq_len"], sizes["batch"], seed=0), n_steps


def run_config(sizes: dict, **changes):
    from generator.config import RunConfig

    return RunConfig(
        layers=sizes["layers"],
        units=sizes["units"],
        embedding=sizes["embedding"],
        vocab_size=sizes["vocab"],
        seq_len=sizes["seq_len"],
        batch_size=sizes["batch"],
        dropout=sizes["dropout"],
        **changes,
    )


def project_step(config):
    """The trainer's own compiled step (``generator.training.steps``) as ``step(x, y) -> loss``."""
    import tensorflow as tf

    from generator.training import steps

    strategy = tf.distribute.get_strategy()
    model, optimizer = steps.build(config, strategy)
    train_step = steps.make_train_step(strategy, model, optimizer, config)
    tokens = tf.constant(float(config.batch_size * config.seq_len))
    return lambda x, y: train_step((x, y), tokens)


def time_project(
    sizes: dict, jit: bool | None, keras_layers: bool = False, mixed_precision: str = "", table_projection: bool = True
) -> float:
    """The trainer's loop: its tf.data pipeline, its compiled step, one loss read back per step.

    ``mixed_precision`` ("bfloat16", "float16") trains as ``--mixed-precision`` does.
    ``keras_layers`` runs the model's Keras LSTM layers where the trainer would use ``fast_lstm``
    (the step is traced at its first call, so the stand-in stays in place until the end).
    ``table_projection`` False projects the first layer's looked-up embeddings by a matmul, as
    ``fast_lstm`` did before its row lookup in ``embedding @ kernel + bias``.
    """
    import keras

    from generator.data import dataset
    from generator.training import steps

    set_tf_threads(sizes)
    keras.utils.set_random_seed(0)
    keras_forward = lambda model, tokens, training=False: model(tokens, training=training)  # noqa: E731
    from generator.models import fast_lstm

    with (
        mock.patch.object(steps.models, "training_forward", keras_forward)
        if keras_layers
        else contextlib.nullcontext(),
        mock.patch.object(fast_lstm, "TABLE_PROJECTION", table_projection),
    ):
        step = project_step(run_config(sizes, jit=jit, mixed_precision=mixed_precision))
        windows, n_steps = synthetic_windows(sizes)
        ends, start = [], time.perf_counter()
        for x, y in dataset.to_tf_dataset(windows, 0).take(n_steps):
            float(step(x, y))
            ends.append(time.perf_counter())
    return best_rate(ends, start, sizes)


def time_keras_fit(sizes: dict, jit: bool) -> float:
    """Plain ``model.compile`` + ``model.fit`` on the same model and batches."""
    import keras

    from generator.data import dataset
    from generator.models import build_model

    set_tf_threads(sizes)
    keras.utils.set_random_seed(0)
    config = run_config(sizes)
    model = build_model(config)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.clip_norm),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    windows, n_steps = synthetic_windows(sizes)
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(
        dataset.to_tf_dataset(windows, 0).take(n_steps),
        epochs=1,
        steps_per_epoch=n_steps,
        verbose=0,
        callbacks=[Clock()],
    )
    return best_rate(ends, start, sizes)


def time_torch(sizes: dict) -> float:
    """The same model in PyTorch with the usual char-RNN training loop, on ``thread_count`` threads."""
    import torch
    from torch import nn

    torch.set_num_threads(thread_count(sizes))
    torch.manual_seed(0)

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(sizes["vocab"], sizes["embedding"])
            self.lstm = nn.LSTM(
                sizes["embedding"],
                sizes["units"],
                num_layers=sizes["layers"],
                batch_first=True,
                dropout=sizes["dropout"] if sizes["layers"] > 1 else 0.0,
            )
            self.dropout = nn.Dropout(sizes["dropout"])
            self.fc = nn.Linear(sizes["units"], sizes["vocab"])

        def forward(self, x):
            out, _ = self.lstm(self.embedding(x))
            return self.fc(self.dropout(out))

    model = CharLSTM()
    model.train()
    config = run_config(sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    criterion = nn.CrossEntropyLoss()
    windows, n_steps = synthetic_windows(sizes)
    ends, start = [], time.perf_counter()
    for k, (x, y) in enumerate(windows.batches(0)):
        if k == n_steps:
            break
        x, y = torch.from_numpy(x).long(), torch.from_numpy(y).long()
        optimizer.zero_grad()
        loss = criterion(model(x).reshape(-1, sizes["vocab"]), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        loss.item()
        ends.append(time.perf_counter())
    return best_rate(ends, start, sizes)


MEASURES = {
    "project": lambda s: time_project(s, None),  # what `generator train` does by default
    "project_no_xla": lambda s: time_project(s, False),
    "project_no_table_projection": lambda s: time_project(s, None, table_projection=False),
    "project_xla_keras_lstm": lambda s: time_project(s, True, keras_layers=True),
    "project_bfloat16": lambda s: time_project(s, None, mixed_precision="bfloat16"),
    "project_float16": lambda s: time_project(s, None, mixed_precision="float16"),
    "keras_fit": lambda s: time_keras_fit(s, False),
    "keras_fit_xla": lambda s: time_keras_fit(s, True),
    "torch": time_torch,
}


def measure(variant: str, sizes: dict) -> float:
    """Tokens per second of one variant of ``MEASURES``."""
    return MEASURES[variant](sizes)


EXTRA_VARIANTS = ["project_no_xla", "project_xla_keras_lstm", "keras_fit_xla"]  # generator bench --every-variant


def variants() -> list[str]:
    """Every TensorFlow variant: the trainer as configured by default, without XLA (``--no-jit``),
    with XLA over Keras's own LSTM layers, and Keras ``fit`` with and without XLA."""
    return [name for name in MEASURES if name != "torch" and not name.endswith("16")]


def main(argv=None) -> None:
    """``python -m benchmarks.train_speed VARIANT[,VARIANT...] '{"units": 256, ...}'``: one JSON line."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else argv
    sizes = {**DEFAULT_SIZES, **(json.loads(argv[1]) if len(argv) > 1 else {})}
    rates = {variant: measure(variant, sizes) for variant in argv[0].split(",")}
    print(f"threads: {thread_count(sizes)}", file=sys.stderr)
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
