"""Characters: one token per Unicode code point, the vocabulary taken from the training corpus.

Id 0 is BOS (see ``base``); ids 1.. are the corpus's characters in code-point order, so the
same corpus always gives the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from generator.data.tokenizers.base import BOS, BOS_NAME, Tokenizer, register


@register
class CharTokenizer(Tokenizer):
    """Character vocabulary; ``CharTokenizer.fit(texts)`` builds it from documents."""

    kind = "chars"
    modality = "text"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in the vocabulary")
        self.chars = chars
        self._ids = {c: i + 1 for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "CharTokenizer":
        """The tokenizer whose vocabulary is every character that occurs in ``texts``."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls("".join(sorted(seen)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._ids))

    def encode(self, document: str) -> list[int]:
        missing = self.unknown(document)
        if missing:
            raise ValueError("characters not in the vocabulary: " + describe_chars(missing))
        ids = self._ids
        return [ids[c] for c in document]

    def decode(self, ids) -> str:
        chars = self.chars
        return "".join(chars[i - 1] for i in map(int, ids) if i != BOS)

    def token_name(self, token_id: int) -> str:
        return BOS_NAME if token_id == BOS else repr(self.chars[token_id - 1])

    def config(self) -> dict:
        return {"chars": self.chars}


def describe_chars(chars: list[str], limit: int = 10) -> str:
    """A short readable list such as ``'é' (U+00E9), '\\t' (U+0009)``."""
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")
