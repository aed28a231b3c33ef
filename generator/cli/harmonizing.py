"""``generate-music --harmonize FILE``: the harmonizer's flags and command (called from ``cli.main``).

    generate-music --checkpoint harmonizer --harmonize melody.mid --output chorale.mid
    generate-music --checkpoint harmonizer --harmonize chorale.mid --infill 8-16 --output new.mid
    generate-music --checkpoint harmonizer --harmonize jsb.json --split valid --index 3 --voices tenor

Bad input raises ``GeneratorError`` (one stderr line, exit status 2), checked before TensorFlow starts.
"""

from __future__ import annotations

import argparse

from generator.errors import GeneratorError

# generate-music flags that continue music left to right and mean nothing when harmonizing
_CONTINUATION_FLAGS = {
    "seed": "--seed",
    "length": "--length",
    "seconds": "--seconds",
    "prime_seconds": "--prime-seconds",
    "prime_tokens": "--prime-tokens",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "key_average": "--key-average",
    "note_limit": "--note-limit/--no-note-limit",
}


def add_flags(p: argparse.ArgumentParser) -> None:
    """The harmonizer's flags of ``generate-music``."""
    from generator.cli.flags import int_range

    g = p.add_argument_group("harmonizing (with --checkpoint harmonizer)")
    g.add_argument(
        "--harmonize",
        default=None,
        metavar="FILE",
        help="Write four-part harmony instead of continuing music: FILE is a melody (.mid/.midi, "
        ".musicxml/.mxl/.xml, .abc or .krn; its only line, or the top line of several, becomes "
        "the soprano and is kept note for note), a four-voice chorale, or a JSB Chorales .json "
        "file with --split and --index. Needs a harmonizer checkpoint (--checkpoint harmonizer). "
        "The output is a four-track MIDI file in the input's tempo and time signature.",
    )
    g.add_argument(
        "--voices",
        default=None,
        metavar="LIST",
        help="The voices to write, comma-separated among soprano, alto, tenor and bass (or s, a, t, b); "
        "the others are kept from the input. Default alto,tenor,bass, or all four with --infill.",
    )
    g.add_argument(
        "--infill",
        default=None,
        metavar="START-END",
        help="Rewrite only the passage from beat START to beat END (quarter notes counted from 0, "
        "e.g. 8-16) of a four-voice input and keep everything outside it.",
    )
    g.add_argument(
        "--iterations",
        type=int_range(1, 100_000),
        default=None,
        metavar="N",
        help="Pseudo-Gibbs iterations: each resamples a share of the free cells, a share that falls "
        "over the iterations while the temperature falls from twice --temperature to --temperature "
        "(default 100). More iterations take longer.",
    )
    g.add_argument(
        "--split",
        default=None,
        help="With a JSB Chorales .json file given to --harmonize: the split to take the chorale from "
        "(train, valid or test).",
    )
    g.add_argument(
        "--index",
        type=int_range(0),
        default=None,
        metavar="I",
        help="With a JSB Chorales .json file given to --harmonize: the chorale's position in --split, counted from 0.",
    )


def check_flags(args) -> None:
    """Refuse harmonizer flags without --harmonize, and continuation flags with it."""
    if args.harmonize is None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("voices", "infill", "iterations", "split", "index")
            if getattr(args, name) is not None
        ]
        if given:
            raise GeneratorError(f"{', '.join(given)} only work with --harmonize FILE")
        return
    given = [flag for name, flag in _CONTINUATION_FLAGS.items() if getattr(args, name, None) is not None]
    if args.continuation_only:
        given.append("--continuation-only")
    if given:
        raise GeneratorError(f"{', '.join(given)} continue music left to right; they do not work with --harmonize")


def harmonize_main(args, paths, quiet_tensorflow) -> None:
    """Read and check the input, load the checkpoint, harmonize, write (and render) each sample."""
    from generator.generation import harmonize

    voices = harmonize.parse_voices(args.voices) if args.voices is not None else None
    if args.infill is not None:
        harmonize.parse_infill(args.infill)
    piece = harmonize.read_piece(args.harmonize, split=args.split, index=args.index)  # before TensorFlow starts
    harmonize.free_cells(piece, voices, args.infill)
    quiet_tensorflow(args.verbose)
    from generator import api

    model = api.load(args.checkpoint or "harmonizer")  # --harmonize's own model unless one is named
    if "harmonize" not in model.task.calls:
        kind = model.task.kind(model.config.modality)
        raise GeneratorError(
            f"checkpoint {args.checkpoint} is a {kind} model, not a harmonizer: use --checkpoint harmonizer"
        )
    from generator.cli.main import sampling_options

    pieces = model.harmonize(
        piece,
        voices=voices,
        infill=args.infill,
        iterations=args.iterations,
        num_samples=args.num_samples,
        options=sampling_options(args),
    )
    pieces = pieces if isinstance(pieces, list) else [pieces]
    for path, music in zip(paths, pieces):
        music.save(path, force=args.force)
        print(f"wrote {path}: {len(music.notes)} notes in four voices, {music.sequence.end_time:.1f} s")
        if args.render:
            from generator.generation.render import render

            render(path, args.render, args.soundfont, force=args.force)
