"""Shared setup of tests and benchmarks: no downloads, a throwaway data cache, the real data sets
if present, digits, and a fresh process with several devices."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

# Set at import, before any test or collection can load data: tests never download and
# never write the data cache into the home folder.
os.environ["SECUREML_NO_DOWNLOAD"] = "1"
_CACHE = tempfile.mkdtemp(prefix="secureml-test-cache-")
os.environ["SECUREML_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # pyproject's addopts disable benchmark timing for the ordinary test run; asking for
    # benchmarks only (`pytest benchmarks/ --benchmark-only`) means timing them.
    if getattr(config.option, "benchmark_only", False):
        config.option.benchmark_enable = True


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real data sets folder ($SECUREML_DATA_DIR, else ../shared/datasets), or skip."""
    configured = os.environ.get("SECUREML_DATA_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path}; set SECUREML_DATA_DIR or put them "
                    f"at ../shared/datasets")
    return path


@pytest.fixture(scope="session")
def digits_arrays():
    """scikit-learn's 1,797 digits as (x, y): float32 images (N, 8, 8, 1) in [0, 1], labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images / 16.0).astype("float32")[..., None], d.target


@pytest.fixture(scope="session")
def digits(digits_arrays):
    """(x_train, y_train, x_test, y_test): the first 1,200 digits to train on, the rest to test."""
    x, y = digits_arrays
    return x[:1200], y[:1200], x[1200:], y[1200:]


DEVICES_PRELUDE = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    from secureml.models import build_model
    from secureml.training import RuntimeConfig, configure_runtime, make_strategy, train

    replicas = int(sys.argv[1])
    runtime = RuntimeConfig(strategy="mirrored" if replicas > 1 else "default",
                            cpu_devices=replicas)
    configure_runtime(runtime)
    strategy = make_strategy(runtime)
""")


@pytest.fixture(scope="session")
def run_on_devices():
    """Run a script in a fresh Python process with `replicas` logical CPU devices.

    Logical devices must be configured before TensorFlow initializes, hence the fresh process.
    The script starts after a prelude that defines `replicas`, `strategy` (MirroredStrategy when
    replicas > 1), `build_model` and `train`; it prints one JSON object as its last line, which
    is returned.
    """
    def run(script: str, replicas: int, *args: str) -> dict:
        out = subprocess.run([sys.executable, "-c", DEVICES_PRELUDE + textwrap.dedent(script),
                              str(replicas), *args], capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    return run
