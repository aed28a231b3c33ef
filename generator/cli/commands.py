"""Command-line pieces for rendering and tuning, kept out of ``cli.py`` (which calls in here).

- ``generate-music --render wav,png,musicxml [--soundfont FILE]``
- ``generator render FILE.mid [--formats ...] [--soundfont FILE] [--force]``
- ``generator tune --corpus SPEC --trials N --epochs E --output DIR [search space flags]``
- ``generator train text|music --config FILE`` (flags given explicitly override the file)

Like the rest of the command line, bad input raises ``GeneratorError``: one stderr line, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generator.errors import GeneratorError

FORMATS_HELP = (
    "wav (audio through FluidSynth when it and a SoundFont are available, otherwise pretty_midi's "
    "sine-wave synthesis; the output says which), png (a piano roll drawn with matplotlib) and "
    "musicxml (a score written by music21)"
)
SOUNDFONT_HELP = (
    "The SoundFont (.sf2 or .sf3 file) FluidSynth plays the WAV with. By default one is looked for "
    "in the usual system folders; without FluidSynth or a SoundFont the WAV is synthesized with "
    "pretty_midi's sine waves."
)


def formats(text: str) -> tuple[str, ...]:
    """argparse type: ``"wav,png"`` -> ``("wav", "png")``."""
    from generator.generation.render import parse_formats

    try:
        return parse_formats(text)
    except GeneratorError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def choices_of(kind, low, high):
    """argparse type: a comma-separated list of numbers, each within [low, high]."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        if not values or any(not (low <= v <= high) for v in values):
            raise argparse.ArgumentTypeError(f"every value must be between {low} and {high}, not {text}")
        return values

    return parse


# -- generate-music --render ------------------------------------------------------------------------


def add_render_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--render",
        type=formats,
        default=(),
        metavar="FORMATS",
        help="Also write these renderings beside each MIDI file, with the same name and a new suffix, "
        f"comma-separated: {FORMATS_HELP}. Existing files are kept unless --force is given.",
    )
    p.add_argument("--soundfont", default=None, metavar="FILE", help=SOUNDFONT_HELP)


def render_targets(midi_paths, render_formats) -> list[Path]:
    """Every file ``--render`` will write for these MIDI files (to check before generating)."""
    from generator.generation.render import output_paths

    return [p for midi in midi_paths for p in output_paths(midi, render_formats).values()] if render_formats else []


# -- generator render ------------------------------------------------------------------------------


def add_render_parser(sub) -> None:
    p = sub.add_parser(
        "render",
        help="Render a MIDI file to audio, a piano roll or a score.",
        description="Write WAV audio, a piano-roll PNG and/or MusicXML beside a MIDI file "
        "(FILE.mid gives FILE.wav, FILE.png, FILE.musicxml).",
    )
    p.add_argument("midi", metavar="FILE.mid", help="The MIDI file to render.")
    p.add_argument(
        "--formats",
        type=formats,
        default=("wav", "png", "musicxml"),
        metavar="FORMATS",
        help=f"What to write, comma-separated (default all three): {FORMATS_HELP}.",
    )
    p.add_argument("--soundfont", default=None, metavar="FILE", help=SOUNDFONT_HELP)
    p.add_argument("--force", action="store_true", help="Overwrite rendered files that already exist.")


def render_main(args) -> None:
    from generator.generation.render import render

    render(args.midi, args.formats, args.soundfont, force=args.force)


# -- generator tune ------------------------------------------------------------------------------------

TUNE_FIXED = (
    "embedding",
    "seq_len",
    "batch_size",
    "val_fraction",
    "random_seed",
    "split",
)  # RunConfig fields tune fixes


