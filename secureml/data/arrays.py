"""Data sets stored as arrays: Keras-style .npz, CIFAR python batches, IDX files, sklearn digits.

Pickles (CIFAR batches, object arrays in .npz) can run arbitrary code when loaded, so they
are read with an unpickler that only rebuilds numpy arrays and plain Python values.
"""
from __future__ import annotations

import gzip
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .decoded import Decoded, as_text_array, encode_labels
from .formats import Located
from .images import conform_images

_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
# Protocol-2 pickles written by Python 3 rebuild bytes with _codecs.encode(str, "latin1").
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
                   ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                   ("numpy.core.numeric", "_frombuffer"), ("_codecs", "encode")}
# Token ids in the Keras imdb.npz: 0 padding, 1 start of review, 2 out of vocabulary; words
# are numbered from 3 (keras.datasets.imdb's index_from).
_KERAS_IMDB_INDEX_FROM = 3
_KERAS_IMDB_OOV = "[UNK]"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        module = module.replace("numpy._core", "numpy.core")  # pickles written by numpy 2
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def safe_unpickle(file, where, **kwargs):
    try:
        return _ArraysOnlyUnpickler(file, **kwargs).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{where}: cannot read this pickle ({err}); secureml only loads numpy "
                        f"arrays and plain values from pickles, for safety. Re-save the data as "
                        f"plain arrays (numpy.savez) or another supported format") from None


def read_npz(located: Located, config, progress: bool) -> Decoded:
    path = located.parts["train"]
    arrays = _load_npz(path)
    if not {"x_train", "y_train"} <= arrays.keys():
        raise DataError(f"{path}: expected arrays x_train and y_train (and optionally x_test, "
                        f"y_test); found {', '.join(sorted(arrays)) or 'none'}. Save it with "
                        f"numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: has only one of x_test and y_test; save both or neither")
    names = ["train"] + (["test"] if "x_test" in arrays else [])
    notes = {}
    raw, xs = {}, {}
    for part in names:
        x, y = arrays[f"x_{part}"], _class_ids(arrays[f"y_{part}"], f"{path} y_{part}", notes)
        if len(x) != len(y):
            raise DataError(f"{path}: x_{part} has {len(x)} examples but y_{part} has {len(y)}")
        xs[part], raw[part] = x, y.tolist()
    labels, class_names = encode_labels(raw, path)
    if all(_holds_text(xs[part]) for part in names):
        kind = "text"
        xs = {part: as_text_array([str(t) for t in xs[part]]) for part in names}
    elif all(_holds_token_ids(xs[part]) for part in names):
        kind = "text"
        xs = _decode_keras_imdb(xs, path, located.extra.get("word_index"))
        notes["texts_rebuilt_from_token_ids"] = True
    else:
        kind = "image"
        for part in names:
            xs[part], part_notes = conform_images(xs[part], config, f"{path} x_{part}")
            notes.update(part_notes)
    return Decoded(kind, {part: (xs[part], labels[part]) for part in names}, class_names, notes)


def _holds_text(x: np.ndarray) -> bool:
    return x.dtype.kind == "U" or (x.dtype == object and all(isinstance(v, str) for v in x))


def _holds_token_ids(x: np.ndarray) -> bool:
    """An object array of integer sequences, as in the Keras imdb.npz."""
    return x.dtype == object and all(isinstance(v, (list, np.ndarray))
                                     and all(isinstance(i, (int, np.integer)) for i in v[:5])
                                     for v in x[:50])


def _class_ids(y: np.ndarray, where: str, notes: dict) -> np.ndarray:
    """Labels as a 1-D array; one-hot rows (as from to_categorical) become class ids."""
    if y.ndim == 2 and y.shape[1] > 1:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise DataError(f"{where}: labels have shape {y.shape} but are not one-hot; save one "
                            f"class id per example")
        notes["one_hot_labels_converted"] = True
        return y.argmax(axis=1)
    return y.reshape(-1)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError:  # an object array: numpy would unpickle it unchecked
                    arrays[key] = _load_object_array(path, key)
            return arrays
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err}); re-create it with "
                        f"numpy.savez") from None


