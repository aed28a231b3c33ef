"""One configuration object per run: the single source of truth for rebuilding a model.

``RunConfig`` is saved as ``config.json`` in the run directory. Every knob lives here with a
short comment; ``PRESETS`` pair a tokenizer with sensible hyperparameters (after Magenta's
default_configs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

FORMAT_VERSION = 1  # bump when the run directory layout changes incompatibly


@dataclass
class RunConfig:
    """Model, data and optimisation settings of one training run."""

    # what is modelled
    modality: str = "text"  # "text" or "music": which readers and tokenizers to use
    tokenizer: str = "chars"  # tokenizer kind: chars | events | voices
    corpus: str = ""  # the corpus spec it was trained on (for the record)
    split: str = ""  # JSB json split, if any
    val_split: str = ""  # validate on this split of the same JSON corpus instead of a held-out share
    documents: str = "files"  # text: files (one document per file) | lines (each non-empty line its own document)
    column: str = ""  # text: the CSV column or JSONL key whose values are the documents (one per row)
    # model
    arch: str = "lstm"  # lstm | lstm-attention | transformer | harmonizer (see generator/models)
    layers: int = 2  # stacked LSTM layers, or Transformer blocks
    units: int = 256  # LSTM units per layer, or the Transformer's model width
    embedding: int = 64  # token embedding width
    dropout: float = 0.2  # dropout on each LSTM layer's output (not recurrent: keeps cuDNN eligible)
    locked_dropout: bool = False  # dropout masks shared by all time steps of a sequence (variational, AWD-LSTM)
    input_dropout: float = 0.0  # dropout on the embedding output, layer 1's input (locked when locked_dropout)
    embedding_dropout: float = 0.0  # share of embedding rows (whole tokens) zeroed in each training batch
    weight_drop: float = 0.0  # DropConnect on the LSTMs' recurrent weights: share zeroed, one mask per batch
    tie_weights: bool = False  # output layer reuses the embedding table (through a projection when widths differ)
    heads: int = 4  # attention heads (lstm-attention, transformer)
    attention_window: int = 128  # lstm-attention: how many previous top-layer outputs each step attends to
    positions: str = "rotary"  # transformer: rotary | learned (absolute, added to the embedding; see models/transformer.py)
    vocab_size: int = 0  # filled in from the tokenizer
    # data
    seq_len: int = 100  # tokens per training window (truncated backprop length)
    batch_size: int = 64  # global batch, summed over all replicas and workers
    val_fraction: float = 0.1  # share of the corpus kept for validation
    holdout: str = "auto"  # auto | blocks | tail | documents: how val_fraction is held out (see data.dataset)
    holdout_block: int = 2000  # tokens per held-out block (holdout "blocks")
    augment: bool = True  # training-only augmentation when the tokenizer offers one
    # optimisation
    epochs: int = 20  # maximum number of epochs
    learning_rate: float = 2e-3  # Adam's initial learning rate
    weight_decay: float = 0.0  # decoupled weight decay (AdamW) per step, relative to the learning rate
    clip_norm: float = 1.0  # global gradient-norm clipping
    patience: int = 3  # epochs without validation improvement before stopping
    lr_patience: int = 2  # epochs without improvement before the learning rate is halved
    lr_factor: float = 0.5  # learning-rate reduction factor on plateau
    min_learning_rate: float = 1e-5
    steps_per_epoch: int = 0  # 0: one pass over the training windows
    seed: int = 1234  # data order, initialisation and augmentation
    init_from: str = ""  # fine-tune: start from this run directory or bundled checkpoint (its tokenizer and sizes)
    freeze: int = 0  # keep the embedding and the lowest N layers at their --init-from weights (0: train all)
    warmup_steps: int = 0  # raise the learning rate linearly from near 0 over the first N steps
    time_limit: float = 0.0  # stop after this many seconds of training, validating and keeping the best (0: none)
    # execution
    strategy: str = "auto"  # auto | default | mirrored | multi-worker
    mixed_precision: str = ""  # "" | bfloat16 | float16
    jit: bool | None = None  # XLA-compile the train step with fast_lstm's loops (None: when no GPU is visible)
    save_every: int = 0  # also checkpoint every N steps (0: at epoch ends only)
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)  # tokenizer options and notes

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build from a dict, rejecting unknown keys with a clear message."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError("unknown configuration keys: " + ", ".join(unknown))
        return cls(**data)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# The architecture knobs: a run that resumes must agree on these with the saved config.
MODEL_KEYS = ("arch", "tokenizer", "layers", "units", "embedding", "heads", "attention_window", "vocab_size",
              "tie_weights", "positions")

# The regularizers each preset takes are the ones that won, trained to convergence, in docs/results.md
# "Ablation": for text the four that beat the baseline alone in about as many epochs (together
# better than any of them; tying also beat it, in twice the epochs); for chorales, under
# transposition augmentation, only locked and input dropout did. The Transformer takes none of
# the LSTM-only ones and keeps weight decay (nanoGPT's 0.1 too).
PRESETS: dict[str, RunConfig] = {
    "text": RunConfig(modality="text", tokenizer="chars", layers=2, units=512, embedding=64,
                      dropout=0.25, locked_dropout=True, input_dropout=0.1, embedding_dropout=0.1,
                      weight_drop=0.3, weight_decay=0.1, seq_len=100, batch_size=64),
    "music": RunConfig(modality="music", tokenizer="events", layers=2, units=512, embedding=64,
                       dropout=0.25, seq_len=256, batch_size=32),
    "chorales": RunConfig(modality="music", tokenizer="voices", layers=2, units=256, embedding=32,
                          dropout=0.3, locked_dropout=True, input_dropout=0.1, seq_len=256, batch_size=32),
}

# Each architecture's own sizes on top of a modality preset (``preset(name, arch)``); lstm uses PRESETS as is.
# lstm-attention adds ~4 units^2 weights to the LSTM; the Transformer's sizes follow nanoGPT's small
# character model scaled to a CPU (about the LSTM preset's parameter count).
ARCH_PRESETS: dict[str, dict[str, dict]] = {
    "harmonizer": {  # windows of 64 16th-note steps (16 beats), each with a random share of its cells masked
        "chorales": dict(layers=2, units=256, embedding=32, dropout=0.3, seq_len=64, batch_size=32),
    },
    "lstm-attention": {
        "text": dict(heads=4, attention_window=128),
        "music": dict(heads=4, attention_window=64),
        "chorales": dict(heads=4, attention_window=64),
    },
    "transformer": {
        "text": dict(layers=4, units=256, embedding=256, heads=4, dropout=0.1, seq_len=256, batch_size=32,
                     learning_rate=1e-3, embedding_dropout=0.0, input_dropout=0.0),
        "music": dict(layers=4, units=256, embedding=256, heads=4, dropout=0.1, seq_len=512, batch_size=16,
                      learning_rate=1e-3),
        "chorales": dict(layers=4, units=128, embedding=128, heads=4, dropout=0.2, seq_len=256, batch_size=32,
                         learning_rate=1e-3),
    },
}


def preset(name: str, arch: str = "lstm") -> RunConfig:
    """The preset ``name`` (text, music, chorales) with architecture ``arch``'s own sizes."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(arch=arch, **ARCH_PRESETS.get(arch, {}).get(name, {}))
