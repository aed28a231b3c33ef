"""The trainer: one custom loop, run with ``strategy.run``, that serves every tf.distribute strategy.

Keras 3's ``model.fit`` does not work under MultiWorkerMirroredStrategy (keras-team/keras#20585),
so the loop is ours: a compiled train step, validation, early stopping with the best weights
kept, learning-rate reduction on plateau, TensorBoard logs, ``history.csv`` and a resumable
checkpoint (``resume.npz``) at the end of every epoch and, with ``save_every``, every N steps.
Re-running the same command after an interruption continues from that checkpoint with the
optimizer state and the same data order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generator import checkpoints, dataset
from generator.config import MODEL_KEYS, RunConfig
from generator.errors import GeneratorError

LN2 = math.log(2.0)
DATA_KEYS = ("corpus", "split", "seq_len", "batch_size", "val_fraction", "seed", "modality")


def bits(nats: float) -> float:
    return nats / LN2


def make_strategy(name: str):
    """``auto``: MirroredStrategy with more than one GPU, else the default strategy."""
    import tensorflow as tf

    if name == "auto":
        name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise GeneratorError(f"unknown strategy {name!r}: use auto, default, mirrored or multi-worker")


@dataclass
class LoopState:
    """Where the loop is and what early stopping knows; saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches of the current epoch already trained (mid-epoch checkpoints)
    global_step: int = 0
    best_val: float = float("inf")
    best_epoch: int = 0
    wait: int = 0
    lr_wait: int = 0
    learning_rate: float = 0.0
    seconds: float = 0.0
    stopped_early: bool = False
    complete: bool = False
    history: list = field(default_factory=list)


