"""The two roles, kept apart: the client holds the secret key, the server only a public context.

- `HEClient` makes the keys, encrypts inputs and decrypts results. It never needs the model's
  weights (in split mode it runs the model's client-side part: embedding and LSTM).
- `HEServer` holds the plan (the model's weights, in plaintext) and a context without the
  secret key; it maps ciphertexts to ciphertexts and cannot decrypt either.

What travels between them is an `EncryptedBatch`: a header naming the key pair (fingerprint),
parameters, packing and shape, then SEAL ciphertexts, with a SHA-256 of the payload so a
truncated or altered file is refused before SEAL reads it.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..errors import DataError, UnsupportedError
from . import batched, single
from .ckks import (Engine, ciphertext_bytes, ciphertext_from_bytes, fingerprint, load_context,
                   make_context, public_bytes)
from .errors import CiphertextError, FidelityError
from .fidelity import check_range
from .params import CKKSParameters
from .plan import InputSpec, Plan, client_features

PACKINGS = ("single", "batched")
_MAGIC = b"SECUREML-HE\x01"
_FORMAT = 1


def make_spec(plan: Plan, params: CKKSParameters, client_model_sha256: str | None = None) -> dict:
    """What the client needs to know about the server's plan: no weights.

    In split mode the client also runs the model's client part, from a file the server hands
    over; `client_model_sha256` names that file, and the client loads no other.
    """
    first = plan.ops[0]
    conv = None
    if getattr(first, "conv", None):
        conv = {k: list(v) if isinstance(v, tuple) else v
                for k, v in first.conv.items() if k != "kernel"}
    return {"format": _FORMAT, "model": plan.model_name,
            "input": {"kind": plan.input.kind, "shape": list(plan.input.shape),
                      "mask_zero": plan.input.mask_zero, "split_layer": plan.input.split_layer},
            "im2col": conv, "num_outputs": plan.num_outputs, "depth": plan.depth,
            "output_bound": plan.output_bound, "parameters": params.describe(),
            "client_model_sha256": client_model_sha256}


@dataclass
class EncryptedBatch:
    """Ciphertexts with what they mean. kind: 'query' (client to server) or 'result'."""

    kind: str
    packing: str
    fingerprint: str
    samples: int
    ciphertexts: list
    # single: ciphertexts per sample; batched: samples per chunk (a chunk fills <= slots)
    layout: list = field(default_factory=list)

    def to_bytes(self) -> bytes:
        blobs = [ciphertext_bytes(ct) for ct in self.ciphertexts]
        payload = b"".join(blobs)
        header = self._header([len(b) for b in blobs], hashlib.sha256(payload).hexdigest())
        return _MAGIC + struct.pack("<Q", len(header)) + header + payload

    def nbytes(self) -> int:
        """The size `to_bytes` would have, without holding every ciphertext's bytes at once."""
        sizes = [len(ciphertext_bytes(ct)) for ct in self.ciphertexts]
        return len(_MAGIC) + 8 + len(self._header(sizes, "0" * 64)) + sum(sizes)

    def _header(self, sizes: list[int], digest: str) -> bytes:
        return json.dumps({"format": _FORMAT, "kind": self.kind, "packing": self.packing,
                           "fingerprint": self.fingerprint, "samples": self.samples,
                           "layout": self.layout, "sizes": sizes, "sha256": digest}).encode()

    @classmethod
    def from_bytes(cls, data: bytes, engine: Engine, expected_fingerprint: str,
                   what: str = "ciphertext file") -> EncryptedBatch:
        header, payload = _split(data, what)
        if header["fingerprint"] != expected_fingerprint:
            raise CiphertextError(
                f"{what} was made under another key pair (fingerprint "
                f"{header['fingerprint'][:12]}, this context {expected_fingerprint[:12]}); "
                f"encrypt with the keys whose public context the server holds")
        cts, offset = [], 0
        for i, size in enumerate(header["sizes"]):
            cts.append(ciphertext_from_bytes(engine, payload[offset:offset + size],
                                             f"{what}, ciphertext {i}"))
            offset += size
        return cls(header["kind"], header["packing"], header["fingerprint"], header["samples"],
                   cts, header["layout"])

    def save(self, path) -> int:
        data = self.to_bytes()
        Path(path).write_bytes(data)
        return len(data)


