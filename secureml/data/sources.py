"""Where each named data set comes from, in order: data.path, $SECUREML_DATA_DIR/<name>, the
Keras cache, a download through keras.utils.get_file, and (digits only) scikit-learn."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .formats import ACLIMDB_DIR, CIFAR10_DIR, CIFAR100_DIR, IDX_FILES, LAYOUTS, SMS_FILE

DOWNLOAD_TIMEOUT_SECONDS = 15
_KERAS_DATA = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class Download:
    """One keras.utils.get_file call; hashes are the ones keras.datasets checks."""

    fname: str
    origin: str
    file_hash: str | None = None
    untar: bool = False
    extract: bool = False
    subdir: str = "datasets"


@dataclass(frozen=True)
class NamedSet:
    name: str
    kind: str
    title: str
    class_names: tuple[str, ...] | None  # None: take them from the files (CIFAR-100 meta)
    keras_cache: tuple[str, ...]  # under <Keras home>/datasets; the first that exists is used
    downloads: tuple[Download, ...]
    layouts: tuple[str, ...]  # the formats its folder in $SECUREML_DATA_DIR may use


@dataclass(frozen=True)
class Source:
    origin: str  # path | env | keras_cache | download | bundled
    path: Path | None
    url: str | None = None


_DIGITS = tuple(str(i) for i in range(10))
NAMED = {s.name: s for s in (
    NamedSet("cifar10", "image", "CIFAR-10",
             ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
              "truck"),
             (CIFAR10_DIR,),
             (Download(CIFAR10_DIR, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                       untar=True),),
             ("image_folder", "cifar_pickle")),
    NamedSet("mnist", "image", "MNIST", _DIGITS, ("mnist.npz",),
             (Download("mnist.npz", _KERAS_DATA + "mnist.npz",
                       "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"),),
             ("image_folder", "npz")),
    NamedSet("fashion_mnist", "image", "Fashion-MNIST",
             ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
              "Bag", "Ankle boot"),
             ("fashion-mnist",),
             tuple(Download(f"{stem}.gz", f"{_KERAS_DATA}{stem}.gz",
                            subdir=os.path.join("datasets", "fashion-mnist"))
                   for stem in IDX_FILES.values()),
             ("image_folder", "npz")),
    NamedSet("cifar100", "image", "CIFAR-100 (fine labels)", None, (CIFAR100_DIR,),
             (Download(CIFAR100_DIR, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                       "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                       untar=True),),
             ("image_folder", "cifar_pickle")),
    NamedSet("digits", "image", "scikit-learn 8x8 digits", _DIGITS, (), (),
             ("image_folder", "npz")),
    NamedSet("imdb", "text", "IMDB movie reviews", ("negative", "positive"),
             (ACLIMDB_DIR, "imdb.npz"),
             # The raw reviews, as the Keras text-classification tutorials fetch them; the
             # Keras imdb.npz holds token ids only.
             (Download("aclImdb_v1", "https://ai.stanford.edu/~amaas/data/sentiment/"
                                     "aclImdb_v1.tar.gz", untar=True),),
             ("jsonl", "aclimdb")),
    NamedSet("sms_spam", "text", "SMS Spam Collection", ("ham", "spam"),
             ("sms_spam", SMS_FILE),
             (Download("sms_spam_collection.zip", "https://archive.ics.uci.edu/static/public/228/"
                                                  "sms+spam+collection.zip", extract=True,
                       subdir=os.path.join("datasets", "sms_spam")),),
             ("sms_spam", "csv", "tsv")),
)}


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()


def download_blocker(allow: bool) -> str | None:
    """Why downloads are off, or None when they are allowed."""
    flag = os.environ.get("SECUREML_NO_DOWNLOAD", "").strip().lower()
    if flag not in ("", "0", "false", "no"):
        return f"downloads are disabled by SECUREML_NO_DOWNLOAD={flag}"
    if not allow:
        return "downloads are disabled by data.download: false"
    return None


def _find_local(spec: NamedSet) -> tuple[Source | None, list[str]]:
    """The first local copy of a named set, and every place looked at."""
    tried = []
    data_dir = os.environ.get("SECUREML_DATA_DIR", "").strip()
    if data_dir:
        candidate = Path(data_dir).expanduser() / spec.name
        if candidate.exists():
            return Source("env", candidate), tried
        tried.append(f"{candidate} ($SECUREML_DATA_DIR/{spec.name}): not there")
    else:
        tried.append(f"$SECUREML_DATA_DIR/{spec.name}: SECUREML_DATA_DIR is not set")
    for relative in spec.keras_cache:
        candidate = keras_home() / "datasets" / relative
        if candidate.exists():
            return Source("keras_cache", candidate), tried
        tried.append(f"{candidate} (Keras cache): not there")
    return None, tried


def resolve(config) -> Source:
    if config.path is not None:
        # Configs may say $SECUREML_DATA_DIR/imdb so that one file works on every machine.
        path = Path(os.path.expandvars(config.path)).expanduser()
        if not path.exists():
            unset = "$" in str(path)
            raise DataError(f"data.path {path} does not exist"
                            + (" (an environment variable in it is not set)" if unset else "")
                            + "; set it to the file or folder holding the data"
                            + (f", or remove it to let secureml find the named set "
                               f"{config.name!r}" if config.name else ""))
        return Source("path", path)
    spec = NAMED[config.name]
    found, tried = _find_local(spec)
    if found is not None:
        return found
    if spec.downloads:
        url = spec.downloads[0].origin
        blocker = download_blocker(config.download)
        if blocker is None:
            try:
                for download in spec.downloads:
                    _fetch(download)
            except Exception as err:  # noqa: BLE001 - any failure means "not downloaded"
                tried.append(f"download from {url}: failed ({type(err).__name__}: {err})")
            else:
                found, _ = _find_local(spec)
                if found is not None:
                    return Source("download", found.path, url)
                tried.append(f"download from {url}: finished but no files appeared in "
                             f"{keras_home() / 'datasets'}")
        else:
            tried.append(f"download from {url}: {blocker}")
    if spec.name == "digits":
        return Source("bundled", None)
    raise DataError(f"data set {spec.name!r} ({spec.title}) was not found. Looked in:\n"
                    + "".join(f"  - {t}\n" for t in tried) + "Fix: " + where_to_put(spec))


def where_to_put(spec: NamedSet) -> str:
    layouts = " or ".join(f"{fmt} ({LAYOUTS[fmt]})" for fmt in spec.layouts)
    text = (f"put the files in <folder>/{spec.name}/ as {layouts} and set "
            f"SECUREML_DATA_DIR=<folder>, or set data.path to where they are")
    if spec.keras_cache:
        text += (f", or put the Keras download at "
                 f"{keras_home() / 'datasets' / spec.keras_cache[0]}")
    if spec.downloads:
        text += ", or allow downloads (unset SECUREML_NO_DOWNLOAD, data.download: true)"
    return text + ". The named set 'digits' ships with scikit-learn and always works offline."


def _fetch(download: Download) -> None:
    from keras.utils import get_file  # imports TensorFlow: only when really downloading

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        # Keras' get_file ignores KERAS_HOME; pass it so files land where they are looked for.
        get_file(download.fname, origin=download.origin, file_hash=download.file_hash,
                 untar=download.untar, extract=download.extract, cache_subdir=download.subdir,
                 cache_dir=str(keras_home()))
    finally:
        socket.setdefaulttimeout(previous)


def list_sources(config_paths: dict | None = None) -> list[dict]:
    """Each named set with where it would load from now, without downloading anything.

    `config_paths` maps a named set to the data.path an experiment config gives it.
    """
    rows = []
    for spec in NAMED.values():
        row = {"name": spec.name, "kind": spec.kind, "title": spec.title}
        configured = (config_paths or {}).get(spec.name)
        if configured is not None:
            path = Path(configured).expanduser()
            found = Source("path", path) if path.exists() else None
            if found is None:
                row.update(status="not found", origin=None, location=None,
                           hint=f"data.path {path} does not exist")
                rows.append(row)
                continue
        else:
            found, _ = _find_local(spec)
        if found is not None:
            row.update(status="found", origin=found.origin, location=str(found.path))
        elif spec.downloads and download_blocker(True) is None:
            row.update(status="download", origin="download", location=spec.downloads[0].origin)
        elif spec.name == "digits":
            row.update(status="bundled", origin="bundled",
                       location="scikit-learn (sklearn.datasets.load_digits)")
        else:
            row.update(status="not found", origin=None, location=None)
        row["hint"] = "" if row["status"] in ("found", "bundled") else where_to_put(spec)
        rows.append(row)
    return rows
