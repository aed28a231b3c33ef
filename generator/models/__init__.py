"""One file per architecture behind one small interface.

Each architecture module (``lstm``, ``attention``, ``transformer``; ``harmonizer`` has all but the
``Decoder``) provides:

- ``NAME``: the Keras model's name, which is how a saved model tells its architecture;
- ``build(config) -> keras.Model``: int token ids ``[batch, time]`` -> logits ``[batch, time, vocab]``;
- ``Decoder(model)``: incremental decoding with ``zero_states(batch)``, ``step(tokens, states) ->
  (logits, states)`` and ``forward(tokens, states) -> (logits, states)``; the states are a nest
  of tensors that nobody outside the module looks into;
- ``training_forward(model, tokens, training)``: the forward pass the trainer runs under XLA
  (``model(tokens, training=training)`` where the architecture has nothing faster).

The registry pairs each architecture with its task (``generator.models.tasks``: a language model,
or the harmonizer), which says what the models train on and how they are sampled. The trainer,
the sampler, ``evaluate``, the API and the checkpoint code call only the functions below and ask
the task, never which architecture they hold.
"""

from __future__ import annotations

import importlib

from generator.models.tasks import HARMONIZER, LANGUAGE_MODEL, Task

ARCHS = {  # --arch name -> (module, the task its models do: generator.models.tasks)
    "lstm": ("generator.models.lstm", LANGUAGE_MODEL),
    "lstm-attention": ("generator.models.attention", LANGUAGE_MODEL),
    "transformer": ("generator.models.transformer", LANGUAGE_MODEL),
    "harmonizer": ("generator.models.harmonizer", HARMONIZER),  # bidirectional, fills in SATB cells
}
POSITIONS = ("rotary", "learned")  # the transformer's position encodings (RunConfig.positions)


def module(arch: str):
    """The module of architecture ``arch`` (a ValueError naming the choices when unknown)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return importlib.import_module(ARCHS[arch][0])


def task(arch: str) -> Task:
    """What models of ``arch`` do (what they train on, how they are sampled), without importing its module."""
    if arch not in ARCHS:
        module(arch)  # the error naming the choices
    return ARCHS[arch][1]


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


def decoder(model, what: str = "this checkpoint", modality: str = "music"):
    """The incremental decoder of a trained model of any left-to-right architecture (``what`` and
    ``modality`` name the model in the error for one whose task is not sampled token by token)."""
    arch = arch_of(model)
    task(arch).require("generate", what, modality)
    return module(arch).Decoder(model)


def training_forward(model, tokens, training: bool = False):
    """The logits the trainer computes under XLA (fast paths where the architecture has them)."""
    return module(arch_of(model)).training_forward(model, tokens, training=training)
