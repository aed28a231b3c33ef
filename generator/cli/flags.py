"""Argument types, the parser class shared by every command (one-line errors, exit status 2), and
the flags made from settings fields (``generator.options``)."""

from __future__ import annotations

import argparse
import dataclasses

from generator import options
from generator.argtypes import fraction, int_range, positive_float, probability  # noqa: F401  (re-exported)

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_option_flags(p: argparse.ArgumentParser, cls, names=None, **help_overrides: str) -> list[str]:
    """Add the flag of every field of the settings dataclass ``cls`` that has one (of ``names`` only,
    when given), made from its ``option`` definition; returns the field names added.

    Every flag defaults to None (not given), so that presets and config files fill in the rest;
    booleans get ``--name/--no-name``. ``help_overrides`` replace a field's help for this parser.
    """
    added = []
    for name, f in options.fields(cls).items():
        flag = options.flag_name(f)
        if flag is None or (names is not None and name not in names):
            continue
        spec = options.spec(f)
        kwargs = dict(dest=name, default=None, help=help_overrides.get(name) or options.help_text(f))
        default = options.default_of(f)
        if (default is None and spec.kind is None) or isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = spec.parse or spec.kind or type(default)
            kwargs["choices"] = spec.choice_list()
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
        p.add_argument(flag, *spec.aliases, **kwargs)
        added.append(name)
    return added


def option_values(args: argparse.Namespace, cls, names=None) -> dict:
    """The settings of ``cls`` given on the command line (flags left out are not in the dict)."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if options.flag_name(f) and (names is None or f.name in names) and getattr(args, f.name, None) is not None
    }


def flag_of(cls, name: str) -> str | None:
    """The flag that sets field ``name`` of ``cls`` (None when it has none)."""
    f = options.fields(cls).get(name)
    return None if f is None else options.flag_name(f)
