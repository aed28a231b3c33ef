"""One file per architecture behind one small interface.

Each architecture module (``lstm``, ``attention``, ``transformer``) provides:

- ``NAME``: the Keras model's name, which is how a saved model tells its architecture;
- ``build(config) -> keras.Model``: int token ids ``[batch, time]`` -> logits ``[batch, time, vocab]``;
- ``Decoder(model)``: incremental decoding with ``zero_states(batch)``, ``step(tokens, states) ->
  (logits, states)`` and ``forward(tokens, states) -> (logits, states)``; the states are a nest
  of tensors that nobody outside the module looks into;
- ``training_forward(model, tokens, training)``: the forward pass the trainer runs under XLA
  (``model(tokens, training=training)`` where the architecture has nothing faster).

The trainer, the sampler, ``evaluate`` and the checkpoint code call only the functions below and
never ask which architecture they hold.
"""

from __future__ import annotations

import importlib

ARCHS = {  # --arch name -> module
    "lstm": "generator.models.lstm",
    "lstm-attention": "generator.models.attention",
    "transformer": "generator.models.transformer",
    "harmonizer": "generator.models.harmonizer",  # bidirectional, fills in SATB cells (generation.harmonize)
}
POSITIONS = ("rotary", "learned")  # the transformer's position encodings (RunConfig.positions)


def module(arch: str):
    """The module of architecture ``arch`` (a ValueError naming the choices when unknown)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return importlib.import_module(ARCHS[arch])


def arch_of(model) -> str:
    """The architecture of a built or loaded Keras model, read from its name."""
    for arch in ARCHS:
        mod = module(arch)
        if model.name == mod.NAME:
            return arch
    raise ValueError(f"model {model.name!r} is not one of this project's architectures")


def build_model(config):
    """The training model of ``config.arch``."""
    return module(config.arch).build(config)


def decoder(model):
    """The incremental decoder of a trained model of any architecture."""
    return module(arch_of(model)).Decoder(model)


def window_sampler(config):
    """The class (or factory) that cuts training windows for ``config.arch``: ``dataset.WindowSampler``
    (next-token ``(x, y)``) unless the architecture trains on something else (the harmonizer:
    masked cells, targets -1 where the loss ignores them)."""
    import functools

    from generator.data import dataset

    own = getattr(module(config.arch), "WindowSampler", None)
    return dataset.WindowSampler if own is None else functools.partial(own, vocab_size=config.vocab_size)


def left_to_right(arch: str) -> bool:
    """Whether ``arch`` predicts each token from the ones before it, so that it is sampled token by token
    (``generation.sampling``); False for one that fills in cells from both sides (the harmonizer)."""
    return getattr(module(arch), "LEFT_TO_RIGHT", True)


def ignores_targets(arch: str) -> bool:
    """Whether ``arch``'s training targets include ignored ones (< 0): its loss is the mean over the rest."""
    return hasattr(module(arch), "WindowSampler")


def training_forward(model, tokens, training: bool = False):
    """The logits the trainer computes under XLA (fast paths where the architecture has them)."""
    return module(arch_of(model)).training_forward(model, tokens, training=training)
