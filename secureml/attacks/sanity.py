"""Checks that a robustness evaluation was not fooled (Carlini et al. 2019, Athalye et al. 2018).

A defence that masks gradients looks robust to gradient attacks without being robust. The
checks compare measurements that must relate in known ways whatever the model; a violation
does not prove masking, but the robust accuracy next to it must not be trusted without
investigation. Each check returns {name, passed (True/False, None if not applicable),
detail}. Comparisons allow `tolerance` plus two examples' worth (2 / n on n examples) for the
randomness of the attacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .budget import epsilon_label


@dataclass
class Measurement:
    """Per-example outcome of one attack at one budget on (part of) the evaluated examples."""

    attack: str                # config name: fgsm, pgd, ..., token_swap
    label: str                 # display name: "PGD-20", "embedding FGM"
    norm: str | None           # linf, l2 (embedding attacks: l2 on standardized embeddings)
    epsilon: float             # budget (token_swap: tokens)
    indices: np.ndarray        # which evaluated examples it ran on
    correct: np.ndarray        # per example: still classified correctly
    role: str = "main"         # "main" (requested) or "sanity" (extra run for a check)
    settings: dict = field(default_factory=dict)
    max_perturbation: float | None = None  # largest perturbation norm observed
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if len(self.correct) else float("nan")

    @property
    def budget_label(self) -> str:
        if self.attack == "token_swap":
            return f"k={int(self.epsilon)}"
        return epsilon_label(self.epsilon, self.norm or "l2")

    def on(self, indices: np.ndarray) -> np.ndarray:
        """Per-example correctness restricted to `indices` (a subset of self.indices)."""
        position = {int(i): p for p, i in enumerate(self.indices)}
        return self.correct[[position[int(i)] for i in indices]]


def _result(name: str, passed: bool | None, detail: str) -> dict:
    return {"name": name, "passed": passed, "detail": detail}


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _slack(tolerance: float, m: Measurement) -> float:
    return tolerance + 2.0 / max(len(m.indices), 1)


def run_checks(measurements: list[Measurement], clean_correct: np.ndarray, num_classes: int,
               tolerance: float, stronger_of: dict[str, str]) -> list[dict]:
    """All checks that apply to these measurements.

    `stronger_of` maps a weak attack to the iterative attack that must beat it (for images
    {"fgsm": "pgd", "bim": "pgd"}; for text {"embedding_fgm": "embedding_pgd"}).
    """
    main = [m for m in measurements if m.role == "main"]
    ran = {m.attack for m in main}
    checks = [check_zero_budget(main, clean_correct), check_within_budget(measurements)]
    for i, (weak, strong) in enumerate(stronger_of.items()):
        if i == 0 or weak in ran:  # the first pair is always reported, run or not
            checks.append(check_iterative_beats_single_step(main, weak, strong, tolerance))
    checks.append(check_falls_with_budget(main, tolerance))
    checks.extend(check_large_budget_reaches_chance(m, num_classes, tolerance)
                  for m in measurements if m.role == "chance")
    if "pgd" in stronger_of.values():  # images: SPSA is the gradient-free reference
        checks.append(check_gradient_free_not_stronger(main, tolerance))
    for stronger in (m for m in measurements if m.role == "stronger"):
        checks.extend(check_stronger_attack(stronger, main, tolerance))
    return checks


def check_zero_budget(main: list[Measurement], clean_correct: np.ndarray) -> dict:
    name = "zero_budget_leaves_accuracy_unchanged"
    zero = [m for m in main if m.epsilon == 0]
    if not zero:
        return _result(name, None, "no attack ran at epsilon 0")
    bad = [m for m in zero if not np.array_equal(m.correct, clean_correct[m.indices])]
    if bad:
        return _result(name, False, "at epsilon 0 accuracy changed for " + ", ".join(
            f"{m.label} {m.norm} ({_pct(m.accuracy)} vs clean "
            f"{_pct(clean_correct[m.indices].mean())})" for m in bad)
            + ": the attack pipeline itself changes inputs")
    return _result(name, True, f"{len(zero)} attack(s) at epsilon 0 match clean accuracy")


def check_within_budget(measurements: list[Measurement]) -> dict:
    name = "perturbations_within_budget"
    bounded = [m for m in measurements if m.max_perturbation is not None]
    bad = [m for m in bounded if m.max_perturbation > m.epsilon * (1 + 1e-4) + 1e-5]
    if bad:
        return _result(name, False, "perturbations exceed the budget: " + ", ".join(
            f"{m.label} {m.norm} eps={m.budget_label} max={m.max_perturbation:.4g}"
            for m in bad))
    return _result(name, True if bounded else None,
                   f"{len(bounded)} measurements stay within their epsilon ball and the "
                   "value range")


def check_iterative_beats_single_step(main: list[Measurement], weak: str, strong: str,
                                      tolerance: float) -> dict:
    name = f"{strong}_not_weaker_than_{weak}"
    pairs = [(w, s) for w in main if w.attack == weak for s in main
             if s.attack == strong and s.norm == w.norm and s.epsilon == w.epsilon]
    if not pairs:
        return _result(name, None, f"needs {weak} and {strong} at a common epsilon and norm")
    bad = [(w, s) for w, s in pairs if s.accuracy > w.accuracy + _slack(tolerance, s)]
    if bad:
        return _result(name, False, "; ".join(
            f"{s.label} leaves {_pct(s.accuracy)} accurate but {w.label} only "
            f"{_pct(w.accuracy)} at {w.norm} {w.budget_label}" for w, s in bad)
            + ": the iterative attack is failing (too small steps, or masked gradients)")
    return _result(name, True, f"{strong} at least as strong as {weak} at "
                               f"{len(pairs)} budget(s)")


def check_falls_with_budget(main: list[Measurement], tolerance: float) -> dict:
    name = "accuracy_falls_as_epsilon_grows"
    groups: dict[tuple, list[Measurement]] = {}
    for m in main:
        groups.setdefault((m.label, m.norm), []).append(m)
    bad = []
    for (label, norm), runs in groups.items():
        runs = sorted(runs, key=lambda m: m.epsilon)
        for a, b in zip(runs, runs[1:]):
            if b.accuracy > a.accuracy + _slack(tolerance, b):
                bad.append(f"{label} {norm}: {_pct(a.accuracy)} at {a.budget_label} but "
                           f"{_pct(b.accuracy)} at {b.budget_label}")
    curves = [g for g in groups.values() if len(g) > 1]
    if bad:
        return _result(name, False, "; ".join(bad) + ": a larger budget must not help the "
                                                     "model (a sign of masked gradients)")
    return _result(name, True if curves else None, f"{len(curves)} curve(s) checked")


def check_large_budget_reaches_chance(m: Measurement, num_classes: int,
                                      tolerance: float) -> dict:
    name = "large_epsilon_reaches_chance"
    chance = 1.0 / num_classes
    detail = (f"{m.label} {m.norm} at epsilon {m.budget_label}: {_pct(m.accuracy)} "
              f"(chance {_pct(chance)})")
    if m.accuracy > chance + _slack(tolerance, m):
        return _result(name, False, detail + ": an unbounded attack must reach chance or "
                                             "below; the attack cannot move the model "
                                             "(masked gradients or a broken attack)")
    return _result(name, True, detail)


def check_gradient_free_not_stronger(main: list[Measurement], tolerance: float) -> dict:
    name = "spsa_not_much_stronger_than_pgd"
    spsa = [m for m in main if m.attack == "spsa"]
    pairs = [(s, p) for s in spsa for p in main
             if p.attack == "pgd" and p.norm == "linf" and p.epsilon == s.epsilon
             and set(s.indices.tolist()) <= set(p.indices.tolist())]
    if not pairs:
        return _result(name, None, "needs spsa and L-inf pgd at a common epsilon")
    bad = []
    for s, p in pairs:
        pgd_accuracy = float(np.mean(p.on(s.indices)))
        if s.accuracy < pgd_accuracy - _slack(tolerance, s):
            bad.append(f"at {s.budget_label} SPSA leaves {_pct(s.accuracy)} accurate, PGD "
                       f"{_pct(pgd_accuracy)} on the same {len(s.indices)} examples")
    if bad:
        return _result(name, False, "; ".join(bad) + ": a gradient-free attack beating PGD "
                                                     "means the gradients are masked")
    return _result(name, True, f"SPSA no stronger than PGD at {len(pairs)} budget(s)")


def check_stronger_attack(stronger: Measurement, main: list[Measurement],
                          tolerance: float) -> list[dict]:
    """The same attack with twice the steps and one more restart, at the same budget:

    - it must not leave the model *more* accurate (that points at randomness or masking);
    - if it leaves the model clearly less accurate, the configured attack had not converged
      and its numbers overstate robustness (`worst_case` includes the stronger run).
    """
    names = ("more_steps_and_restarts_do_not_raise_accuracy", "attack_converged")
    base = next((m for m in main if m.attack == stronger.attack and m.norm == stronger.norm
                 and m.epsilon == stronger.epsilon), None)
    if base is None:
        return [_result(name, None, f"no {stronger.attack} run at {stronger.budget_label}")
                for name in names]
    detail = (f"{base.label}: {_pct(base.accuracy)}, {stronger.label}: "
              f"{_pct(stronger.accuracy)} at {base.norm} {base.budget_label}")
    slack = _slack(tolerance, base)
    raised = stronger.accuracy > base.accuracy + slack
    lowered = stronger.accuracy < base.accuracy - slack
    return [
        _result(names[0], not raised, detail + (": a stronger attack must not raise accuracy "
                                                "(randomness or masked gradients)" if raised
                                                else "")),
        _result(names[1], not lowered, detail + (": the configured attack has not converged "
                                                 "and overstates robustness; raise steps or "
                                                 "restarts (worst_case includes the stronger "
                                                 "run)" if lowered else "")),
    ]
