"""The voices tokenizer's voice-leading rules: what they forbid, and sampled chorales that obey them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from generator.data.tokenizers.base import BOS, from_json
from generator.data.tokenizers.voices import PITCH_OFFSET, REST, VoicesTokenizer
from generator.evaluation.features import voice_leading


def ids_of(tokenizer, pitches):
    return np.array([REST if p < 0 else p - tokenizer.low + PITCH_OFFSET for p in pitches])


def state_after(tokenizer, steps):
    """The constraint state after the given pitches, one sequence, voice by voice."""
    state = tokenizer.new_constraint_state(1)
    for pitch in steps:
        state = tokenizer.advance(state, ids_of(tokenizer, [pitch]))
    return state


def allowed_pitches(tokenizer, state) -> set[int]:
    mask = tokenizer.allowed(state)[0]
    assert not mask[BOS] and mask[REST]  # well-formedness is kept: REST always, BOS never
    return {tokenizer.low + i for i in np.flatnonzero(mask[PITCH_OFFSET:])}


def test_no_crossing_and_upper_voices_within_an_octave():
    tok = VoicesTokenizer()
    alto = allowed_pitches(tok, state_after(tok, [67]))  # soprano G4 sampled
    assert alto == set(range(55, 68))
    tenor = allowed_pitches(tok, state_after(tok, [67, 60]))
    assert tenor == set(range(48, 61))
    bass = allowed_pitches(tok, state_after(tok, [67, 60, 55]))  # the bass may lie any distance below the tenor
    assert bass == set(range(tok.low, 56))


def test_parallel_fifths_and_octaves_are_forbidden():
    tok = VoicesTokenizer()
    first = [72, 67, 64, 48]  # C5 G4 E4 C3
    # Soprano holds, alto moves up a tone to A4, tenor to F4: the bass may not follow the alto upwards into
    # a fifth (D3 or D4: a twelfth or fifth below A4), but may reach D2 by contrary motion.
    bass = allowed_pitches(tok, state_after(tok, first + [72, 69, 65]))
    assert bass == set(range(tok.low, 65)) - {50, 62}  # 65: the top of the bass's range is 64
    # Soprano moves up to D5 as well: D3 and D4 would also be parallel octaves with it.
    bass = allowed_pitches(tok, state_after(tok, first + [74, 69, 65]))
    assert 50 not in bass and 62 not in bass and 38 in bass
    # Without the rules everything is allowed.
    off = VoicesTokenizer(voice_leading=False)
    assert allowed_pitches(off, state_after(off, first + [74, 69, 65])) == set(range(off.low, off.high + 1))


def test_oblique_and_contrary_motion_are_allowed():
    tok = VoicesTokenizer()
    first = [72, 67, 64, 48]
    bass = allowed_pitches(tok, state_after(tok, first + [72, 67, 65]))  # the alto holds its G
    assert 48 in bass  # the bass holds too
    bass = allowed_pitches(tok, state_after(tok, first + [72, 69, 65]))  # alto up to A
    assert 41 in bass  # bass down to F2: not a perfect interval anyway
    tenor = allowed_pitches(tok, state_after(tok, [72, 67, 60, 48] + [74, 67]))
    assert 62 not in tenor and 60 in tenor  # C4 -> D4 under C5 -> D5 would be parallel octaves; holding is fine


def test_a_rest_breaks_the_rules_chain_and_bos_starts_afresh():
    tok = VoicesTokenizer()
    state = state_after(tok, [72, 67, 64, 48, 72, -1])  # the alto rests, the soprano holds
    assert allowed_pitches(tok, state) == set(range(48, 70))  # nothing above the tenor to obey: only its range
    state = tok.advance(state, np.array([BOS]))
    assert state[0, 0] == 0 and (state[0, 1:] == -1).all()


def test_each_voice_keeps_its_range_unless_the_voice_above_leaves_none():
    tok = VoicesTokenizer()
    assert allowed_pitches(tok, tok.new_constraint_state(1)) == set(range(60, 82))  # soprano C4-A5
    # A soprano at D3 (as a seed may have it): no alto pitch is both under it and in the alto's range,
    # so crossing and spacing alone decide.
    assert allowed_pitches(tok, state_after(tok, [50])) == set(range(38, 51))


def test_option_is_saved_and_old_tokenizer_files_get_the_rules():
    tok = VoicesTokenizer(voice_leading=False)
    assert from_json(tok.to_json()).voice_leading is False
    old = json.loads(VoicesTokenizer().to_json())
    del old["voice_leading"]  # a tokenizer.json written before the option existed
    assert from_json(json.dumps(old)).voice_leading is True


def test_rules_are_vectorised_over_the_batch():
    tok = VoicesTokenizer()
    state = tok.new_constraint_state(3)
    for column in ([72, 72, -1], [67, 60, 60]):
        state = tok.advance(state, ids_of(tok, column))
    mask = tok.allowed(state)[:, PITCH_OFFSET:]
    pitches = tok.low + np.arange(mask.shape[1])
    assert set(pitches[mask[0]]) == set(range(55, 68))
    assert set(pitches[mask[1]]) == set(range(48, 61))
    assert set(pitches[mask[2]]) == set(range(48, 61))


@pytest.fixture(scope="module")
def voices_run(tmp_path_factory):
    """An untrained voices model saved as a run directory."""
    from generator.config import RunConfig
    from generator.models import build_model
    from generator.training.checkpoints import save_run

    tokenizer = VoicesTokenizer()
    config = RunConfig(
        modality="music", tokenizer="voices", layers=1, units=16, embedding=8, vocab_size=tokenizer.vocab_size
    )
    return save_run(tmp_path_factory.mktemp("runs") / "voices", build_model(config), tokenizer, config)


def sampled_grids(run, voice_leading: bool):
    from generator import api

    g = api.load(run)
    tokenizer = VoicesTokenizer(voice_leading=voice_leading)
    tokens = np.concatenate(
        list(g.stream([], 4 * 96, num_samples=16, temperature=1.0, random_seed=3, tokenizer=tokenizer)), axis=1
    )
    return [tokenizer.grid_from_ids(row) for row in tokens]


def test_sampled_chorales_keep_the_rules_and_the_flag_turns_them_off(voices_run):
    ruled = [voice_leading(grid) for grid in sampled_grids(voices_run, True)]
    free = [voice_leading(grid) for grid in sampled_grids(voices_run, False)]
    rate = lambda pieces, name: np.mean([r[name] for r in pieces if r[name] is not None])  # noqa: E731
    for name in ("voice_crossing", "spacing"):
        assert all(r[name] == 0 for r in ruled if r[name] is not None), name
        assert rate(free, name) > 0.05, name
    # Parallels remain only where no pitch avoids them (an untrained model drifts to the bottom of the
    # range, where the bass may only double the tenor's lowest note): far fewer than without the rules.
    assert rate(ruled, "parallel_fifths_octaves") < rate(free, "parallel_fifths_octaves") / 3


def test_generate_music_flag_and_saved_part_names(voices_run, tmp_path, capsys):
    """The MIDI files keep their part names, so a reader finds the same voices the sampler wrote."""
    from tests.conftest import call
    from generator.cli.main import generate_music_main
    from generator.data.midi_io import read_midi
    from generator.evaluation.features import piece_features

    rates = {}
    for flag in ([], ["--no-voice-leading"]):
        out = tmp_path / ("free.mid" if flag else "ruled.mid")
        code, _, err = call(
            generate_music_main,
            [
                "--checkpoint",
                str(voices_run),
                "--num-samples",
                "4",
                "--length",
                "384",
                "--random-seed",
                "5",
                "--output",
                str(out),
            ]
            + flag,
            capsys,
        )
        assert code == 0, err
        pieces = [read_midi(out.with_name(f"{out.stem}-{i}.mid")) for i in range(1, 5)]
        assert [inst.name for inst in pieces[0].instruments] == ["Soprano", "Alto", "Tenor", "Bass"]
        rates[bool(flag)] = [piece_features(p)["voice_crossing"] for p in pieces]
    assert all(r == 0 for r in rates[False] if r is not None)
    assert np.mean([r for r in rates[True] if r is not None]) > 0.05
