"""Every architecture behind the one model interface: shapes, incremental decoding, training, saving,
resuming, well-formed music, and mirrored training (lstm has its own tests in test_model/test_training)."""

import csv
import json
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from generator import api, models
from generator.config import RunConfig, preset
from tests.conftest import TINY_SETTINGS, interrupt_after_first_epoch

NEW_ARCHS = ["lstm-attention", "transformer"]
# window/context 8 tokens, so the 22-token sequences below run well past it
SIZES = dict(layers=2, units=16, embedding=8, heads=2, attention_window=8, seq_len=8, vocab_size=13, dropout=0.1)
ARCH_SETTINGS = dict(TINY_SETTINGS, heads=2, attention_window=8, seq_len=16)


def tiny_model(arch, **changes):
    keras.utils.set_random_seed(1)
    return models.build_model(RunConfig(arch=arch, **{**SIZES, **changes}))


def tokens(batch=3, length=22, vocab=13):
    return np.random.default_rng(0).integers(0, vocab, (batch, length)).astype("int32")


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_output_shapes_and_registry(arch):
    model = tiny_model(arch)
    logits = model(tokens(2, 7))
    assert logits.shape == (2, 7, 13) and logits.dtype == "float32"
    assert models.arch_of(model) == arch
    decoder = models.decoder(model)
    step_logits, states = decoder.step(tf.constant([1, 2]), decoder.zero_states(2))
    assert step_logits.shape == (2, 13)
    again, _ = decoder.step(tf.constant([1, 2]), states)  # states keep their shapes from step to step
    assert tf.nest.map_structure(lambda t: t.shape, states) == tf.nest.map_structure(lambda t: t.shape, _)


@pytest.mark.parametrize(
    "arch,changes",
    [
        ("lstm", {}),
        ("lstm", {"tie_weights": True, "embedding": 12}),
        ("lstm-attention", {}),
        ("transformer", {}),
        ("transformer", {"tie_weights": True, "embedding": 12}),
        ("transformer", {"positions": "learned"}),
        ("lstm-attention", {"tie_weights": True, "embedding_dropout": 0.2}),
    ],
)
def test_incremental_decoding_equals_the_full_pass_beyond_the_window(arch, changes):
    """The Keras model (``call``), the trainer's forward pass, the decoder's ``step`` compiled as the
    sampler runs it and its ``forward`` in chunks carrying the states give the same logits."""
    model = tiny_model(arch, **changes)
    x = tokens()
    full = model(x).numpy()
    np.testing.assert_allclose(models.training_forward(model, x).numpy(), full, atol=1e-5)
    decoder = models.decoder(model)
    step = tf.function(decoder.step, jit_compile=True)  # as the decode loop runs it
    states, stepped = decoder.zero_states(3), []
    for t in range(x.shape[1]):
        logits, states = step(tf.constant(x[:, t]), states)
        stepped.append(logits.numpy())
    np.testing.assert_allclose(np.stack(stepped, 1), full, atol=1e-4)
    states, chunks = decoder.zero_states(3), []
    for start in range(0, x.shape[1], 5):  # chunks that straddle the ring buffer's wrap-around
        logits, states = decoder.forward(tf.constant(x[:, start : start + 5]), states)
        chunks.append(logits.numpy())
    np.testing.assert_allclose(np.concatenate(chunks, 1), full, atol=1e-4)


def test_a_one_block_transformer_beyond_its_context_sees_exactly_the_last_context_tokens():
    """The sliding window: with one block, a token's logits past the context equal a fresh pass over
    the last ``seq_len`` tokens (rotary positions make the absolute offset irrelevant)."""
    model = tiny_model("transformer", layers=1)
    x = tokens(2, 30)
    decoder = models.decoder(model)
    logits, _ = decoder.forward(tf.constant(x), decoder.zero_states(2))
    for end in (8, 19, 30):
        window = model(x[:, end - 8 : end]).numpy()[:, -1]
        np.testing.assert_allclose(logits.numpy()[:, end - 1], window, atol=1e-4)


