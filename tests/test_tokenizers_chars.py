import pytest

from generator.data.tokenizers import BOS, from_json
from generator.data.tokenizers.chars import CharTokenizer


@pytest.mark.parametrize("text", ["hello, world", "Ünïcödé ✓ 漢字 🎵", "tabs\tand\nnewlines\r"])
def test_round_trip(text):
    tok = CharTokenizer.fit([text])
    ids = tok.encode(text)
    assert BOS not in ids
    assert tok.decode(ids) == text
    assert tok.decode([BOS] + ids) == text
    assert tok.vocab_size == len(set(text)) + 1


def test_vocabulary_is_deterministic_and_json_round_trips():
    a = CharTokenizer.fit(["cab", "dd"])
    b = CharTokenizer.fit(["d", "bca"])
    assert a.chars == b.chars == "abcd"
    c = from_json(a.to_json())
    assert isinstance(c, CharTokenizer) and c.chars == a.chars


def test_unknown_characters_are_named():
    tok = CharTokenizer.fit(["abc"])
    assert tok.unknown("abxzx") == ["x", "z"]
    with pytest.raises(ValueError, match="'x'"):
        tok.encode("ax")
