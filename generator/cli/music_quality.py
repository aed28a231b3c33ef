"""The music-quality commands: ``generator music-stats REAL GENERATED [--json] [--plot FILE.png]`` (per-piece
features of two sets compared) and the flags of ``generator evaluate --continuations``.

See ``generator.evaluation.music_stats``. No TensorFlow is needed (nor started).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from generator.errors import GeneratorError

SET_HELP = (
    "a directory (or one file) of MIDI/MusicXML/ABC/kern pieces, a built-in music corpus name, a JSB "
    "Chorales JSON file (with --split), or heldout:CHECKPOINT for the whole pieces that checkpoint held out "
    "for validation (e.g. heldout:bach)."
)


def add_parser(sub) -> None:
    from generator.cli.flags import int_range

    p = sub.add_parser(
        "music-stats",
        help="Compare generated pieces with real ones, feature by feature.",
        description="Compute pitch, rhythm, line and four-voice features of every piece of two sets and compare "
        "them: each feature's mean and standard deviation in both sets, and the overlapping area (OA) "
        "and KL divergence (KLD) between the real set's distances among its own pieces and its "
        "distances to the generated pieces (Yang & Lerch 2018), beside the same figures for the real "
        "set split in two halves (the best a generated set of that size can expect).",
    )
    p.add_argument("real", metavar="REAL", help="The real pieces: " + SET_HELP)
    p.add_argument("generated", metavar="GENERATED", help="The generated pieces: " + SET_HELP)
    p.add_argument(
        "--split",
        default="",
        help="The split to read from JSON corpora given as REAL or GENERATED (train, valid or test).",
    )
    p.add_argument(
        "--real-split",
        default=None,
        metavar="SPLIT",
        help="The split of a JSON corpus given as REAL, when it differs from --split.",
    )
    p.add_argument(
        "--generated-split",
        default=None,
        metavar="SPLIT",
        help="The split of a JSON corpus given as GENERATED, when it differs from --split.",
    )
    p.add_argument(
        "--merge-tracks",
        action="store_true",
        help="Read every piece as one stream of notes, as the events tokenizer does: lines are then "
        "each piece's top notes, and four voices are taken by pitch order (so they never cross) "
        "where four notes sound. Use it when one set has its parts merged and the other does not.",
    )
    p.add_argument(
        "--seed",
        type=int_range(0),
        default=0,
        help="Seed of the permutation that splits REAL into the two halves of the reference (default 0).",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="Also draw every feature's distribution in both sets side by side into this PNG file.",
    )
    p.add_argument("--force", action="store_true", help="Overwrite the --plot file if it exists.")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Accepted for symmetry with other commands; music-stats does not start TensorFlow.",
    )


def main(args) -> None:
    from generator.evaluation import music_stats as ms

    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise GeneratorError(f"--plot {plot} must end in .png")
        if plot.exists() and not args.force:
            raise GeneratorError(f"{plot} already exists; pass --force to overwrite it")
        if not plot.parent.is_dir():
            raise GeneratorError(f"cannot write {plot}: folder {plot.parent} does not exist")
    report = lambda message: print(message, file=sys.stderr)  # noqa: E731
    real = ms.load_set(args.real, split=args.real_split or args.split, report=report)
    generated = ms.load_set(args.generated, split=args.generated_split or args.split, report=report)
    real_table = ms.feature_table(real, merge_tracks=args.merge_tracks)
    generated_table = ms.feature_table(generated, merge_tracks=args.merge_tracks)
    result = ms.compare_sets(real_table, generated_table, seed=args.seed)
    result["real"], result["generated"] = args.real, args.generated
    if plot is not None:
        labels = [
            f"{what}: {Path(spec).name or spec}" for what, spec in (("real", args.real), ("generated", args.generated))
        ]
        ms.plot_report(real_table, generated_table, plot, labels=labels)
        print(f"wrote {plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(ms.format_report(result, args.real, args.generated))


# -- generator evaluate --continuations ----------------------------------------------------------------
def add_continuation_flags(p) -> None:
    """The ``--continuations`` flags of ``generator evaluate``."""
    from generator.cli.flags import int_range, positive_float

    p.add_argument(
        "--continuations",
        type=int_range(1, 1024),
        default=0,
        metavar="K",
        help="Instead of the loss, sample K continuations of the start of every piece of --corpus (music "
        "models) and compare them with the real continuations: features, OA and KLD as in "
        "`generator music-stats`, prompt consistency and the rate of invalid events. --corpus may "
        "also be heldout:CHECKPOINT, the whole pieces that checkpoint held out for validation.",
    )
    p.add_argument(
        "--prompt-beats",
        type=positive_float,
        default=None,
        metavar="N",
        help="With --continuations: the prompt is each piece's first N quarter-note beats, found with "
        "the piece's tempo map (default 8).",
    )
    p.add_argument(
        "--continuation-beats",
        type=positive_float,
        default=None,
        metavar="M",
        help="With --continuations: how many beats each continuation lasts, and how much of the real "
        "piece after the prompt it is compared with (less where the piece ends sooner; default 16).",
    )
    from generator.cli.flags import add_option_flags
    from generator.config import SamplingOptions

    add_option_flags(
        p,
        SamplingOptions,
        ("temperature", "top_k", "top_p", "random_seed", "voice_leading"),
        temperature="With --continuations: the sampling temperature. 1.0 uses the model's unaltered "
        "probabilities, greater than 1.0 makes the output more random, less than 1.0 less "
        "random.",
        top_k="With --continuations: sample only among the K most likely next tokens (default: all).",
        top_p="With --continuations: sample only among the most likely next tokens whose "
        "probabilities add up to P, a number in (0, 1]; 1 samples from every token (default: "
        "the checkpoint's own recommendation, as generate-music uses it, else every token).",
        random_seed="With --continuations: piece i's continuations are sampled with seed S + i, so "
        "the same seed gives the same figures (default 0).",
        voice_leading="With --continuations: keep SATB chorales (voices models) to the voice-leading "
        "rules (no crossing, alto and tenor within an octave of the voice above, each "
        "voice within its range, no parallel fifths or octaves); on by default, "
        "--no-voice-leading samples without them.",
    )
    p.add_argument(
        "--max-pieces",
        type=int_range(1),
        default=None,
        metavar="N",
        help="With --continuations: use only the first N pieces of --corpus.",
    )


CONTINUATION_FLAGS = (
    "prompt_beats",
    "continuation_beats",
    "temperature",
    "top_k",
    "top_p",
    "random_seed",
    "max_pieces",
    "voice_leading",
)
CONTINUATION_DEFAULTS = {"prompt_beats": 8.0, "continuation_beats": 16.0}


def check_no_continuation_flags(args) -> None:
    """Plain ``generator evaluate`` (the loss): refuse the flags that only mean something with --continuations."""
    given = [name for name in CONTINUATION_FLAGS if getattr(args, name, None) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise GeneratorError(
            f"{flag} only applies with --continuations K (sampled continuations); "
            "without it evaluate scores the corpus's loss"
        )


def continuations_main(args) -> None:
    """``generator evaluate --continuations K``: print the comparison (a table, or one JSON object)."""
    from generator import api
    from generator.evaluation.continuations import format_continuations

    for name, value in CONTINUATION_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    report = lambda message: print(message, file=sys.stderr)  # noqa: E731
    from generator.cli.main import sampling_options

    model = api.load(args.checkpoint)
    result = model.evaluate_continuations(
        args.corpus,
        split=args.split,
        continuations=args.continuations,
        prompt_beats=args.prompt_beats,
        continuation_beats=args.continuation_beats,
        max_pieces=args.max_pieces,
        options=sampling_options(args),
        log=report,
    )
    result["checkpoint"] = str(args.checkpoint)
    print(json.dumps(result) if args.json else format_continuations(result))
