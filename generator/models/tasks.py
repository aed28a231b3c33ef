"""What a model does, declared for each architecture in the registry (``generator.models.ARCHS``).

Shared code (the trainer's windows and loss, the API's calls, the studio's menus) asks a model's
task what it trains on and how it is sampled; it never asks which architecture it holds. Two tasks:

- ``LANGUAGE_MODEL`` predicts each token from the ones before it: it trains on next-token windows
  (``dataset.WindowSampler``), every target counts in the loss, and it is sampled token by token
  (``Generator.generate`` and ``stream``, ``compose``) and scored by ``evaluate``.
- ``HARMONIZER`` fills in the masked cells of an SATB grid from both sides: it trains on masked
  windows (``generator.models.harmonizer.WindowSampler``, targets -1 where the loss ignores them)
  and is sampled by pseudo-Gibbs sampling (``Generator.harmonize``, ``generation.harmonize``).

Pure Python: reading a task imports neither the architecture's module nor TensorFlow.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from generator.errors import GeneratorError


@dataclass(frozen=True)
class Task:
    name: str  # what messages call a model of this task when it is no language model
    left_to_right: bool  # sampled token by token by generation.sampling (and scored by evaluate)
    calls: tuple[str, ...]  # the Generator calls that sample or score it
    windows: str = ""  # "module:Class" that cuts its training windows; "" is dataset.WindowSampler
    ignores_targets: bool = False  # its targets include ignored ones (< 0): the loss is the mean over the rest

    def window_sampler(self, config):
        """The class (or factory) that cuts ``config``'s training and validation windows."""
        from generator.data import dataset

        if not self.windows:
            return dataset.WindowSampler
        module, name = self.windows.split(":")
        own = getattr(importlib.import_module(module), name)
        return functools.partial(own, vocab_size=config.vocab_size)

    def kind(self, modality: str) -> str:
        """What a model of this task on ``modality`` is called: ``music`` or ``text`` for a language
        model, the task's name otherwise (``harmonizer``)."""
        return modality if self.left_to_right else self.name

    def require(self, call: str, what: str, modality: str) -> None:
        """Refuse ``call`` (a Generator method) on ``what`` (a checkpoint's name, its model of
        ``modality``) unless this task serves it, with the task that would."""
        if call not in self.calls:
            needs = next(task for task in TASKS if call in task.calls)
            raise GeneratorError(
                f"{what} is a {self.kind(modality)} model, not a {needs.kind(modality)} model: "
                f"sample it with {self.calls[0]}()"
            )


LANGUAGE_MODEL = Task(
    "language",  # never shown: a language model is called by its modality (kind)
    left_to_right=True,
    calls=("generate", "stream", "evaluate", "evaluate_continuations"),
)
HARMONIZER = Task(
    "harmonizer",
    left_to_right=False,
    calls=("harmonize",),
    windows="generator.models.harmonizer:WindowSampler",
    ignores_targets=True,
)
TASKS = (LANGUAGE_MODEL, HARMONIZER)
