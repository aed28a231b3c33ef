"""``generator studio``: the local web page (generator.studio), started and stopped from here."""

from __future__ import annotations

from generator.cli.flags import int_range


def add_parser(sub) -> None:
    p = sub.add_parser(
        "studio",
        help="Open the studio, a local web page for continuing songs and sampling text.",
        description="Serve the studio page on this machine: continue a MIDI file or an example, hear "
        "and download each take, harmonize a melody, sample text. It needs the studio "
        'extra (pip install ".[studio]"). Ctrl-C stops it.',
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="The address to listen on. The default, 127.0.0.1, lets only this machine reach the page; "
        "any other address (0.0.0.0: every network interface) lets other machines use it too, "
        "and the studio warns when it starts.",
    )
    p.add_argument(
        "--port",
        type=int_range(0, 65535),
        default=8765,
        help="The TCP port to listen on (default 8765); 0 takes any free port and prints it.",
    )
    p.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="The folder that keeps the uploaded seeds and the takes, created when missing; the studio "
        "reads and writes no other files for the page. By default a temporary folder, removed "
        "when the studio stops.",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="DIR",
        help="Also offer this run directory (a model you trained) in the page, beside the bundled "
        "models; give it again for more.",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Show TensorFlow's log messages, each request the server answers and the traceback of any internal error.",
    )


def main(args, quiet_tensorflow) -> None:
    from generator.errors import GeneratorError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise GeneratorError(
            f"generator studio needs {e.name}: install the studio extra with "
            'pip install ".[studio]" from a clone of the project'
        ) from None
    if args.workdir is not None:
        from pathlib import Path

        folder = Path(args.workdir).expanduser()
        if folder.exists() and not folder.is_dir():
            raise GeneratorError(f"--workdir {args.workdir} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
    from generator.studio import listen, serve

    if args.port:
        listen(args.host, args.port).close()  # a bad address or a busy port fails now, not after TensorFlow starts
    quiet_tensorflow(args.verbose)

    serve(args.host, args.port, args.workdir, args.checkpoint, verbose=args.verbose)
