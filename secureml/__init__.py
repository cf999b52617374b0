"""secureml: privacy and security hardening for TensorFlow/Keras classifiers."""
import os as _os

# TensorFlow's C++ start-up chatter (CPU features, missing CUDA) hides secureml's own output.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ._compat import check_versions as _check_versions

_check_versions()

__version__ = "0.1.0"
