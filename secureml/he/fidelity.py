"""Fidelity of an encrypted run: decrypted logits against the plaintext logits of the model.

CKKS is approximate, and when a value outgrows the modulus it silently returns garbage, so
every encrypted run is compared with the plaintext model and refused past a tolerance.
"""
import numpy as np

from ..models.outputs import predicted_classes
from .errors import FidelityError


def worst_error(got: np.ndarray, expected: np.ndarray, tolerance: float) -> tuple[float, float]:
    """(the largest absolute error, infinite if any value of `got` is not finite; the error
    allowed: `tolerance` relative to the largest expected value, at least 1)."""
    error = np.abs(got - expected)
    worst = float(np.max(error, initial=0.0)) if np.all(np.isfinite(got)) else float("inf")
    return worst, tolerance * max(1.0, float(np.max(np.abs(expected), initial=0.0)))


def compare(decrypted: np.ndarray, plaintext: np.ndarray, tolerance: float) -> dict:
    """Max and mean absolute error, and argmax agreement; raises past `tolerance` (see
    `worst_error`)."""
    decrypted, plaintext = np.asarray(decrypted), np.asarray(plaintext)
    error = np.abs(decrypted - plaintext)
    worst, allowed = worst_error(decrypted, plaintext, tolerance)
    if not worst <= allowed:
        raise FidelityError(
            f"decrypted logits differ from the plaintext model by up to {worst:.3g} (allowed "
            f"{allowed:.3g}): the multiplicative depth or the scale was exceeded, so the "
            f"encrypted results are garbage and are refused. Raise he.scale_bits, remove a "
            f"he.poly_degree override, or use a shallower model")
    return {"max_abs_error": worst, "mean_abs_error": float(np.mean(error)) if error.size else 0.0,
            "agreement": float(np.mean(predicted_classes(decrypted)
                                       == predicted_classes(plaintext)))}


def check_range(logits: np.ndarray, bound: float) -> None:
    """The client's check without the model: garbage shows as huge or non-finite values."""
    worst = float(np.max(np.abs(logits), initial=0.0))
    if not np.all(np.isfinite(logits)) or worst > bound:
        raise FidelityError(
            f"decrypted logits reach {worst:.3g}, beyond the plan's calibrated bound "
            f"{bound:.3g}: the ciphertexts outgrew the CKKS modulus (depth or scale exceeded) "
            f"or the input lies far outside the calibration data. The result is garbage and "
            f"is refused; compile with a larger scale_bits or calibrate on representative "
            f"inputs")
