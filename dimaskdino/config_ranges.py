"""The valid range or set of every config field, stated once next to its definition, and
the one routine that checks a config object against them.

A field states its range with :func:`ranged`::

    max_iter: int = ranged(88500, at_least(1))
    steps: tuple[int, ...] = ranged((81125,), each(between(1, "max_iter"), increasing=True))

A bound may name a sibling field (``"max_iter"``), which is checked first when it comes
first in the class. Every float, wherever it sits, must be finite; ``None`` (where a field's
type allows it: "off") is always valid. Config classes call :func:`check_ranges` first thing
in ``__post_init__``, so no config (a preset, ``apply_overrides``, an official YAML, a
checkpoint's stored config, a ``dataclasses.replace``) is built with a value out of range.
The error is one line naming the key, the value and the range: :class:`RangeError`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config that cannot be read, names an unsupported model, or holds a value out of
    its range; the message is one line."""


# config class -> the dotted key of its place in an experiment config (set by
# :func:`register_keys`, so that errors raised while building a part name the full key)
PLACES: dict[type, str] = {}


class RangeError(ConfigError):
    """A field's value outside its range: ``solver.lr=-0.1: must be > 0``."""

    def __init__(self, owner: type, name: str, value: Any, valid: str) -> None:
        place = PLACES.get(owner)
        self.key = f"{place}.{name}" if place else name
        super().__init__(f"{self.key}={show(value)}: must be {valid}")


def show(value: Any) -> str:
    """A value as a user would type it in an override (``[64, 64]``, ``'RGB'``, ``nan``)."""
    if isinstance(value, tuple | list):
        return f"[{', '.join(show(v) for v in value)}]"
    return repr(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Interval:
    """``low <= x <= high`` (either open with ``low_open`` / ``high_open``, either absent),
    optionally a multiple of ``multiple``; a bound given as a string is a sibling field."""

    low: float | str | None = None
    high: float | str | None = None
    low_open: bool = False
    high_open: bool = False
    multiple: int | None = None

    def accepts(self, value: Any, owner: Any) -> bool:
        if not _number(value):
            return False
        low, high = (getattr(owner, b) if isinstance(b, str) else b
                     for b in (self.low, self.high))
        if low is not None and (value <= low if self.low_open else value < low):
            return False
        if high is not None and (value >= high if self.high_open else value > high):
            return False
        return self.multiple is None or value % self.multiple == 0

    def siblings(self) -> list[str]:
        return [b for b in (self.low, self.high) if isinstance(b, str)]

    def __str__(self) -> str:
        multiple = f"a multiple of {self.multiple}, " if self.multiple else ""
        if self.low is not None and self.high is not None:
            brackets = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{multiple}in {brackets[0]}{self.low}, {self.high}{brackets[1]}"
        if self.low is not None:
            return f"{multiple}{'>' if self.low_open else '>='} {self.low}"
        return f"{multiple}{'<' if self.high_open else '<='} {self.high}"


@dataclass(frozen=True)
class OneOf:
    """One of ``choices`` (a tuple, or a function returning one, for choices defined after
    the field)."""

    choices: tuple | Callable[[], tuple]

    def options(self) -> tuple:
        return self.choices() if callable(self.choices) else self.choices

    def accepts(self, value: Any, owner: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.options())

    def __str__(self) -> str:
        return "one of " + ", ".join(show(c) for c in self.options())


@dataclass(frozen=True)
class Each:
    """A list whose every item is in ``item``: at least ``min_len`` items (exactly, with
    ``exact``), ``increasing`` (non-decreasing) if asked."""

    item: Interval | OneOf
    min_len: int = 0
    increasing: bool = False
    exact: bool = False

    def accepts(self, value: Any, owner: Any) -> bool:
        return (isinstance(value, tuple | list) and len(value) >= self.min_len
                and not (self.exact and len(value) != self.min_len)
                and all(self.item.accepts(v, owner) for v in value)
                and not (self.increasing and any(a > b for a, b in itertools.pairwise(value))))

    def siblings(self) -> list[str]:
        return self.item.siblings() if isinstance(self.item, Interval) else []

    def __str__(self) -> str:
        size = f"a list of {self.min_len}" if self.exact else \
            "a non-empty list" if self.min_len == 1 else "a list"
        order = ", increasing" if self.increasing else ""
        return f"{size}, each {self.item}{order}"


@dataclass(frozen=True)
class Described:
    """Any value ``test`` accepts, described as ``text`` (a path, a dataset spec, a value
    derived from other fields)."""

    text: str
    test: Callable[[Any], bool] = lambda value: True

    def accepts(self, value: Any, owner: Any) -> bool:
        return self.test(value)

    def __str__(self) -> str:
        return self.text


Valid = Interval | OneOf | Each | Described


def at_least(low: float | str, multiple: int | None = None) -> Interval:
    return Interval(low=low, multiple=multiple)


def above(low: float | str) -> Interval:
    return Interval(low=low, low_open=True)


def between(low: float | str, high: float | str, high_open: bool = False) -> Interval:
    return Interval(low=low, high=high, high_open=high_open)


def one_of(*choices) -> OneOf:
    return OneOf(tuple(choices))


def each(item: Interval | OneOf, min_len: int = 0, increasing: bool = False,
         exact: bool = False) -> Each:
    return Each(item, min_len, increasing, exact)


PROBABILITY = between(0, 1)
DROP_RATE = between(0, 1, high_open=True)  # a dropout probability: 1 would drop everything
NON_EMPTY_TEXT = Described("a non-empty string", lambda value: isinstance(value, str)
                           and bool(value.strip()))


def ranged(default: Any = dataclasses.MISSING, valid: Valid | None = None, *,
           note: str = "") -> Any:
    """A dataclass field with ``default`` and its range; ``note`` tells (in the README's
    table) what the field must agree with among the others, which its class checks."""
    return field(default=default, metadata={"valid": valid, "note": note})


def valid_range(spec: dataclasses.Field) -> Valid | None:
    """The range a field states, or None."""
    return spec.metadata.get("valid")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple | list):
        return all(map(_finite, value))
    return True


