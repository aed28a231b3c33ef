"""The trainer: one custom loop, run with ``strategy.run``, that serves every tf.distribute strategy.

Keras 3's ``model.fit`` does not work under MultiWorkerMirroredStrategy (keras-team/keras#20585),
so the loop is ours (its compiled steps live in ``steps.py``): validation, early stopping with the
best weights kept, learning-rate reduction on plateau, TensorBoard logs, ``history.csv`` and a
resumable checkpoint (``resume.npz``, see ``train_state.py``) at the end of every epoch and, with
``save_every``, every N steps. Every file is replaced atomically, so a crash at any moment leaves
the last checkpoint whole; re-running the same command continues from it with the same step
count, optimizer state and data order (batch ``step_in_epoch`` of the epoch's seeded order).

With several devices each step's global batch (``batch_size`` windows) is split over the
replicas, each worker feeding only its own replicas. In a multi-worker run only the chief writes
the run directory; the other workers write to temporary directories that are removed at the end,
receive the chief's checkpoint at start, and take the chief's validation loss for every decision.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from generator.training import checkpoints
from generator.data import dataset
from generator.training import distribute, finetune
from generator.config import MODEL_KEYS, RunConfig
from generator.errors import ArgumentError, GeneratorError
from generator.training.train_state import LoopState, history_csv, pack, restore, unpack_state

LN2 = math.log(2.0)
DATA_KEYS = (
    "corpus",
    "split",
    "seq_len",
    "batch_size",
    "val_fraction",
    "holdout",
    "holdout_block",
    "random_seed",
    "modality",
    "documents",
    "column",
    "init_from",
    "freeze",
)
__all__ = ["Trainer", "LoopState", "bits"]


def bits(nats: float) -> float:
    return nats / LN2


OVERFIT_GAP = 0.05  # validation loss this much (relative) above the training loss at the best epoch: overfitting


def summary(history: list[dict], best_epoch: int) -> list[str]:
    """The end-of-training lines: best epoch, the train/validation gap there, and an overfitting warning.

    The training loss of an epoch is averaged while the weights change and with dropout on, so a
    regularized model can show a training loss above its validation loss; a validation loss more
    than ``OVERFIT_GAP`` above it, or one that rose 2 % above its best while the training loss kept falling, is
    the sign of overfitting.
    """
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    if best is None:
        return []
    train, val = best["train_loss"], best["val_loss"]
    gap = val - train
    lines = [
        f"best epoch {best_epoch} of {len(history)}: validation {val:.4f} nats ({bits(val):.3f} bits) per token, "
        f"training {train:.4f}; gap {gap:+.4f} nats ({gap / max(train, 1e-9):+.1%} of the training loss)"
    ]
    last = history[-1]
    rising = last["epoch"] > best_epoch and last["train_loss"] < train and last["val_loss"] > val * 1.02
    if gap > OVERFIT_GAP * train or rising:
        why = (
            "the validation loss is well above the training loss"
            if gap > OVERFIT_GAP * train
            else "the validation loss rose 2 % above its best while the training loss kept falling"
        )
        lines.append(
            f"warning: the model overfits ({why}); more regularization helps: raise --dropout, add "
            "--locked-dropout, --input-dropout, --embedding-dropout, --weight-drop or --weight-decay, or use "
            "fewer --units or --layers"
        )
    return lines


def parameters(model) -> int:
    """The number of trainable parameters of ``model``."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _setting(key: str, value):
    """A setting as resuming compares it: a corpus that is a path, by the file it names (so a run
    saved with an absolute path resumes from a relative one, and the other way round)."""
    if key == "corpus" and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


