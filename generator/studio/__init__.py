"""The studio: a local web page for continuing songs, harmonizing melodies and sampling text.

``generator studio`` starts it (``pip install ".[studio]"`` brings FastAPI and uvicorn). The page,
its script and its style are files of this package; nothing is fetched from the internet and
nothing is sent anywhere but to the server the page came from, which listens on 127.0.0.1
unless told otherwise. See docs/studio.md.

    >>> from generator.studio import serve
    >>> serve("127.0.0.1", 8765)              # blocks until Ctrl-C
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

from generator.errors import ArgumentError, GeneratorError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8765


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), or a GeneratorError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise GeneratorError(f"cannot listen on {host}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ArgumentError.sentence(
            f"cannot listen on {host}:{port}: {e.strerror}; choose another port", "port"
        ) from None
    sock.listen(64)
    return sock


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def exposure_warning(host: str, port: int) -> str | None:
    """What the studio prints when ``host`` lets other machines in (None for the loopback address)."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: the studio listens on {host}, not only on this machine: anyone who can reach port {port} "
        f"can use it, with no password, and make it write files. Use --host 127.0.0.1 to keep it local."
    )


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def make_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT, workdir=None, extra_runs=(), verbose: bool = False):
    """``(uvicorn server, socket, studio)`` ready to ``server.run(sockets=[socket])``."""
    try:
        import uvicorn

        from generator.studio.app import create_app
    except ImportError as e:
        raise GeneratorError(
            f'the studio needs {e.name}: install it with pip install ".[studio]" from a clone of the project'
        ) from None
    from generator.studio.session import Studio

    sock = listen(host, port)
    log = (lambda message: print(message, file=sys.stderr)) if verbose else None
    studio = Studio(Path(workdir), extra_runs, log=log)
    hosts = {"127.0.0.1", "localhost", "::1", host} if is_loopback(host) else None
    config = uvicorn.Config(
        create_app(studio, allowed_hosts=hosts),
        log_level="info" if verbose else "warning",
        access_log=verbose,
        lifespan="off",
    )
    return uvicorn.Server(config), sock, studio


def serve(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, workdir=None, extra_runs=(), verbose: bool = False, out=None
) -> None:
    """Run the studio until Ctrl-C. ``workdir`` keeps the seeds and takes (default: a temporary
    folder, removed when the studio stops)."""
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="generator-studio-") as scratch:
        server, sock, studio = make_server(host, port, workdir or scratch, extra_runs, verbose)
        warning = exposure_warning(host, sock.getsockname()[1])
        if warning:
            print(warning, file=sys.stderr)
        print(f"generator studio: open {url_of(sock, host)} in a browser (Ctrl-C stops it)", file=out)
        if workdir:
            print(f"seeds and takes are kept in {studio.workdir}", file=out)
        out.flush()
        try:
            server.run(sockets=[sock])  # returns when Ctrl-C (SIGINT) or SIGTERM has shut it down
        except KeyboardInterrupt:  # some uvicorn versions raise Ctrl-C again once shut down
            pass
        finally:
            print("generator studio: stopped", file=out)
            studio.worker.stop()
            sock.close()
