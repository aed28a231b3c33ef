"""One configuration object per run: the single source of truth for rebuilding a model.

``RunConfig`` is saved as ``config.json`` in the run directory. Every knob lives here with a
short comment; ``PRESETS`` pair a tokenizer with sensible hyperparameters (after Magenta's
default_configs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from generator.argtypes import fraction, int_range, non_negative_float, positive_float, probability
from generator.options import check, check_names, option

FORMAT_VERSION = 1  # bump when the run directory layout changes incompatibly
MIXED_PRECISIONS = ("bfloat16", "float16")  # the 16-bit compute types (training.steps.POLICIES)


# Choices asked of the registries when a parser is built or a value checked (no TensorFlow).
def _archs():
    from generator.models import ARCHS

    return tuple(ARCHS)


def _positions():
    from generator.models import POSITIONS

    return POSITIONS


def _tokenizers():
    from generator.data.tokenizers.base import kinds

    return kinds()


def _holdouts():
    from generator.data.dataset import HOLDOUTS

    return HOLDOUTS


def _documents():
    from generator.data.corpora import DOCUMENTS

    return DOCUMENTS


def _strategies():
    from generator.training.distribute import STRATEGIES

    return STRATEGIES


@dataclass
class RunConfig:
    """Model, data and optimisation settings of one training run.

    Each field is the one definition of its setting (``generator.options``): the flag of
    ``generator train`` (``--name-with-dashes``), the key of ``config.json`` and the keyword of
    ``generator.train()`` are all made from it. Defaults here are overridden by the presets below.
    """

    # -- what is modelled
    modality: str = option(
        "text",
        "What is modelled, text or music: which readers and tokenizers are used. "
        "Set by `generator train text` or `generator train music`.",
        cli=False,
    )
    tokenizer: str = option(
        "chars",
        "How documents become tokens: chars for text; events (note on/off, time shift, velocity) for music; "
        "voices (SATB on a 16th-note grid) for chorales; band (bars, positions and instrument-kind tracks with "
        "drums) for multi-track songs. By default text uses chars, JSON grids and the chorales corpus use voices, "
        "other music uses events.",
        choices=_tokenizers,
    )
    corpus: str = option(
        "",
        "What to train on: a file, a directory of files, or a built-in corpus name "
        "(see `generator corpora list`). Required unless --config names one.",
        metavar="SPEC",
    )
    split: str = option("", "The split of a JSON corpus to train on (train, valid or test).")
    val_split: str = option(
        "",
        "Validate on this split of the same JSON corpus instead of holding out "
        "--val-fraction (default: valid, when training on the train split of a JSON corpus).",
    )
    documents: str = option(
        "files",
        "Text: what one document is. files (the default) makes each .txt file one document; lines makes "
        "every non-empty line its own short document (titles, names, tweets), and then generate-text gives one line "
        "per sample, each from a fresh start.",
        choices=_documents,
    )
    column: str = option(
        "",
        "Text: read .csv files (by their header) or .jsonl files (by key) and make each row's "
        "value of column NAME one short document, as with --documents lines.",
        metavar="NAME",
    )
    # -- model
    arch: str = option(
        "lstm",
        "The architecture: lstm (stacked LSTMs, the default), lstm-attention (stacked LSTMs whose top-layer "
        "outputs attend over the last --attention-window outputs) or transformer (decoder-only, causal "
        "self-attention with rotary positions); harmonizer (a bidirectional LSTM trained on SATB grids with masked "
        "cells, which fills in voices: generate-music --harmonize; needs --tokenizer voices). Each has its own "
        "preset of sizes, which the other flags override.",
        choices=_archs,
    )
    layers: int = option(2, "Number of stacked LSTM layers, or of Transformer blocks.", parse=int_range(1, 16))
    units: int = option(
        256, "Units (state size) of each LSTM layer, or the Transformer's model width.", parse=int_range(1, 8192)
    )
    embedding: int = option(64, "Width of the token embedding.", parse=int_range(1, 8192))
    dropout: float = option(0.2, "Dropout rate on each LSTM layer's output, at least 0 and below 1.", parse=fraction)
    locked_dropout: bool = option(
        False,
        "Draw one dropout mask per sequence and share it across all its time steps (variational dropout, as "
        "in AWD-LSTM) instead of a fresh mask at every step. On in the text and chorales presets, off otherwise.",
    )
    input_dropout: float = option(
        0.0,
        "Dropout rate on the embedding output, the first layer's input (locked with --locked-dropout); 0 turns "
        "it off. Default 0.1 in the text and chorales presets, 0 otherwise.",
        parse=fraction,
    )
    embedding_dropout: float = option(
        0.0,
        "Share of embedding rows zeroed in each training batch, so that every occurrence of a dropped token "
        "loses its embedding at once; 0 turns it off. Default 0.1 in the text preset, 0 otherwise.",
        parse=fraction,
    )
    weight_drop: float = option(
        0.0,
        "DropConnect on the recurrent weights of lstm and lstm-attention: the share of the recurrent kernel's "
        "entries zeroed for each training batch (AWD-LSTM uses 0.5); training keeps the cuDNN kernel on GPUs. 0 "
        "turns it off. Default 0.3 in the text preset, 0 otherwise.",
        parse=fraction,
    )
    tie_weights: bool = option(
        False,
        "Compute the output logits with the embedding table (transposed), through a projection from the last "
        "layer's width to the embedding's when they differ. Off by default.",
    )
    heads: int = option(
        4,
        "Attention heads of lstm-attention and transformer; the attention width (--units) must be a multiple of it.",
        parse=int_range(1, 256),
    )
    attention_window: int = option(
        128,
        "lstm-attention: how many of the previous top-layer LSTM outputs (the current one included) each step "
        "attends to (default 128 for text, 64 for music). The decode state keeps that many keys and values, so "
        "sampling memory stays constant however long the output.",
        parse=int_range(1, 100_000),
    )
    positions: str = option(
        "rotary",
        "transformer: how token positions are encoded: rotary (relative, the default) or learned "
        "(an absolute position vector added to the embedding); see docs/results.md.",
        choices=_positions,
    )
    vocab_size: int = option(0, "The vocabulary size, filled in from the tokenizer.", cli=False)
    # -- data
    seq_len: int = option(100, "Tokens per training window (backpropagation length).", parse=int_range(1, 100_000))
    batch_size: int = option(
        64,
        "Windows per training step, summed over all devices and machines (the global batch): each device "
        "trains on its share and the loss is averaged over the whole batch.",
        parse=int_range(1, 1_000_000),
    )
    val_fraction: float = option(
        0.1, "Share of the corpus held out for validation, taken as --holdout says.", parse=fraction
    )
    holdout: str = option(
        "auto",
        "How --val-fraction is held out: blocks holds out seeded random blocks of --holdout-block tokens "
        "spread over every document; tail holds out the end of each document; documents holds out whole "
        "documents. auto, the default, takes documents when the corpus has 20 or more and blocks otherwise. "
        "Training windows never cross into held-out tokens.",
        choices=_holdouts,
    )
    holdout_block: int = option(
        2000,
        "Length in tokens of each held-out block with --holdout blocks (default {default}).",
        parse=int_range(2),
        metavar="TOKENS",
    )
    val_tokens: int = option(
        2_000_000,
        "Validate on at most this many tokens: when the validation data is "
        "larger, a fixed seeded sample of its windows is scored each epoch, shared out among "
        "the workers of a multi-worker run (default {default}; 0 scores all of it).",
        parse=int_range(0),
        metavar="TOKENS",
    )
    shard_tokens: bool = option(
        True,
        "In a multi-worker run, each worker reads the training windows of its own "
        "stretch of the corpus only, so that it holds about its share of the tokens; off, "
        "every worker reads its rows of each global batch from the whole corpus, and the "
        "batches are those of a single-process run. On by default.",
    )
    augment: bool = option(
        True,
        "Augment the training windows where the tokenizer offers it (music: transposed "
        "copies); validation data is never augmented. On by default.",
    )
    # -- optimisation
    epochs: int = option(
        20, "Maximum number of passes over the training data (default {default}).", parse=int_range(1, 100_000)
    )
    learning_rate: float = option(
        2e-3,
        "Initial learning rate of the Adam optimizer (0 leaves the weights as they "
        "are). Default: the preset's (2e-3 for the LSTM); with --init-from, a quarter of "
        "the checkpoint's.",
        parse=non_negative_float,
    )
    weight_decay: float = option(
        0.0,
        "Decoupled weight decay (AdamW): each step shrinks every weight by learning rate times this factor, "
        "apart from the gradient; 0 turns it off. Default 0.1 in the text preset, 0 otherwise.",
        parse=fraction,
    )
    clip_norm: float = option(
        1.0,
        "Clip the gradients so that their global norm is at most this; 0 turns clipping off (default {default}).",
        parse=non_negative_float,
    )
    patience: int = option(
        3,
        "Stop after this many epochs without a better validation loss (default 3; 2 with "
        "--init-from, where a small corpus overfits in minutes). The best weights are the ones "
        "kept.",
        parse=int_range(1),
    )
    lr_patience: int = option(
        2,
        "Multiply the learning rate by --lr-factor after this many epochs without a "
        "better validation loss (default {default}).",
        parse=int_range(1),
    )
    lr_factor: float = option(
        0.5,
        "What the learning rate is multiplied by when validation stops improving for "
        "--lr-patience epochs (default {default}).",
        parse=fraction,
    )
    min_learning_rate: float = option(
        1e-5, "The learning rate is never reduced below this (default {default}).", parse=positive_float
    )
    steps_per_epoch: int = option(0, "Batches per epoch (default: one pass over the data).", parse=int_range(1))
    random_seed: int = option(
        1234,
        "Random seed of initialisation, data order and augmentation (default {default}).",
        parse=int_range(0),
        aliases=("--seed",),
    )
    init_from: str = option(
        "",
        "Fine-tune: start from this bundled checkpoint (shakespeare, pop-piano, bach, jsb-chorales, band) or run "
        "directory instead of random weights. The run takes its tokenizer, architecture and sizes; flags that "
        "contradict them are an error (--arch lstm-attention from an lstm checkpoint is allowed: its attention "
        "starts fresh). Characters of a text corpus that the checkpoint never saw are added to its vocabulary, so "
        "that it predicts the old ones as before; music keeps the checkpoint's vocabulary. Fine-tuning defaults: a "
        "quarter of its learning rate with --warmup-steps 50, --patience 2, validation on --val-fraction of the new "
        "corpus, and the checkpoint's own weights kept unless an epoch beats them on it.",
        metavar="CHECKPOINT",
    )
    freeze: int = option(
        0,
        "With --init-from, keep the embedding and the lowest N LSTM layers (or Transformer blocks) at the "
        "checkpoint's weights and train only the layers above them; fewer than --layers. Default 0: every layer "
        "trains.",
        parse=int_range(0),
        metavar="N",
    )
    warmup_steps: int = option(
        0,
        "Raise the learning rate linearly from a small value to --learning-rate over the first N training steps, "
        "so that the first steps on a new corpus do not undo what a checkpoint knows. Default 0, and 50 with "
        "--init-from.",
        parse=int_range(0),
        metavar="N",
    )
    time_limit: float = option(
        0.0,
        "Stop once training has run this many seconds (validations included, over all sittings of a resumed "
        "run): the epoch under way is cut short, validated, and the best weights are kept; the same command "
        "with a higher limit, or none, trains on from there. By default there is no limit.",
        parse=positive_float,
        metavar="SECONDS",
    )
    # -- execution
    strategy: str = option(
        "auto",
        "How to spread training over devices: default uses one device; mirrored uses every GPU of this "
        "machine; multi-worker trains on several machines together, the cluster read from TF_CONFIG (or from the "
        "Slurm job step); auto, the default, uses mirrored when more than one GPU is visible and default "
        "otherwise.",
        choices=_strategies,
    )
    mixed_precision: str = option(
        "",
        "Compute in 16-bit floats while keeping the weights in 32 bits, which is faster on GPUs with tensor "
        "cores; float16 adds dynamic loss scaling. Off by default.",
        choices=MIXED_PRECISIONS,
    )
    jit: bool | None = option(
        None,
        "Compile each step's forward and backward pass with XLA, the LSTM layers running as hand-written "
        "loops (the fastest way on a CPU). On by default when no GPU is visible; on a GPU it would replace cuDNN's "
        "LSTM kernel, so there it is off unless asked for.",
    )
    save_every: int = option(
        0,
        "Also save a resumable checkpoint every N training steps; one is always saved at the end of every epoch. "
        "A killed run resumes from the last one when the same command is run again.",
        parse=int_range(1),
        metavar="N",
    )
    format_version: int = option(
        FORMAT_VERSION, "The run directory format this configuration was written in.", cli=False
    )
    extra: dict = option(
        {}, "Tokenizer options and the checkpoint's sampling recommendations (top_p, key_average).", cli=False
    )

    def check(self) -> "RunConfig":
        """This configuration, every field checked against its type, choices and range (a ValueError
        naming the field otherwise)."""
        check(self)
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @property
    def seed(self) -> int:
        """The old name of ``random_seed`` (read only)."""
        return self.random_seed

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build from a dict (old names accepted, see ``RENAMED``), rejecting unknown keys with a clear message."""
        data = renamed(data)
        check_names(cls, data)
        return cls(**data)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