def _load_object_array(path: Path, key: str) -> np.ndarray:
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADER_READERS:
            raise DataError(f"{path}: array {key} uses .npy format {version}, which secureml "
                            f"cannot read safely; re-save it with numpy.savez")
        _NPY_HEADER_READERS[version](member)
        return np.asarray(safe_unpickle(member, f"{path} {key}", encoding="latin1"))


def _decode_keras_imdb(xs: dict, path: Path, word_index_path: Path | None) -> dict:
    if word_index_path is None:
        raise DataError(f"{path} holds reviews as token ids only; put imdb_word_index.json next "
                        f"to it (keras.datasets.imdb.get_word_index() downloads it) or use the "
                        f"raw aclImdb folder or IMDB JSON lines instead")
    with open(word_index_path, encoding="utf-8") as f:
        word_index = json.load(f)
    words = {index + _KERAS_IMDB_INDEX_FROM: word for word, index in word_index.items()}
    words[2] = _KERAS_IMDB_OOV
    return {part: as_text_array([" ".join(words.get(int(i), _KERAS_IMDB_OOV)
                                          for i in ids if i > 1) for ids in x])
            for part, x in xs.items()}


def read_cifar_pickle(located: Located, config, progress: bool) -> Decoded:
    label_key, names_key = located.extra["label_key"], located.extra["names_key"]
    xs, raw = {}, {}
    for part, files in located.parts.items():
        batches = [_load_pickle(f) for f in files]
        try:
            data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
            raw[part] = [int(v) for b in batches for v in b[label_key]]
        except KeyError as err:
            raise DataError(f"{files[0]}: not a CIFAR batch (no {err} entry); expected the "
                            f"python version of CIFAR-10/100 as Keras downloads it") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{files[0]}: CIFAR batch data has shape {data.shape}; expected "
                            f"(N, 3072)")
        xs[part] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels, class_names = encode_labels(raw, located.root)
    meta = located.extra.get("meta")
    if meta is not None:
        names = [n.decode("utf-8") if isinstance(n, bytes) else str(n)
                 for n in _load_pickle(meta).get(names_key, [])]
        if len(names) >= len(class_names):
            class_names = names
    notes = {}
    for part in xs:
        xs[part], part_notes = conform_images(xs[part], config, f"{located.root} {part}")
        notes.update(part_notes)
    return Decoded("image", {part: (xs[part], labels[part]) for part in xs}, class_names, notes)


def _load_pickle(path: Path) -> dict:
    # CIFAR batches were written by Python 2; keys arrive as bytes.
    with open(path, "rb") as f:
        batch = safe_unpickle(f, path, encoding="bytes")
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict (a CIFAR batch), got "
                        f"{type(batch).__name__}")
    return {k.decode("utf-8") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_idx(located: Located, config, progress: bool) -> Decoded:
    xs, raw, notes = {}, {}, {}
    for part, (images, labels) in located.parts.items():
        x, y = _read_idx_file(images), _read_idx_file(labels)
        if len(x) != len(y):
            raise DataError(f"{images}: {len(x)} images but {labels} has {len(y)} labels")
        xs[part], part_notes = conform_images(x, config, str(images))
        notes.update(part_notes)
        raw[part] = y.tolist()
    ids, class_names = encode_labels(raw, located.root)
    return Decoded("image", {part: (xs[part], ids[part]) for part in xs}, class_names, notes)


def _read_idx_file(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format): magic 0x0000 0x08 ndim, sizes, data."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); download the file again") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad header); download it "
                        f"again")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but the file holds {data.size} "
                        f"values; the file is truncated, download it again")
    return data.reshape(shape)


def load_digits(config) -> Decoded:
    """scikit-learn's bundled 8x8 digits (values 0..16), the data set that needs no files."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x, notes = conform_images(x, config, "sklearn digits")
    labels, class_names = encode_labels({"train": digits.target.tolist()}, "sklearn digits")
    return Decoded("image", {"train": (x, labels["train"])}, class_names, notes)
