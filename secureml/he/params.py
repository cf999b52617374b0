"""CKKS parameters at a chosen security level, per the HomomorphicEncryption.org standard.

The standard (Albrecht et al., "Homomorphic Encryption Standard", 2018; the table SEAL
enforces) bounds the total coefficient-modulus bits for each polynomial degree N, for a
ternary secret and classical attacks. A plan of multiplicative depth L needs a modulus chain
`[q0, s x L, special]`: each of the L rescalings drops one prime of `s` bits (the scale), `q0`
holds the final values, and the special prime serves key switching. The smallest N whose
budget holds the chain is chosen; slots are N/2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError, UnsupportedError

MAX_COEFF_BITS = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MAX_PRIME_BITS = 60  # SEAL's largest coefficient-modulus prime
MIN_POLY_DEGREE = 4096  # CKKS with relinearization needs a few primes


@dataclass(frozen=True)
class CKKSParameters:
    poly_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int
    security: int

    @property
    def slots(self) -> int:
        return self.poly_degree // 2

    @property
    def depth(self) -> int:
        """Rescalings the chain allows."""
        return len(self.coeff_bits) - 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_bits)

    def describe(self) -> dict:
        return {"poly_modulus_degree": self.poly_degree,
                "coeff_mod_bit_sizes": list(self.coeff_bits),
                "total_coeff_modulus_bits": self.total_bits,
                "max_coeff_modulus_bits": MAX_COEFF_BITS[self.security][self.poly_degree],
                "scale_bits": self.scale_bits, "depth": self.depth, "slots": self.slots,
                "security_bits": self.security,
                "security_standard": "HomomorphicEncryption.org (2018), classical, ternary secret"}

    @classmethod
    def from_dict(cls, d: dict) -> CKKSParameters:
        """Parameters from `describe()`, e.g. of a spec from the other party: refused when
        malformed, or when the chain exceeds what the claimed security level allows."""
        names = ("poly_modulus_degree", "scale_bits", "security_bits")
        if not (isinstance(d, dict) and all(type(d.get(k)) is int for k in names)
                and isinstance(d.get("coeff_mod_bit_sizes"), list)
                and all(type(b) is int for b in d["coeff_mod_bit_sizes"])):
            raise ConfigError("CKKS parameters need integer poly_modulus_degree, scale_bits, "
                              "security_bits and a list of integer coeff_mod_bit_sizes; use a "
                              "spec written by 'secureml he spec'")
        params = cls(d["poly_modulus_degree"], tuple(d["coeff_mod_bit_sizes"]), d["scale_bits"],
                     d["security_bits"])
        table = MAX_COEFF_BITS.get(params.security, {})
        if params.poly_degree not in table or len(params.coeff_bits) < 3 \
                or not all(1 <= b <= MAX_PRIME_BITS for b in params.coeff_bits) \
                or not 20 <= params.scale_bits < MAX_PRIME_BITS:
            raise ConfigError(f"CKKS parameters N={params.poly_degree}, moduli "
                              f"{list(params.coeff_bits)}, scale 2^{params.scale_bits} at "
                              f"{params.security}-bit security are not valid; use a spec "
                              f"written by 'secureml he spec'")
        if params.total_bits > table[params.poly_degree]:
            raise ConfigError(f"CKKS parameters claim {params.security}-bit security, but "
                              f"{params.total_bits} modulus bits at N={params.poly_degree} "
                              f"allow at most {table[params.poly_degree]} at that level: "
                              f"keys for them would be weaker than claimed; regenerate the spec")
        return params


def choose_parameters(depth: int, final_bits: int, *, security: int = 128, scale_bits: int = 40,
                      poly_degree: int | None = None) -> CKKSParameters:
    """The smallest polynomial degree whose modulus budget holds `depth` rescalings.

    `final_bits` is how many bits the first prime needs (the scale plus the headroom of the
    largest value left after the last rescaling, from `Plan.first_prime_bits`).
    """
    if security not in MAX_COEFF_BITS:
        raise ConfigError(f"security must be one of {', '.join(map(str, MAX_COEFF_BITS))} "
                          f"bits, got {security}")
    if not 20 <= scale_bits <= MAX_PRIME_BITS - 1:
        raise ConfigError(f"scale_bits must be in [20, {MAX_PRIME_BITS - 1}], got {scale_bits}")
    if final_bits > MAX_PRIME_BITS:
        raise UnsupportedError(
            f"the model's values need {final_bits} bits in the last CKKS prime (scale "
            f"2^{scale_bits} plus headroom), more than SEAL's {MAX_PRIME_BITS}; lower scale_bits "
            f"or keep activations smaller (normalize inputs, use weight decay)")
    first = max(final_bits, scale_bits + 1)
    chain = (first,) + (scale_bits,) * depth + (first,)
    table = MAX_COEFF_BITS[security]
    if poly_degree is not None:
        if poly_degree not in table:
            raise ConfigError(f"poly_degree must be one of {', '.join(map(str, table))}, got "
                              f"{poly_degree}")
        if sum(chain) > table[poly_degree]:
            raise UnsupportedError(
                f"depth {depth} at scale 2^{scale_bits} needs {sum(chain)} modulus bits; "
                f"poly_degree {poly_degree} allows {table[poly_degree]} at {security}-bit "
                f"security. Remove the poly_degree override, lower scale_bits, or use a model "
                f"with fewer layers")
        return CKKSParameters(poly_degree, chain, scale_bits, security)
    for degree in sorted(table):
        if degree >= MIN_POLY_DEGREE and sum(chain) <= table[degree]:
            return CKKSParameters(degree, chain, scale_bits, security)
    largest = max(table)
    raise UnsupportedError(
        f"depth {depth} at scale 2^{scale_bits} needs {sum(chain)} modulus bits, more than "
        f"the {table[largest]} that N={largest} allows at {security}-bit security; lower "
        f"scale_bits or use a shallower model (fewer polynomial activations)")


def bits_for(value: float) -> int:
    """Bits needed to hold |value| (at least 1)."""
    return max(1, math.ceil(math.log2(max(abs(value), 1.0))) + 1)
