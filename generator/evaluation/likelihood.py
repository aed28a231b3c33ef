"""Corpus likelihood in one continuous stateful pass.

Every token of every document is predicted from all the tokens before it in its document
(BOS first), never from a truncated window: documents are run in chunks with the LSTM states
carried across chunk boundaries, so memory is bounded by the batch and the chunk, not by the
length of the longest document. The result is the mean negative log-likelihood per token in
nats, the measure the JSB Chorales literature reports.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from generator.models.key_average import rows_per_sequence


def batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Document indices in batches of similar length: by length, at most ``batch_size`` per batch,
    and no document in a batch more than twice as long as its shortest (so padding costs at most
    as much compute as the documents themselves, and one huge document is scored on its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and lengths[i] <= 2 * max(lengths[out[-1][0]], 1):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def document_nll(decoder, documents: list[np.ndarray], batch_size: int = 32, chunk: int = 512, progress=None):
    """Sum of -log p over every non-BOS token of each document, and the number of such tokens.

    Memory is bounded by ``batch_size`` x ``chunk`` whatever the documents' lengths: each chunk's
    inputs are cut from the documents when it runs, and the states carry over to the next chunk.
    ``progress(n)`` is called with the number of tokens scored after every chunk.
    """
    forward = tf.function(decoder.forward, reduce_retracing=True)
    lengths = [len(d) for d in documents]
    total, count = 0.0, 0
    for batch in batches(lengths, batch_size):
        docs = [np.asarray(documents[i]) for i in batch]
        sizes = np.array([len(d) for d in docs])
        width = int(sizes.max())
        states = decoder.zero_states(len(docs))
        for start in range(0, width - 1, chunk):
            end = min(start + chunk, width - 1)
            window = np.zeros((len(docs), end + 1 - start), dtype=np.int32)  # inputs and the targets after them
            for row, d in enumerate(docs):
                piece = d[start : end + 1]
                window[row, : len(piece)] = piece
            logits, states = forward(tf.constant(window[:, :-1]), states)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(window[:, 1:], logits).numpy()
            mask = np.arange(start + 1, end + 1)[None, :] < sizes[:, None]
            total += float(np.sum(ce * mask, dtype=np.float64))
            scored = int(mask.sum())
            count += scored
            if progress is not None:
                progress(scored)
    return total, count


def evaluate_documents(decoder, documents: list[np.ndarray]) -> dict:
    """The corpus's NLL per token in nats and bits under ``decoder`` (``generator.models.decoder``;
    a progress bar on a terminal when it takes more than a second)."""
    from generator.progress import progress_bar

    with progress_bar(sum(max(len(d) - 1, 0) for d in documents), "evaluating") as bar:
        batch_size = max(1, 32 // rows_per_sequence(decoder))  # as many rows per batch as the model alone
        total, count = document_nll(decoder, documents, batch_size=batch_size, progress=bar.update)
    nll = total / max(count, 1)
    return {"nll_per_token": nll, "bits_per_token": nll / math.log(2), "tokens": count, "documents": len(documents)}
