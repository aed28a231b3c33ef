"""Fine-tuning: a run that starts from a trained checkpoint (the ``init_from`` setting).

The new run takes the checkpoint's tokenizer, architecture and sizes (``fine_tune_config``);
a setting that contradicts them is one error naming the conflict. A character vocabulary grows by
the characters of the new corpus the checkpoint never saw (``GrowingChars``): they are appended
after the old ones, so every old id keeps its meaning, and their new output rows start with a
very low bias (``NEW_TOKEN_BIAS``), so the grown model predicts the old tokens as before. Music
keeps the checkpoint's event vocabulary.

Defaults differ from training from scratch (``FINE_TUNE_DEFAULTS``): a quarter of the
checkpoint's learning rate, reached after a short linear warm-up, and early stopping on a
validation share of the new corpus with the best weights kept; the checkpoint's own weights
count as the first candidate, so a run in which no epoch beats them keeps them. ``freeze``
keeps the embedding and the lowest layers at the checkpoint's weights.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from generator.config import MODEL_KEYS, RunConfig
from generator.errors import ArgumentError

FINE_TUNE_DEFAULTS = dict(warmup_steps=50, patience=2, lr_patience=1, steps_per_epoch=0, epochs=20)
LEARNING_RATE_SHARE = 0.25  # the fine-tuning learning rate, as a share of the checkpoint's
NEW_TOKEN_BIAS = -12.0  # output bias of a token added to the vocabulary: about e^-12 of the mass, for now
# The checkpoint's settings a new run does not inherit: its corpus, and how the machine that trained it ran.
NOT_INHERITED = dict(
    corpus="",
    split="",
    val_split="",
    documents="files",
    column="",
    strategy="auto",
    mixed_precision="",
    jit=None,
    save_every=0,
    time_limit=0.0,
    freeze=0,
)
# An lstm checkpoint may start an lstm-attention run: its layers are copied, the attention starts fresh.
WIDER_ARCHS = {("lstm", "lstm-attention"): ("heads", "attention_window")}


def load_source(spec: str):
    """The ``checkpoints.Run`` that ``init_from`` ``spec`` names (a GeneratorError when there is none)."""
    from generator.training import checkpoints

    return checkpoints.load_run(spec)


def fine_tune_config(
    source, spec: str, modality: str, settings: dict, config: RunConfig | None = None, config_name: str = "config"
) -> RunConfig:
    """The configuration of a run fine-tuned from ``source`` (a loaded run named ``spec``).

    ``settings`` are the explicit settings (keywords, or flags); ``config`` an explicit configuration,
    from ``config_name``. Either contradicting the checkpoint's tokenizer, architecture or sizes is
    an ``ArgumentError`` naming ``init_from`` and the settings (the command line names their flags).
    """
    theirs = source.config
    if theirs.modality != modality:
        raise ArgumentError(
            "init_from",
            f"{spec} is a {theirs.modality} model, not a {modality} one: fine-tune it with modality {theirs.modality}",
            "modality",
        )
    given = {}  # setting -> (value, where it was given: None for a keyword, else the configuration's name)
    if config is not None:
        given.update({k: (getattr(config, k), config_name) for k in MODEL_KEYS if k != "vocab_size"})
    given.update({k: (v, None) for k, v in settings.items() if k in MODEL_KEYS})

    def named(key, value, where):
        return f"{key} {value}" if where is None else f"{key} {value} in {where}"

    arch = given.get("arch", (theirs.arch,))[0]
    wider = WIDER_ARCHS.get((theirs.arch, arch))
    allowed = wider + ("arch",) if wider else ()
    if arch != theirs.arch and not wider:
        contradicted = {"arch": given["arch"]}
        conflicts = [f"{named('arch', *given['arch'])} (it is {theirs.arch})"]
    else:
        contradicted = {
            key: (value, where)
            for key, (value, where) in given.items()
            if key not in allowed and key != "vocab_size" and value != getattr(theirs, key)
        }
        conflicts = [
            f"{named(key, value, where)} (it has {getattr(theirs, key)})"
            for key, (value, where) in contradicted.items()
        ]
    if conflicts:
        raise ArgumentError(
            "init_from",
            f"{spec} fixes the vocabulary, architecture and sizes, which contradict "
            f"{'; '.join(conflicts)}: leave these out to take the checkpoint's",
            *(key for key, (_, where) in contradicted.items() if where is None),
        )
    base = (
        config
        if config is not None
        else theirs.replace(learning_rate=theirs.learning_rate * LEARNING_RATE_SHARE, **FINE_TUNE_DEFAULTS)
    )
    model_keys = {k: getattr(theirs, k) for k in MODEL_KEYS if k not in allowed}
    inherited = {**NOT_INHERITED} if config is None else {}
    return base.replace(
        **inherited,
        **model_keys,
        modality=modality,
        init_from=str(spec),
        extra={**theirs.extra, **(config.extra if config is not None else {})},
    )


class GrowingChars:
    """A tokenizer factory: the checkpoint's characters, then the corpus's new ones in code-point order."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache_key = "grow:" + hashlib.sha256(tokenizer.to_json().encode()).hexdigest()

    def __call__(self, documents):
        seen: set[str] = set()
        for text in documents:
            seen.update(text)
        return self.from_chars("".join(sorted(seen)))

    def from_chars(self, chars: str):
        """The tokenizer for a corpus whose characters are ``chars`` (what ``text_stream`` streams with)."""
        from generator.data.tokenizers.chars import CharTokenizer

        known = set(self.tokenizer.chars)
        new = "".join(sorted(c for c in chars if c not in known))
        return CharTokenizer(self.tokenizer.chars + new) if new else self.tokenizer


