"""CKKS operations on SEAL objects of a TenSEAL context, with the rescaling under our control.

TenSEAL's vector API rescales after every multiplication. Encrypted layers need finer
control: a weighted sum multiplies each term by a plaintext weight encoded at the scale of the
prime that the sum will drop, adds all terms, and rescales once, which keeps the scale exact
and costs one rescaling per sum instead of one per term. The SEAL evaluator that TenSEAL ships
(`tenseal.sealapi`) works directly on the ciphertexts of a TenSEAL context.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import tenseal as ts
from tenseal import sealapi

from .errors import CiphertextError
from .params import CKKSParameters


def make_context(params: CKKSParameters, rotations: bool) -> ts.Context:
    """A fresh private context: secret, public and relinearization keys (and Galois keys for
    the rotations of the single packing)."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_degree,
                         coeff_mod_bit_sizes=list(params.coeff_bits))
    context.global_scale = 2.0 ** params.scale_bits
    context.generate_relin_keys()
    if rotations:
        context.generate_galois_keys()
    return context


def public_bytes(context: ts.Context) -> bytes:
    """The context without its secret key: what the server gets."""
    return context.serialize(save_public_key=True, save_secret_key=False,
                             save_galois_keys=context.has_galois_keys(), save_relin_keys=True)


def fingerprint(context: ts.Context) -> str:
    """Names the key pair: parameters and public key (deterministic serialization)."""
    core = context.serialize(save_public_key=True, save_secret_key=False,
                             save_galois_keys=False, save_relin_keys=False)
    return hashlib.sha256(core).hexdigest()[:32]


def load_context(data: bytes, what: str) -> ts.Context:
    try:
        return ts.context_from(data)
    except Exception as err:  # TenSEAL raises plain ValueError/RuntimeError on bad bytes
        raise CiphertextError(f"{what} is not a valid TenSEAL context ({err}); use the file "
                              f"written by 'secureml he keygen'") from None


def load_public_context(data: bytes, what: str) -> ts.Context:
    """A context that cannot decrypt, whatever `data` holds.

    TenSEAL's `make_context_public` drops the secret key but keeps the Decryptor made from it
    (`decryptor()` still decrypts), while loading makes a Decryptor only from a serialized
    secret key. So a context holding one is rebuilt from its serialization without it, and
    the context that held the key is dropped.
    """
    context = load_context(data, what)
    try:
        asymmetric = context.has_public_key()
    except ValueError:  # TenSEAL: a symmetric context has no public key at all
        asymmetric = False
    if not asymmetric:
        raise CiphertextError(f"{what} has no public key, so the server could not encrypt "
                              f"constants; use the public.context written by 'secureml he "
                              f"keygen'")
    if context.has_secret_key():
        context = load_context(public_bytes(context), what)
    return context


