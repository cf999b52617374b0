"""Evasion attacks and the robustness evaluation.

Attacks are plain functions of a Keras classifier and arrays, batched, with progress bars:

    from secureml.attacks import pgd, evaluate_robustness
    x_adv = pgd(model, x_test, y_test, epsilon=8/255, steps=20)
    section = evaluate_robustness(model, x_test, y_test, {"epsilons": ["8/255"]})

Images (cleverhans TF2): `fgsm`, `pgd`, `bim`, `mim`, `carlini_wagner_l2`, `spsa`. Text:
`embedding_fgm`, `embedding_pgd` (perturbations in embedding space) and `token_swap` (real
adversarial texts). A model that outputs probabilities is attacked through its logits (with a
warning). Membership inference lives in `secureml.audit`, not here.
"""
from .images import bim, carlini_wagner_l2, fgsm, mim, pgd, spsa
from .robustness import evaluate_robustness
from .target import AttackTarget, attack_target
from .text import TokenSwapResult, embedding_fgm, embedding_pgd, perturbed_logits, token_swap

__all__ = ["AttackTarget", "TokenSwapResult", "attack_target", "bim", "carlini_wagner_l2",
           "embedding_fgm", "embedding_pgd", "evaluate_robustness", "fgsm", "mim", "pgd",
           "perturbed_logits", "spsa", "token_swap"]
