"""Strict loading of YAML mappings into frozen dataclasses.

An unknown key is an error naming the file, the key path and the closest
known key; a value of the wrong type is an error naming the expected type.
Field validation itself lives in each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from costsched.errors import ConfigError

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this (1 MiB) is refused before it is parsed."""


def read_config_text(path: str | Path) -> str:
    """The text of a config file: it must exist, be a file of at most
    :data:`MAX_CONFIG_BYTES` and be UTF-8 (a :class:`ConfigError` says which is not)."""
    path = Path(path)
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if not is_file:
        what = "a folder, not a config file" if path.is_dir() else "no such config file"
        raise ConfigError(f"{path}: {what}; check the path")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is too large for a config "
                          f"file (at most {MAX_CONFIG_BYTES:,}); check the path")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping."""
    return parse_yaml_mapping(read_config_text(path), str(path))


def parse_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse YAML text whose top level must be a mapping; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where}; fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    return data


def closest_hint(key: object, known: typing.Iterable[str], noun: str = "values") -> str:
    """``"; did you mean `x`?"`` for the closest of ``known``, else ``"; known <noun>: ..."``."""
    known = [str(k) for k in known]
    match = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
    return f"; did you mean `{match[0]}`?" if match else f"; known {noun}: {', '.join(known)}"


def close_match_hint(key: object, known: typing.Iterable[str]) -> str:
    """``"; did you mean `x`?"`` for the closest of ``known``, else nothing."""
    match = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.5)
    return f"; did you mean `{match[0]}`?" if match else ""


def build(cls: type[T], data: Any, source: str, key_path: str = "") -> T:
    """Build dataclass ``cls`` from mapping ``data``; ``source`` names the file."""
    where = f"{source}: {key_path or '<top>'}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub_path = f"{key_path}.{key}" if key_path else str(key)
        if key not in fields:
            raise ConfigError(f"{source}: unknown key `{sub_path}`"
                              f"{closest_hint(key, fields, 'keys')}")
        kwargs[key] = _coerce(hints[key], value, source, sub_path)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        prefix = f"{key_path}." if key_path else ""
        raise ConfigError(f"{source}: missing required key `{prefix}{missing[0]}`")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _coerce(tp: Any, value: Any, source: str, key_path: str) -> Any:
    where = f"{source}: `{key_path}`"
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, source, key_path)
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, source, key_path)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{where} is {value!r}; choose one of {', '.join(map(str, choices))}"
                f"{close_match_hint(value, choices) if isinstance(value, str) else ''}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item_tp, *_rest) = get_args(tp)
        return tuple(_coerce(item_tp, v, source, f"{key_path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp)
        return {
            _coerce(key_tp, k, source, key_path): _coerce(val_tp, v, source, f"{key_path}.{k}")
            for k, v in value.items()
        }
    return _coerce_scalar(tp, value, where)


def _coerce_scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover - schema bug
