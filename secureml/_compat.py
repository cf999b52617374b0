"""Checks that the installed TensorFlow/Keras are the ones secureml is pinned to.

tensorflow-privacy 0.9.0 fails on TensorFlow 2.16+ (Keras 3) with errors from deep inside
its optimizers, so we stop early with a message that says how to fix the install.
"""
from importlib import metadata

SUPPORTED_TENSORFLOW = "2.15"
SUPPORTED_KERAS = "2.15"


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> None:
    from .errors import SecureMLError

    tf_version = (_installed("tensorflow") or _installed("tensorflow-cpu")
                  or _installed("tensorflow-macos") or _installed("tf-nightly"))
    keras_version = _installed("keras")
    fix = ('reinstall the pinned stack: pip install "tensorflow==2.15.1" "keras==2.15.0" '
           '"tensorflow-privacy==0.9.0" (or pip install -e . in the secureml checkout)')
    if tf_version is None:
        raise SecureMLError(f"TensorFlow is not installed; secureml needs TensorFlow "
                            f"{SUPPORTED_TENSORFLOW}.x with Keras 2: {fix}")
    if not tf_version.startswith(SUPPORTED_TENSORFLOW + "."):
        raise SecureMLError(
            f"TensorFlow {tf_version} is installed, but secureml supports only TensorFlow "
            f"{SUPPORTED_TENSORFLOW}.x (Keras 2): tensorflow-privacy 0.9.0 breaks on "
            f"TensorFlow 2.16+ (Keras 3). Fix: {fix}")
    if keras_version is not None and not keras_version.startswith(SUPPORTED_KERAS + "."):
        raise SecureMLError(
            f"Keras {keras_version} is installed, but secureml supports only Keras "
            f"{SUPPORTED_KERAS}.x (Keras 3 breaks tensorflow-privacy). Fix: {fix}")
