"""The trainer's resumable state: where the loop is, and the ``resume.npz`` checkpoint holding it.

``resume.npz`` holds the model weights (``w0``, ``w1``, ...), Adam's variables (``o0``, ...), the
loss-scale variables of a float16 run (``s0``, ...), the dropout layers' random-generator states
(``r0``, ...: a resumed run draws the masks an uninterrupted one would) and ``state``:
``LoopState`` as JSON. It is
written as bytes (``pack``) so that the chief of a multi-worker run can send it to the others.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, fields

import numpy as np

from generator.errors import ArgumentError

HISTORY_FIELDS = ["epoch", "train_loss", "val_loss", "train_bits", "val_bits", "learning_rate", "seconds"]


@dataclass
class LoopState:
    """Where the loop is and what early stopping knows; saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches of the current epoch already trained (mid-epoch checkpoints)
    epoch_loss: float = 0.0  # sum of the per-step losses of those batches
    global_step: int = 0
    best_val: float = float("inf")
    best_epoch: int = 0
    wait: int = 0
    lr_wait: int = 0
    learning_rate: float = 0.0
    seconds: float = 0.0
    stopped_early: bool = False
    complete: bool = False
    start_val: float | None = None  # fine-tuning: the validation loss of the starting weights (best epoch 0 keeps them)
    out_of_time: bool = False  # stopped by the time limit
    history: list = field(default_factory=list)

    def finished(self, epochs: int) -> bool:
        """Whether the run is over: stopped early, stopped by its time limit, or at its epoch cap."""
        return self.stopped_early or self.out_of_time or self.epoch >= epochs

    def position(self) -> str:
        """E.g. ``epoch 3, step 120 (after 520 steps)``."""
        step = f", step {self.step_in_epoch}" if self.step_in_epoch else ""
        return f"epoch {self.epoch + 1}{step} (after {self.global_step} steps)"


def _split(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    own = [v for v in optimizer.variables if not any(v is w for w in inner.variables)]
    return inner.variables, own


def _seed_states(model) -> list:
    """The state variables of the model's Keras seed generators (not part of ``get_weights``)."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def pack(state: LoopState, model, optimizer) -> bytes:
    """The checkpoint as the bytes of an ``.npz`` file."""
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"r{i}": np.asarray(v) for i, v in enumerate(_seed_states(model))})
    adam, scale = _split(optimizer)
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(adam)})
    arrays.update({f"s{i}": np.asarray(v) for i, v in enumerate(scale)})
    arrays["state"] = np.array(json.dumps(state.__dict__))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack_state(blob: bytes, where: str) -> LoopState:
    """The ``LoopState`` of a checkpoint; a damaged one is a GeneratorError naming ``where``."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            saved = json.loads(str(data["state"]))
        known = {f.name for f in fields(LoopState)}
        return LoopState(**{k: v for k, v in saved.items() if k in known})
    except Exception as e:
        raise ArgumentError.sentence(
            f"{where} is damaged ({type(e).__name__}); pass force=True to start over", "force"
        ) from None


def restore(blob: bytes, model, optimizer) -> None:
    """Load a checkpoint's weights and optimizer state into ``model`` and ``optimizer``."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        model.set_weights([data[f"w{i}"] for i in range(len(model.weights))])
        for i, v in enumerate(_seed_states(model)):  # absent in checkpoints of earlier versions
            if f"r{i}" in data:
                v.assign(data[f"r{i}"])
        adam, scale = _split(optimizer)
        for i, v in enumerate(adam):
            v.assign(data[f"o{i}"])
        for i, v in enumerate(scale):  # absent when the run was not float16 before
            if f"s{i}" in data:
                v.assign(data[f"s{i}"])


def history_csv(state: LoopState) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(state.history)
    return out.getvalue()