class Trainer:
    """Trains ``config`` on a tokenized corpus into ``run_dir``; ``log`` receives user messages.

    After ``train`` returns, ``model`` holds the trained model (last weights, not the best).
    """

    def __init__(self, config: RunConfig, run_dir: Path, log=print, progress: bool = True):
        self.config, self.run_dir, self.log, self.progress = config, Path(run_dir), log, progress
        self.model = None
        self.chief = True
        self.saved_at = None  # the position of the last checkpoint written
        self.split = None  # dataset.Split of a held-out validation share (None with a separate validation split)

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
                raise ArgumentError("output", f"{d} exists and is not empty; choose a new one")
            else:
                saved = checkpoints.read_config(d)
                changed = [
                    k
                    for k in MODEL_KEYS + DATA_KEYS
                    if k != "vocab_size" and _setting(k, getattr(saved, k)) != _setting(k, getattr(self.config, k))
                ]
                if changed:
                    raise ArgumentError(
                        "output",
                        f"{d} holds a run with different settings ({', '.join(changed)}); "
                        "pass force=True to start over or choose another one",
                        "force",
                    )
                checkpoints.remove_partial_writes(d)
                return True
        d.mkdir(parents=True, exist_ok=True)
        return False

    def _checkpoint_bytes(self, force: bool) -> bytes:
        """The chief's resume checkpoint (empty for a fresh run)."""
        path = self.run_dir / "resume.npz"
        return path.read_bytes() if self._prepare_run_dir(force) and path.exists() else b""

    def _together(self, strategy, fn, doing: str):
        """Run ``fn`` on every worker; when it fails on any of them, every worker stops."""
        error, result = None, None
        try:
            result = fn()
        except GeneratorError as e:
            error = e
        if not distribute.all_ok(strategy, error is None):
            raise error or GeneratorError(f"another worker failed while {doing}; see its output")
        return result

    def train(self, corpus, make_tokenizer, force: bool = False, val_corpus=None) -> dict:
        """Run (or resume) training; returns the final metrics (empty on a non-chief worker)."""
        strategy = distribute.make_strategy(self.config.strategy)  # first: multi-worker needs a fresh TensorFlow
        scratch = None
        if not distribute.is_chief(strategy):
            scratch = Path(tempfile.mkdtemp(prefix="generator-worker-"))
            self.run_dir, log, self.progress = scratch / "run", self.log, False
            task = strategy.cluster_resolver
            self.log = lambda message: log(f"[{task.task_type} {task.task_id}] {message}")
            self.log(f"not the chief: writing to the temporary {self.run_dir}")
        try:
            self.chief = scratch is None
            self.val_corpus = val_corpus
            return self._train(strategy, self.chief, corpus, make_tokenizer, force)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def _train(self, strategy, chief: bool, corpus, make_tokenizer, force: bool) -> dict:
        blob, state = self._saved_state(strategy, force and chief)
        if state is not None and state.complete:
            self.log(f"{self.run_dir} is already trained ({state.epoch} epochs); use --force to train again")
            return checkpoints.read_metrics(self.run_dir) if chief else {}
        data, train_ids, val_ids = self._read_corpus(strategy, corpus, make_tokenizer)
        train_windows, val_windows = self._windows(train_ids, val_ids, data.tokenizer)
        self.log(
            f"corpus {corpus.name}: {data.num_documents} documents, {len(train_ids):,} training and "
            f"{len(val_ids):,} validation tokens ({self._split_description()}), vocabulary {data.tokenizer.vocab_size}"
        )
        rows = train_windows.batch_size_for(len(train_windows.window_starts(0)))
        if rows < strategy.num_replicas_in_sync:
            raise ArgumentError.sentence(
                f"a batch of {rows} windows cannot be shared by {strategy.num_replicas_in_sync} "
                "replicas: use a batch_size of at least that many, or a larger corpus",
                "batch_size",
            )

        import tensorflow as tf

        from generator.training import steps as compiled

        model, optimizer, state = self._model(strategy, state, blob, data.tokenizer)
        train_step = compiled.make_train_step(strategy, model, optimizer, self.config)
        eval_step = compiled.make_eval_step(model, self.config)
        if self.config.init_from and state.global_step == 0 and state.start_val is None and val_windows is not None:
            self._validate_start(state, strategy, model, eval_step, val_windows)
        writers = {k: tf.summary.create_file_writer(str(self.run_dir / "logs" / k)) for k in ("train", "validation")}
        try:
            self._loop(state, strategy, model, optimizer, train_windows, val_windows, train_step, eval_step, writers)
        except KeyboardInterrupt:
            where = f"from {self.saved_at}" if self.saved_at else "at the start"
            self.log(f"\ninterrupted; run the same command again to resume {where}")
            raise
        return self._finish(state, chief, corpus, data, train_ids, val_ids)

    def _saved_state(self, strategy, force: bool):
        """The chief's resume checkpoint, on every worker: (its bytes, its LoopState), or (b"", None)."""
        blob = self._together(strategy, lambda: self._checkpoint_bytes(force), "opening the run directory")
        blob = distribute.broadcast_bytes(strategy, blob)
        state = unpack_state(blob, str(self.run_dir / "resume.npz")) if blob else None
        if state is None or not state.complete:
            return blob, state
        config = self.config
        if state.out_of_time and state.wait < config.patience:
            state.stopped_early = False  # older runs marked a time-limit stop as an early stop
        if state.stopped_early:
            return blob, state
        if state.out_of_time and (not config.time_limit or state.seconds < config.time_limit):
            state.complete = state.out_of_time = False  # the time limit is now higher (or gone): train on
            limit = f"a time limit of {config.time_limit:g} s" if config.time_limit else "no time limit"
            self.log(f"{self.run_dir} stopped at its time limit after {state.epoch} epochs; continuing with {limit}")
        elif not state.out_of_time and state.epoch < config.epochs:
            state.complete = False  # it reached an epoch cap that is now higher: train on
            self.log(f"{self.run_dir} trained {state.epoch} epochs; continuing to {config.epochs}")
        return blob, state

    def _read_corpus(self, strategy, corpus, make_tokenizer):
        """Tokenize the corpus (and a separate validation corpus) on every worker, fix the vocabulary
        in the config, and split; (data, training ids, validation ids)."""
        data = self._together(strategy, lambda: dataset.tokenize(corpus, make_tokenizer), "reading the corpus")
        tokenizer = data.tokenizer
        config = self.config = self.config.replace(vocab_size=tokenizer.vocab_size)
        if self.val_corpus is not None:  # a separate validation corpus (e.g. the JSB valid split)
            fixed = dataset.TokenizerFactory(config.tokenizer, fixed=tokenizer)
            val_data = self._together(
                strategy, lambda: dataset.tokenize(self.val_corpus, fixed), "reading the validation corpus"
            )
            train_ids, val_ids = data.ids, val_data.ids
            self.split = None
        else:
            self.split = dataset.split_segments(
                data, config.val_fraction, config.random_seed, config.holdout, config.holdout_block
            )
            train_ids, val_ids = self.split
        if len(train_ids) < 2:
            raise GeneratorError(f"corpus {corpus.name} is too small to train on ({len(data.ids)} tokens)")
        settings = config.replace(corpus="").to_json()  # the corpus may sit at another path on each machine
        digest = hashlib.sha256(f"{corpus.fingerprint}{tokenizer.to_json()}{settings}".encode()).digest()
        if not distribute.all_ok(strategy, distribute.broadcast_bytes(strategy, digest) == digest):
            raise GeneratorError(
                "the workers disagree about the corpus or the settings: run the same command "
                "on every worker, with the same corpus"
            )
        return data, train_ids, val_ids

    def _windows(self, train_ids, val_ids, tokenizer):
        """The training and validation windows (None without validation tokens), never crossing the split."""
        from generator import models

        config = self.config
        segments = {} if self.split is None else {"train": self.split.train_segments, "val": self.split.val_segments}
        augment = tokenizer.augment if config.augment else None
        sampler = models.task(config.arch).window_sampler(config)  # next-token windows, or the task's own
        train_windows = sampler(
            train_ids,
            config.seq_len,
            config.batch_size,
            seed=config.random_seed,
            augment=augment,
            segments=segments.get("train"),
        )
        val_windows = (
            sampler(
                val_ids,
                config.seq_len,
                config.batch_size,
                shuffle=False,
                drop_remainder=False,
                segments=segments.get("val"),
            )
            if len(val_ids) >= 2
            else None
        )
        train_windows.own_shards = (
            config.shard_tokens
        )  # a worker of a multi-worker run reads its own stretch of the tokens
        if val_windows is not None and config.val_tokens:  # a fixed seeded sample of at most val_tokens
            val_windows.keep_sample(max(1, config.val_tokens // val_windows.seq_len), config.seed)
        return train_windows, val_windows

    def _model(self, strategy, state, blob: bytes, tokenizer):
        """The model and optimizer, fresh (from ``init_from``'s weights if set; the run's config and
        tokenizer written) or restored from ``blob``; (model, optimizer, the loop state)."""
        import keras

        from generator.training import steps as compiled

        config = self.config
        keras.utils.set_random_seed(config.random_seed)
        model, optimizer = compiled.build(config, strategy)
        self.model = model
        frozen = finetune.freeze(model, config.freeze)
        if state is None:
            if config.init_from:
                self._init_weights(model, config.init_from, tokenizer)
            state = LoopState(learning_rate=config.learning_rate)
            checkpoints.atomic_write_text(self.run_dir / "config.json", config.to_json() + "\n")
            checkpoints.atomic_write_text(self.run_dir / "tokenizer.json", tokenizer.to_json() + "\n")
        else:
            restore(blob, model, optimizer)
            self.saved_at = state.position()
            self.log(f"resuming {self.run_dir} from {state.position()}")
        optimizer.learning_rate.assign(state.learning_rate)
        extras = "".join(
            f", {x}"
            for x in (
                config.mixed_precision and f"mixed precision {config.mixed_precision}",
                compiled.use_jit(config) and "XLA",
            )
            if x
        )
        self.log(
            f"model: {config.arch}, {config.layers} layers of {config.units}, embedding {config.embedding}, "
            f"{parameters(model):,} parameters; {distribute.describe(strategy)}{extras}"
        )
        if frozen:
            self.log(f"frozen at their starting weights: {', '.join(frozen)}")
        return model, optimizer, state

    def _finish(self, state, chief: bool, corpus, data, train_ids, val_ids) -> dict:
        """Write metrics.json (and, on the chief, print the summary and draw curve.png); the metrics."""
        state.complete = state.finished(self.config.epochs)  # also when no epoch was left to run
        metrics = self._metrics(state, corpus, data, train_ids, val_ids, parameters(self.model))
        checkpoints.write_json(self.run_dir / "metrics.json", metrics)
        if not chief:
            return {}
        for line in summary(state.history, state.best_epoch):
            self.log(line)
        if state.start_val is not None and state.best_epoch == 0:
            self.log(
                f"no epoch beat the starting weights (validation {state.start_val:.4f} nats per token); "
                f"{self.run_dir / 'model.keras'} keeps them"
            )
        try:
            from generator.training import curve

            curve.plot(
                state.history, self.run_dir / "curve.png", state.best_epoch, f"{corpus.name}: {self.config.arch}"
            )
        except Exception as e:  # a missing plotting backend must not fail a finished run
            self.log(f"(no training curve: {e})")
        return metrics

    # -- the loop ------------------------------------------------------------------------------
    def _epoch_batches(self, strategy, windows, epoch: int, start: int, count: int):
        """The distributed dataset of ``count`` steps of ``epoch`` from batch ``start`` on."""

        local = distribute.local_replicas(strategy)

        def dataset_fn(ctx):
            ds = dataset.to_tf_dataset(windows, epoch, start, (ctx.input_pipeline_id, ctx.num_input_pipelines), local)
            return ds.take(count * local)  # one element per replica and step

        return strategy.distribute_datasets_from_function(dataset_fn)

    def _loop(self, state, strategy, model, optimizer, train_windows, val_windows, train_step, eval_step, writers):
        import keras
        import tensorflow as tf

        config = self.config
        while state.epoch < config.epochs and not state.stopped_early and not state.out_of_time:
            epoch = state.epoch
            started = epoch_started = time.monotonic()
            n_windows = len(train_windows.window_starts(epoch))
            steps = min(config.steps_per_epoch or n_windows, train_windows.batches_for(n_windows))
            global_tokens = tf.constant(float(train_windows.batch_size_for(n_windows) * train_windows.seq_len))
            bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "bits"], verbose=1) if self.progress else None
            for batch in self._epoch_batches(
                strategy, train_windows, epoch, state.step_in_epoch, steps - state.step_in_epoch
            ):
                self._warm_up(state, optimizer)
                loss = float(train_step(batch, global_tokens))
                state.epoch_loss += loss
                state.step_in_epoch += 1
                state.global_step += 1
                mean = state.epoch_loss / state.step_in_epoch
                if bar is not None:
                    bar.update(state.step_in_epoch, [("loss", mean), ("bits", bits(mean))])
                if state.global_step % 50 == 0:
                    with writers["train"].as_default(step=state.global_step):
                        tf.summary.scalar("loss_nats", loss)
                if config.save_every and state.global_step % config.save_every == 0 and state.step_in_epoch < steps:
                    state.seconds += time.monotonic() - started
                    started = time.monotonic()
                    self._save_state(state, model, optimizer)
                if config.time_limit and state.seconds + time.monotonic() - started >= config.time_limit:
                    state.out_of_time = True  # validate what it has, keep the best, and stop
                    break
            train_loss = state.epoch_loss / max(state.step_in_epoch, 1)
            val_loss = self._validate(eval_step, val_windows, strategy) if val_windows else train_loss
            val_loss = distribute.broadcast_float(strategy, val_loss)  # the chief's, so every worker decides alike
            state.seconds += time.monotonic() - started
            seconds = time.monotonic() - epoch_started  # the whole epoch, checkpoints included
            self._end_epoch(state, model, optimizer, train_loss, val_loss, seconds, writers)

    def _validate(self, eval_step, windows, strategy=None) -> float:
        """The mean loss per token on the validation windows (their capped sample, ``--val-tokens``); in a
        multi-worker run every worker scores its rows of each batch and the sums are added up."""
        workers = distribute.num_workers(strategy) if strategy is not None else 1
        shard = (distribute.worker_index(strategy), workers) if workers > 1 else (0, 1)
        total, count = 0.0, 0
        for x, y in windows.batches(0, shard=shard):
            if len(x):
                s, n = eval_step(x, y)
                total, count = total + float(s), count + int(n)
        if workers > 1:
            total, count = distribute.sum_over_workers(strategy, [total, count])
        return total / max(count, 1)

    def _end_epoch(self, state, model, optimizer, train_loss, val_loss, seconds, writers):
        import tensorflow as tf

        config = self.config
        state.epoch += 1
        state.step_in_epoch, state.epoch_loss = 0, 0.0
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
        state.history.append(
            {
                "epoch": state.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "train_bits": bits(train_loss),
                "val_bits": bits(val_loss),
                "learning_rate": lr,
                "seconds": round(seconds, 1),
            }
        )
        for name, value in (("train", train_loss), ("validation", val_loss)):
            with writers[name].as_default(step=state.epoch):
                tf.summary.scalar("epoch_loss_nats", value)
                tf.summary.scalar("epoch_bits_per_token", bits(value))
                tf.summary.scalar("learning_rate", lr)
            writers[name].flush()
        note = " (best)" if improved else ""
        if state.learning_rate != lr:
            note += f", learning rate lowered to {state.learning_rate:.2g}"
        if state.out_of_time:
            note += f", stopping: the time limit of {config.time_limit:g} s is reached"
        elif state.stopped_early:
            note += f", stopping: no improvement for {config.patience} epochs"
        state.complete = state.finished(config.epochs)
        checkpoints.atomic_write_text(self.run_dir / "history.csv", history_csv(state))
        self._save_state(state, model, optimizer)
        self.log(
            f"epoch {state.epoch}/{config.epochs}: train {train_loss:.4f} nats ({bits(train_loss):.3f} bits), "
            f"validation {val_loss:.4f} nats ({bits(val_loss):.3f} bits) per token, {seconds:.0f} s{note}"
        )

    def _split_description(self) -> str:
        if self.split is None:
            return f"split {self.config.val_split!r}"
        return f"held out: {self.split.describe()}"

    def _init_weights(self, model, source: str, tokenizer) -> None:
        """Start ``model`` from the weights of run directory or bundled checkpoint ``source``
        (``finetune.init_weights``), saying how many characters the vocabulary gained."""
        run = finetune.load_source(source)
        finetune.init_weights(model, run, source, self.log)
        grown = finetune.describe_growth(run.tokenizer, tokenizer)
        if grown:
            self.log(grown)

    def _validate_start(self, state, strategy, model, eval_step, val_windows) -> None:
        """Score the starting weights of a fine-tuning run: they are the best so far, kept unless an epoch beats them."""
        val = self._validate(eval_step, val_windows, strategy)
        state.start_val = state.best_val = distribute.broadcast_float(strategy, val)
        checkpoints.save_model(model, self.run_dir / "model.keras")
        self.log(
            f"the starting weights: validation {state.start_val:.4f} nats ({bits(state.start_val):.3f} bits) "
            f"per token; an epoch must beat that to replace them"
        )

    def _warm_up(self, state, optimizer) -> None:
        """During the first ``warmup_steps`` steps, the learning rate ramps up to ``state.learning_rate``."""
        n = self.config.warmup_steps
        if n and state.global_step <= n:
            optimizer.learning_rate.assign(finetune.warm_up_rate(state.learning_rate, state.global_step, n))

    # -- persistence ------------------------------------------------------------------------------
    def _save_state(self, state, model, optimizer):
        checkpoints.atomic_write_bytes(self.run_dir / "resume.npz", pack(state, model, optimizer))
        self.saved_at = state.position()

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
            "stopped_by_time_limit": state.out_of_time,
            "start_val_loss_nats": state.start_val,
            "kept_start_weights": state.start_val is not None and state.best_epoch == 0,
            "complete": state.complete,
            "training_seconds": round(state.seconds, 1),
            "parameters": params,
            "corpus": corpus.name,
            "corpus_fingerprint": corpus.fingerprint,
            "tokens": {"train": int(len(train_ids)), "validation": int(len(val_ids))},
            "validation_split": self._split_description(),
            "holdout": {
                "method": self.split.method,
                "held_out": self.split.blocks,
                "seed": self.config.random_seed,
                "val_fraction": self.config.val_fraction,
                "block_tokens": self.config.holdout_block,
            }
            if self.split is not None
            else {"method": "split", "split": self.config.val_split},
            "best_epoch_train_loss_nats": next(
                (h["train_loss"] for h in state.history if h["epoch"] == state.best_epoch), None
            ),
            "versions": {"generator": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        }
