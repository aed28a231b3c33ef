"""The C batch-1 decoder (generator/generation/native.py) against the TensorFlow decoder it replaces."""

import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from generator import models
from generator.config import RunConfig
from generator.generation import native, sampling

V = 37


def test_the_library_is_built_where_a_c_compiler_exists():
    if sys.platform.startswith("linux") and shutil.which("cc"):
        assert native.library() is not None, "pip install should have built generator/generation/_native_lstm"


needs_library = pytest.mark.skipif(native.library() is None, reason="the native decoder was not built")


def decoder(layers=2, units=40, tie_weights=False, embedding=12):
    keras.utils.set_random_seed(3)
    config = RunConfig(vocab_size=V, layers=layers, units=units, embedding=embedding, tie_weights=tie_weights)
    model = models.build_model(config)
    for w in model.weights:  # larger weights than the initialisers give, so that the states move
        w.assign(w.numpy() * 2.0 + np.random.default_rng(len(w.path)).normal(0, 0.1, w.shape).astype("float32"))
    return models.decoder(model)


def primed(dec, length=20):
    prompt = np.random.default_rng(0).integers(0, V, (1, length)).astype(np.int32)
    return sampling.DecodeLoop(dec, sampling.get()).prime(prompt)


def as_numpy(logits, states):
    return logits.numpy(), [(h.numpy(), c.numpy()) for h, c in states]


@needs_library
@pytest.mark.parametrize(
    "shape",
    [
        dict(),
        dict(layers=1, units=16),
        dict(layers=3, units=33),
        dict(tie_weights=True),
        dict(tie_weights=True, embedding=40),
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_greedy_decoding_matches_the_tensorflow_steps(shape, threads):
    dec = decoder(**shape)
    logits, states = primed(dec)
    tokens, last_logits, last_states = native.NativeLSTM(dec, threads=threads).generate(
        *as_numpy(logits, states), 40, 0, 0, sampling.get(greedy=True)
    )
    for token in tokens:  # the same chain, step by step, in TensorFlow
        assert token == int(tf.argmax(logits[0]))
        logits, states = dec.step(tf.constant([token]), states)
    np.testing.assert_allclose(last_logits, logits.numpy()[0], rtol=1e-4, atol=1e-4)
    for (h, c), (h_tf, c_tf) in zip(last_states, states):
        np.testing.assert_allclose(h, h_tf.numpy()[0], atol=1e-5)
        np.testing.assert_allclose(c, c_tf.numpy()[0], atol=1e-4)


def first_tokens(dec, sampler, draws=4000):
    """The first token drawn after the same prompt with ``draws`` seeds, and the logits it came from."""
    logits, states = as_numpy(*primed(dec))
    net = native.NativeLSTM(dec)
    return np.array([net.generate(logits, states, 1, seed, 0, sampler)[0][0] for seed in range(draws)]), logits[0]


@needs_library
def test_draws_follow_the_softmax_at_the_temperature():
    tokens, logits = first_tokens(decoder(), sampling.get(temperature=1.7))
    probs = np.exp((logits - logits.max()) / 1.7)
    probs /= probs.sum()
    np.testing.assert_allclose(np.bincount(tokens, minlength=V) / len(tokens), probs, atol=0.03)


@needs_library
@pytest.mark.parametrize("k,p", [(3, None), (None, 0.6), (5, 0.5)])
def test_top_k_and_top_p_keep_to_the_same_tokens_as_the_tensorflow_samplers(k, p):
    dec = decoder()
    sampler = sampling.get(temperature=2.0, top_k=k, top_p=p)
    tokens, logits = first_tokens(dec, sampler, draws=1500)
    kept = sampler.filter(tf.constant(logits[None] / 2.0)).numpy()[0] > sampling.NEG_INF / 2
    assert kept.sum() < V and set(tokens) == set(np.flatnonzero(kept))  # every kept token drawn, no other


@needs_library
def test_the_decode_loop_uses_it_at_batch_1_in_chunks_and_a_seed_repeats(monkeypatch):
    dec = decoder()
    prompt = np.random.default_rng(0).integers(0, V, (1, 20)).astype(np.int32)
    loop = sampling.DecodeLoop(dec, sampling.get(top_k=10), chunk=64)
    chunks = list(loop.generate(prompt, 150, seed=5))
    assert [c.shape for c in chunks] == [(1, 64), (1, 64), (1, 22)] and loop._native_lstm
    whole = native.NativeLSTM(dec).generate(*as_numpy(*primed(dec)), 150, 5, 0, sampling.get(top_k=10))[0]
    np.testing.assert_array_equal(np.concatenate(chunks, axis=1)[0], whole)  # chunks continue one another
    np.testing.assert_array_equal(np.concatenate(list(loop.generate(prompt, 150, seed=5)), axis=1)[0], whole)
    assert not np.array_equal(np.concatenate(list(loop.generate(prompt, 150, seed=6)), axis=1)[0], whole)


def test_batches_constraints_repetition_and_the_switch_keep_the_tensorflow_loop(monkeypatch):
    dec = decoder(layers=1, units=16)
    batch = sampling.DecodeLoop(dec, sampling.get())
    list(batch.generate(np.zeros((2, 3), np.int32), 5, seed=0))
    repeating = sampling.DecodeLoop(dec, sampling.get(), repetition=0.5)
    list(repeating.generate(np.zeros((1, 3), np.int32), 5, seed=0))
    assert not batch._native_lstm and not repeating._native_lstm
    monkeypatch.setenv("GENERATOR_NATIVE", "0")
    switched_off = sampling.DecodeLoop(dec, sampling.get())
    assert len(np.concatenate(list(switched_off.generate(np.zeros((1, 3), np.int32), 9, seed=0)), axis=1)[0]) == 9
    assert not switched_off._native_lstm


@needs_library
@pytest.mark.parametrize("length", [1, 7, 300])
def test_priming_in_c_gives_the_tensorflow_logits_and_states(length):
    dec = decoder(tie_weights=True)
    prompt = np.random.default_rng(length).integers(0, V, (1, length)).astype(np.int32)
    logits, states = native.NativeLSTM(dec, threads=2).prime(prompt)
    tf_logits, tf_states = sampling.DecodeLoop(dec, sampling.get()).prime(prompt)
    tolerance = 1e-4 if length < 100 else 1e-3  # rounding differences grow over hundreds of steps
    np.testing.assert_allclose(logits, tf_logits.numpy()[0], rtol=tolerance, atol=tolerance)
    for (h, c), (h_tf, c_tf) in zip(states, tf_states):
        np.testing.assert_allclose(h, h_tf.numpy()[0], atol=tolerance / 10)
        np.testing.assert_allclose(c, c_tf.numpy()[0], atol=tolerance)
