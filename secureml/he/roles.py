"""The two roles, kept apart: the client holds the secret key, the server only a public context.

- `HEClient` makes the keys, encrypts inputs and decrypts results. It never needs the model's
  weights (in split mode it runs the model's client-side part: embedding and LSTM).
- `HEServer` holds the plan (the model's weights, in plaintext) and a context without the
  secret key; it maps ciphertexts to ciphertexts and cannot decrypt either.

What travels between them is an `EncryptedBatch`: a header naming the key pair (fingerprint),
parameters, packing and shape, then SEAL ciphertexts, with a SHA-256 of the payload so a
truncated or altered file is refused before SEAL reads it. The reader checks the header
against its own model or spec and the file's size before reading the ciphertexts.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..errors import DataError, UnsupportedError
from . import batched, single
from .ckks import (Engine, ciphertext_bytes, ciphertext_from_bytes, fingerprint,
                   load_public_context, make_context, public_bytes)
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


def check_spec(spec, what: str = "the spec") -> dict:
    """`spec` if it has the fields and types `make_spec` writes (and parameters that hold the
    security they claim); a spec travels between the parties, so it is checked on arrival."""
    bad = f"{what} is not a spec written by 'secureml he spec' or 'he keygen'"
    if not isinstance(spec, dict) or spec.get("format") != _FORMAT:
        raise DataError(f"{bad} (format {_FORMAT} expected)")
    source, conv = spec.get("input"), spec.get("im2col")
    checks = {
        "input": isinstance(source, dict) and source.get("kind") in ("image", "bag", "features")
        and _counts(source.get("shape")) and type(source.get("mask_zero")) is bool
        and (source.get("split_layer") is None or isinstance(source["split_layer"], str)),
        # The client lays the image out by these: a convolution on the model's input image.
        "im2col": conv is None or (
            isinstance(conv, dict) and conv.get("padding") in ("valid", "same")
            and all(_counts(conv.get(k), n) for k, n in (("kernel_size", 2), ("strides", 2),
                                                         ("input_shape", 3),
                                                         ("output_shape", 3)))
            and isinstance(source, dict) and source.get("kind") == "image"
            and conv["input_shape"] == source.get("shape")),
        "num_outputs": _positive(spec.get("num_outputs")),
        "depth": _positive(spec.get("depth")),
        "output_bound": type(spec.get("output_bound")) in (int, float)
        and 0 < spec["output_bound"] < float("inf"),
        "model": isinstance(spec.get("model"), str),
        "client_model_sha256": spec.get("client_model_sha256") is None
        or re.fullmatch(r"[0-9a-f]{64}", str(spec["client_model_sha256"])) is not None,
    }
    wrong = [name for name, ok in checks.items() if not ok]
    if wrong:
        raise DataError(f"{bad} (missing or invalid: {', '.join(wrong)})")
    CKKSParameters.from_dict(spec.get("parameters"))
    return spec


def _counts(values, length: int | None = None) -> bool:
    return isinstance(values, list) and bool(values) and all(_positive(v) for v in values) \
        and length in (None, len(values))


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
    def load(cls, source, engine: Engine, fingerprint: str, kind: str, count, *, what: str,
             keys: str, max_bytes: int | None = None) -> EncryptedBatch:
        """Read `source` (bytes, or the path of a file) as a batch of `kind` for `engine`.

        Everything the header claims is checked before the ciphertexts are read: the file's
        size against `max_bytes`, the key fingerprint against `fingerprint` (`keys` names
        them in the message), the layout against the slot count, the number of ciphertexts
        against `count(packing, samples, layout)` (what the reader's model or spec takes), each
        ciphertext's size against what these parameters allow, and their sum against the
        file's size. Then the checksum, then SEAL loads each ciphertext.
        """
        if isinstance(source, (bytes, bytearray)):
            return cls._load(io.BytesIO(source), len(source), engine, fingerprint, kind, count,
                             what, keys, max_bytes)
        path = Path(source)
        try:
            with path.open("rb") as stream:
                size = os.fstat(stream.fileno()).st_size
                return cls._load(stream, size, engine, fingerprint, kind, count, what, keys,
                                 max_bytes)
        except OSError as err:
            raise CiphertextError(f"cannot read {path}: {err.strerror}") from None

    @classmethod
    def _load(cls, stream, size: int, engine, fingerprint, kind, count, what, keys,
              max_bytes) -> EncryptedBatch:
        if max_bytes is not None and size > max_bytes:
            raise CiphertextError(f"{what} is {size} bytes, more than the {max_bytes} allowed; "
                                  f"it was not read (raise --max-bytes if it is genuine)")
        header = _read_header(stream, size, what)
        if header["kind"] != kind:
            raise CiphertextError(_WRONG_KIND[kind])
        if header["fingerprint"] != fingerprint:
            raise CiphertextError(_other_keys(kind, what, header["fingerprint"], keys,
                                              fingerprint))
        _check_layout(header["packing"], header["samples"], header["layout"], engine.slots,
                      what)
        sizes = header["sizes"]
        expected = count(header["packing"], header["samples"], header["layout"])
        if len(sizes) != expected:
            raise CiphertextError(_count_message(kind, what, len(sizes), expected,
                                                 header["samples"]))
        if max(sizes) > engine.max_ciphertext_bytes:
            raise CiphertextError(f"{what} is corrupt: its header lists a ciphertext of "
                                  f"{max(sizes)} bytes, more than these parameters allow "
                                  f"({engine.max_ciphertext_bytes})")
        start = stream.tell()
        digest = hashlib.sha256()
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
        if digest.hexdigest() != header["sha256"]:
            raise CiphertextError(f"{what} is corrupt or was tampered with: its ciphertexts do "
                                  f"not match the checksum in its header")
        stream.seek(start)
        cts = [ciphertext_from_bytes(engine, stream.read(n), f"{what}, ciphertext {i}")
               for i, n in enumerate(sizes)]
        return cls(header["kind"], header["packing"], header["fingerprint"], header["samples"],
                   cts, header["layout"])

    def save(self, path) -> int:
        data = self.to_bytes()
        Path(path).write_bytes(data)
        return len(data)


# A header lists one size per ciphertext: millions of ciphertexts fit in this.
_MAX_HEADER = 16 << 20
_WRONG_KIND = {"query": "this file is already a result; the server takes queries",
               "result": "this file is an encrypted query, not a result; run 'secureml he "
                         "infer' on it first"}


def _read_header(stream, size: int, what: str) -> dict:
    """The header of a batch file of `size` bytes, field by field, and nothing after it."""
    prefix = stream.read(len(_MAGIC) + 8)
    if not prefix.startswith(_MAGIC):
        raise CiphertextError(f"{what} is not a secureml ciphertext file (wrong magic bytes); "
                              f"use a file written by 'secureml he encrypt' or 'he infer'")
    corrupt = CiphertextError(f"{what} is truncated or corrupt (unreadable header); write it "
                              f"again")
    if len(prefix) < len(_MAGIC) + 8:
        raise corrupt
    (length,) = struct.unpack("<Q", prefix[len(_MAGIC):])
    if length > min(_MAX_HEADER, size - len(prefix)):
        raise corrupt
    try:
        header = json.loads(stream.read(length))
    except (ValueError, RecursionError):
        raise corrupt from None
    fields = {"format": int, "kind": str, "packing": str, "fingerprint": str, "samples": int,
              "layout": list, "sizes": list, "sha256": str}
    if not (isinstance(header, dict)
            and all(type(header.get(k)) is t for k, t in fields.items())
            and header["format"] == _FORMAT and header["kind"] in _WRONG_KIND
            and header["packing"] in PACKINGS
            and all(_positive(v) for v in (header["samples"], *header["layout"],
                                           *header["sizes"]))
            and header["sizes"]):
        raise corrupt
    payload = size - len(prefix) - length
    if sum(header["sizes"]) != payload:
        raise CiphertextError(f"{what} is truncated or corrupt: its header lists "
                              f"{sum(header['sizes'])} bytes of ciphertexts, the file holds "
                              f"{payload}; write it again")
    return header


def _positive(value) -> bool:
    return type(value) is int and value >= 1


def _check_layout(packing: str, samples: int, layout: list, slots: int, what: str) -> None:
    """Batched: chunks of at most `slots` samples adding up to `samples`; single: one entry
    (ciphertexts per sample)."""
    if packing == "single":
        ok = len(layout) == 1
    else:
        ok = sum(layout) == samples and max(layout, default=0) <= slots
    if not ok:
        raise CiphertextError(f"{what} is corrupt: its header claims {samples} samples in a "
                              f"{packing} layout of {len(layout)} entries that does not fit "
                              f"{slots}-slot ciphertexts; write it again")


def _count_message(kind: str, what: str, got: int, expected: int, samples: int) -> str:
    if kind == "query":
        return (f"{what} holds {got} ciphertexts for {samples} samples, but this model takes "
                f"{expected}: it was encrypted for another model or input shape; encrypt with "
                f"the spec of this model")
    return (f"{what} holds {got} ciphertexts for {samples} samples, but a result of this spec "
            f"has {expected}: it was computed for another model; decrypt with the keys made "
            f"for that model's spec")


def _other_keys(kind: str, what: str, theirs: str, keys: str, ours: str) -> str:
    if kind == "query":
        return (f"{what} was encrypted for another key pair (fingerprint {theirs[:12]}), "
                f"{keys} has {ours[:12]}: give the server the public/ folder of the keys that "
                f"encrypted it")
    return (f"{what} was made for another key pair (fingerprint {theirs[:12]}), {keys} have "
            f"{ours[:12]}: decrypt it with the keys that encrypted its query (if those were "
            f"replaced since, it cannot be decrypted)")


class HEClient:
    """Holds the secret key. `generate` makes a key pair for the server's spec."""

    def __init__(self, spec: dict, context, client_model: tf.keras.Model | None = None):
        check_spec(spec)
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
            raise CiphertextError(_WRONG_KIND["result"])
        if result.fingerprint != self.fingerprint:
            raise CiphertextError(_other_keys("result", "this result", result.fingerprint,
                                              "this client's keys", self.fingerprint))
        expected = self._count(result.packing, result.samples, result.layout)
        if len(result.ciphertexts) != expected:
            raise CiphertextError(_count_message("result", "this result",
                                                 len(result.ciphertexts), expected,
                                                 result.samples))
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

    def load_result(self, source, what: str = "result file", keys: str = "this client's keys",
                    max_bytes: int | None = None) -> EncryptedBatch:
        """A result from bytes or a file, checked before its ciphertexts are read (see
        `EncryptedBatch.load`)."""
        return EncryptedBatch.load(source, self.engine, self.fingerprint, "result", self._count,
                                   what=what, keys=keys, max_bytes=max_bytes)

    def _count(self, packing: str, samples: int, layout: list) -> int:
        """Ciphertexts in a result: one per sample (single), one per output and chunk."""
        return samples if packing == "single" else self.spec["num_outputs"] * len(layout)


class HEServer:
    """Evaluates the plan on ciphertexts with a public context; cannot decrypt.

    Handed a serialized context with the secret key, it keeps a context rebuilt without it
    (see `load_public_context`): no secret key or Decryptor is reachable from the server.
    """

    def __init__(self, plan: Plan, params: CKKSParameters, public_context: bytes):
        context = load_public_context(public_context, "the server's context")
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
        self._single_inputs = single.input_count(plan, self.engine.slots)

    def load_query(self, source, what: str = "query file",
                   keys: str = "the server's public context",
                   max_bytes: int | None = None) -> EncryptedBatch:
        """A query from bytes or a file, checked against this model before its ciphertexts
        are read (see `EncryptedBatch.load`)."""
        return EncryptedBatch.load(source, self.engine, self.fingerprint, "query", self._count,
                                   what=what, keys=keys, max_bytes=max_bytes)

    def _count(self, packing: str, samples: int, layout: list) -> int:
        """Ciphertexts this model takes: known to the server, never trusted from a header."""
        if packing == "single":
            return samples * self._single_inputs
        return self.plan.input.size * len(layout)

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
            raise CiphertextError(_WRONG_KIND["query"])
        expected = self._count(query.packing, query.samples, query.layout)
        if len(query.ciphertexts) != expected:
            raise CiphertextError(_count_message("query", "the query", len(query.ciphertexts),
                                                 expected, query.samples))
        if query.packing == "single":
            if self._single is None:
                self._single = single.Program(self.plan, self.engine)
            per = self._single_inputs
            outputs = []
            for i in range(query.samples):
                outputs += self._single.evaluate(query.ciphertexts[i * per:(i + 1) * per])
        else:
            n = self.plan.input.size
            outputs, offset = [], 0
            for _ in query.layout:
                outputs += batched.evaluate(self.engine, self.plan,
                                            query.ciphertexts[offset:offset + n], progress)
                offset += n
        return EncryptedBatch("result", query.packing, self.fingerprint, query.samples,
                              outputs, query.layout)
