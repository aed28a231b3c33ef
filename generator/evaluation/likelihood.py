"""Corpus likelihood in one continuous stateful pass.

Every token of every document is predicted from all the tokens before it in its document
(BOS first), never from a truncated window: documents are run in chunks with the LSTM states
carried across chunk boundaries. The result is the mean negative log-likelihood per token in
nats, the measure the JSB Chorales literature reports.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from generator.models import decoder as make_decoder


def document_nll(decoder, documents: list[np.ndarray], batch_size: int = 32, chunk: int = 512):
    """Sum of -log p over every non-BOS token of each document, and the number of such tokens."""
    forward = tf.function(decoder.forward, reduce_retracing=True)
    order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
    total, count = 0.0, 0
    for b in range(0, len(order), batch_size):
        docs = [np.asarray(documents[i], dtype=np.int32) for i in order[b:b + batch_size]]
        lengths = np.array([len(d) for d in docs])
        width = int(lengths.max())
        padded = np.zeros((len(docs), width), dtype=np.int32)
        for row, d in enumerate(docs):
            padded[row, :len(d)] = d
        states = decoder.zero_states(len(docs))
        for start in range(0, width - 1, chunk):
            end = min(start + chunk, width - 1)
            logits, states = forward(tf.constant(padded[:, start:end]), states)
            targets = padded[:, start + 1:end + 1]
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits).numpy()
            positions = np.arange(start + 1, end + 1)[None, :]
            mask = positions < lengths[:, None]
            total += float(np.sum(ce * mask, dtype=np.float64))
            count += int(mask.sum())
    return total, count


def evaluate_documents(model, documents: list[np.ndarray]) -> dict:
    """The corpus's NLL per token in nats and bits for a Keras model of ours."""
    total, count = document_nll(make_decoder(model), documents)
    nll = total / max(count, 1)
    return {"nll_per_token": nll, "bits_per_token": nll / math.log(2), "tokens": count,
            "documents": len(documents)}
