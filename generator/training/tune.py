"""Hyperparameter search with KerasTuner over layers, units, dropout and learning rate.

    >>> from generator.training.tune import tune, SearchSpace
    >>> result = tune("corpus.txt", "tuning", trials=8, epochs=2,
    ...               space=SearchSpace(layers=(1, 2), units=(128, 256)))
    >>> result["val_loss_nats"], result["config_path"]
    (1.52..., PosixPath('tuning/best_config.json'))
    >>> generator.train("corpus.txt", "runs/tuned", config=result["config_path"])

Each trial builds the project's own model (``generator.models.build_model``) from a ``RunConfig`` and
trains it with Keras ``model.fit`` on windows from the project's dataset pipeline (the same
tokenizer, validation split and windows as ``generator train``; augmentation is left out). The
objective is the validation loss: mean cross-entropy per token in nats, the number
``generator train`` reports. The budget is ``trials`` models of at most ``epochs`` epochs each
(Hyperband trains most of them for fewer epochs and only the promising ones for all).

The output folder receives::

    best_config.json   the best RunConfig; `generator train text --config FILE` accepts it
    tuning.json        best validation loss (nats and bits per token), the search space, every trial
    logs/              TensorBoard logs, one folder per trial (tensorboard --logdir DIR/logs)
    search/            KerasTuner's own trial records
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from generator.config import PRESETS, RunConfig, renamed
from generator.errors import ArgumentError, GeneratorError

ALGORITHMS = ("bayesian", "hyperband")
TUNED = ("layers", "units", "dropout", "learning_rate")
OUTPUTS = ("best_config.json", "tuning.json", "search", "logs")


@dataclass
class SearchSpace:
    """What the search may choose; a range whose two ends are equal fixes the value."""

    layers: tuple[int, ...] = (1, 2, 3)  # choices of stacked LSTM layers
    units: tuple[int, ...] = (128, 256, 512)  # choices of units per layer
    dropout: tuple[float, float] = (0.0, 0.5)  # range, in steps of 0.05
    learning_rate: tuple[float, float] = (3e-4, 1e-2)  # range, sampled on a log scale

    def __post_init__(self):
        for name in ("layers", "units"):
            values = tuple(getattr(self, name))
            if not values or any(not isinstance(v, (int, np.integer)) or v < 1 for v in values):
                raise GeneratorError(f"{name} choices must be whole numbers of at least 1, not {values}")
            setattr(self, name, tuple(sorted(set(int(v) for v in values))))
        for name, low_ok in (("dropout", lambda v: 0 <= v < 1), ("learning_rate", lambda v: 0 < v < 10)):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) == 1:
                values = values * 2
            if len(values) != 2 or not all(low_ok(v) for v in values) or values[0] > values[1]:
                raise GeneratorError(
                    f"{name} must be one value or MIN,MAX within its bounds, not {getattr(self, name)}"
                )
            setattr(self, name, values)

    def define(self, hp) -> dict:
        """Declare the search space on a KerasTuner ``HyperParameters``; returns this trial's values."""

        def choice(name, values):
            return hp.Choice(name, list(values)) if len(values) > 1 else hp.Fixed(name, values[0])

        (d0, d1), (l0, l1) = self.dropout, self.learning_rate
        step = 0.05 if d1 - d0 >= 0.05 else None
        return {
            "layers": choice("layers", self.layers),
            "units": choice("units", self.units),
            "dropout": hp.Float("dropout", d0, d1, step=step) if d1 > d0 else hp.Fixed("dropout", d0),
            "learning_rate": hp.Float("learning_rate", l0, l1, sampling="log")
            if l1 > l0
            else hp.Fixed("learning_rate", l0),
        }


