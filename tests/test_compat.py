"""The import-time check refuses TensorFlow/Keras versions tensorflow-privacy cannot run on."""
import pytest

from secureml import _compat
from secureml.errors import SecureMLError


def fake_versions(monkeypatch, **versions):
    def version(dist):
        if dist in versions:
            return versions[dist]
        raise _compat.metadata.PackageNotFoundError(dist)
    monkeypatch.setattr(_compat.metadata, "version", version)


def test_pinned_versions_pass(monkeypatch):
    fake_versions(monkeypatch, tensorflow="2.15.1", keras="2.15.0")
    _compat.check_versions()


@pytest.mark.parametrize("versions,named", [
    ({"tensorflow": "2.16.1", "keras": "3.3.3"}, "TensorFlow 2.16.1"),
    ({"tensorflow": "2.15.1", "keras": "3.0.0"}, "Keras 3.0.0"),
    ({}, "TensorFlow is not installed"),
])
def test_other_versions_are_refused_with_the_fix(monkeypatch, versions, named):
    fake_versions(monkeypatch, **versions)
    with pytest.raises(SecureMLError) as err:
        _compat.check_versions()
    assert named in str(err.value)
    assert "tensorflow==2.15.1" in str(err.value)
