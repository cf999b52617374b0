"""Errors a user can act on.

Every error secureml raises on purpose is a `SecureMLError` whose message names the
problem and the fix. The CLI prints these without a traceback; anything else is a bug.
"""


class SecureMLError(Exception):
    """A problem with the user's input or environment that the user can fix."""


class ConfigError(SecureMLError, ValueError):
    """An experiment config or parameter is invalid."""


class DataError(SecureMLError, ValueError):
    """A data set is missing, malformed or unusable."""


class UnsupportedError(SecureMLError):
    """A model, layer or setting that a capability does not support."""


class KeyFileError(SecureMLError):
    """A secret key file would be overwritten, or cannot be created safely."""


class UnsafeModelError(DataError):
    """A model file refused because loading it could run code, or it is not the file named."""


class TrainingError(SecureMLError):
    """Training cannot go on: its loss or weights are no longer finite numbers."""