def windows(ids: np.ndarray, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping (x, y) window of ``ids``, as two int32 arrays ``[n, seq_len]``."""
    from generator.data.dataset import WindowSampler

    sampler = WindowSampler(ids, config.seq_len, config.batch_size, shuffle=False, drop_remainder=False)
    pairs = list(sampler.batches(0))
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def make_data(config: RunConfig, encoding: str = "utf-8", steps_per_epoch: int = 0):
    """(training tf.data.Dataset, validation Dataset, tokenizer, description) for ``config.corpus``."""
    import tensorflow as tf

    from generator.data import corpora
    from generator.data import dataset
    from generator.data.dataset import TokenizerFactory

    source = corpora.open_corpus(config.corpus, config.modality, split=config.split, encoding=encoding)
    data = dataset.tokenize(source, TokenizerFactory(config.tokenizer, config.extra.get("tokenizer_options")))
    train_ids, val_ids = dataset.split_segments(data, config.val_fraction, config.random_seed)
    if len(train_ids) < 2 or len(val_ids) < 2:
        raise ArgumentError.sentence(
            f"corpus {source.name} is too small to tune on: it gives {len(train_ids)} training and "
            f"{len(val_ids)} validation tokens (raise val_fraction or use a larger corpus)",
            "val_fraction",
        )
    x, y = windows(train_ids, config)
    vx, vy = windows(val_ids, config)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=config.random_seed)
    train = train.batch(config.batch_size)
    if steps_per_epoch:
        train = train.repeat()
    val = tf.data.Dataset.from_tensor_slices((vx, vy)).batch(config.batch_size)
    about = (
        f"corpus {source.name}: {len(x):,} training and {len(vx):,} validation windows of up to "
        f"{x.shape[1]} tokens, vocabulary {data.tokenizer.vocab_size}"
    )
    return train.prefetch(2), val.prefetch(2), data.tokenizer, about


def _hypermodel(base: RunConfig, space: SearchSpace, log):
    import keras
    import keras_tuner

    from generator.models import build_model

    class HyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            config = base.replace(**space.define(hp))
            model = build_model(config)
            model.compile(
                optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.clip_norm),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            return model

        def fit(self, hp, model, *args, **kwargs):
            history = model.fit(*args, **kwargs)
            losses = [v for v in history.history.get("val_loss", []) if math.isfinite(v)]
            result = f"validation {min(losses):.4f} nats per token" if losses else "no finite validation loss"
            log(f"trial {describe(hp.values)}: {result}")
            return history

    return HyperModel()


def describe(values: dict) -> str:
    shown = {k: values[k] for k in TUNED if k in values}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def prepare_output(output: Path, force: bool) -> None:
    """Create ``output``; earlier search results in it are replaced only with ``force``."""
    if output.exists() and not output.is_dir():
        raise GeneratorError(f"output {output} exists and is not a directory")
    existing = [name for name in OUTPUTS if (output / name).exists()]
    if existing and not force:
        raise ArgumentError.sentence(
            f"{output} already holds a search ({', '.join(existing)}); pass force=True to start over", "force"
        )
    for name in existing:
        path = output / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    output.mkdir(parents=True, exist_ok=True)


def tune(
    corpus: str,
    output,
    *,
    modality: str = "text",
    trials: int = 10,
    epochs: int = 2,
    algorithm: str = "bayesian",
    space: SearchSpace | None = None,
    steps_per_epoch: int = 0,
    encoding: str = "utf-8",
    force: bool = False,
    log=print,
    verbose: int = 0,
    **settings,
) -> dict:
    """Search ``space`` with ``trials`` models of up to ``epochs`` epochs; write the best into ``output``.

    ``settings`` are other ``RunConfig`` fields (seq_len, batch_size, embedding, val_fraction, random_seed,
    split, ...), fixed during the search and kept in the best configuration. Returns the contents
    of ``tuning.json`` plus ``config_path``.
    """
    if algorithm not in ALGORITHMS:
        raise GeneratorError(f"unknown search algorithm {algorithm!r}: use {' or '.join(ALGORITHMS)}")
    if trials < 1 or epochs < 1:
        raise GeneratorError("trials and epochs must both be at least 1")
    if modality not in PRESETS or PRESETS[modality].modality != modality:
        raise GeneratorError(f"modality must be text or music, not {modality!r}")
    space = space or SearchSpace()
    try:
        base = PRESETS[modality].replace(corpus=str(corpus), modality=modality, **renamed(settings))
    except TypeError as e:
        raise GeneratorError(str(e)) from None
    output = Path(output)
    prepare_output(output, force)
    import keras
    import keras_tuner

    train, val, tokenizer, about = make_data(base, encoding, steps_per_epoch)
    log(about)
    base = base.replace(vocab_size=tokenizer.vocab_size)
    keras.utils.set_random_seed(base.random_seed)
    common = dict(
        objective="val_loss",
        seed=base.random_seed,
        directory=str(output),
        project_name="search",
        overwrite=True,
        max_consecutive_failed_trials=2,
    )
    hypermodel = _hypermodel(base, space, log)
    if algorithm == "bayesian":
        try:
            tuner = keras_tuner.BayesianOptimization(hypermodel, max_trials=trials, **common)
        except ImportError as e:  # scipy and scikit-learn come with keras-tuner[bayesian]
            raise ArgumentError.sentence(f"{e} (or use algorithm hyperband)", "algorithm") from None
    else:
        tuner = keras_tuner.Hyperband(hypermodel, max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
        tuner.oracle.max_trials = trials  # Hyperband alone has no trial budget
    callbacks = [keras.callbacks.TerminateOnNaN(), keras.callbacks.TensorBoard(log_dir=str(output / "logs"))]
    log(f"searching {algorithm}: {trials} trials of up to {epochs} epochs")
    try:
        tuner.search(
            train,
            validation_data=val,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch or None,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )  # the Dataset shuffles
    except RuntimeError as e:  # KerasTuner gives up after repeated failed trials
        raise GeneratorError(f"the search failed: {str(e).strip().splitlines()[-1][:200]}") from None
    return _write_results(tuner, base, space, output, algorithm, trials, epochs)


def _write_results(
    tuner, base: RunConfig, space: SearchSpace, output: Path, algorithm: str, trials: int, epochs: int
) -> dict:
    from generator.training.checkpoints import atomic_write_text, write_json

    done = [t for t in tuner.oracle.trials.values() if t.score is not None and math.isfinite(t.score)]
    if not done:
        raise GeneratorError("no trial finished with a finite validation loss; try a lower learning rate")
    best = min(done, key=lambda t: t.score)
    values = {k: best.hyperparameters.values[k] for k in TUNED}
    values["layers"], values["units"] = int(values["layers"]), int(values["units"])
    values["dropout"], values["learning_rate"] = round(float(values["dropout"]), 4), float(values["learning_rate"])
    config = base.replace(**values)
    config_path = output / "best_config.json"
    atomic_write_text(config_path, config.to_json() + "\n")
    result = {
        "val_loss_nats": float(best.score),
        "val_bits_per_token": float(best.score) / math.log(2),
        "best_hyperparameters": values,
        "algorithm": algorithm,
        "budget": {"trials": trials, "epochs": epochs},
        "search_space": asdict(space),
        "trials": sorted(
            (
                {
                    "trial": t.trial_id,
                    "val_loss_nats": t.score,
                    "hyperparameters": {k: t.hyperparameters.values.get(k) for k in TUNED},
                }
                for t in done
            ),
            key=lambda r: r["val_loss_nats"],
        ),
    }
    write_json(output / "tuning.json", result)
    return {**result, "config_path": config_path}


def summary(result: dict) -> str:
    return (
        f"best validation loss {result['val_loss_nats']:.4f} nats ({result['val_bits_per_token']:.3f} bits) per "
        f"token with {describe(result['best_hyperparameters'])}; configuration {result['config_path']}"
    )
