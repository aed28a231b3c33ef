"""Tokenizers: documents (text, scores) to integer ids and back. No TensorFlow here."""

from generator.data.tokenizers.base import BOS, Tokenizer, from_json

__all__ = ["BOS", "Tokenizer", "from_json"]