class Trainer:
    """Trains ``config`` on a tokenized corpus into ``run_dir``; ``log`` receives user messages."""

    def __init__(self, config: RunConfig, run_dir: Path, log=print, progress: bool = True):
        self.config, self.run_dir, self.log, self.progress = config, Path(run_dir), log, progress

    # -- set-up ----------------------------------------------------------------------------
    def _prepare_run_dir(self, force: bool) -> bool:
        """Returns True when an earlier run of the same configuration should be resumed."""
        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise GeneratorError(f"output {d} exists and is not a directory")
        if d.is_dir() and any(d.iterdir()):
            is_run = (d / "config.json").exists()
            if force:
                if not is_run:
                    raise GeneratorError(f"output {d} is not empty and is not a run directory; refusing to delete it")
                shutil.rmtree(d)
            elif not is_run:
                raise GeneratorError(f"output {d} exists and is not empty; choose a new --output")
            else:
                saved = checkpoints.read_config(d)
                changed = [k for k in MODEL_KEYS + DATA_KEYS if k != "vocab_size" and getattr(saved, k) != getattr(self.config, k)]
                if changed:
                    raise GeneratorError(f"{d} holds a run with different settings ({', '.join(changed)}); "
                                         f"use --force to start over or choose another --output")
                return True
        d.mkdir(parents=True, exist_ok=True)
        return False

    def train(self, corpus, make_tokenizer, force: bool = False) -> dict:
        """Run (or resume) training; returns the final metrics."""
        import tensorflow as tf

        resume = self._prepare_run_dir(force)
        state = self._read_state() if resume else None
        if state is not None and state.complete:
            self.log(f"{self.run_dir} is already trained ({state.epoch} epochs); use --force to train again")
            return checkpoints.read_metrics(self.run_dir)

        data = dataset.tokenize(corpus, make_tokenizer)
        tokenizer = data.tokenizer
        config = self.config = self.config.replace(vocab_size=tokenizer.vocab_size)
        train_ids, val_ids = dataset.split_segments(data, config.val_fraction, config.seed)
        if len(train_ids) < 2:
            raise GeneratorError(f"corpus {corpus.name} is too small to train on ({len(data.ids)} tokens)")
        augment = tokenizer.augment if config.augment else None
        train_windows = dataset.WindowSampler(train_ids, config.seq_len, config.batch_size, seed=config.seed, augment=augment)
        val_windows = (dataset.WindowSampler(val_ids, config.seq_len, config.batch_size, shuffle=False, drop_remainder=False)
                       if len(val_ids) >= 2 else None)
        steps = config.steps_per_epoch or train_windows.num_batches()
        self.log(f"corpus {corpus.name}: {data.num_documents} documents, {len(train_ids):,} training and "
                 f"{len(val_ids):,} validation tokens, vocabulary {tokenizer.vocab_size}")

        strategy = make_strategy(config.strategy)
        import keras

        keras.utils.set_random_seed(config.seed)
        from generator.model import build_model

        with strategy.scope():
            model = build_model(config)
            optimizer = keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.clip_norm)
            optimizer.build(model.trainable_variables)
        if state is None:
            state = LoopState(learning_rate=config.learning_rate)
            checkpoints.atomic_write_text(self.run_dir / "config.json", config.to_json() + "\n")
            checkpoints.atomic_write_text(self.run_dir / "tokenizer.json", tokenizer.to_json() + "\n")
        else:
            self._restore(model, optimizer)
            where = f"epoch {state.epoch + 1}" + (f", step {state.step_in_epoch}" if state.step_in_epoch else "")
            self.log(f"resuming {self.run_dir} from {where} (after {state.global_step} steps)")
        optimizer.learning_rate.assign(state.learning_rate)
        params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
        self.log(f"model: {config.layers} x LSTM({config.units}), embedding {config.embedding}, {params:,} parameters")

        train_step, eval_step = self._compile_steps(strategy, model, optimizer)
        writers = {k: tf.summary.create_file_writer(str(self.run_dir / "logs" / k)) for k in ("train", "validation")}
        try:
            self._loop(state, strategy, model, optimizer, train_windows, val_windows, steps, train_step, eval_step, writers)
        except KeyboardInterrupt:
            self.log(f"\ninterrupted; run the same command again to resume from epoch {state.epoch + 1}")
            raise
        metrics = self._metrics(state, corpus, data, train_ids, val_ids, params)
        checkpoints.write_json(self.run_dir / "metrics.json", metrics)
        return metrics

    def _compile_steps(self, strategy, model, optimizer):
        import tensorflow as tf

        config = self.config
        replicas = strategy.num_replicas_in_sync

        def replica_train(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32))
                # scaled by the global number of tokens, so summing over replicas gives the mean
                loss = tf.reduce_sum(ce) / tf.cast(tf.size(y) * replicas, tf.float32)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        jit = bool(config.jit) and replicas == 1

        @tf.function(jit_compile=jit, reduce_retracing=True)
        def train_step(x, y):
            per_replica = strategy.run(replica_train, args=(x, y))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        @tf.function(reduce_retracing=True)
        def eval_step(x, y):
            logits = model(x, training=False)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(y, tf.cast(logits, tf.float32))
            return tf.reduce_sum(ce), tf.size(y)

        return train_step, eval_step

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self, state, strategy, model, optimizer, train_windows, val_windows, steps, train_step, eval_step, writers):
        import keras
        import tensorflow as tf

        config = self.config
        while state.epoch < config.epochs and not state.stopped_early:
            epoch = state.epoch
            started = time.monotonic()
            bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "bits"], verbose=1) if self.progress else None
            ds = dataset.to_tf_dataset(train_windows, epoch, state.step_in_epoch)
            total, count = 0.0, 0
            for x, y in ds.take(steps - state.step_in_epoch):
                loss = float(train_step(x, y))
                total, count = total + loss, count + 1
                state.step_in_epoch += 1
                state.global_step += 1
                if bar is not None:
                    bar.update(state.step_in_epoch, [("loss", total / count), ("bits", bits(total / count))])
                if state.global_step % 50 == 0:
                    with writers["train"].as_default(step=state.global_step):
                        tf.summary.scalar("loss_nats", loss)
                if config.save_every and state.global_step % config.save_every == 0 and state.step_in_epoch < steps:
                    state.seconds += time.monotonic() - started
                    started = time.monotonic()
                    self._save_state(state, model, optimizer)
            train_loss = total / max(count, 1)
            val_loss = self._validate(eval_step, val_windows) if val_windows else train_loss
            seconds = time.monotonic() - started
            state.seconds += seconds
            self._end_epoch(state, model, optimizer, train_loss, val_loss, seconds, writers)

    def _validate(self, eval_step, windows) -> float:
        total, count = 0.0, 0
        for x, y in windows.batches(0):
            s, n = eval_step(x, y)
            total, count = total + float(s), count + int(n)
        return total / max(count, 1)

    def _end_epoch(self, state, model, optimizer, train_loss, val_loss, seconds, writers):
        import tensorflow as tf

        config = self.config
        state.epoch += 1
        state.step_in_epoch = 0
        lr = state.learning_rate
        improved = val_loss < state.best_val - 1e-4
        if improved:
            state.best_val, state.best_epoch, state.wait, state.lr_wait = val_loss, state.epoch, 0, 0
            checkpoints.save_model(model, self.run_dir / "model.keras")
        else:
            state.wait += 1
            state.lr_wait += 1
            if state.lr_wait >= config.lr_patience and lr > config.min_learning_rate:
                state.learning_rate = max(lr * config.lr_factor, config.min_learning_rate)
                state.lr_wait = 0
                optimizer.learning_rate.assign(state.learning_rate)
            if state.wait >= config.patience:
                state.stopped_early = True
        state.history.append({"epoch": state.epoch, "train_loss": train_loss, "val_loss": val_loss,
                              "train_bits": bits(train_loss), "val_bits": bits(val_loss),
                              "learning_rate": lr, "seconds": round(seconds, 1)})
        for name, value in (("train", train_loss), ("validation", val_loss)):
            with writers[name].as_default(step=state.epoch):
                tf.summary.scalar("epoch_loss_nats", value)
                tf.summary.scalar("epoch_bits_per_token", bits(value))
                tf.summary.scalar("learning_rate", lr)
            writers[name].flush()
        note = " (best)" if improved else ""
        if state.learning_rate != lr:
            note += f", learning rate lowered to {state.learning_rate:.2g}"
        if state.stopped_early:
            note += f", stopping: no improvement for {config.patience} epochs"
        state.complete = state.stopped_early or state.epoch >= config.epochs
        self._write_history(state)
        self._save_state(state, model, optimizer)
        self.log(f"epoch {state.epoch}/{config.epochs}: train {train_loss:.4f} nats ({bits(train_loss):.3f} bits), "
                 f"validation {val_loss:.4f} nats ({bits(val_loss):.3f} bits) per token, {seconds:.0f} s{note}")

    # -- persistence ------------------------------------------------------------------------------
    def _write_history(self, state):
        out = io.StringIO()
        fields = ["epoch", "train_loss", "val_loss", "train_bits", "val_bits", "learning_rate", "seconds"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(state.history)
        checkpoints.atomic_write_text(self.run_dir / "history.csv", out.getvalue())

    def _save_state(self, state, model, optimizer):
        arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
        arrays["state"] = np.array(json.dumps(state.__dict__))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        checkpoints.atomic_write_bytes(self.run_dir / "resume.npz", buffer.getvalue())

    def _read_state(self) -> LoopState | None:
        path = self.run_dir / "resume.npz"
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return LoopState(**json.loads(str(data["state"])))
        except Exception as e:
            raise GeneratorError(f"{path} is damaged ({type(e).__name__}); use --force to start over") from None

    def _restore(self, model, optimizer):
        path = self.run_dir / "resume.npz"
        with np.load(path, allow_pickle=False) as data:
            weights = [data[f"w{i}"] for i in range(len(model.get_weights()))]
            model.set_weights(weights)
            for i, v in enumerate(optimizer.variables):
                v.assign(data[f"o{i}"])

    def _metrics(self, state, corpus, data, train_ids, val_ids, params) -> dict:
        import keras
        import tensorflow as tf

        from generator import __version__

        return {
            "val_loss_nats": state.best_val,
            "val_bits_per_token": bits(state.best_val),
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "complete": state.complete,
            "training_seconds": round(state.seconds, 1),
            "parameters": params,
            "corpus": corpus.name,
            "corpus_fingerprint": corpus.fingerprint,
            "tokens": {"train": int(len(train_ids)), "validation": int(len(val_ids))},
            "validation_split": ("whole documents" if data.num_documents >= dataset.WHOLE_DOCUMENT_THRESHOLD
                                 else "tail of each document"),
            "versions": {"generator": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        }
