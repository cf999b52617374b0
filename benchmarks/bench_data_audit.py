"""What the data audit costs on 60,000 MNIST-like images (the label check off).

    pytest benchmarks/bench_data_audit.py --benchmark-only

MNIST-like: scikit-learn's digits upscaled to 28x28 grayscale, each image under its own random
affine distortion and stroke weight, so that thousands of different digits are close in hash
space (the hard case for near duplicates: every candidate pair must be verified). Untimed runs
use 1,000 images. The seconds per check are printed from the audit's own `cost`.
"""
import numpy as np
import pytest

from secureml.audit import audit_dataset
from secureml.data import Dataset


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n distinct 28x28 digits in [0, 1] (N, 28, 28, 1) and their labels."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(digits.target), n)
    large = ndimage.zoom(digits.images / 16.0, (1, 2.5, 2.5), order=1)   # 20x20
    out = np.zeros((n, 28, 28), np.float32)
    for k in range(n):
        angle, scale, shear = rng.uniform(-0.2, 0.2), rng.uniform(0.85, 1.15), \
            rng.uniform(-0.2, 0.2)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix = rotation @ np.array([[1, shear], [0, 1]]) / scale
        offset = 9.5 - matrix @ (13.5 + rng.uniform(-1.5, 1.5, 2))
        image = ndimage.affine_transform(large[source[k]], matrix, offset=offset,
                                         output_shape=(28, 28), order=1)
        out[k] = np.clip(image, 0, 1) ** rng.uniform(0.5, 2.0)
    return out[..., None], digits.target[source].astype(np.int64)


@pytest.fixture(scope="module")
def digits_60k(timed):
    import tensorflow  # noqa: F401  (imported before timing: the audit resizes with it)
    x, y = mnist_like(60000 if timed else 1000)
    cut = len(x) * 5 // 6
    return Dataset("mnist_like", "image", x[:cut], y[:cut], x[:0], y[:0], x[cut:], y[cut:],
                   [str(i) for i in range(10)])


def test_data_audit_mnist_like(benchmark, digits_60k, capsys):
    benchmark.group = f"data audit, {len(digits_60k.y_train) + len(digits_60k.y_test)} " \
                      f"MNIST-like images, label check off"
    audit = benchmark.pedantic(audit_dataset, (digits_60k,),
                               {"options": {"label_check": False}}, rounds=1, iterations=1)
    near = audit["duplicates"]["near"]
    if not benchmark.disabled:
        with capsys.disabled():
            print(f"\n{benchmark.group}: seconds {audit['cost']}; near-duplicate groups in "
                  f"train {near['within']['train']['groups']}, test images also in train "
                  f"{near['across']['train_test']['examples']}")
    # Distinct digits are never chained into large groups.
    assert all(len(g["indices"]) <= 5 for g in near["within"]["train"]["example_groups"])
    assert near["across"]["train_test"]["fraction"] < 0.01
