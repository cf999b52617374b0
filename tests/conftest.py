"""Shared test setup: no downloads, a throwaway data cache, and the real data sets if present."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Set at import, before any test or collection can load data: tests never download and
# never write the data cache into the home folder.
os.environ["SECUREML_NO_DOWNLOAD"] = "1"
_CACHE = tempfile.mkdtemp(prefix="secureml-test-cache-")
os.environ["SECUREML_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real data sets folder ($SECUREML_DATA_DIR, else ../shared/datasets), or skip."""
    configured = os.environ.get("SECUREML_DATA_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path}; set SECUREML_DATA_DIR or put them "
                    f"at ../shared/datasets")
    return path
