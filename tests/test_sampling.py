"""Sampler properties, checked with a fake step function (logits depend only on the last token)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from generator.generation import sampling

V = 12


class FakeDecoder:
    """``step`` returns row ``table[token]``: a Markov chain with known probabilities."""

    def __init__(self, table):
        self.table = tf.constant(table, tf.float32)

    def zero_states(self, batch_size):
        return (tf.zeros([batch_size, 1]),)

    def step(self, tokens, states):
        return tf.gather(self.table, tokens), states

    def forward(self, tokens, states):
        return tf.gather(self.table, tokens), states


@pytest.fixture(scope="module")
def table():
    return np.random.default_rng(0).normal(0, 2, (V, V)).astype("float32")


def run(table, sampler, length=60, batch=4, seed=1, constraint=None):
    loop = sampling.DecodeLoop(FakeDecoder(table), sampler, chunk=16)
    prompts = np.zeros((batch, 1), np.int32)
    return np.concatenate(list(loop.generate(prompts, length, seed, constraint)), axis=1)


def previous_tokens(out):
    return np.concatenate([np.zeros((out.shape[0], 1), np.int32), out[:, :-1]], axis=1)


def test_low_temperature_approaches_greedy(table):
    greedy = run(table, sampling.get(greedy=True))
    cold = run(table, sampling.get(temperature=1e-4))
    np.testing.assert_array_equal(cold, greedy)
    assert not np.array_equal(run(table, sampling.get(temperature=5.0)), greedy)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_never_leaves_the_k_most_likely(table, k):
    out = run(table, sampling.get(temperature=3.0, top_k=k), length=200)
    ranks = np.argsort(-table, axis=1)
    for prev, tok in zip(previous_tokens(out).ravel(), out.ravel()):
        assert tok in ranks[prev, :k]


@pytest.mark.parametrize("p", [0.3, 0.6, 0.9])
def test_top_p_stays_in_the_nucleus(table, p):
    out = run(table, sampling.get(top_p=p), length=200)
    probs = np.exp(table - table.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for prev, tok in zip(previous_tokens(out).ravel(), out.ravel()):
        order = np.argsort(-probs[prev])
        before = np.cumsum(probs[prev][order]) - probs[prev][order]
        nucleus = order[before < p]
        assert tok in nucleus


def test_same_seed_same_output_and_batch_rows_differ(table):
    a = run(table, sampling.get(), seed=42)
    b = run(table, sampling.get(), seed=42)
    c = run(table, sampling.get(), seed=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({row.tobytes() for row in a}) > 1  # the batch holds independent samples


def test_constraint_mask_is_respected(table):
    class EvenOnly:
        has_constraint = True

        def allowed(self, state):
            mask = np.zeros((4, V), bool)
            mask[:, ::2] = True
            return mask

        def advance(self, state, ids):
            return state

    out = run(table, sampling.get(temperature=2.0), length=40, constraint=sampling.Constraint(EvenOnly(), None))
    assert out.shape == (4, 40) and np.all(out % 2 == 0)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_temperature_is_rejected(bad):
    with pytest.raises(ValueError):
        sampling.get(temperature=bad)


def test_bad_top_k_and_top_p_are_rejected():
    with pytest.raises(ValueError):
        sampling.get(top_k=0)
    for p in (0, 1.5, -0.1):
        with pytest.raises(ValueError):
            sampling.get(top_p=p)


def test_compiled_and_uncompiled_loops_agree_when_greedy(table):
    """XLA's loop and the plain tf.function one compute the same chain (length not a multiple of chunk)."""
    outs = []
    for jit in (True, False):
        loop = sampling.DecodeLoop(FakeDecoder(table), sampling.get(greedy=True), chunk=16, jit=jit)
        outs.append(np.concatenate(list(loop.generate(np.arange(3, dtype=np.int32)[:, None], 37, 0)), axis=1))
    assert outs[0].shape == (3, 37)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("jit", [False, True])
def test_draws_follow_the_softmax_and_never_pick_a_masked_token(jit):
    probs = np.array([0.5, 0.0, 0.2, 0.25, 0.05], np.float32)
    logits = tf.constant(np.tile(np.log(np.maximum(probs, 1e-30)), (20000, 1)).astype(np.float32))
    logits = tf.where(probs > 0, logits, sampling.NEG_INF)
    draw = tf.function(sampling.get(temperature=1.0), jit_compile=jit)
    tokens = draw(logits, tf.constant([7, 11])).numpy()
    counts = np.bincount(tokens, minlength=5) / len(tokens)
    assert counts[1] == 0
    np.testing.assert_allclose(counts, probs, atol=0.012)  # about four standard errors at 20,000 draws


