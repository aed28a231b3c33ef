"""The trainer's model, optimizer and compiled steps: one train step, run with ``strategy.run``,
serves every tf.distribute strategy (Keras 3's ``model.fit`` does not work under
MultiWorkerMirroredStrategy: keras-team/keras#20585).

Each replica computes the cross-entropy of its share of the global batch divided by the number
of tokens in the whole global batch, so the sum over replicas is the global mean. Gradients are
summed over every replica of every worker (one all-reduce) and only then clipped by their global
norm, so a step does the same whatever the number of devices. (Keras optimizers clip before they
sum, per replica; ``_SummedAdam`` therefore takes gradients that are already summed.)

Weight decay (``config.weight_decay``) is decoupled, as in AdamW: Keras applies it to each variable
in ``apply_gradients``, so it reaches every architecture.

Mixed precision: ``bfloat16`` or ``float16`` compute with float32 variables and float32 logits;
``float16`` adds dynamic loss scaling (``keras.optimizers.LossScaleOptimizer``).

``jit`` compiles each replica's forward and backward pass with XLA, through the architecture's
``training_forward`` (for the LSTM, the layers run by ``generator.models.fast_lstm``: the same
variables and, to float rounding, the same numbers); by default it is on when no GPU is visible. On a GPU ``fast_lstm`` defers to the model itself, and since XLA
cannot compile cuDNN's LSTM kernel the layers then run as XLA-compiled Keras loops: there the
default leaves ``jit`` off and keeps cuDNN.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from generator import models
from generator.config import MIXED_PRECISIONS, RunConfig

POLICIES = {"": "float32", **{name: f"mixed_{name}" for name in MIXED_PRECISIONS}}


@contextlib.contextmanager
def dtype_policy(mixed_precision: str):
    """Build layers under the Keras dtype policy of ``mixed_precision`` ("" for float32)."""
    if mixed_precision not in POLICIES:
        raise ValueError(f"mixed precision must be bfloat16 or float16, not {mixed_precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class _SummedAdam(keras.optimizers.Adam):
    """Adam that applies gradients the train step has already summed over replicas and clipped."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


if not hasattr(keras.optimizers.Adam, "_all_reduce_sum_gradients"):  # keep the step's sum the only one
    raise ImportError(
        "this Keras version no longer sums gradients in _all_reduce_sum_gradients; "
        "generator.training.steps must be updated"
    )


NO_DECAY = ("bias", "gamma", "beta")  # variable names weight decay leaves alone (biases, layer norms)


def make_optimizer(config: RunConfig) -> _SummedAdam:
    """Adam, or with ``config.weight_decay`` AdamW (Loshchilov and Hutter, 2019): after each update every
    weight matrix (kernels and embedding tables) shrinks by ``learning_rate * weight_decay`` times itself,
    apart from the gradient; biases and layer-norm scales are not decayed."""
    optimizer = _SummedAdam(config.learning_rate, weight_decay=config.weight_decay or None, name="adam")
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY))
    return optimizer


def use_jit(config: RunConfig) -> bool:
    """Whether the train step is XLA-compiled: ``config.jit``, or when that is None, whether no GPU is visible."""
    return config.jit if config.jit is not None else not tf.config.list_logical_devices("GPU")


def build(config: RunConfig, strategy):
    """The model and its (built) optimizer, created in ``strategy``'s scope."""
    with strategy.scope():
        with dtype_policy(config.mixed_precision):
            model = models.build_model(config)
        optimizer = make_optimizer(config)
        if config.mixed_precision == "float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    if use_jit(config):
        for layer in model.layers:  # cuDNN kernels cannot be compiled by XLA
            if isinstance(layer, keras.layers.LSTM):
                layer.use_cudnn = False
    return model, optimizer


def cross_entropy(y, logits):
    """Cross-entropy of each target; a target < 0 (one the task's loss ignores) gives 0."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(y, 0), tf.cast(logits, tf.float32))
    return tf.where(y >= 0, ce, tf.zeros_like(ce))


def make_train_step(strategy, model, optimizer, config: RunConfig):
    """``train_step(distributed_batch, global_tokens) -> mean loss per token of the global batch``."""
    variables = model.trainable_variables
    scaled = hasattr(optimizer, "dynamic_scale")
    jit = use_jit(config)
    ignores = models.task(config.arch).ignores_targets

    def forward_backward(x, y, global_tokens):
        with tf.GradientTape() as tape:
            logits = models.training_forward(model, x, training=True) if jit else model(x, training=True)
            ce = cross_entropy(y, logits)
            loss = tf.reduce_sum(ce) / global_tokens
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        return loss, tape.gradient(scaled_loss, variables)

    if jit:
        forward_backward = tf.function(forward_backward, jit_compile=True, reduce_retracing=True)

    def replica_step(x, y, global_tokens):
        if ignores:  # the mean over the targets that count (>= 0) in the whole global batch
            counted = tf.reduce_sum(tf.cast(y >= 0, tf.float32))
            global_tokens = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, counted)
        loss, grads = forward_backward(x, y, global_tokens)
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if config.clip_norm > 0:  # a non-finite norm gives NaN gradients: a loss-scaled step is then skipped
            limit = config.clip_norm * (optimizer.dynamic_scale if scaled else 1.0)  # grads are still scaled
            grads, _ = tf.clip_by_global_norm(grads, limit)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(batch, global_tokens):
        x, y = batch
        losses = strategy.run(replica_step, args=(x, y, global_tokens))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def make_eval_step(model, config: RunConfig):
    """``eval_step(x, y) -> (summed loss, tokens)`` on one device (compiled like the train step)."""
    jit = use_jit(config)

    @tf.function(reduce_retracing=True, jit_compile=jit)
    def eval_step(x, y):
        logits = models.training_forward(model, x) if jit else model(x, training=False)
        return tf.reduce_sum(cross_entropy(y, logits)), tf.reduce_sum(tf.cast(y >= 0, tf.int32))

    return eval_step
