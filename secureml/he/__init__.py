"""Homomorphic-encrypted inference with CKKS (TenSEAL): the server never sees inputs or outputs.

    from secureml.he import prepare, encrypted_predict
    logits, fidelity = encrypted_predict(model, x_test[:100])          # one call
    client, server = prepare(model, x_train[:256])                      # or the two roles
    result = server.infer(client.encrypt(x_test[:100], "batched"))     # server: public context
    logits = client.decrypt(result)                                     # client: secret key

See docs/encrypted-inference.md for the threat model, packings and measured costs.
"""
from .api import encrypted_predict, prepare
from .convert import convert_to_polynomial
from .errors import CiphertextError, FidelityError
from .params import CKKSParameters, choose_parameters
from .plan import Plan, compile_model
from .roles import EncryptedBatch, HEClient, HEServer, make_spec

__all__ = ["CKKSParameters", "CiphertextError", "EncryptedBatch", "FidelityError", "HEClient",
           "HEServer", "Plan", "choose_parameters", "compile_model", "convert_to_polynomial",
           "encrypted_predict", "make_spec", "prepare"]