@pytest.mark.parametrize(
    "arch,changes", [("lstm-attention", {}), ("transformer", {}), ("transformer", {"positions": "learned"})]
)
def test_saved_models_load_in_safe_mode_and_keep_16_bit_logits_float32(arch, changes, tmp_path):
    from generator.training.steps import dtype_policy

    with dtype_policy("bfloat16"):
        model = tiny_model(arch, **changes)
    assert model(tokens(1, 5)).dtype == "float32"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(tokens()).numpy(), model(tokens()).numpy())


def test_each_arch_has_its_own_preset():
    assert preset("text").arch == "lstm"
    assert preset("text", "transformer").arch == "transformer" and preset("text", "transformer").layers == 4
    assert preset("chorales", "lstm-attention").attention_window == 64
    with pytest.raises(ValueError, match="unknown architecture"):
        models.build_model(RunConfig(arch="gru", vocab_size=5))
    from generator.errors import GeneratorError

    with pytest.raises(GeneratorError, match="multiple of twice the heads"):
        models.build_model(RunConfig(arch="transformer", units=30, heads=4, vocab_size=5))
    with pytest.raises(GeneratorError, match="multiple of the heads"):
        models.build_model(RunConfig(arch="lstm-attention", units=30, heads=4, vocab_size=5))
    with pytest.raises(GeneratorError, match="multiple of the heads"):
        models.build_model(RunConfig(arch="transformer", units=30, heads=4, vocab_size=5, positions="learned"))
    models.build_model(
        RunConfig(arch="transformer", units=12, heads=4, vocab_size=5, positions="learned")
    )  # odd head width
    with pytest.raises(GeneratorError, match="unknown positions 'alibi'"):
        models.build_model(RunConfig(arch="transformer", units=16, heads=4, vocab_size=5, positions="alibi"))


SLOW_TRANSFORMER = ["lstm-attention", pytest.param("transformer", marks=pytest.mark.slow)]  # default run: one arch


@pytest.fixture(scope="module", params=SLOW_TRANSFORMER)
def arch_run(request, tmp_path_factory, tiny_corpus):
    out = tmp_path_factory.mktemp("runs") / request.param
    messages = []
    api.train(str(tiny_corpus), out, arch=request.param, log=messages.append, progress=False, **ARCH_SETTINGS)
    assert any(m.startswith(f"model: {request.param},") for m in messages)
    return request.param, out


def test_training_lowers_validation_loss_and_sampling_reloads(arch_run):
    arch, run = arch_run
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])
    assert json.loads((run / "config.json").read_text())["arch"] == arch
    g = api.load(run)
    assert arch in repr(g)
    text = g.generate("To be", length=60, random_seed=5)  # 60 tokens: past the window and the context
    assert text == api.load(str(run)).generate("To be", length=60, random_seed=5)
    assert text.startswith("To be") and len(text) == 65
    batch = g.generate("To be", length=30, num_samples=3, random_seed=5)
    assert len(batch) == 3 and all(t.startswith("To be") for t in batch) and len(set(batch)) == 3
    result = g.evaluate(json.loads((run / "config.json").read_text())["corpus"])  # past the window: one stateful pass
    assert result["tokens"] > 500 and 0 < result["nll_per_token"] < float(rows[0]["val_loss"]) + 1


def test_generator_evaluate_loads_the_run_in_a_fresh_process(arch_run):
    """A new process has not imported the arch's module: loading must register its layers first."""
    import subprocess

    arch, run = arch_run
    corpus = json.loads((run / "config.json").read_text())["corpus"]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from generator.cli.main import generator; generator()",
            "evaluate",
            "--checkpoint",
            str(run),
            "--corpus",
            corpus,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["nll_per_token"] > 0


