"""Command-line entry points: ``generate-text``, ``generate-music`` and ``generator``.

Bad input of any kind prints one line on stderr and exits with status 2. TensorFlow's start-up
chatter is silenced unless ``--verbose`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from generator.errors import ArgumentError, GeneratorError

from generator.cli.flags import EXIT_USAGE, Parser, add_option_flags, int_range, option_values, positive_float


# -- quiet TensorFlow ---------------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null (TensorFlow's C++ logging writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow(verbose: bool, multi_worker: bool = False) -> None:
    """Import TensorFlow with its log lines and Python warnings silenced (unless verbose)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import warnings

    warnings.filterwarnings("ignore")
    with _stderr_silenced():
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        tf.autograph.set_verbosity(0)
        if multi_worker:  # MultiWorkerMirroredStrategy must exist before TensorFlow's first operation
            from generator.training.distribute import make_strategy

            make_strategy("multi-worker")
        tf.constant(0) + 1  # the first op prints device and oneDNN notices; let it happen silently
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


# The library arguments that the command line sets otherwise than by a flag of their name.
ARGUMENT_FLAGS = {
    "modality": "generator train",  # generator train text|music
    "extra_runs": "--checkpoint",  # generator studio --checkpoint RUN
}


def flag_name(argument: str) -> str:
    """The flag that sets a library call's argument: ``top_k`` -> ``--top-k`` (``ARGUMENT_FLAGS`` apart)."""
    return ARGUMENT_FLAGS.get(argument, "--" + argument.replace("_", "-"))


def run(main, argv=None) -> int:
    """Call ``main(argv)`` turning user errors into one stderr line and exit status 2."""
    try:
        main(argv)
        return 0
    except ArgumentError as e:  # a library call's argument: say it as the flag that sets it
        print(f"error: {e.worded(flag_name)}", file=sys.stderr)
        return EXIT_USAGE
    except GeneratorError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, message already printed)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        return 0


# -- shared flags ---------------------------------------------------------------------------------


def add_sampling_flags(
    p: argparse.ArgumentParser, default_checkpoint: str | None, unit: str, checkpoint_help: str | None = None
) -> None:
    """The flags of generate-text and generate-music: the checkpoint, how many samples, and the sampling
    options that apply to every model (made from ``SamplingOptions``)."""
    from generator.config import SamplingOptions

    p.add_argument(
        "--checkpoint",
        default=default_checkpoint,
        help=checkpoint_help
        or f"The bundled checkpoint name or the run directory to sample from (default: {default_checkpoint}).",
    )
    add_option_flags(p, SamplingOptions, SAMPLING_FLAGS)
    p.add_argument(
        "--num-samples",
        type=int_range(1, 1024),
        default=1,
        metavar="N",
        help=f"How many independent {unit} to sample; they are generated together as one batch.",
    )
    p.add_argument("--force", action="store_true", help="Overwrite output files that already exist.")
    p.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")


SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "random_seed")  # the SamplingOptions of every model
MUSIC_FLAGS = ("key_average", "voice_leading", "note_limit")  # those of music models only


def sampling_options(args):
    """The ``SamplingOptions`` the flags give (fields whose flags were left out keep their defaults)."""
    from generator.config import SamplingOptions

    return SamplingOptions(**option_values(args, SamplingOptions))


def add_key_average_flag(p: argparse.ArgumentParser) -> None:
    """``--key-average K`` (music models): the distribution sampled and scored."""
    from generator.config import SamplingOptions

    add_option_flags(p, SamplingOptions, ("key_average",))


def limit_default(name: str, note: str = "") -> str:
    """``Default: 2,048, or the GENERATOR_PROMPT_TOKENS environment variable.``, from the limit's one definition."""
    from generator.data.limits import LIMITS

    limit = LIMITS[name]
    return f"Default: {limit.default:,}, or the {limit.env} environment variable{note}."


def output_paths(output: str, count: int) -> list[Path]:
    """``out.txt`` for one sample, ``out-1.txt`` ... ``out-N.txt`` for several."""
    path = Path(output)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, count + 1)]


