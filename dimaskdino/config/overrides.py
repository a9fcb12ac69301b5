"""Configs as plain data and back: :func:`config_to_dict` (YAML / JSON-ready),
:func:`config_from_dict` (every value checked against, and converted to, its field's type)
and ``key=value`` overrides (:func:`apply_overrides`), for any dataclass config.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import yaml

from dimaskdino.config_ranges import ConfigError


def config_to_dict(config) -> dict:
    """A dataclass config -> plain nested dicts and lists (YAML/JSON-ready)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(config))


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value, hint, path: str):
    """``value`` checked against (and converted to) the type ``hint``, or ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), path)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return config_from_dict(hint, value, path)
    if origin in (tuple, dict):
        return _coerce_container(value, origin, typing.get_args(hint), path)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{path}: expected {_type_name(hint)}, got {value!r}")


def _coerce_union(value, args: tuple, path: str):
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    classes = [a for a in options if dataclasses.is_dataclass(a)]
    if isinstance(value, dict) and classes:
        # a union of dataclasses (the backbones): the one whose fields fit the keys best,
        # so that errors are reported against it
        best = min(classes, key=lambda a: len(set(value) - {f.name for f in
                                                             dataclasses.fields(a)}))
        return _coerce(value, best, path)
    for arg in options[:-1]:
        try:
            return _coerce(value, arg, path)
        except ConfigError:
            continue
    return _coerce(value, options[-1], path)


def _coerce_container(value, origin, args: tuple, path: str):
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {_coerce(k, args[0], path): _coerce(v, args[1], f"{path}.{k}")
                for k, v in value.items()}
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
    return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def config_from_dict(cls, data: dict, path: str = ""):
    """Build the dataclass ``cls`` from nested dicts (as :func:`config_to_dict` writes);
    unknown keys and wrongly typed values raise ConfigError naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        key = f"{path}.{sorted(unknown)[0]}".lstrip(".")
        raise ConfigError(f"unknown config key {key!r}")
    kwargs = {name: _coerce(value, hints[name], f"{path}.{name}".lstrip("."))
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or cls.__name__}: {exc}") from None


def apply_overrides(config, overrides: list[str]):
    """``["solver.max_iter=100", "model.predictor.dec_layers=6", ...]`` applied in order to
    a dataclass config (an :class:`ExperimentConfig`, or any other: the pretraining's).

    Values are read as YAML (``6``, ``1e-4``, ``true``, ``[512, 512]``, ``null``) and checked
    against the key's type; a key naming no config field is an error.
    """
    data = config_to_dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: cannot read the value {text!r}") from None
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r}")
        node[parts[-1]] = value
    return config_from_dict(type(config), data)


