"""The tokenizer interface shared by text and music.

A tokenizer turns one *document* (a string for text, a score for music) into a list of
integer ids and back. Id 0 is always ``BOS``, the start-of-document token: the data pipeline
puts it in front of every document, so a model learns how documents begin and every real
token of a document can be scored from the start (``generator evaluate``). ``encode`` never
emits it and ``decode`` drops it.

Music tokenizers may also keep generated sequences well-formed: ``new_constraint_state``,
``allowed`` and ``advance`` let the sampler ask which tokens may come next without knowing
what they mean. Tokenizers import no TensorFlow.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

BOS = 0
BOS_NAME = "<bos>"

_REGISTRY: dict[str, type["Tokenizer"]] = {}


def register(cls: type["Tokenizer"]) -> type["Tokenizer"]:
    """Class decorator: make a tokenizer loadable by its ``kind`` name from JSON."""
    _REGISTRY[cls.kind] = cls
    return cls


class Tokenizer:
    """Base class: a vocabulary of ``vocab_size`` ids, id 0 being ``BOS``."""

    kind: ClassVar[str] = ""
    modality: ClassVar[str] = ""  # "text" or "music": picks the output writer, nothing else

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, document: Any) -> list[int]:
        """Turn one document into token ids (without BOS)."""
        raise NotImplementedError

    def decode(self, ids) -> Any:
        """Turn token ids back into a document; BOS ids are skipped."""
        raise NotImplementedError

    def duration(self, ids) -> float:
        """Seconds of music that ``ids`` span (music tokenizers; the clock position after the last id)."""
        return float(getattr(self.decode(ids), "end_time", 0.0))

    def token_name(self, token_id: int) -> str:
        """A readable name for one id, for messages and debugging."""
        return str(token_id)

    # -- serialization -------------------------------------------------------------------
    def config(self) -> dict:
        """Everything needed to rebuild this tokenizer (JSON-serializable)."""
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.config()}, ensure_ascii=False, indent=1)

    @classmethod
    def from_config(cls, config: dict) -> "Tokenizer":
        return cls(**config)

    # -- training-time augmentation ----------------------------------------------------------
    def augment(self, windows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return an augmented copy of a batch of id windows ``[batch, time]`` (default: none)."""
        return windows

    # -- transposition (key-averaged prediction, ``generator.models.key_average``) ------------------
    def transposition(self, semitones: int) -> np.ndarray | None:
        """``[vocab]``: the id each id becomes when the music moves ``semitones`` up, -1 where that
        leaves the vocabulary's pitch range; None when this tokenizer's tokens do not transpose (text)."""
        return None

    @staticmethod
    def shifted_ranges(vocab_size: int, semitones: int, ranges) -> np.ndarray:
        """``transposition`` for a vocabulary whose pitched ids lie in ``ranges`` of ``(first id,
        size)``, one id per semitone; every other id maps to itself."""
        table = np.arange(vocab_size, dtype=np.int64)
        for first, size in ranges:
            ids = table[first : first + size] + semitones
            table[first : first + size] = np.where((ids >= first) & (ids < first + size), ids, -1)
        return table

    # -- constrained sampling ------------------------------------------------------------------
    has_constraint: ClassVar[bool] = False

    def new_constraint_state(self, batch_size: int) -> Any:
        """State for ``batch_size`` sequences that start at BOS."""
        return None

    def allowed(self, state: Any) -> np.ndarray:
        """Boolean mask ``[batch, vocab_size]`` of the ids that may come next."""
        raise NotImplementedError

    def advance(self, state: Any, ids: np.ndarray) -> Any:
        """The state after each sequence of the batch emitted ``ids[b]``."""
        return state

    def closing_ids(self, state: Any, index: int) -> list[int]:
        """Ids that end sequence ``index`` cleanly (e.g. NOTE_OFF for every sounding note)."""
        return []

    def count_invalid_events(self, ids) -> int:
        """Ill-formed tokens in ``ids``: ids outside the vocabulary and ``BOS`` after the start
        (music tokenizers add what their constraint forbids)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        return int(((ids < 0) | (ids >= self.vocab_size)).sum() + (ids[1:] == BOS).sum())

    # -- continuing a seed (music); the defaults leave the tokenizer as it is -------------------
    prompt_multiple: ClassVar[int] = 1  # a prompt cut from a seed keeps a multiple of this many tokens
    last_reduced: list[str] = []  # after encode: a line for each set of tracks made to share a slot (band)

    def for_seed(self, seed: Any) -> "Tokenizer":
        """This tokenizer set up to continue ``seed``: one with a ``bpm`` setting (the tempo it
        decodes at) takes the seed's first tempo; others are returned as they are."""
        config = self.config()
        return type(self).from_config({**config, "bpm": seed.initial_bpm}) if "bpm" in config else self

    def without_note_limit(self) -> "Tokenizer":
        """This tokenizer with no cap on how long a generated note may last."""
        return self

    def without_voice_leading(self) -> "Tokenizer":
        """This tokenizer with no voice-leading rules in sampling."""
        return self

    def slot_tracks(self, seed: Any) -> dict[int, list[int]] | None:
        """Which of ``seed``'s tracks each of the tokenizer's note slots continues, several where
        tracks share a slot (None: the caller places slot i on the seed's i-th pitched track)."""
        return None

    def cut_prompt(self, ids: list[int], limit: int) -> list[int]:
        """The last ``limit`` (a multiple of ``prompt_multiple``) ids of an encoded seed, the
        context a continuation starts from; tokenizers with a header or bars keep them whole."""
        return list(ids[-limit:]) if limit else []


def kinds() -> tuple[str, ...]:
    """The registered tokenizer kinds (``--tokenizer`` choices), after importing the implementations."""
    from generator.data.tokenizers import chars, events, voices  # noqa: F401  (they register themselves)
    from generator.data.tokenizers import band  # noqa: F401

    return tuple(_REGISTRY)


def from_json(text: str | dict) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_json()`` output."""
    kinds()
    data = json.loads(text) if isinstance(text, str) else dict(text)
    kind = data.pop("kind", None)
    if kind not in _REGISTRY:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    return _REGISTRY[kind].from_config(data)
