"""Where the near-duplicate threshold comes from: distances of true copies and of different
look-alike images, measured with the data audit's own thumbnails (docs/audit.md).

    SECUREML_DATA_DIR=../shared/datasets python benchmarks/near_duplicate_calibration.py

Copies: Gaussian noise (sigma 0.02), JPEG quality 75 and 50, brightness -0.08, of scikit-learn's
digits upscaled to 28x28 and (if the data set is found) of 1,000 CIFAR-10 test images.
Look-alikes: each digit's distance to the closest other digit; on CIFAR-10, the test/train
pairs whose hashes are at most 4 bits apart (nearly all crops or recolourings of one photo).
"""
import io

import numpy as np
from PIL import Image

from secureml.audit import duplicates as D


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.round(image * 255).astype(np.uint8).squeeze(-1) if image.shape[-1] == 1
                        else np.round(image * 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                          quality=quality)
        out.append(np.asarray(Image.open(buffer), np.float32).reshape(image.shape) / 255)
    return np.stack(out)


def copies(x: np.ndarray, name: str) -> None:
    rng = np.random.default_rng(0)
    _, base = D.image_signatures(x)
    for what, copy in {"noise 0.02": np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1),
                       "JPEG 75": _jpeg(x, 75), "JPEG 50": _jpeg(x, 50),
                       "brightness -0.08": np.clip(x - 0.08, 0, 1)}.items():
        d = D.thumbnail_distance(base, D.image_signatures(copy.astype(np.float32))[1])
        print(f"{name} copies, {what:17s}: median {np.median(d):.3f}, 99% {np.quantile(d, .99):.3f}"
              f", max {d.max():.3f}; within 0.08: {np.mean(d <= 0.08):.1%}")


def main() -> None:
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.clip(tf.image.resize((digits.images / 16.0).astype("float32")[..., None],
                                (28, 28)).numpy(), 0, 1)
    copies(x, "digits")
    _, thumbs = D.image_signatures(x)
    t = thumbs.astype(np.float32)
    squared = (t ** 2).sum(1)[:, None] + (t ** 2).sum(1)[None] - 2 * t @ t.T
    np.fill_diagonal(squared, np.inf)
    closest = np.sqrt(np.maximum(squared.min(1), 0) / t.shape[1])
    print(f"digits, distance to the closest other digit: min {closest.min():.3f}, 1% "
          f"{np.quantile(closest, .01):.3f}, 5% {np.quantile(closest, .05):.3f}, median "
          f"{np.median(closest):.3f}")
    try:
        from secureml.data import load_dataset
        cifar = load_dataset("cifar10", progress=False)
    except Exception as err:  # the data set is optional here
        print(f"CIFAR-10 skipped: {err}")
        return
    copies(cifar.x_test[:1000], "CIFAR-10")
    train = np.concatenate([cifar.x_train, cifar.x_val])
    h_train, t_train = D.image_signatures(train)
    h_test, t_test = D.image_signatures(cifar.x_test)
    pairs = D._band_pairs(np.concatenate([h_train, h_test]), 4)
    cross = pairs[(pairs[:, 0] < len(train)) & (pairs[:, 1] >= len(train))]
    d = D.thumbnail_distance(t_train[cross[:, 0]], t_test[cross[:, 1] - len(train)])
    print(f"CIFAR-10 test/train hash neighbours: {len(cross)}, distance quantiles 10/50/90% "
          f"{np.quantile(d, [.1, .5, .9]).round(3).tolist()}; within 0.08: {np.sum(d <= 0.08)}, "
          f"0.2: {np.sum(d <= 0.2)}, 0.4: {np.sum(d <= 0.4)}")


if __name__ == "__main__":
    main()