class Engine:
    """Evaluator, encoder and evaluation keys of one context (the public part suffices)."""

    def __init__(self, context: ts.Context):
        self.context = context
        self.seal = context.seal_context().data
        self.evaluator = sealapi.Evaluator(self.seal)
        self.encoder = sealapi.CKKSEncoder(self.seal)
        self.slots = self.encoder.slot_count()
        self.scale = context.global_scale
        self.relin_keys = context.relin_keys().data if context.has_relin_keys() else None
        self.galois_keys = context.galois_keys().data if context.has_galois_keys() else None
        self._encryptor = context.encryptor().data

    @property
    def max_ciphertext_bytes(self) -> int:
        """An upper bound on a serialized ciphertext of this context: two polynomials at the
        top level, what zstd may add to incompressible data, and SEAL's headers."""
        top = self.seal.first_context_data().parms()
        raw = 2 * top.poly_modulus_degree() * len(top.coeff_modulus()) * 8
        return raw + raw // 256 + 65536

    # plaintexts
    def encode(self, values, like, scale: float) -> sealapi.Plaintext:
        """`values` (a number, or up to `slots` numbers) at the level of ciphertext `like`."""
        plain = sealapi.Plaintext()
        parms = like.parms_id() if like is not None else self.seal.first_parms_id()
        if np.ndim(values) == 0:
            self.encoder.encode(float(values), parms, scale, plain)
        else:
            self.encoder.encode(np.asarray(values, dtype=np.float64).tolist(), parms, scale, plain)
        return plain

    def next_prime(self, ct) -> float:
        """The prime the next rescaling of `ct` divides by: weights encoded at this scale
        leave the scale unchanged after the rescaling."""
        data = self.seal.get_context_data(ct.parms_id())
        return float(data.parms().coeff_modulus()[-1].value())

    # ciphertexts
    def encrypt(self, values) -> sealapi.Ciphertext:
        ct = sealapi.Ciphertext(self.seal)
        self._encryptor.encrypt(self.encode(values, None, self.scale), ct)
        return ct

    def encrypt_like(self, values, like) -> sealapi.Ciphertext:
        """An encryption of `values` at the level and scale of `like` (public key only)."""
        plain = self.encode(values, like, like.scale)
        ct = sealapi.Ciphertext(self.seal)
        self._encryptor.encrypt(plain, ct)
        return ct

    def multiply_plain(self, ct, plain) -> sealapi.Ciphertext:
        out = sealapi.Ciphertext()
        self.evaluator.multiply_plain(ct, plain, out)
        return out

    def accumulate(self, acc, ct, plain):
        """`acc + ct * plain` (just the product when `acc` is None), not rescaled."""
        term = self.multiply_plain(ct, plain)
        if acc is None:
            return term
        self.evaluator.add_inplace(acc, term)
        return acc

    def rotate_and_sum_inplace(self, ct, strides) -> None:
        for stride in strides:
            self.evaluator.add_inplace(ct, self.rotate(ct, stride))

    def finish_sum(self, acc, bias) -> None:
        """Rescale a weighted sum once, then add its bias at the resulting scale."""
        self.evaluator.rescale_to_next_inplace(acc)
        if np.any(bias):
            self.evaluator.add_plain_inplace(acc, self.encode(bias, acc, acc.scale))

    def square(self, ct) -> sealapi.Ciphertext:
        out = sealapi.Ciphertext()
        self.evaluator.square(ct, out)
        self.evaluator.relinearize_inplace(out, self.relin_keys)
        self.evaluator.rescale_to_next_inplace(out)
        return out

    def rotate(self, ct, steps: int) -> sealapi.Ciphertext:
        if self.galois_keys is None:
            raise CiphertextError("the single packing rotates ciphertexts and needs Galois "
                                  "keys; generate keys with --packing single (or both)")
        out = sealapi.Ciphertext()
        self.evaluator.rotate_vector(ct, steps, self.galois_keys, out)
        return out

    def decrypt(self, ct, count: int) -> np.ndarray:
        plain = sealapi.Plaintext()
        self.context.decryptor().data.decrypt(ct, plain)
        return np.asarray(self.encoder.decode_double(plain)[:count])


_SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def ciphertext_bytes(ct) -> bytes:
    """SEAL's own serialization (compressed), through a scratch file: the bindings write to
    paths only."""
    with tempfile.TemporaryDirectory(dir=_SCRATCH) as folder:
        path = os.path.join(folder, "ct")
        ct.save(path)
        return Path(path).read_bytes()


def ciphertext_from_bytes(engine: Engine, data: bytes, what: str) -> sealapi.Ciphertext:
    """Load and validate a ciphertext against the context; SEAL checks its parameters."""
    with tempfile.TemporaryDirectory(dir=_SCRATCH) as folder:
        path = os.path.join(folder, "ct")
        Path(path).write_bytes(data)
        ct = sealapi.Ciphertext(engine.seal)
        try:
            ct.load(engine.seal, path)
        except Exception as err:
            raise CiphertextError(f"{what}: not a valid ciphertext for this context ({err}); "
                                  f"it is corrupt or was made with other encryption "
                                  f"parameters") from None
    return ct