RENAMED = {"seed": "random_seed"}  # old RunConfig names -> new, still read from config files and train() keywords


def renamed(settings: dict) -> dict:
    """``settings`` with old names (``RENAMED``) replaced by the new ones."""
    return {RENAMED.get(name, name): value for name, value in settings.items()}


# The architecture knobs: a run that resumes must agree on these with the saved config.
MODEL_KEYS = (
    "arch",
    "tokenizer",
    "layers",
    "units",
    "embedding",
    "heads",
    "attention_window",
    "vocab_size",
    "tie_weights",
    "positions",
)

# The regularizers each preset takes are the ones that won, trained to convergence, in docs/results.md
# "Ablation": for text the four that beat the baseline alone in about as many epochs (together
# better than any of them; tying also beat it, in twice the epochs); for chorales, under
# transposition augmentation, only locked and input dropout did. The Transformer takes none of
# the LSTM-only ones and keeps weight decay (nanoGPT's 0.1 too).
PRESETS: dict[str, RunConfig] = {
    "text": RunConfig(
        modality="text",
        tokenizer="chars",
        layers=2,
        units=512,
        embedding=64,
        dropout=0.25,
        locked_dropout=True,
        input_dropout=0.1,
        embedding_dropout=0.1,
        weight_drop=0.3,
        weight_decay=0.1,
        seq_len=100,
        batch_size=64,
    ),
    "music": RunConfig(
        modality="music",
        tokenizer="events",
        layers=2,
        units=512,
        embedding=64,
        dropout=0.25,
        seq_len=256,
        batch_size=32,
    ),
    "chorales": RunConfig(
        modality="music",
        tokenizer="voices",
        layers=2,
        units=256,
        embedding=32,
        dropout=0.3,
        locked_dropout=True,
        input_dropout=0.1,
        seq_len=256,
        batch_size=32,
    ),
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
        "text": dict(
            layers=4,
            units=256,
            embedding=256,
            heads=4,
            dropout=0.1,
            seq_len=256,
            batch_size=32,
            learning_rate=1e-3,
            embedding_dropout=0.0,
            input_dropout=0.0,
        ),
        "music": dict(
            layers=4, units=256, embedding=256, heads=4, dropout=0.1, seq_len=512, batch_size=16, learning_rate=1e-3
        ),
        "chorales": dict(
            layers=4, units=128, embedding=128, heads=4, dropout=0.2, seq_len=256, batch_size=32, learning_rate=1e-3
        ),
    },
}


