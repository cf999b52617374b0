"""Validated config sections: dataclasses built from plain dicts with messages a user can act on.

Every capability declares its parameters as a dataclass and builds it with `build(cls, mapping,
where)`. Unknown keys, wrong types and values outside `Literal[...]` choices are refused with the
key's full path, what is allowed and, for typos, the nearest valid key. A dataclass may define
`validate(self)` for checks that involve several fields; it raises `ConfigError` via `fail`.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError


def fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {message}")


def read_mapping(source, what: str, top_level_keys: list[str],
                 missing_hint: str = "") -> tuple[dict, Path | None]:
    """A YAML file's top-level mapping (or a copy of a dict given directly) and its path."""
    if isinstance(source, dict):
        return copy.deepcopy(source), None
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist{missing_hint}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must contain a mapping of {', '.join(top_level_keys)}")
    return raw, path


def build(cls, mapping: Any, where: str):
    """Return `cls(**mapping)` after checking keys, types and `Literal` choices."""
    if isinstance(mapping, cls):
        return mapping
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        fail(where, f"expected a mapping of {_allowed_keys(cls)}, got {type(mapping).__name__} "
                    f"{mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(mapping, list(fields), where)
    hints = get_type_hints(cls)
    values = {name: coerce(hints[name], value, f"{where}.{name}")
              for name, value in mapping.items()}
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        fail(where, f"missing required key '{missing[0]}'")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as err:
            if str(err).startswith(where):
                raise
            raise ConfigError(f"{where}: {err}") from None
    return obj


def check_keys(mapping: dict, allowed: list[str], where: str) -> None:
    """Refuse the first unknown key, naming the nearest allowed one for typos."""
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            fail(where, f"unknown key '{key}'{did_you_mean}; allowed keys: {', '.join(allowed)}")


def to_dict(obj) -> Any:
    """A section as plain YAML/JSON-ready values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def describe(cls) -> list[tuple[str, str, Any]]:
    """(name, type, default) for each key, for docs and `--help` output."""
    hints = get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = to_dict(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default))
    return rows


def _allowed_keys(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(tp, value, where: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            fail(where, f"{value!r} is not allowed{did_you_mean}; choose one of "
                        f"{', '.join(repr(c) for c in choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail(where, f"a value is required ({_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        fail(where, f"expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail(where, f"expected a list ({_type_name(tp)}), got {value!r}")
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in get_args(tp) and len(args) != len(value):
            fail(where, f"expected a list of {len(args)} values, got {len(value)}: {value!r}")
        items = [coerce(args[min(i, len(args) - 1)] if args else Any, v, f"{where}[{i}]")
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            fail(where, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail(where, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            fail(where, f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:  # YAML reads 1e-5 as a string; accept the obvious meaning
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(where, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail(where, f"expected a string, got {value!r}")
        return value
    return value