def _split(data: bytes, what: str) -> tuple[dict, bytes]:
    if not data.startswith(_MAGIC):
        raise CiphertextError(f"{what} is not a secureml ciphertext file (wrong magic bytes); "
                              f"use a file written by 'secureml he encrypt' or 'he infer'")
    start = len(_MAGIC) + 8
    try:
        (length,) = struct.unpack("<Q", data[len(_MAGIC):start])
        header = json.loads(data[start:start + length])
        payload = data[start + length:]
        sizes = [int(s) for s in header["sizes"]]
        ok = header["format"] == _FORMAT and sum(sizes) == len(payload)
    except (struct.error, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CiphertextError(f"{what} is truncated or corrupt (unreadable header); "
                              f"write it again")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CiphertextError(f"{what} is corrupt or was tampered with: its ciphertexts do not "
                              f"match the checksum in its header")
    return header, payload


class HEClient:
    """Holds the secret key. `generate` makes a key pair for the server's spec."""

    def __init__(self, spec: dict, context, client_model: tf.keras.Model | None = None):
        if not context.has_secret_key():
            raise CiphertextError("this context has no secret key: it is a server's public "
                                  "context, and cannot decrypt; use the client's key file")
        if spec["input"]["kind"] == "features" and client_model is None:
            raise UnsupportedError("split mode: the client needs the model's client part "
                                   "(embedding and LSTM) to compute the features it encrypts")
        self.spec = spec
        self.params = CKKSParameters.from_dict(spec["parameters"])
        self.context = context
        self.engine = Engine(context)
        self.fingerprint = fingerprint(context)
        self._public_context = None
        self.client_model = client_model
        self.input = InputSpec(spec["input"]["kind"], tuple(spec["input"]["shape"]),
                               spec["input"]["mask_zero"], spec["input"]["split_layer"])

    @classmethod
    def generate(cls, spec: dict, packings=PACKINGS, client_model=None) -> HEClient:
        unknown = set(packings) - set(PACKINGS)
        if unknown:
            raise DataError(f"unknown packing {sorted(unknown)}; choose from {PACKINGS}")
        params = CKKSParameters.from_dict(spec["parameters"])
        return cls(spec, make_context(params, rotations="single" in packings), client_model)

    def public_context(self) -> bytes:
        """The context without the secret key, for the server. Serialized once: with Galois
        keys it takes megabytes and a noticeable time, and the keys never change."""
        if self._public_context is None:
            self._public_context = public_bytes(self.context)
        return self._public_context

    def secret_context(self) -> bytes:
        return self.context.serialize(save_public_key=True, save_secret_key=True,
                                      save_galois_keys=self.context.has_galois_keys(),
                                      save_relin_keys=True)

    def features(self, x) -> np.ndarray:
        return client_features(self.input, x, self.client_model)

    def encrypt(self, x, packing: str) -> EncryptedBatch:
        """Encrypt raw inputs (images, or token ids for text) in one of the two packings."""
        features = self.features(x)
        slots = self.engine.slots
        if packing == "single":
            cts = []
            for row in features:
                cts += [self.engine.encrypt(v)
                        for v in single.input_vectors(row, self.spec["im2col"], slots)]
            layout = [len(cts) // max(len(features), 1)]
        elif packing == "batched":
            chunks = [features[i:i + slots] for i in range(0, len(features), slots)]
            cts = [ct for chunk in chunks for ct in batched.encrypt(self.engine, chunk)]
            layout = [len(chunk) for chunk in chunks]
        else:
            raise DataError(f"unknown packing '{packing}'; choose from {', '.join(PACKINGS)}")
        return EncryptedBatch("query", packing, self.fingerprint, len(features), cts, layout)

    def decrypt(self, result: EncryptedBatch) -> np.ndarray:
        """Logits of shape (samples, outputs); refuses values outside the calibrated range."""
        if result.kind != "result":
            raise CiphertextError("this file is an encrypted query, not a result; run "
                                  "'secureml he infer' on it first")
        if result.fingerprint != self.fingerprint:
            raise CiphertextError("this result was computed under another key pair; decrypt "
                                  "it with the keys that encrypted the query")
        k = self.spec["num_outputs"]
        if result.packing == "single":
            logits = np.stack([self.engine.decrypt(ct, k) for ct in result.ciphertexts])
        else:
            parts, offset = [], 0
            for samples in result.layout:
                parts.append(batched.decrypt(self.engine, result.ciphertexts[offset:offset + k],
                                             samples))
                offset += k
            logits = np.concatenate(parts)
        check_range(logits, self.spec["output_bound"])
        return logits

    def load_result(self, data: bytes, what: str = "result file") -> EncryptedBatch:
        return EncryptedBatch.from_bytes(data, self.engine, self.fingerprint, what)


class HEServer:
    """Evaluates the plan on ciphertexts with a public context; has no secret key."""

    def __init__(self, plan: Plan, params: CKKSParameters, public_context: bytes):
        context = load_context(public_context, "the server's context")
        if context.has_secret_key():
            # The server must not be able to decrypt: keep only the public part.
            context.make_context_public()
        self.context = context
        self.plan = plan
        self.params = params
        self.engine = Engine(context)
        self.fingerprint = fingerprint(context)
        seal_degree = self.engine.slots * 2
        if seal_degree != params.poly_degree:
            raise CiphertextError(f"the context has polynomial degree {seal_degree} but the "
                                  f"plan needs {params.poly_degree}; generate keys for this "
                                  f"model's spec")
        self._single = None

    def load_query(self, data: bytes, what: str = "query file") -> EncryptedBatch:
        return EncryptedBatch.from_bytes(data, self.engine, self.fingerprint, what)

    def infer(self, query: EncryptedBatch, progress: bool = False) -> EncryptedBatch:
        """The encrypted logits of an encrypted query (same packing)."""
        try:
            return self._infer(query, progress)
        except (ValueError, RuntimeError) as err:
            # SEAL refuses operations whose scale no longer fits the remaining modulus.
            raise FidelityError(
                f"SEAL stopped the encrypted evaluation ({err}): the plan's depth or scale "
                f"does not fit these CKKS parameters. Generate keys from this model's spec "
                f"(secureml he keygen --model ...) or raise scale_bits") from None

    def _infer(self, query: EncryptedBatch, progress: bool) -> EncryptedBatch:
        if query.kind != "query":
            raise CiphertextError("this file is already a result; the server takes queries")
        if query.packing == "single":
            if self._single is None:
                self._single = single.Program(self.plan, self.engine)
            per = self._single.inputs  # known to the server: never trust the header for it
            self._check_count(len(query.ciphertexts), query.samples * self._single.inputs,
                              query.samples)
            outputs = []
            for i in range(query.samples):
                outputs += self._single.evaluate(query.ciphertexts[i * per:(i + 1) * per])
        else:
            n = self.plan.input.size
            self._check_count(len(query.ciphertexts), n * len(query.layout), query.samples)
            outputs, offset = [], 0
            for _ in query.layout:
                outputs += batched.evaluate(self.engine, self.plan,
                                            query.ciphertexts[offset:offset + n], progress)
                offset += n
        return EncryptedBatch("result", query.packing, self.fingerprint, query.samples,
                              outputs, query.layout)

    def _check_count(self, got: int, expected: int, samples: int) -> None:
        if got != expected:
            raise CiphertextError(
                f"the query holds {got} ciphertexts for {samples} samples, but this model "
                f"takes {expected}: it was encrypted for another model or input shape; "
                f"encrypt with the spec of this model")
