"""The batched packing: many samples per ciphertext, for throughput (CryptoNets-style SIMD).

Ciphertext i holds feature i of every sample, one sample per slot, so up to N/2 samples go
through the network at the cost of one. A layer output is a weighted sum of whole
ciphertexts with plaintext scalar weights: each term is a plaintext product with the weight
encoded at the scale of the prime the sum will drop; the sum is rescaled once, which keeps
the scale exact. No rotations, so no Galois keys.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..errors import UnsupportedError
from .ckks import Engine
from .plan import Affine, Plan


def encrypt(engine: Engine, features: np.ndarray) -> list:
    """One ciphertext per feature column; samples in the slots."""
    return [engine.encrypt(features[:, i]) for i in range(features.shape[1])]


def decrypt(engine: Engine, cts: list, samples: int) -> np.ndarray:
    return np.stack([engine.decrypt(ct, samples) for ct in cts], axis=1)


def evaluate(engine: Engine, plan: Plan, cts: list, progress: bool = False) -> list:
    total = sum(op.matrix.shape[1] for op in plan.ops if isinstance(op, Affine)) \
        + plan.multiplications()["squares"]
    with tqdm(total=total, desc="batched encrypted inference", unit="op", leave=False,
              disable=not progress) as bar:
        for op in plan.ops:
            if isinstance(op, Affine):
                cts = _affine(engine, op, cts, bar)
            else:
                cts = [_counted(engine.square(ct), bar) for ct in cts]
    return cts


def _counted(ct, bar):
    bar.update(1)
    return ct


def _affine(engine: Engine, op: Affine, cts: list, bar) -> list:
    prime = engine.next_prime(cts[0])
    outputs: list = [None] * op.matrix.shape[1]
    for j in range(op.matrix.shape[1]):
        column = op.matrix[:, j]
        # A weight that rounds to zero at this scale would make SEAL's product transparent.
        rows = np.flatnonzero(np.abs(column) * prime >= 1.0)
        if len(rows):
            acc = None
            for i in rows:
                acc = engine.accumulate(acc, cts[i], engine.encode(column[i], cts[i], prime))
            engine.finish_sum(acc, op.bias[j])
            outputs[j] = acc
        bar.update(1)
    like = next((ct for ct in outputs if ct is not None), None)
    if like is None:
        raise UnsupportedError(f"layer(s) {', '.join(op.layers)}: every weight is zero; "
                               f"this model has not been trained")
    return [ct if ct is not None else engine.encrypt_like(op.bias[j], like)
            for j, ct in enumerate(outputs)]