@pytest.mark.parametrize("arch", SLOW_TRANSFORMER)
def test_a_thousand_music_samples_from_an_untrained_model_are_well_formed(arch, tmp_path):
    from generator.data.tokenizers.events import EventTokenizer
    from generator.training.checkpoints import save_run

    tokenizer = EventTokenizer()
    config = RunConfig(modality="music", tokenizer="events", **{**SIZES, "vocab_size": tokenizer.vocab_size}, arch=arch)
    keras.utils.set_random_seed(2)
    g = api.load(save_run(tmp_path / "music", models.build_model(config), tokenizer, config))
    stream = g.stream([], 40, num_samples=1000, temperature=1.5, random_seed=0)
    rows = np.concatenate(list(stream), axis=1)
    state, tok = stream.constraint_state, g.tokenizer
    invalid = [tok.count_invalid_events(list(row) + tok.closing_ids(state, i)) for i, row in enumerate(rows)]
    assert len(invalid) == 1000 and sum(invalid) == 0


@pytest.mark.slow
@pytest.mark.parametrize("arch", NEW_ARCHS)
@pytest.mark.parametrize("precision,jit", [("", None), ("bfloat16", None), ("float16", False)])
def test_an_interrupted_run_resumes(tmp_path, tiny_corpus, arch, precision, jit):
    settings = dict(ARCH_SETTINGS, arch=arch, epochs=2, steps_per_epoch=4, mixed_precision=precision, jit=jit)
    with pytest.raises(KeyboardInterrupt):
        api.train(str(tiny_corpus), tmp_path / "resumed", log=interrupt_after_first_epoch, progress=False, **settings)
    messages = []
    metrics = api.train(str(tiny_corpus), tmp_path / "resumed", log=messages.append, progress=False, **settings)
    assert any(m.startswith("resuming") for m in messages) and metrics["epochs_run"] == 2
    assert np.isfinite(metrics["val_loss_nats"])
    if precision == "":  # in float32 the resumed run ends where an uninterrupted one does, dropout included
        api.train(str(tiny_corpus), tmp_path / "whole", log=lambda *_: None, progress=False, **settings)
        whole, resumed = (api.load(tmp_path / n).run.model.get_weights() for n in ("whole", "resumed"))
        for a, b in zip(whole, resumed):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert api.load(tmp_path / "resumed").generate("To", length=10, random_seed=1).startswith("To")


@pytest.mark.slow
def test_learned_positions_are_recorded_in_the_run_and_resume(tmp_path, tiny_corpus):
    from generator.errors import GeneratorError

    settings = dict(ARCH_SETTINGS, arch="transformer", positions="learned", epochs=2, steps_per_epoch=4)
    with pytest.raises(KeyboardInterrupt):
        api.train(str(tiny_corpus), tmp_path / "run", log=interrupt_after_first_epoch, progress=False, **settings)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["positions"] == "learned"
    with pytest.raises(GeneratorError, match=r"different settings \(positions\)"):
        api.train(str(tiny_corpus), tmp_path / "run", progress=False, **{**settings, "positions": "rotary"})
    messages = []
    api.train(str(tiny_corpus), tmp_path / "run", log=messages.append, progress=False, **settings)
    assert any(m.startswith("resuming") for m in messages)
    api.train(str(tiny_corpus), tmp_path / "whole", log=lambda *_: None, progress=False, **settings)
    whole, resumed = (api.load(tmp_path / n).run.model for n in ("whole", "run"))
    assert resumed.get_layer("positions").table.shape == (16, 16)
    for a, b in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    text = api.load(tmp_path / "run").generate("To be", length=40, random_seed=1)  # past the context of 16
    assert text.startswith("To be") and len(text) == 45


MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from generator import api
    corpus, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    for strategy in ("default", "mirrored"):
        api.train(corpus, f"{out}/{strategy}", strategy=strategy, progress=False, **settings)
""")


@pytest.mark.slow
@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_mirrored_over_two_cpus_matches_one_device(tmp_path, tiny_corpus, arch):
    import subprocess

    settings = dict(ARCH_SETTINGS, arch=arch, epochs=2, batch_size=6, steps_per_epoch=6)
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tiny_corpus), str(tmp_path), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MirroredStrategy: 2 replicas" in done.stdout
    one = api.load(tmp_path / "default").run.model.get_weights()
    two = api.load(tmp_path / "mirrored").run.model.get_weights()
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, two)) < 1e-4
