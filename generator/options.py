"""One definition per option: a dataclass field carrying its default, help, type and choices.

A settings dataclass (``RunConfig`` for training) declares each setting once with ``option``::

    dropout: float = option(0.2, "Dropout rate on each LSTM layer's output.", parse=fraction)

and everything else is made from that field: the command-line flag (``--dropout``, made by
``generator.cli.flags.add_option_flags``), the key in a config file (``config.json``), the
keyword argument of the Python API (``generator.train(dropout=0.3)``) and the check of a value
that arrives by either of those (``check``). ``choices`` may be a callable, so that they come
from the registries (architectures, tokenizers, strategies, ...) when a parser is built.

No TensorFlow here.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from generator.errors import ArgumentError


@dataclass(frozen=True)
class Spec:
    """What a field says about itself beyond its name and default."""

    help: str  # a full sentence or more; "{default}" is replaced by the field's default
    parse: Callable[[str], Any] | None = None  # text -> value, an argparse type (ArgumentTypeError on bad input)
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None  # or a callable that asks a registry
    metavar: str | None = None
    flag: str | None = None  # the flag, when not --name-with-dashes
    aliases: tuple[str, ...] = ()  # further flags that set it (names kept working)
    cli: bool = True  # False: no flag (set by the program, e.g. vocab_size from the tokenizer)
    kind: type | None = None  # the type of a value whose default is None (None: true, false or None)

    def choice_list(self) -> tuple[str, ...] | None:
        choices = self.choices() if callable(self.choices) else self.choices
        return None if choices is None else tuple(choices)


def option(default: Any, help: str, **spec) -> Any:
    """A dataclass field with its ``Spec`` (see the module docstring); a dict default is copied per object."""
    metadata = {"option": Spec(help=help, **spec)}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def spec(f: dataclasses.Field) -> Spec:
    """The ``Spec`` of a field (every field of a settings class must be made with ``option``)."""
    if "option" not in f.metadata:
        raise TypeError(f"field {f.name} was not declared with options.option()")
    return f.metadata["option"]


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def fields(cls) -> dict[str, dataclasses.Field]:
    """Name -> field of a settings dataclass, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls)}


def help_text(f: dataclasses.Field) -> str:
    """The field's help with ``{default}`` filled in."""
    default = default_of(f)
    return spec(f).help.replace("{default}", f"{default:g}" if isinstance(default, float) else str(default))


def flag_name(f: dataclasses.Field) -> str | None:
    """The command-line flag of a field (None when it has none)."""
    s = spec(f)
    if not s.cli:
        return None
    return s.flag or "--" + f.name.replace("_", "-")


def _kinds(default: Any, kind: type | None = None) -> tuple[type, ...]:
    if default is None:  # "decide for me", or a value of ``kind`` (without one: a tri-state true/false)
        return (type(None), *_kinds(kind(), None)) if kind is not None else (bool, type(None))
    if isinstance(default, float):
        return (int, float, np.integer, np.floating)
    if isinstance(default, int) and not isinstance(default, bool):
        return (int, np.integer)
    return (type(default),)


_WHAT = {
    type(None): "true, false or null (None)",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    dict: "an object (a dict)",
}


def check_value(cls, name: str, value: Any) -> Any:
    """``value`` for field ``name`` of ``cls``, checked against its type, choices and parse; an
    ArgumentError (a ValueError) naming ``name`` when it does not fit."""
    f = fields(cls)[name]
    s, default = spec(f), default_of(f)
    kinds = _kinds(default, s.kind)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        kind = s.kind if default is None and s.kind is not None else type(default)
        what = _WHAT.get(kind, kind.__name__) + (" or None" if default is None and s.kind is not None else "")
        raise ArgumentError(name, f"must be {what}, not {value!r}")
    if value == default:  # the default always fits (0 may mean "off" where a flag asks for at least 1)
        return value
    choices = s.choice_list()
    if choices is not None and value not in choices:
        raise ArgumentError(name, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
    if s.parse is not None and not isinstance(value, (bool, dict)):
        try:
            s.parse(str(value))
        except argparse.ArgumentTypeError as e:
            raise ArgumentError(name, str(e)) from None
    return value


def check(obj) -> None:
    """Check every field of a settings object (``check_value``); the first misfit is a ValueError."""
    for name in fields(type(obj)):
        check_value(type(obj), name, getattr(obj, name))


def check_names(cls, names) -> None:
    """An ArgumentError (a ValueError) naming the first unknown one among ``names``, listing the fields."""
    unknown = sorted(set(names) - set(fields(cls)))
    if unknown:
        raise ArgumentError(unknown[0], f"is not a {cls.__name__} setting; the settings are {', '.join(fields(cls))}")
