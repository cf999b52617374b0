"""Validated config sections: dataclasses built from plain dicts with messages a user can act on.

Every capability declares its parameters as a dataclass and builds it with `build(cls, mapping,
where)`. Unknown keys, wrong types and values outside `Literal[...]` choices are refused with the
key's full path, what is allowed and, for typos, the nearest valid key. A dataclass may define
`validate(self)` for checks that involve several fields; it raises `ConfigError` via `fail`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import numbers
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError


# Larger integers overflow TensorFlow's int32 sizes and indices, larger magnitudes float32.
INT_MAX = 2**31 - 1
FLOAT_MAX = 3.4028234663852886e38
SEED_MAX = 2**32 - 1  # numpy's and TensorFlow's seeds are unsigned 32-bit


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a field allows: `low` and `high` (None: unbounded up to the int32/float32
    limits), with `bounds` saying which ends are included: "[]", "[)", "(]" or "()", and `why`
    the bounds are there, for the message."""

    low: float | None = None
    high: float | None = None
    bounds: str = "[]"
    why: str = ""

    def contains(self, kind: type, value) -> bool:
        """Inside the bounds, and inside int32/float32 where a bound is not given."""
        limit = INT_MAX if kind is int else FLOAT_MAX
        low = -limit - (kind is int) if self.low is None else self.low
        high = limit if self.high is None else self.high
        return (value >= low if self.bounds[0] == "[" or self.low is None else value > low) \
            and (value <= high if self.bounds[1] == "]" or self.high is None else value < high)

    def describe(self, kind: type, value=None) -> str:
        """'an integer >= 1', 'a finite number in (0, 1)'; the int32/float32 limit is named
        when `value` is beyond it."""
        noun = "an integer" if kind is int else "a finite number"
        limit = INT_MAX if kind is int else FLOAT_MAX
        low, high = self.low, self.high
        if value is not None and high is None and value > limit:
            high = limit
        if value is not None and low is None and value < -limit:
            low = -limit - (kind is int)
        if low is not None and high is not None:
            text = f"{noun} in {self.bounds[0]}{_num(low)}, {_num(high)}{self.bounds[1]}"
        elif low is not None:
            text = f"{noun} {'>=' if self.bounds[0] == '[' else '>'} {_num(low)}"
        elif high is not None:
            text = f"{noun} {'<=' if self.bounds[1] == ']' else '<'} {_num(high)}"
        else:
            text = noun
        return f"{text} ({self.why})" if self.why else text


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, None, "(]")]
NonNegativeFloat = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1)]
OpenProbability = Annotated[float, Range(0, 1, "()")]  # neither 0 nor 1, like delta
Seed = Annotated[int, Range(0, SEED_MAX)]


class _OutOfRange(Exception):
    def __init__(self, requirement: str, value):
        super().__init__(requirement)
        self.requirement, self.value = requirement, value


def _number(kind: type, bounds: Range, value):
    """`value` as a finite int or float inside `bounds`; raises `_OutOfRange` otherwise."""
    if isinstance(value, str):
        try:  # YAML reads 1e-5 as a string; accept the obvious meaning
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _OutOfRange(bounds.describe(kind), value)
    if not math.isfinite(value) or (kind is int and value != int(value)):
        raise _OutOfRange(bounds.describe(kind), value)
    if not bounds.contains(kind, value):
        raise _OutOfRange(bounds.describe(kind, value), value)
    return int(value) if kind is int else float(value)


def arg_type(tp):
    """An argparse `type=` for a number type such as `PositiveInt`: '--n 0' is refused with
    'argument --n: must be an integer >= 1, got 0'."""
    kind, bounds = _numeric(tp)

    def parse(text: str):
        try:
            return _number(kind, bounds, text)
        except _OutOfRange as err:
            raise argparse.ArgumentTypeError(f"must be {err.requirement}, got {text}") from None

    parse.__name__ = "integer" if kind is int else "number"
    return parse


def _numeric(tp) -> tuple[type, Range]:
    if get_origin(tp) is Annotated:
        kind, *extras = get_args(tp)
        return kind, next((e for e in extras if isinstance(e, Range)), Range())
    return tp, Range()


def fail(where: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {message}")


def read_mapping(source, what: str, top_level_keys: list[str],
                 missing_hint: str = "") -> tuple[dict, Path | None]:
    """A YAML file's top-level mapping (or a copy of a dict given directly) and its path."""
    if isinstance(source, dict):
        return copy.deepcopy(source), None
    path = Path(source)
    if path.is_dir():
        raise ConfigError(f"{what} file {path} is a folder; give the YAML file in it")
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist{missing_hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"{what} file {path} cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not a text file (not UTF-8); give the YAML "
                          f"file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must contain a mapping of {', '.join(top_level_keys)}")
    return raw, path


def _yaml_problem(err: yaml.YAMLError) -> str:
    """'line 3, column 1: expected ...' from PyYAML's multi-line message."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = getattr(err, "context", None)
    return f"{where}{problem}" + (f" ({context})" if context else "")


def build(cls, mapping: Any, where: str):
    """Return `cls(**mapping)` after checking keys, types and `Literal` choices."""
    if isinstance(mapping, cls):  # built in Python: checked like a mapping from a file
        mapping = {f.name: getattr(mapping, f.name) for f in dataclasses.fields(cls) if f.init}
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        fail(where, f"expected a mapping of {_allowed_keys(cls)}, got {type(mapping).__name__} "
                    f"{mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(mapping, list(fields), where)
    hints = get_type_hints(cls, include_extras=True)
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
    hints = get_type_hints(cls, include_extras=True)
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
    if origin is Annotated or tp in (int, float):
        kind, bounds = _numeric(tp)
        return bounds.describe(kind)
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
    """`value` as type `tp` (with its `Range`, if annotated), or a `ConfigError` naming `where`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated or tp in (int, float):
        kind, bounds = _numeric(tp)
        try:
            return _number(kind, bounds, value)
        except _OutOfRange as err:
            raise ConfigError(f"{where} must be {err.requirement}, got {err.value!r}") from None
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
    if tp is str:
        if not isinstance(value, str):
            fail(where, f"expected a string, got {value!r}")
        return value
    return value
