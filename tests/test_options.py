"""One definition per option: RunConfig's fields make the flags of `generator train`, the config
file keys and the keywords of generator.train(); every field has a flag and every flag a field."""

import argparse
import json

import pytest

from generator import options
from generator.cli.flags import Parser, add_option_flags, option_values
from generator.cli.main import TRAIN_ONLY_FLAGS, generator_parser
from generator.config import PRESETS, RunConfig
from generator.errors import GeneratorError

# Fields the program sets itself, never a user's flag.
NO_FLAG = {
    "modality": "the subcommand (train text | train music)",
    "vocab_size": "the tokenizer",
    "format_version": "the run directory format",
    "extra": "tokenizer options and recommendations",
}


def train_parser(modality="text") -> argparse.ArgumentParser:
    sub = next(a for a in generator_parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices["train"]
    modalities = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
    return modalities.choices[modality]


def flags_of(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


@pytest.mark.parametrize("modality", ["text", "music"])
def test_every_field_has_a_flag_and_every_flag_a_field(modality):
    parser = train_parser(modality)
    fields = options.fields(RunConfig)
    field_flags = {}
    for name, f in fields.items():
        flag = options.flag_name(f)
        assert (flag is None) == (name in NO_FLAG), f"{name}: a flag unless the program sets it"
        if flag is None:
            continue
        for one in (flag, *options.spec(f).aliases):
            field_flags[one] = name
            default = options.default_of(f)
            if default is None or isinstance(default, bool):
                field_flags["--no-" + one[2:]] = name  # --jit / --no-jit
    given = flags_of(parser)
    assert given - set(field_flags) == set(TRAIN_ONLY_FLAGS), "a flag of generator train without a RunConfig field"
    assert set(field_flags) <= given, "a RunConfig field without a flag"


def test_every_field_is_declared_once_with_a_sentence_of_help():
    for name, f in options.fields(RunConfig).items():
        text = options.help_text(f)
        assert text[0].isupper() or text.split(":")[0] in ("lstm-attention", "transformer"), name
        assert text.rstrip().endswith((".", ")")), f"{name}: help ends a sentence"
        assert "{default}" not in text


def test_choices_come_from_the_registries():
    from generator.data.dataset import HOLDOUTS
    from generator.data.tokenizers.base import kinds
    from generator.models import ARCHS, POSITIONS
    from generator.training.distribute import STRATEGIES

    parser = train_parser("music")
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices}
    assert choices["arch"] == tuple(ARCHS)
    assert choices["tokenizer"] == kinds() and "band" in choices["tokenizer"]
    assert choices["holdout"] == HOLDOUTS
    assert choices["strategy"] == STRATEGIES
    assert choices["positions"] == POSITIONS


def test_flags_left_out_stay_out_and_booleans_go_both_ways():
    p = Parser()
    add_option_flags(p, RunConfig)
    assert option_values(p.parse_args([]), RunConfig) == {}
    args = p.parse_args(["--layers", "3", "--no-augment", "--jit", "--clip-norm", "0", "--positions", "learned"])
    assert option_values(args, RunConfig) == {
        "layers": 3,
        "augment": False,
        "jit": True,
        "clip_norm": 0.0,
        "positions": "learned",
    }
    with pytest.raises(SystemExit):
        p.parse_args(["--layers", "0"])


def test_presets_and_bundled_configs_check():
    for preset in PRESETS.values():
        preset.check()


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"dropout": 1.5}, "dropout must be at least 0 and less than 1"),
        ({"layers": "two"}, "layers must be a whole number"),
        ({"arch": "gru"}, "arch must be one of 'lstm'"),
        ({"tokenizer": "bytes"}, "tokenizer must be one of"),
        ({"jit": "yes"}, "jit must be true, false or null"),
        ({"augment": 1}, "augment must be true or false"),
    ],
)
def test_checks_name_the_setting(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        RunConfig(**changes).check()


def test_the_api_checks_its_keywords_like_the_flags(tmp_path):
    import generator

    with pytest.raises(GeneratorError, match="colour is not a RunConfig setting"):
        generator.train("austen", tmp_path / "run", colour="blue")
    with pytest.raises(GeneratorError, match="units must be between 1 and 8,192, not 0"):
        generator.train("austen", tmp_path / "run", units=0)
    assert not (tmp_path / "run").exists()


def test_a_config_file_is_checked_by_the_same_fields(tmp_path):
    from generator.api import load_config

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"holdout": "middle"}))
    with pytest.raises(GeneratorError, match="holdout must be one of"):
        load_config(path)
    path.write_text(json.dumps({"holdout": "tail", "clip_norm": 0.5}))
    assert load_config(path).clip_norm == 0.5


def test_seed_is_the_old_name_of_random_seed():
    from generator.config import renamed

    assert RunConfig.from_dict({"seed": 5}).random_seed == 5  # config.json files written before the rename
    assert RunConfig(random_seed=7).seed == 7
    assert renamed({"seed": 1, "layers": 2}) == {"random_seed": 1, "layers": 2}
    parser = train_parser("text")
    assert parser.parse_args(["--seed", "3", "--output", "o"]).random_seed == 3
    assert parser.parse_args(["--random-seed", "4", "--output", "o"]).random_seed == 4