def check_outputs(paths: list[Path], force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise GeneratorError(f"{path} already exists; pass --force to overwrite it")
        if path.exists() and path.is_dir():
            raise GeneratorError(f"{path} is a directory")
        if not path.parent.is_dir():
            raise GeneratorError(f"cannot write {path}: folder {path.parent} does not exist")


# -- generate-text -----------------------------------------------------------------------------------


def text_parser() -> Parser:
    p = Parser(prog="generate-text", description="Sample text from a trained character-level LSTM.")
    p.add_argument("--prompt", default=None, help="Text the generated text continues; it is printed first.")
    p.add_argument(
        "--prompt-file",
        default=None,
        metavar="FILE",
        help="Read the prompt from this UTF-8 text file instead of --prompt.",
    )
    p.add_argument(
        "--length",
        type=int_range(1, 1_000_000),
        default=500,
        metavar="N",
        help="How many characters to generate after the prompt.",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int_range(0),
        default=None,
        metavar="N",
        help="Prime the model with only the last N tokens (characters) of the prompt, in chunks; the "
        "whole prompt is still printed. A notice says when the prompt is cut. 0 primes with all of "
        "it. " + limit_default("prompt_tokens"),
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="Write the text to FILE instead of printing it (FILE-1, FILE-2, ... with --num-samples). "
        "Existing files are kept unless --force is given.",
    )
    add_sampling_flags(p, "shakespeare", "texts")
    return p


def generate_text_main(argv=None) -> None:
    args = text_parser().parse_args(argv)
    if args.prompt is not None and args.prompt_file is not None:
        raise GeneratorError("give --prompt or --prompt-file, not both")
    prompt = args.prompt or ""
    if args.prompt_file is not None:
        from generator.data.corpora import read_text_file

        prompt = read_text_file(Path(args.prompt_file))
    paths = output_paths(args.output, args.num_samples) if args.output else []
    check_outputs(paths, args.force)
    quiet_tensorflow(args.verbose)
    from generator import api

    model = api.load(args.checkpoint)
    if model.config.modality != "text":
        raise GeneratorError(f"checkpoint {args.checkpoint} is a {model.config.modality} model; use generate-music")
    options = dict(num_samples=args.num_samples, options=sampling_options(args))
    ids = model.encode_prompt(prompt)  # unknown characters fail here, before anything is printed
    if not paths and model.short_documents:  # one line per sample, each a document of its own
        texts = model.generate(prompt, args.length, prompt_tokens=args.prompt_tokens, **options)
        print("\n".join(texts if isinstance(texts, list) else [texts]))
        return
    if not paths and args.num_samples == 1:  # stream to the terminal as it is generated
        ids = model.prompt_tail(ids, args.prompt_tokens)
        sys.stdout.write(prompt)
        for chunk in model.stream(ids, args.length, **options):
            sys.stdout.write(model.tokenizer.decode(chunk[0]))
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    texts = model.generate(prompt, args.length, prompt_tokens=args.prompt_tokens, **options)  # a progress bar after 1 s
    texts = texts if isinstance(texts, list) else [texts]
    if not paths:
        for i, text in enumerate(texts, 1):
            print(f"----- sample {i} -----\n{text}")
        return
    from generator.training.checkpoints import atomic_write_text

    for path, text in zip(paths, texts):
        atomic_write_text(path, text)
        print(f"wrote {path}", file=sys.stderr)


# -- generate-music ------------------------------------------------------------------------------------


def music_parser() -> Parser:
    p = Parser(
        prog="generate-music",
        description="Compose music with a trained LSTM, or continue a seed score, "
        "or harmonize a melody in four voices (--harmonize).",
    )
    p.add_argument(
        "--seed",
        default=None,
        metavar="FILE",
        help="A score to continue: .mid/.midi, or .musicxml/.mxl/.xml/.abc/.krn read through music21. "
        "Without it the model composes from scratch.",
    )
    prime = p.add_mutually_exclusive_group()
    prime.add_argument(
        "--prime-seconds",
        type=positive_float,
        default=None,
        metavar="S",
        help="Prime the model with the last S seconds of the seed.",
    )
    prime.add_argument(
        "--prime-tokens",
        type=int_range(1, 1_000_000),
        default=None,
        metavar="N",
        help="Prime the model with the last N tokens of the encoded seed. "
        + limit_default("prompt_tokens", " (0 there primes with the whole seed)"),
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--length",
        type=int_range(1, 1_000_000),
        default=None,
        metavar="N",
        help="How many tokens to generate (default 1000).",
    )
    size.add_argument(
        "--seconds",
        type=positive_float,
        default=None,
        metavar="S",
        help="Generate S seconds of new music for each sample (notes still sounding at S end there).",
    )
    p.add_argument(
        "--output",
        default="generated.mid",
        metavar="FILE",
        help="The MIDI file to write (FILE-1.mid ... FILE-N.mid with --num-samples). Existing files "
        "are kept unless --force is given.",
    )
    p.add_argument(
        "--continuation-only",
        action="store_true",
        help="Write only the newly generated music, without the seed in front of it.",
    )
    from generator.cli.commands import add_render_flags

    add_render_flags(p)
    add_sampling_flags(
        p,
        None,
        "pieces",
        checkpoint_help=(
            "The bundled checkpoint name or the run directory to sample from. By default it is chosen from the "
            "seed's content and the choice is printed: band for a seed with drums or three or more kinds of "
            "instrument, pop-piano for piano only, bach for a four-part chorale; without --seed, pop-piano."
        ),
    )
    from generator.config import SamplingOptions

    add_option_flags(p, SamplingOptions, MUSIC_FLAGS)
    from generator.cli import harmonizing

    harmonizing.add_flags(p)  # --harmonize, --voices, --infill, --iterations, --split, --index
    return p


def generate_music_main(argv=None) -> None:
    args = music_parser().parse_args(argv)
    if not args.output.lower().endswith((".mid", ".midi")):
        raise GeneratorError(f"--output {args.output} must end in .mid or .midi")
    paths = output_paths(args.output, args.num_samples)
    from generator.cli import commands

    check_outputs(paths + commands.render_targets(paths, args.render), args.force)
    if "wav" in args.render and args.soundfont is not None:
        from generator.generation.render import find_soundfont

        find_soundfont(args.soundfont)  # a missing SoundFont fails before generating
    from generator.cli import harmonizing

    harmonizing.check_flags(args)
    if args.harmonize is not None:
        return harmonizing.harmonize_main(args, paths, quiet_tensorflow)
    seed = None
    if args.seed is not None:
        from generator.generation.compose import read_seed

        seed = read_seed(args.seed)  # bad seeds fail here, before TensorFlow starts
    checkpoint = args.checkpoint
    if checkpoint is None and seed is not None:
        from generator.data.score import roles_summary
        from generator.generation.choose import choose_checkpoint

        checkpoint, reason = choose_checkpoint(seed)
        print(f"model: {checkpoint}, because {reason} (--checkpoint chooses another)", file=sys.stderr)
        print(f"seed tracks: {roles_summary(seed)}", file=sys.stderr)
    checkpoint = checkpoint or "pop-piano"
    quiet_tensorflow(args.verbose)
    from generator import api

    model = api.load(checkpoint)
    if model.config.modality != "music":
        raise GeneratorError(f"checkpoint {checkpoint} is a {model.config.modality} model; use generate-text")
    if "generate" not in model.task.calls:
        raise GeneratorError(
            f"checkpoint {checkpoint} is a {model.task.name} model: give it a melody with --harmonize FILE"
        )
    pieces = model.generate(
        seed=seed,
        length=args.length,
        seconds=args.seconds,
        num_samples=args.num_samples,
        options=sampling_options(args),
        prime_seconds=args.prime_seconds,
        prime_tokens=args.prime_tokens,
        continuation_only=args.continuation_only,
    )
    pieces = pieces if isinstance(pieces, list) else [pieces]
    for path, piece in zip(paths, pieces):
        piece.save(path, force=args.force)
        new = piece.sequence.end_time - piece.continuation_start
        print(f"wrote {path}: {len(piece.notes)} notes, {piece.sequence.end_time:.1f} s ({new:.1f} s generated)")
        if args.render:
            from generator.generation.render import render

            render(path, args.render, args.soundfont, force=args.force)


# -- generator (train, evaluate, corpora) ----------------------------------------------------------------

# The flags of `generator train` that are no RunConfig field: where the run goes and how the command behaves.
TRAIN_ONLY_FLAGS = ("--output", "--config", "--encoding", "--peer-timeout", "--force", "--verbose")


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `generator train`: one per RunConfig field (made from its definition), then the command's own."""
    from generator.config import RunConfig

    add_option_flags(p, RunConfig)
    p.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="The run directory to write. Re-running the same command resumes an interrupted run.",
    )
    p.add_argument(
        "--peer-timeout",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="With --strategy multi-worker, how long to wait for the other workers' addresses to accept "
        "connections before giving up with exit status 2 and the unreachable addresses. "
        + limit_default("peer_timeout"),
    )
    p.add_argument("--encoding", default="utf-8", help="Character encoding of text corpus files (default utf-8).")
    p.add_argument("--force", action="store_true", help="Delete an existing run in --output and start over.")
    p.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")


