"""Errors of encrypted inference, each naming the problem and the fix."""
from ..errors import SecureMLError


class FidelityError(SecureMLError):
    """Decrypted results do not match the plaintext model: depth or scale was exceeded."""


class CiphertextError(SecureMLError):
    """A ciphertext or key file is corrupt, tampered with, or made under another context."""