def check_ranges(config: Any) -> None:
    """RangeError for the first field of the dataclass ``config`` (its own fields, not its
    parts', which checked themselves) outside its range or holding a non-finite float."""
    owner = type(config)
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if value is None or dataclasses.is_dataclass(value):
            continue
        valid = valid_range(spec)
        if not _finite(value):
            raise RangeError(owner, spec.name, value, str(valid or "finite"))
        if valid is not None and not valid.accepts(value, config):
            known = [f"{name}={show(getattr(config, name))}"
                     for name in getattr(valid, "siblings", list)()]
            note = spec.metadata.get("note")
            raise RangeError(owner, spec.name, value, f"{valid}"
                             + (f" ({', '.join(known)})" if known else "")
                             + (f"; {note}" if note else ""))


def _members(hint) -> tuple:
    """The types a hint allows: ``A | B | None`` -> ``(A, B, NoneType)``."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def register_keys(root: type, prefix: str = "") -> None:
    """Record in :data:`PLACES` where each config class sits under ``root`` (a union of
    classes puts each of them at the field)."""
    for name, hint in typing.get_type_hints(root).items():
        for member in filter(dataclasses.is_dataclass, _members(hint)):
            PLACES[member] = f"{prefix}{name}"
            register_keys(member, f"{prefix}{name}.")


def range_rows(root: type, prefix: str = "") -> list[tuple[str, str]]:
    """(key, valid range) of every field under ``root``, depth first, as the README's
    table shows them; a field of one member of a union of classes is marked with the
    class's name."""
    rows, types_of = [], typing.get_type_hints(root)
    for spec in dataclasses.fields(root):
        members = _members(types_of[spec.name])
        classes = [m for m in members if dataclasses.is_dataclass(m)]
        for cls in classes:
            mark = f" ({cls.__name__.removesuffix('Config')})" if len(classes) > 1 else ""
            rows += [(f"{key}{mark}", text)
                     for key, text in range_rows(cls, f"{prefix}{spec.name}.")]
        if classes:
            continue
        valid = valid_range(spec)
        text = str(valid) if valid is not None else "true or false"
        text += " or null" if type(None) in members else ""
        note = spec.metadata.get("note")
        rows.append((f"{prefix}{spec.name}", f"{text}; {note}" if note else text))
    return rows