def generator_parser() -> Parser:
    from generator.cli import commands

    p = Parser(prog="generator", description="Train, evaluate and inspect LSTM generators of text and music.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="Train a model on a corpus.", description="Train a model on a corpus.")
    modality = train.add_subparsers(dest="modality", required=True, parser_class=Parser)
    for name, text in (("text", "characters of text files"), ("music", "MIDI, MusicXML, ABC or kern scores")):
        train_parser = modality.add_parser(name, help=f"Train on {text}.", description=f"Train on {text}.")
        add_training_flags(train_parser)
        commands.add_config_flag(train_parser)
    ev = sub.add_parser(
        "evaluate",
        help="Score a corpus with a trained model.",
        description="Print a corpus's mean loss per token, every token predicted from all the "
        "tokens before it in its document.",
    )
    ev.add_argument("--checkpoint", required=True, help="The bundled checkpoint name or run directory to evaluate.")
    ev.add_argument(
        "--corpus",
        required=True,
        metavar="SPEC",
        help="The corpus to score: file, directory or built-in name, or heldout:CHECKPOINT (music) for "
        "the whole pieces that checkpoint held out for validation (e.g. heldout:bach).",
    )
    ev.add_argument("--split", default="", help="The split of a JSON corpus to score (train, valid or test).")
    ev.add_argument("--encoding", default="utf-8", help="Character encoding of text corpus files (default utf-8).")
    ev.add_argument("--json", action="store_true", help="Print one JSON object instead of a sentence.")
    ev.add_argument("--verbose", action="store_true", help="Show TensorFlow's log messages and warnings.")
    add_key_average_flag(ev)
    from generator.cli.music_quality import add_continuation_flags

    add_continuation_flags(ev)
    corpora = sub.add_parser(
        "corpora", help="List the built-in corpora.", description="Work with the built-in corpora."
    )
    corpora.add_argument("action", choices=["list"], help="`list` prints every built-in corpus with its size.")
    # Listed here; their flags are the benchmarks' own (generator_main hands them the arguments).
    sub.add_parser(
        "bench",
        add_help=False,
        help="Measure speed and memory beside the baselines (benchmarks/suite.py of a source checkout).",
    )
    sub.add_parser(
        "compare",
        add_help=False,
        help="Train lstm, lstm-attention and transformer side by side and measure them "
        "(benchmarks/compare_archs.py of a source checkout).",
    )
    commands.add_render_parser(sub)
    commands.add_tune_parser(sub)
    from generator.cli import music_quality

    music_quality.add_parser(sub)
    from generator.cli import studio

    studio.add_parser(sub)
    return p


BENCHMARKS = {"bench": "suite", "compare": "compare_archs"}  # commands that run a module of benchmarks/


def benchmark_main(command: str, argv: list[str]) -> None:
    """Run ``generator COMMAND ARGS`` as ``python -m benchmarks.MODULE ARGS`` of the source checkout."""
    import importlib

    root = Path(__file__).resolve().parents[2]  # the checkout, when the package is installed from one
    if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(f"benchmarks.{BENCHMARKS[command]}")
    except ModuleNotFoundError as e:
        if e.name not in ("benchmarks", f"benchmarks.{BENCHMARKS[command]}"):
            raise
        raise GeneratorError(
            f"generator {command} runs the benchmarks of a source checkout, which a plain "
            "install does not carry: install the project with pip install -e . from a clone"
        ) from None
    module.main(argv, prog=f"generator {command}")


def generator_main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in BENCHMARKS:
        return benchmark_main(argv[0], argv[1:])
    args = generator_parser().parse_args(argv)
    if args.command == "corpora":
        return corpora_list()
    from generator.cli import commands

    if args.command == "render":
        return commands.render_main(args)
    if args.command == "music-stats":  # no TensorFlow needed
        from generator.cli import music_quality

        return music_quality.main(args)
    if args.command == "studio":
        from generator.cli import studio

        return studio.main(args, quiet_tensorflow)
    corpus = config = None
    if args.command == "train":  # read before TensorFlow starts: its strategy may be multi-worker
        corpus, config = commands.train_config(args)  # --config FILE: explicit flags override its values
    strategy = getattr(args, "strategy", None) or (config.strategy if config else None)
    if getattr(args, "peer_timeout", None) is not None:
        from generator.data import limits

        limits.override("peer_timeout", args.peer_timeout)
    quiet_tensorflow(args.verbose, strategy == "multi-worker")
    if args.command == "tune":
        return commands.tune_main(args)
    from generator import api

    if args.command == "train":
        from generator.config import RunConfig

        settings = option_values(args, RunConfig)
        settings.pop("corpus", None)  # the corpus of --corpus or of --config, found by train_config
        metrics = api.train(
            corpus,
            args.output,
            modality=args.modality,
            force=args.force,
            config=args.config if config is not None else None,  # the file, which errors then name
            encoding=args.encoding,
            progress=sys.stdout.isatty(),
            **settings,
        )
        if metrics:
            print(
                f"best validation loss {metrics['val_loss_nats']:.4f} nats ({metrics['val_bits_per_token']:.3f} "
                f"bits) per token at epoch {metrics['best_epoch']}; run directory {args.output}"
            )
    elif args.command == "evaluate" and args.continuations:
        from generator.cli.music_quality import continuations_main

        continuations_main(args)
    elif args.command == "evaluate":
        from generator.cli.music_quality import check_no_continuation_flags

        check_no_continuation_flags(args)
        result = api.load(args.checkpoint).evaluate(
            args.corpus, split=args.split, encoding=args.encoding, key_average=args.key_average
        )
        if args.json:
            print(json.dumps(result))
        else:
            averaged = (
                f", averaged over -{result['key_average']}..{result['key_average']} semitones"
                if result["key_average"]
                else ""
            )
            print(
                f"{result['corpus']}: {result['nll_per_token']:.4f} nats ({result['bits_per_token']:.4f} bits) "
                f"per token over {result['tokens']:,} tokens in {result['documents']} documents{averaged}"
            )


def corpora_list() -> None:
    from generator.data.corpora import builtin_definitions, builtin_size

    for name, definition in builtin_definitions().items():
        print(
            f"{name:<12} {definition['modality']:<6} {builtin_size(definition):<18} {definition.get('description', '')}"
        )


def generate_text() -> None:
    sys.exit(run(generate_text_main))


def generate_music() -> None:
    sys.exit(run(generate_music_main))


def generator() -> None:
    sys.exit(run(generator_main))
