"""One call from a Keras model to a client and a server, and one call for encrypted predictions."""
from __future__ import annotations

import numpy as np

from .fidelity import compare
from .params import choose_parameters
from .plan import compile_model
from .roles import PACKINGS, HEClient, HEServer, make_spec


def prepare(model, calibration_inputs=None, *, packings=PACKINGS, mode: str = "full",
            split_layer: str = "lstm", security: int = 128, scale_bits: int = 40,
            poly_degree: int | None = None) -> tuple[HEClient, HEServer]:
    """Compile `model`, choose CKKS parameters for its depth, and make both roles.

    The client gets fresh keys; the server only the serialized public context.
    """
    plan, params, client_model = compile_for_encryption(
        model, calibration_inputs, mode=mode, split_layer=split_layer, security=security,
        scale_bits=scale_bits, poly_degree=poly_degree)
    client = HEClient.generate(make_spec(plan, params), packings, client_model)
    return client, HEServer(plan, params, client.public_context())


def compile_for_encryption(model, calibration_inputs=None, *, mode: str = "full",
                           split_layer: str = "lstm", security: int = 128, scale_bits: int = 40,
                           poly_degree: int | None = None):
    """The server's part of `prepare`: (plan, CKKS parameters, the client's model part or None)."""
    plan, client_model = compile_model(model, calibration_inputs, mode=mode,
                                       split_layer=split_layer)
    params = choose_parameters(plan.depth, plan.first_prime_bits(scale_bits), security=security,
                               scale_bits=scale_bits, poly_degree=poly_degree)
    return plan, params, client_model


def encrypted_predict(model, x, *, packing: str = "batched", calibration_inputs=None,
                      tolerance: float = 1e-2, **options) -> tuple[np.ndarray, dict]:
    """Logits of `x` computed on ciphertexts, and their fidelity to the plaintext model.

        logits, fidelity = encrypted_predict(model, x_test[:100])

    Raises `FidelityError` when the decrypted logits stray from the plaintext ones.
    """
    from ..evaluation import predict_logits
    client, server = prepare(model, x if calibration_inputs is None else calibration_inputs,
                             packings=(packing,), **options)
    logits = client.decrypt(server.infer(client.encrypt(x, packing)))
    return logits, compare(logits, predict_logits(model, np.asarray(x)), tolerance)
