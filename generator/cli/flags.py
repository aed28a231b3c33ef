"""Argument types and the parser class shared by every command: one-line errors, exit status 2."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# -- argument types (defined in generator.argtypes, which the benchmarks use too) --------------------
from generator.argtypes import fraction, int_range, positive_float, probability  # noqa: E402,F401
