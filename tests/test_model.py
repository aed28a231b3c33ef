import numpy as np
import pytest

from generator.config import RunConfig
from generator.models import build_model, decoder as make_decoder


@pytest.fixture(scope="module")
def model():
    config = RunConfig(layers=2, units=12, embedding=6, vocab_size=20, dropout=0.1)
    m = build_model(config)
    rng = np.random.default_rng(0)
    m.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in m.get_weights()])
    return m


def test_output_shapes(model):
    x = np.random.default_rng(1).integers(0, 20, (3, 7)).astype("int32")
    assert model(x).shape == (3, 7, 20)


def test_decoder_matches_the_keras_model(model):
    x = np.random.default_rng(2).integers(0, 20, (2, 9)).astype("int32")
    expected = model(x, training=False).numpy()
    decoder = make_decoder(model)
    logits, states = decoder.forward(x, decoder.zero_states(2))
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)
    # one token at a time, carrying the states, gives the same logits
    states = decoder.zero_states(2)
    for t in range(9):
        step_logits, states = decoder.step(x[:, t], states)
        np.testing.assert_allclose(step_logits.numpy(), expected[:, t], atol=1e-5)
    # and so does a chunked pass that carries the states across the chunk boundary
    first, states = decoder.forward(x[:, :4], decoder.zero_states(2))
    second, _ = decoder.forward(x[:, 4:], states)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), expected, atol=1e-5)