def add_tune_parser(sub) -> None:
    from generator.cli.flags import add_option_flags, int_range
    from generator.config import RunConfig

    p = sub.add_parser(
        "tune",
        help="Search hyperparameters with KerasTuner.",
        description="Search the number of layers, units per layer, dropout and learning rate with "
        "KerasTuner, training each candidate briefly, and write the best configuration "
        "(best_config.json, for `generator train --config`) and its validation loss "
        "(tuning.json) into --output.",
    )
    p.add_argument(
        "--corpus",
        required=True,
        metavar="SPEC",
        help="What to tune on: a file, a directory of files, or a built-in corpus name. A sample of a "
        "large corpus is often enough to rank configurations.",
    )
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="The folder that receives best_config.json, tuning.json, TensorBoard logs (logs/) and "
        "KerasTuner's records (search/).",
    )
    p.add_argument(
        "--modality",
        choices=["text", "music"],
        default="text",
        help="Tune a text (character) model or a music (performance event) model; default text.",
    )
    p.add_argument(
        "--trials",
        type=int_range(1, 10_000),
        default=10,
        metavar="N",
        help="How many configurations to try (default 10).",
    )
    p.add_argument(
        "--epochs",
        type=int_range(1, 10_000),
        default=2,
        metavar="E",
        help="The most epochs one configuration trains for (default 2).",
    )
    p.add_argument(
        "--algorithm",
        choices=["bayesian", "hyperband"],
        default="bayesian",
        help="bayesian (the default) chooses each next configuration from the results so far; "
        "hyperband starts many configurations with a few epochs and gives the full --epochs only "
        "to the best of them.",
    )
    p.add_argument(
        "--layers",
        type=choices_of(int, 1, 16),
        default=(1, 2, 3),
        metavar="N,N,...",
        help="The numbers of stacked LSTM layers to choose among (default 1,2,3).",
    )
    p.add_argument(
        "--units",
        type=choices_of(int, 1, 8192),
        default=(128, 256, 512),
        metavar="N,N,...",
        help="The LSTM sizes to choose among (default 128,256,512).",
    )
    p.add_argument(
        "--dropout",
        type=choices_of(float, 0.0, 0.95),
        default=(0.0, 0.5),
        metavar="MIN,MAX",
        help="The range of dropout rates to search, in steps of 0.05 (default 0,0.5); one value fixes it.",
    )
    p.add_argument(
        "--learning-rate",
        type=choices_of(float, 1e-7, 1.0),
        default=(3e-4, 1e-2),
        metavar="MIN,MAX",
        help="The range of Adam learning rates to search, on a log scale (default 0.0003,0.01); one value fixes it.",
    )
    p.add_argument(
        "--arch",
        choices=["lstm", "lstm-attention", "transformer"],
        help="The architecture whose layers and units are searched (default lstm); for transformer, "
        "--units are its model widths and must be even multiples of its 4 heads.",
    )
    p.add_argument(
        "--steps-per-epoch",
        type=int_range(1),
        default=0,
        metavar="N",
        help="Batches per epoch, to bound the time of each trial (default: one pass over the data).",
    )
    add_option_flags(
        p,
        RunConfig,
        TUNE_FIXED,
        embedding="Width of the token embedding (fixed, not searched).",
        val_fraction="Share of the corpus held out to compare configurations.",
        random_seed="Random seed of the search, initialisation and data order.",
        split="The split of a JSON corpus to tune on (train, valid or test).",
    )
    p.add_argument("--encoding", default="utf-8", help="Character encoding of text corpus files (default utf-8).")
    p.add_argument("--force", action="store_true", help="Replace the results of an earlier search in --output.")
    p.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")


def tune_main(args) -> None:
    from generator.training import tune

    dropout, rate = args.dropout, args.learning_rate
    if len(dropout) > 2 or len(rate) > 2:
        raise GeneratorError("--dropout and --learning-rate take one value or MIN,MAX")
    space = tune.SearchSpace(layers=args.layers, units=args.units, dropout=dropout, learning_rate=rate)
    from generator.cli.flags import option_values
    from generator.config import RunConfig

    settings = option_values(args, RunConfig, TUNE_FIXED + ("arch",))
    result = tune.tune(
        args.corpus,
        args.output,
        modality=args.modality,
        trials=args.trials,
        epochs=args.epochs,
        algorithm=args.algorithm,
        space=space,
        steps_per_epoch=args.steps_per_epoch,
        encoding=args.encoding,
        force=args.force,
        verbose=1 if sys.stdout.isatty() else 0,
        log=lambda message: print(message, file=sys.stderr),
        **settings,
    )
    print(tune.summary(result))


# -- generator train --config -----------------------------------------------------------------------------


def add_config_flag(p: argparse.ArgumentParser) -> None:
    """``--config FILE``; with it ``--corpus`` may be left out when the file names the corpus."""
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="Start from this configuration (best_config.json from `generator tune`, or a run "
        "directory's config.json) instead of the preset; flags given explicitly override its "
        "values, and --corpus defaults to the corpus it names.",
    )


def train_config(args):
    """(corpus, RunConfig or None) for ``generator train`` from --corpus and --config."""
    config = None
    if getattr(args, "config", None):
        from generator.api import load_config

        config = load_config(args.config, args.modality)
    corpus = args.corpus or (config.corpus if config is not None else "")
    if not corpus:
        raise GeneratorError("--corpus is required" + (f" ({args.config} names no corpus)" if config else ""))
    return corpus, config
