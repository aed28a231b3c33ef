"""Corpus specs -> documents -> token ids -> windows: readers, tokenizers and datasets."""