def preset(name: str, arch: str = "lstm") -> RunConfig:
    """The preset ``name`` (text, music, chorales) with architecture ``arch``'s own sizes."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(arch=arch, **ARCH_PRESETS.get(arch, {}).get(name, {}))


@dataclass(frozen=True)
class SamplingOptions:
    """How one call samples (``Generator.generate``, ``stream``, ``harmonize``, ``evaluate_continuations``).

    A frozen value passed to each call, never set on the Generator. Each field is the one
    definition of its setting: the flags of generate-text and generate-music are made from it, and
    the calls take its fields as keywords too (``generate("KING:", temperature=0.7)``). None means
    the checkpoint's own recommendation where it has one (``top_p``, ``key_average``).
    """

    temperature: float = option(
        1.0,
        "Sampling temperature: 1.0 uses the model's unaltered probabilities, greater than 1.0 makes the output "
        "more random, less than 1.0 less random. Must be greater than 0.",
        parse=positive_float,
    )
    top_k: int | None = option(
        None,
        "Sample only among the K most likely next tokens. By default every token may be sampled.",
        parse=int_range(1),
        metavar="K",
        kind=int,
    )
    top_p: float | None = option(
        None,
        "Sample only among the most likely next tokens whose probabilities add up to P (nucleus sampling), a "
        "number in (0, 1]; 1 samples from every token. By default the checkpoint's own recommendation is used "
        "(pop-piano: 0.9), and every token may be sampled where it has none.",
        parse=probability,
        metavar="P",
        kind=float,
    )
    random_seed: int | None = option(
        None,
        "Seed of the random sampling: the same seed, checkpoint and flags give byte-identical output. By "
        "default a fresh seed is drawn each run.",
        parse=int_range(0),
        metavar="S",
        kind=int,
    )
    key_average: int | None = option(
        None,
        "Music models: average every next-token prediction over the music transposed by -K..K semitones (2K+1 "
        "copies run side by side as one batch; a copy drops out once its notes leave the model's pitch range). It "
        "lowers the loss of models trained with transposition augmentation (docs/music.md, 'Key averaging'). 0 "
        "uses the model alone. Default: the checkpoint's own recommendation (the bundled music models: 3), else 0.",
        parse=int_range(0, 12),
        metavar="K",
        kind=int,
    )
    repetition: float | None = option(
        None,
        "How strongly the output repeats what came before it (a song's bars, a text's phrases), a share in [0, 1): "
        "each next-token prediction gets this share of its probability from what followed earlier occurrences of "
        "the latest few tokens in the seed or prompt, the model keeping the rest. 0 samples the model alone. "
        "Default: the checkpoint's own recommendation (band: 0.95), else 0.",
        parse=fraction,
        metavar="SHARE",
        kind=float,
    )
    voice_leading: bool = option(
        True,
        "SATB chorales (voices models, and the harmonizer): keep to the voice-leading rules, on by default: "
        "no voice crosses the one above it, alto and tenor stay within an octave of the voice above, each voice "
        "stays within its range, and no two voices move in parallel fifths or octaves. --no-voice-leading samples "
        "without them.",
    )
    note_limit: bool = option(
        True,
        "Music: hold no note longer than the cap learned from the model's training corpus (recorded in its "
        "tokenizer.json, never longer than the corpus's longest note), releasing a note that reaches it; on by "
        "default. --no-note-limit lets notes last as long as the model likes.",
    )

    def replace(self, **changes) -> "SamplingOptions":
        """A copy with ``changes``, each checked (a ValueError naming the argument that does not fit)."""
        check_names(SamplingOptions, changes)
        return dataclasses.replace(self, **changes).check()

    def check(self) -> "SamplingOptions":
        check(self)
        return self
