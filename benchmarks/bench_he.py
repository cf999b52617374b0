"""Encrypted inference end to end, the CKKS operations it is made of, and the weighted sum that
dominates the batched packing.

End to end: the default HE-friendly CNN (he_cnn: 5x5 stride-2 convolution, x^2, Dense 100, x^2,
Dense) on scikit-learn's 1,797 digits; the client encrypts, the server infers on ciphertexts,
the client decrypts, and every result is checked against the plaintext logits. Ratios are to
plaintext inference of the same inputs in the same run. CKKS operations: on that model's
context (N = 16384), ratios to encrypting one vector.

Weighted sum: one output of a CryptoNets convolution is a 25-term weighted sum of ciphertexts, each holding
one pixel of 8,192 images (N = 16384, CryptoNets-depth modulus chain). The baseline is
TenSEAL's vector API, which rescales after every plaintext product; secureml encodes each
weight at the scale of the prime the sum will drop and rescales once per sum.

    pytest benchmarks/bench_he.py --benchmark-only
"""
import numpy as np
import pytest
import tenseal as ts

from secureml.evaluation import predict_logits
from secureml.he import prepare
from secureml.he.batched import _affine
from secureml.he.ckks import Engine, make_context
from secureml.he.params import choose_parameters
from secureml.he.plan import Affine

TERMS = 25
GROUP = "he: 25-term weighted sum, 8192 samples, N=16384"
INFERENCE_GROUP = "he: he_cnn inference on digits"
OPS_GROUP = "he: CKKS operations, N=16384"


@pytest.fixture(scope="module")
def he_digits(digits_arrays):
    """The default he_cnn on digits (untrained: time does not depend on the weights), and its
    client and server with keys for both packings."""
    from secureml.models import build_model
    x, _ = digits_arrays
    model = build_model("he_cnn", x.shape[1:], 10)
    client, server = prepare(model, x)
    return model, x, client, server


@pytest.mark.parametrize("packing, samples", [("plaintext", 1), ("single", 1),
                                              ("plaintext", 1797), ("batched", 1797)])
def test_encrypted_inference(benchmark, ratios, he_digits, packing, samples):
    """Client encryption, server inference and client decryption of `samples` digits."""
    model, x, client, server = he_digits
    inputs = x[:samples]
    benchmark.group = f"{INFERENCE_GROUP}, {samples} example(s)"
    if packing == "plaintext":
        benchmark.pedantic(lambda: predict_logits(model, inputs), rounds=5, warmup_rounds=1)
        ratios.record(benchmark, "plaintext", baseline="plaintext")
        return
    query = client.encrypt(inputs, packing)
    benchmark.extra_info["query_bytes"] = query.nbytes()

    def round_trip():
        return client.decrypt(server.infer(client.encrypt(inputs, packing)))

    logits = benchmark.pedantic(round_trip, rounds=1 if benchmark.disabled else 3)
    np.testing.assert_allclose(logits, predict_logits(model, inputs), atol=1e-2, rtol=1e-2)
    ratios.record(benchmark, f"{packing} (encrypt, infer, decrypt)", baseline="plaintext")


def test_key_generation(benchmark, ratios, he_digits):
    """A fresh key pair with relinearization and Galois keys, as `secureml he keygen` makes."""
    _, _, client, _ = he_digits
    benchmark.group = OPS_GROUP
    context = benchmark.pedantic(lambda: make_context(client.params, rotations=True), rounds=1)
    assert context.has_galois_keys()
    ratios.record(benchmark, "keygen (with Galois keys)", baseline="encrypt")


@pytest.mark.parametrize("operation", ["encrypt", "multiply_plain", "square", "rotate",
                                       "decrypt"])
def test_ckks_operation(benchmark, ratios, he_digits, operation):
    _, _, client, _ = he_digits
    engine = client.engine
    benchmark.group = OPS_GROUP
    values = np.random.default_rng(0).random(engine.slots)
    ct = engine.encrypt(values)
    weights = engine.encode(values, ct, engine.scale)
    run = {"encrypt": lambda: engine.encrypt(values),
           "multiply_plain": lambda: engine.multiply_plain(ct, weights),
           "square": lambda: engine.square(ct),
           "rotate": lambda: engine.rotate(ct, 1),
           "decrypt": lambda: engine.decrypt(ct, engine.slots)}[operation]
    out = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 20, warmup_rounds=0)
    expected = {"square": values ** 2, "rotate": np.roll(values, -1), "decrypt": values}
    if operation in expected:
        decrypted = out if operation == "decrypt" else engine.decrypt(out, engine.slots)
        np.testing.assert_allclose(decrypted, expected[operation], atol=1e-3)
    label = {"square": "square + relinearize + rescale"}.get(operation, operation)
    ratios.record(benchmark, label, baseline="encrypt")


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
