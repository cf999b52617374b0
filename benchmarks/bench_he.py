"""Encrypted inference: the weighted sum that dominates the batched packing.

One output of a CryptoNets convolution is a 25-term weighted sum of ciphertexts, each holding
one pixel of 8,192 images (N = 16384, CryptoNets-depth modulus chain). The baseline is
TenSEAL's vector API, which rescales after every plaintext product; secureml encodes each
weight at the scale of the prime the sum will drop and rescales once per sum.

    pytest benchmarks/bench_he.py --benchmark-only
"""
import numpy as np
import pytest
import tenseal as ts

from secureml.he.batched import _affine
from secureml.he.ckks import Engine
from secureml.he.params import choose_parameters
from secureml.he.plan import Affine

TERMS = 25
GROUP = "he: 25-term weighted sum, 8192 samples, N=16384"


@pytest.fixture(scope="module")
def setup():
    params = choose_parameters(5, 50)  # the depth of he_cnn: N = 16384
    context = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_degree,
                         coeff_mod_bit_sizes=list(params.coeff_bits))
    context.global_scale = 2.0 ** params.scale_bits
    rng = np.random.default_rng(0)
    pixels = rng.random((TERMS, params.slots))
    weights = rng.normal(0, 0.3, TERMS)
    vectors = [ts.ckks_vector(context, p.tolist()) for p in pixels]
    return context, vectors, pixels, weights


def test_weighted_sum_tenseal_rescale_per_term(benchmark, ratios, setup):
    context, vectors, pixels, weights = setup
    benchmark.group = GROUP

    def weighted_sum():
        acc = vectors[0] * float(weights[0])
        for vector, weight in zip(vectors[1:], weights[1:]):
            acc += vector * float(weight)
        return acc

    result = benchmark.pedantic(weighted_sum, rounds=3, iterations=1)
    np.testing.assert_allclose(result.decrypt()[:100], (weights @ pixels)[:100], atol=1e-3)
    ratios.record(benchmark, "tenseal_rescale_per_term", baseline="tenseal_rescale_per_term")


def test_weighted_sum_secureml_rescale_once(benchmark, ratios, setup):
    context, vectors, pixels, weights = setup
    benchmark.group = GROUP
    engine = Engine(context)
    cts = [v.ciphertext()[0] for v in vectors]
    op = Affine(weights.reshape(-1, 1), np.zeros(1), ["bench"])

    class _NoBar:
        def update(self, _):
            pass

    result = benchmark.pedantic(lambda: _affine(engine, op, cts, _NoBar())[0], rounds=3,
                                iterations=1)
    np.testing.assert_allclose(engine.decrypt(result, 100), (weights @ pixels)[:100], atol=1e-3)
    ratios.record(benchmark, "secureml_rescale_once", baseline="tenseal_rescale_per_term")
