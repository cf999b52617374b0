"""Perturbation budgets: norms, epsilons written as numbers or fractions ("8/255"), checks.

Configs name norms 'linf' and 'l2'. cleverhans also takes L1 for FGM, but refuses it for PGD
(its L1 step changes one pixel at a time, so an L1 "PGD" would be weak and overstate
robustness); secureml supports L-inf and L2 everywhere and refuses L1 with that reason.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .. import schema
from ..errors import ConfigError

NORMS = {"linf": np.inf, "l2": 2}
_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "infinity": "linf",
            "l2": "l2", "2": "l2"}


def default_relative_step(steps: int) -> float:
    """The default attack step as a fraction of epsilon: Madry et al.'s 2.5 / steps, so the steps
    can cross the ball and back, at most 1 (cleverhans requires step <= epsilon, so one or two
    steps take epsilon each)."""
    return min(1.0, 2.5 / max(steps, 1))


def parse_norm(value, where: str) -> str:
    """'linf' or 'l2' from 'linf', 'inf', .inf, 2, 'l2'; a clear error for L1 and the rest."""
    key = "linf" if isinstance(value, float) and math.isinf(value) else str(value).strip().lower()
    if key in ("1", "l1"):
        raise ConfigError(
            f"{where}: L1 attacks are not supported: cleverhans 4.0 refuses norm=1 for PGD (its "
            "L1 gradient step changes one pixel at a time, so the attack would be weak and the "
            "robust accuracy it reports overstated). Use norm 'linf' or 'l2'")
    if key not in _ALIASES:
        raise ConfigError(f"{where}: norm {value!r} is not supported; use 'linf' or 'l2'")
    return _ALIASES[key]


def parse_epsilon(value, where: str) -> float:
    """A non-negative budget from a number or a fraction string such as '8/255'."""
    if isinstance(value, str):
        try:
            value = float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{where} must be a finite number >= 0 or a fraction like "
                              f"'8/255', got {value!r}") from None
    return schema.coerce(schema.NonNegativeFloat, value, where)


def check_epsilon(epsilon: float, norm: str, value_range: tuple[float, float],
                  input_size: int | None, where: str) -> None:
    """Refuse budgets outside the data's value range: they usually mean a unit mistake
    (8 instead of 8/255) and would make every attack trivially succeed."""
    width = value_range[1] - value_range[0]
    if norm == "linf" and epsilon > width:
        hint = f" (did you mean {epsilon:g}/255 = {epsilon / 255:.4f}?)" if epsilon >= 1 else ""
        raise ConfigError(
            f"{where}: L-inf epsilon {epsilon:g} is outside the data's value range "
            f"[{value_range[0]:g}, {value_range[1]:g}]{hint}; use a value up to {width:g}")
    if norm == "l2" and input_size is not None and epsilon > width * math.sqrt(input_size):
        raise ConfigError(
            f"{where}: L2 epsilon {epsilon:g} exceeds the diameter of the data's value range "
            f"({width * math.sqrt(input_size):.4g} for {input_size} input values in "
            f"[{value_range[0]:g}, {value_range[1]:g}]); every input would be reachable")


def epsilon_label(epsilon: float, norm: str) -> str:
    """'8/255' for L-inf budgets on the 8-bit pixel grid that have no short decimal form
    (0.2 stays '0.2'), otherwise the number."""
    decimal = f"{epsilon:g}"
    steps = epsilon * 255
    if norm == "linf" and len(decimal) > 5 and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return decimal


NORM_LABELS = {"linf": "L-inf", "l2": "L2"}
