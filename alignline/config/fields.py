"""Typed config fields: a documented dataclass field and the validator that reads it.

Every field carries its doc (shown by `alignline config --explain`), where its
number comes from (`source`), and its bounds or allowed values. Validation turns
a bad value into an error that names the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A config value that is not allowed; the message names field, value and rule."""


def setting(default: Any, doc: str, *, source: str = "", ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A config field with its documentation, provenance and bounds."""
    meta = {"doc": doc, "source": source, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    return dataclasses.field(default=default, metadata=meta)


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def coerce(path: str, hint: Any, value: Any) -> Any:
    """Turn a TOML/CLI value into the field's type, or raise ConfigError."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None or value == "none":
            if type(None) in get_args(hint):
                return None
        return coerce(path, args[0], value)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: a list")
        args = get_args(hint)
        item = args[0] if args else str
        return tuple(coerce(f"{path}[{i}]", item, v) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{path} = {value!r} is not allowed; allowed: true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: an integer")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: an integer") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: a number") from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: a string")
        return str(value)
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: a path")
        return Path(value)
    return value


def check_bounds(path: str, meta: dict, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    rules = [("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
             ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)]
    for key, sign, ok in rules:
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            allowed = " and ".join(f"{s} {meta[k]}" for k, s, _ in rules if meta.get(k) is not None)
            raise ConfigError(f"{path} = {value!r} is not allowed; allowed: {allowed}")


def build_section(cls: type, name: str, values: dict[str, Any]) -> Any:
    """Build and validate one section dataclass from a dict of raw values."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]} is not a field of [{name}]; allowed: {', '.join(sorted(known))}")
    kwargs = {}
    for key, raw in values.items():
        path = f"{name}.{key}"
        value = coerce(path, hints[key], raw)
        check_bounds(path, known[key].metadata, value)
        kwargs[key] = value
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):  # defaults are checked too
        check_bounds(f"{name}.{f.name}", f.metadata, getattr(obj, f.name))
    post = getattr(obj, "validate", None)
    if post is not None:
        post()
    return obj


def explain(cls: type, name: str) -> list[tuple[str, str, str, str]]:
    """(field, type, default, doc + source) rows for help text."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc", "")
        if f.metadata.get("source"):
            doc += f" [{f.metadata['source']}]"
        rows.append((f"{name}.{f.name}", _describe(hints[f.name]), repr(f.default), doc))
    return rows
