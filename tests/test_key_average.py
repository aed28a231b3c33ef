"""Key averaging: a music model's prediction averaged over transpositions (generator.models.key_average)."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import call, one_line_error
from generator import api
from generator.cli.main import generate_music_main, generator_main
from generator.config import RunConfig
from generator.data.tokenizers.base import BOS
from generator.data.tokenizers.chars import CharTokenizer
from generator.data.tokenizers.events import EventTokenizer
from generator.data.tokenizers.voices import PITCH_OFFSET, REST, VoicesTokenizer
from generator.models import build_model, decoder as make_decoder
from generator.models.key_average import KeyAveraged, shifts
from generator.training.checkpoints import save_run

CHORALES = {
    "train": [[[67, 64, 60, 48], [67, 64, 60, 48], [69, 65, 60, 53]]],
    "valid": [
        [[72, 67, 64, 48], [72, 67, 64, 48], [71, 67, 62, 55], [72, 67, 64, 48]],
        [[60, 55, 52, 48], [62, -1, 53, 47], [64, 55, 55, 48]],
    ],
}


def random_model(config, seed=0):
    model = build_model(config)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def chorale_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "toy.json"
    path.write_text(json.dumps(CHORALES))
    return path


@pytest.fixture(scope="module")
def voices_run(tmp_path_factory, chorale_file):
    """An untrained voices LSTM whose config says it validated on the valid split of ``chorale_file``."""
    tokenizer = VoicesTokenizer(low=48, high=72)  # a narrow range, so transposed copies leave it
    config = RunConfig(
        modality="music",
        tokenizer="voices",
        layers=1,
        units=12,
        embedding=6,
        vocab_size=tokenizer.vocab_size,
        corpus=str(chorale_file),
        split="train",
        val_split="valid",
    )
    return save_run(tmp_path_factory.mktemp("runs") / "voices", random_model(config), tokenizer, config)


# -- the tokenizers' transposition tables ----------------------------------------------------------


def test_voices_transposition_moves_pitches_and_keeps_bos_and_rest():
    tok = VoicesTokenizer(low=48, high=72)
    up = tok.transposition(2)
    assert up[BOS] == BOS and up[REST] == REST
    assert up[PITCH_OFFSET] == PITCH_OFFSET + 2  # 48 -> 50
    assert list(up[-2:]) == [-1, -1]  # 71 and 72 leave the range
    assert (tok.transposition(-3)[PITCH_OFFSET : PITCH_OFFSET + 3] == -1).all()
    assert (tok.transposition(0) == np.arange(tok.vocab_size)).all()


def test_events_transposition_moves_note_ons_and_offs_only():
    tok = EventTokenizer(min_pitch=21, max_pitch=108)
    table = tok.transposition(1)
    assert table[tok.on.id(60)] == tok.on.id(61) and table[tok.off.id(60)] == tok.off.id(61)
    assert table[tok.on.id(108)] == -1 and table[tok.off.id(108)] == -1
    shift = tok.shift.id(5)
    assert table[shift] == shift and table[BOS] == BOS


def test_text_does_not_transpose():
    assert CharTokenizer.fit(["abc"]).transposition(1) is None


# -- the averaged distribution ---------------------------------------------------------------------


def brute_force(model, tokenizer, ids, semitones):
    """The mixture written out: each transposed copy run alone, mapped back, renormalized and
    averaged over the copies whose input so far stayed in range."""
    plain = make_decoder(model)
    rows, lives = [], []
    for s in shifts(semitones):
        table = tokenizer.transposition(s)
        moved = table[ids]
        live = np.cumprod(moved >= 0)  # live after each input token
        logits, _ = plain.forward(tf.constant(np.maximum(moved, 0)[None], tf.int32), plain.zero_states(1))
        p = tf.nn.softmax(logits[0]).numpy()  # [time, vocab] over the copy's ids
        back = np.where(table >= 0, p[:, np.maximum(table, 0)], 0.0)  # over the original ids
        rows.append(back / back.sum(-1, keepdims=True))
        lives.append(live)
    rows, lives = np.stack(rows), np.stack(lives).astype(float)
    return (rows * lives[..., None]).sum(0) / lives.sum(0)[:, None]


@pytest.mark.parametrize("arch", ["lstm", "lstm-attention", "transformer"])
def test_averaged_distribution_is_the_written_out_mixture(arch):
    tokenizer = VoicesTokenizer(low=48, high=72)
    config = RunConfig(
        modality="music",
        tokenizer="voices",
        arch=arch,
        layers=1,
        units=12,
        embedding=12,
        heads=2,
        vocab_size=tokenizer.vocab_size,
    )
    model = random_model(config)
    ids = np.array(
        [BOS, 20, 16, 10, 2, 20, 16, REST, 2, 24, 16, 10, 2, 25, 17, 11, 3], dtype=np.int64
    )  # 48 (id 2) at step 1, 71 (id 25) at step 4
    averaged = KeyAveraged(make_decoder(model), tokenizer, 2)
    logp, (_, live) = averaged.forward(tf.constant(ids[None], tf.int32), averaged.zero_states(1))
    expected = brute_force(model, tokenizer, ids, 2)
    np.testing.assert_allclose(np.exp(logp[0].numpy()), expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(logp[0].numpy()).sum(-1), 1.0, atol=1e-5)  # a distribution at every step
    # 48 (id 2, the lowest pitch) moved down and 71 (id 25) moved up two semitones leave the range:
    # those copies drop out, the untransposed one and the one a semitone up stay
    assert live.numpy().tolist() == [[0, 0, 1, 1, 0]]
    assert not np.allclose(expected, brute_force(model, tokenizer, ids, 0), atol=1e-3)

    # one token at a time gives the same distributions as the whole sequence at once
    states = averaged.zero_states(1)
    for t, token in enumerate(ids[:-1]):
        step_logp, states = averaged.step(tf.constant([token], tf.int32), states)
        np.testing.assert_allclose(step_logp[0].numpy(), logp[0, t].numpy(), atol=1e-4)


def test_key_averaging_needs_at_least_one_semitone():
    tokenizer = VoicesTokenizer()
    config = RunConfig(
        modality="music", tokenizer="voices", layers=1, units=8, embedding=4, vocab_size=tokenizer.vocab_size
    )
    with pytest.raises(ValueError):
        KeyAveraged(make_decoder(build_model(config)), tokenizer, 0)


# -- scoring and sampling through the Generator and the command line -------------------------------


def test_evaluate_scores_the_averaged_distribution(voices_run, chorale_file):
    model = api.load(voices_run)
    assert model.key_average == 0  # no recommendation in this run's config
    plain = model.evaluate(str(chorale_file), split="valid")
    averaged = model.evaluate(str(chorale_file), split="valid", key_average=2)
    assert averaged["key_average"] == 2 and averaged["tokens"] == plain["tokens"]
    expected = 0.0
    for chorale in CHORALES["valid"]:
        ids = np.array([BOS] + model.tokenizer.encode(np.array(chorale)))
        p = brute_force(model.run.model, model.tokenizer, ids, 2)
        expected -= np.log(p[np.arange(len(ids) - 1), ids[1:]]).sum()
    assert averaged["nll_per_token"] == pytest.approx(expected / plain["tokens"], rel=1e-4)
    assert averaged["nll_per_token"] != pytest.approx(plain["nll_per_token"], rel=1e-3)
    # the pieces the run held out are its valid split
    held = model.evaluate(f"heldout:{voices_run}", key_average=2)
    assert held["nll_per_token"] == pytest.approx(averaged["nll_per_token"], rel=1e-6)


def test_the_checkpoint_recommendation_is_the_default(voices_run, tmp_path):
    run = api.load(voices_run).run
    config = dataclasses.replace(run.config, extra={"key_average": 3})
    path = save_run(tmp_path / "recommended", run.model, run.tokenizer, config)
    assert api.load(path).key_average == 3
    assert api.load(path, key_average=0).key_average == 0


def test_sampling_with_key_averaging_is_reproducible(voices_run):
    model = api.load(voices_run, key_average=2)
    first = np.concatenate(list(model.stream([], 64, num_samples=2, random_seed=7)), axis=1)
    again = np.concatenate(list(model.stream([], 64, num_samples=2, random_seed=7)), axis=1)
    assert first.shape == (2, 64) and (first == again).all()
    assert (first != BOS).all()


def test_cli_key_average(tmp_path, capsys, voices_run, chorale_file):
    code, out, err = call(
        generator_main,
        [
            "evaluate",
            "--checkpoint",
            str(voices_run),
            "--corpus",
            str(chorale_file),
            "--split",
            "valid",
            "--key-average",
            "2",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out)["key_average"] == 2
    code, out, err = call(
        generate_music_main,
        [
            "--checkpoint",
            str(voices_run),
            "--key-average",
            "2",
            "--length",
            "32",
            "--random-seed",
            "1",
            "--output",
            str(tmp_path / "a.mid"),
        ],
        capsys,
    )
    assert code == 0 and (tmp_path / "a.mid").exists(), err


def test_cli_key_average_refusals(tmp_path, capsys, tiny_run, voices_run, chorale_file):
    code, _, err = call(
        generator_main,
        ["evaluate", "--checkpoint", str(tiny_run), "--corpus", str(chorale_file), "--key-average", "1"],
        capsys,
    )
    one_line_error(code, err, "--key-average", "text")
    code, _, err = call(
        generate_music_main,
        ["--checkpoint", str(voices_run), "--key-average", "13", "--output", str(tmp_path / "b.mid")],
        capsys,
    )
    one_line_error(code, err, "--key-average")
    code, _, err = call(
        generate_music_main,
        ["--harmonize", str(chorale_file), "--key-average", "1", "--output", str(tmp_path / "c.mid")],
        capsys,
    )
    one_line_error(code, err, "--key-average", "--harmonize")
    assert not list(tmp_path.iterdir())


def test_a_text_model_cannot_score_held_out_music(capsys, tiny_run, voices_run):
    code, _, err = call(
        generator_main, ["evaluate", "--checkpoint", str(tiny_run), "--corpus", f"heldout:{voices_run}"], capsys
    )
    one_line_error(code, err, "heldout:", "text model")


@pytest.mark.parametrize("holdout", ["documents", "blocks"])
def test_heldout_gives_the_whole_pieces_the_trainer_held_out(chorale_file, tmp_path, holdout):
    from generator.data import corpora
    from generator.data.dataset import concatenate, split_segments
    from generator.errors import GeneratorError
    from generator.evaluation.music_stats import held_out_corpus

    tokenizer = VoicesTokenizer(low=48, high=72)
    config = RunConfig(
        modality="music",
        tokenizer="voices",
        layers=1,
        units=8,
        embedding=4,
        vocab_size=tokenizer.vocab_size,
        corpus=str(chorale_file),
        split="valid",
        holdout=holdout,
        val_fraction=0.5,
        random_seed=3,
    )
    run = save_run(tmp_path / holdout, random_model(config), tokenizer, config)
    pieces = corpora.open_corpus(str(chorale_file), "music", split="valid").documents()
    if holdout == "blocks":  # parts of pieces: nothing whole to give
        with pytest.raises(GeneratorError, match="did not hold out whole pieces"):
            held_out_corpus(str(run)).documents()
        return
    held = held_out_corpus(str(run)).documents()  # two pieces, fewer than auto's threshold: documents as asked
    corpus = concatenate([tokenizer.encode(p) for p in pieces], tokenizer)
    trainer_held = split_segments(corpus, 0.5, seed=3, holdout="documents").val_ids
    assert len(held) == 1
    assert [BOS] + tokenizer.encode(held[0]) == trainer_held.tolist()


def test_heldout_finds_a_corpus_recorded_by_name_in_the_corpora_dir(chorale_file, tmp_path, monkeypatch):
    """The bundled checkpoints record their corpus by name (``pop909``), never a machine path."""
    from generator.errors import GeneratorError
    from generator.evaluation.music_stats import held_out_corpus

    (tmp_path / "corpora" / "jsb").mkdir(parents=True)
    (tmp_path / "corpora" / "jsb" / "chorales.json").write_bytes(chorale_file.read_bytes())
    tokenizer = VoicesTokenizer(low=48, high=72)
    config = RunConfig(
        modality="music",
        tokenizer="voices",
        layers=1,
        units=8,
        embedding=4,
        vocab_size=tokenizer.vocab_size,
        corpus="jsb/chorales.json",
        split="valid",
        holdout="documents",
        val_fraction=0.5,
        random_seed=3,
    )
    run = save_run(tmp_path / "run", random_model(config), tokenizer, config)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GENERATOR_CORPORA_DIR", raising=False)
    with pytest.raises(GeneratorError, match="GENERATOR_CORPORA_DIR"):
        held_out_corpus(str(run)).documents()
    monkeypatch.setenv("GENERATOR_CORPORA_DIR", str(tmp_path / "corpora"))
    assert len(held_out_corpus(str(run)).documents()) == 1