def _history(tokens):
    row = np.full(sampling.REPEAT_HISTORY, -1, np.int32)
    row[-len(tokens) :] = tokens
    return tf.constant(row[None])


def test_repetition_copies_what_followed_the_latest_tokens_before():
    logits = tf.zeros((1, V))  # the model alone: every token alike
    motif = [1, 2, 3, 4, 5, 6]
    mixed = np.exp(sampling.repeat_mix(logits, _history(motif + [7] + motif[:5]), 0.6).numpy()[0])
    assert mixed.sum() == pytest.approx(1.0, abs=1e-5)
    assert mixed[6] == pytest.approx(0.6 + 0.4 / V, abs=1e-5)  # 1..5 was followed by 6 before
    assert mixed[7] == pytest.approx(0.4 / V, abs=1e-5)
    alone = np.exp(sampling.repeat_mix(logits, _history([1, 2, 3, 9, 10, 11]), 0.6).numpy()[0])
    np.testing.assert_allclose(alone, np.full(V, 1 / V), atol=1e-6)  # no earlier match: the model alone
    short = np.exp(sampling.repeat_mix(logits, _history([1, 2, 3, 8, 1, 2, 3]), 0.6).numpy()[0])
    np.testing.assert_allclose(short, np.full(V, 1 / V), atol=1e-6)  # 3 shared tokens are too few


def test_only_the_prompt_proposes_what_comes_next():
    logits = tf.zeros((1, V))
    history = _history([1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5])
    from_prompt = np.exp(sampling.repeat_mix(logits, history, 0.6, generated=6).numpy()[0])
    assert from_prompt[6] == pytest.approx(0.6 + 0.4 / V, abs=1e-5)  # the 6 after 1..5 is the prompt's
    from_output = np.exp(sampling.repeat_mix(logits, history, 0.6, generated=7).numpy()[0])
    np.testing.assert_allclose(from_output, np.full(V, 1 / V), atol=1e-6)  # that 6 was output: no copy


def test_a_longer_match_outweighs_a_shorter_one():
    logits = tf.zeros((1, V))
    history = [9, 1, 2, 3, 4, 10, 8, 0, 1, 2, 3, 4, 11, 8, 0, 1, 2, 3, 4]  # 1..4 -> 10 once, 0 1..4 -> 11
    mixed = np.exp(sampling.repeat_mix(logits, _history(history), 0.5).numpy()[0])
    assert mixed[11] > mixed[10] > 1 / V * 0.5


@pytest.mark.parametrize("constrained", [False, True])
def test_repetition_in_the_loop_repeats_the_prompt_and_is_reproducible(table, constrained):
    class Anything:
        has_constraint = True

        def allowed(self, state):
            return np.ones((2, V), bool)

        def advance(self, state, ids):
            return state

    motif = np.tile(np.arange(1, 9, dtype=np.int32), 12)
    prompts = np.stack([motif, motif])

    def sample(repetition, sampler, seed=3):
        loop = sampling.DecodeLoop(FakeDecoder(table), sampler, chunk=16, repetition=repetition)
        constraint = sampling.Constraint(Anything(), None) if constrained else None
        return np.concatenate(list(loop.generate(prompts, 40, seed, constraint)), axis=1)

    motif_goes_on = np.tile(np.arange(1, 9, dtype=np.int32), 5)[None, :40]
    greedy = sampling.get(greedy=True)
    np.testing.assert_array_equal(sample(0.9, greedy), np.repeat(motif_goes_on, 2, axis=0))  # 0.9 outweighs the model
    assert not np.array_equal(sample(0.0, greedy), np.repeat(motif_goes_on, 2, axis=0))
    warm = sampling.get(temperature=2.0)
    np.testing.assert_array_equal(sample(0.5, warm), sample(0.5, warm))
    with pytest.raises(ValueError):
        sampling.DecodeLoop(FakeDecoder(table), sampling.get(), repetition=1.0)


def test_a_decode_loop_leaves_the_xla_flags_of_the_process_alone(monkeypatch):
    # It once pointed TF_XLA_FLAGS at XLA's persistent cache, which held for the whole process and its
    # children: a training step read back from that cache ran 2.3x slower (docs/profile.md).
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)
    sampling.DecodeLoop(object(), sampling.get(temperature=1.0))
    assert "TF_XLA_FLAGS" not in os.environ