def tokenizer_factory(source):
    """How the fine-tuned run tokenizes: growing characters for text, the checkpoint's own vocabulary otherwise."""
    from generator.data.dataset import TokenizerFactory

    if source.tokenizer.kind == "chars":
        return GrowingChars(source.tokenizer)
    return TokenizerFactory(source.config.tokenizer, fixed=source.tokenizer)


def _grown(mine: list, theirs: list, name: str, spec: str) -> list:
    """``theirs`` weights of one layer fitted to ``mine``: rows (or columns) for new tokens added."""
    out = []
    for new, old in zip(mine, theirs):
        if new.shape == old.shape:
            out.append(old)
            continue
        if new.ndim != old.ndim or sum(a != b for a, b in zip(new.shape, old.shape)) != 1:
            raise ArgumentError(
                "init_from", f"{spec}: its weights do not fit this model (layer {name} has other sizes)"
            )
        axis = next(i for i, (a, b) in enumerate(zip(new.shape, old.shape)) if a != b)
        if new.shape[axis] < old.shape[axis]:
            raise ArgumentError("init_from", f"{spec}: its weights do not fit this model (layer {name} is smaller)")
        grown = np.array(new, copy=True)
        if new.ndim == 1:  # an output bias: new tokens start very unlikely
            grown[old.shape[0] :] = NEW_TOKEN_BIAS
        elif axis == 1:  # an output kernel: new tokens' logits start at their bias alone
            grown[:, old.shape[1] :] = 0.0
        else:  # an embedding table: new rows keep their fresh initialisation
            pass
        grown[tuple(slice(0, s) for s in old.shape)] = old
        out.append(grown)
    return out


def init_weights(model, source, spec: str, log) -> None:
    """Copy the weights of ``source`` into ``model`` layer by layer (by name), growing the token rows of
    the embedding and the output when the vocabulary grew; layers it lacks keep their fresh weights."""
    theirs = {layer.name: layer for layer in source.model.layers if layer.weights}
    copied, fresh = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        other = theirs.get(layer.name)
        if other is None:
            fresh.append(layer.name)
            continue
        mine, old = layer.get_weights(), other.get_weights()
        if len(mine) != len(old):
            raise ArgumentError("init_from", f"{spec}: its weights do not fit this model (layer {layer.name} differs)")
        layer.set_weights(_grown(mine, old, layer.name, spec))
        copied.append(layer.name)
    if not copied:
        raise ArgumentError("init_from", f"{spec}: its weights do not fit this model (no layer in common)")
    log(f"starting from the weights of {spec}" + (f"; new layers: {', '.join(fresh)}" if fresh else ""))


def describe_growth(source_tokenizer, tokenizer) -> str:
    """The notice for characters added to the checkpoint's vocabulary ("" when none were)."""
    old = getattr(source_tokenizer, "chars", None)
    new = getattr(tokenizer, "chars", None)
    if old is None or new is None or len(new) == len(old):
        return ""
    from generator.data.tokenizers.chars import describe_chars

    added = list(new[len(old) :])
    return f"added {len(added)} new characters to the vocabulary of {len(old) + 1}: {describe_chars(added)}"


_LAYER_NUMBER = re.compile(r"^(?:lstm|block)_(\d+)")
EMBEDDING_LAYERS = ("embedding", "embedding_projection", "positions")


def freeze(model, layers: int) -> list[str]:
    """Make the embedding and the lowest ``layers`` LSTM layers (or Transformer blocks) untrainable;
    the names of the frozen layers."""
    if layers <= 0:
        return []
    frozen = []
    for layer in model.layers:
        number = _LAYER_NUMBER.match(layer.name)
        if layer.name in EMBEDDING_LAYERS or (number and int(number.group(1)) <= layers):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def warm_up_rate(learning_rate: float, step: int, warmup_steps: int) -> float:
    """The learning rate of training step ``step`` (0 first): linear from ``learning_rate / warmup_steps``
    to ``learning_rate`` over the first ``warmup_steps`` steps, then ``learning_rate``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return learning_rate
    return learning_rate * (step + 1) / warmup_steps
