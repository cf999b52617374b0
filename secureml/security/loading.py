"""Load a Keras model file without running code from it: the one model loader of secureml.

Keras 2.15 runs code from a model file in ways its `safe_mode` does not stop: a legacy HDF5 file
(also one renamed to `.keras`, which Keras then loads with its legacy loader) runs a `Lambda`
layer's bytecode; in the v3 format a `module` key makes Keras import any importable module, and
a `registered_name` picks any class registered in the process; and HDF5 weights may take
their bytes from any other file. So `load_model` reads the file once, accepts only a v3 `.keras`
zip with the three members Keras writes, weights that hold their own bytes, and a `config.json`
whose every object is on an allow-list (Keras built-in layers, initializers, regularizers,
constraints and activations, and secureml's own layers), all checked before Keras sees it, and
only then lets Keras build the model, in safe mode and uncompiled, from those same bytes.

    from secureml.security.loading import load_model
    model = load_model("runs/x/plain/model/model.keras")
"""
from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zipfile
import zlib
from pathlib import Path

import tensorflow as tf

from ..errors import DataError, UnsafeModelError
from ..models.he_layers import PolyActivation
from .files import read_bounded

_RESAVE = "re-save it with model.save('model.keras') from code you trust"
# The members Keras 2.15 writes into a .keras file, with the largest size accepted for each.
_MEMBERS = {"config.json": 16 << 20, "metadata.json": 1 << 20, "model.weights.h5": 4 << 30}
_MAX_FILE = 4 << 30
_MAX_DEPTH = 100  # Keras configs nest about 10 levels deep; this bounds the walk
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# Built-in layers that only compute on tensors: every layer secureml builds, trains, compiles
# for encryption or attacks, and the common ones beside them. Not here, so refused: Lambda and
# TFOpLambda (they carry code), TFSMLayer (loads a SavedModel), lookup and text layers (read
# vocabulary files), and anything else not listed.
_LAYERS = (
    "InputLayer", "Dense", "Conv1D", "Conv2D", "Conv2DTranspose", "DepthwiseConv2D",
    "SeparableConv2D", "Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional",
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
    "Flatten", "Reshape", "Permute", "RepeatVector",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "Masking", "Rescaling",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "UpSampling1D", "UpSampling2D",
    "BatchNormalization", "LayerNormalization", "UnitNormalization",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
)
# secureml's registered Keras objects (the classes its models save).
_SECUREML_OBJECTS = (PolyActivation,)
_CUSTOM_OBJECTS = {tf.keras.saving.get_registered_name(cls): cls for cls in _SECUREML_OBJECTS}
_ACTIVATIONS = frozenset(name for name in dir(tf.keras.activations)
                         if not name.startswith("_")) - {"get", "serialize", "deserialize"}
_ACTIVATION_KEYS = frozenset({"activation", "recurrent_activation"})
_MODELS = {("keras.src.engine.functional", "Functional"): "Functional",
           ("keras", "Sequential"): None}


def _allowed_classes() -> dict:
    """(module, class_name) as Keras writes them -> the registered_name that goes with them."""
    table = {("keras.layers", getattr(tf.keras.layers, name).__name__): None for name in _LAYERS}
    for module, namespace in (("keras.initializers", tf.keras.initializers),
                              ("keras.regularizers", tf.keras.regularizers),
                              ("keras.constraints", tf.keras.constraints)):
        table.update({(module, name): None for name in dir(namespace)
                      if isinstance(getattr(namespace, name), type)})
    table[("keras.mixed_precision", "Policy")] = None
    table.update(_MODELS)
    table.update({(cls.__module__, cls.__name__): name for name, cls in _CUSTOM_OBJECTS.items()})
    return table


_CLASSES = _allowed_classes()


def load_model(path, *, what: str = "model", sha256: str | None = None) -> tf.keras.Model:
    """The Keras model in the `.keras` file at `path`, refused if loading it could run code.

    `what` names the file in messages ("client model"); `sha256`, when given, is the hex digest
    the file must have (checked on the very bytes that are loaded). Raises `UnsafeModelError`
    for a refused file, `DataError` for a missing or unreadable one.
    """
    path = Path(path)
    try:
        data = _read(path)
        if sha256 is not None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256.lower():
                raise _Refused(f"its SHA-256 {digest[:16]}... is not the expected "
                               f"{sha256[:16]}...; the file was replaced or damaged, get it "
                               f"again from its source")
        _check_config(_archive_config(data))
    except _Refused as refused:
        raise UnsafeModelError(f"refusing to load the {what} at {path}: {refused}") from None
    except FileNotFoundError:
        raise DataError(f"no {what} at {path}; check the path") from None
    except OSError as err:
        raise DataError(f"cannot read the {what} at {path}: {err.strerror or err}") from None
    return _deserialize(data, path, what)


class _Refused(Exception):
    """Why a file is refused (load_model adds which file)."""


def _read(path: Path) -> bytes:
    if path.is_dir():
        raise _Refused(f"it is a folder (a SavedModel?); secureml loads only Keras v3 .keras "
                       f"files: {_RESAVE}")
    if path.suffix != ".keras":
        raise _Refused(f"secureml loads only Keras v3 .keras files (a legacy "
                       f"'{path.suffix or path.name}' file can run code when loaded): {_RESAVE}")
    if path.exists() and not path.is_file():
        raise _Refused("it is not a regular file")
    data = read_bounded(path, _MAX_FILE)
    if not data:
        raise _Refused(f"it is empty or larger than {_MAX_FILE >> 30} GiB")
    return data


def _archive_config(data: bytes) -> dict:
    """config.json of a .keras archive holding exactly the members Keras writes (weights
    included, checked by `_check_weights`)."""
    if data.startswith(_HDF5_MAGIC):
        raise _Refused(f"it is a legacy HDF5 file under a .keras name (Keras would load it "
                       f"with its legacy loader, which runs Lambda bytecode): {_RESAVE}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError):
        raise _Refused(f"it is not a Keras v3 .keras archive (not a zip file): {_RESAVE}") \
            from None
    names = sorted(info.filename for info in members)
    if names != sorted(_MEMBERS):
        raise _Refused(f"its members are {names}, a Keras v3 .keras file has exactly "
                       f"{sorted(_MEMBERS)}: {_RESAVE}")
    for info in members:
        if info.file_size > _MEMBERS[info.filename] or info.compress_type not in (
                zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(f"its {info.filename} is too large or compressed unusually "
                           f"({info.file_size} bytes, method {info.compress_type}): {_RESAVE}")
    try:
        config = json.loads(archive.read("config.json"))
        metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RecursionError):
        raise _Refused(f"its config.json or metadata.json is corrupt: {_RESAVE}") from None
    if not isinstance(config, dict) or not isinstance(metadata, dict):
        raise _Refused(f"its config.json or metadata.json is not a JSON object: {_RESAVE}")
    _check_weights(archive)
    return config


def _check_weights(archive: zipfile.ZipFile) -> None:
    """model.weights.h5 holds its weights itself. HDF5 lets a dataset take its bytes from
    another file (external storage, virtual datasets) and a link point into one: Keras would
    load any file on this machine into the weights."""
    import h5py

    def check(name, item):
        if isinstance(item, h5py.Group):
            for child in item:
                link = item.get(child, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise _Refused(f"its weights link {item.name.rstrip('/')}/{child} elsewhere "
                                   f"({type(link).__name__}): {_RESAVE}")
        elif isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
            raise _Refused(f"its weights {item.name} are read from other files: {_RESAVE}")

    try:
        with archive.open("model.weights.h5") as stream, h5py.File(stream, "r") as weights:
            check("/", weights)
            weights.visititems(check)  # each object once, following hard links only
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile, zlib.error):
        raise _Refused(f"its model.weights.h5 is not a readable HDF5 file: {_RESAVE}") from None


def _check_config(config: dict) -> None:
    """Every object the config names is on the allow-list, before Keras deserializes any."""
    stack = [(config, "config", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise _Refused(f"its config nests deeper than {_MAX_DEPTH} levels at {where}")
        if isinstance(node, dict):
            if "class_name" in node:
                _check_object(node, where)
            for key, value in node.items():
                # compile=False makes Keras drop the model's own compile_config unread.
                if depth == 0 and key == "compile_config":
                    continue
                if key in _ACTIVATION_KEYS and isinstance(value, str) \
                        and value not in _ACTIVATIONS:
                    raise _Refused(f"{where}.{key} is {value!r}, not a Keras built-in "
                                   f"activation: {_RESAVE}")
                stack.append((value, f"{where}.{key}", depth + 1))
        elif isinstance(node, list):
            stack.extend((value, f"{where}[{i}]", depth + 1) for i, value in enumerate(node))
        elif isinstance(node, str) and node not in _CUSTOM_OBJECTS \
                and tf.keras.saving.get_registered_object(node) is not None:
            # Keras resolves such a name to whatever class or function was registered under it.
            raise _Refused(f"{where} names the registered object {node!r}, which is not on "
                           f"secureml's allow-list: {_RESAVE}")
    model = (config.get("module"), config.get("class_name"))
    if not all(isinstance(name, str) for name in model) or model not in _MODELS:
        raise _Refused(f"it holds a {model[1]!r:.80}, not a functional or Sequential Keras "
                       f"model: {_RESAVE}")


def _check_object(node: dict, where: str) -> None:
    class_name, module = node.get("class_name"), node.get("module")
    registered = node.get("registered_name")
    if not isinstance(class_name, str) or not isinstance(module, (str, type(None))) \
            or not isinstance(registered, (str, type(None))):
        raise _Refused(f"{where} names an object by something other than strings (class_name "
                       f"{type(class_name).__name__}, module {type(module).__name__}, "
                       f"registered_name {type(registered).__name__}): {_RESAVE}")
    if class_name in ("Lambda", "__lambda__"):
        raise _Refused(f"{where} is a Lambda, which carries Python code that would run: "
                       f"rebuild the model without Lambda layers and {_RESAVE}")
    if class_name == "function":
        # Keras writes built-in activations as names; a function object is someone's code.
        raise _Refused(f"{where} names the Python function {module}.{node.get('config')}; "
                       f"secureml loads only Keras built-in activations, given by name: "
                       f"{_RESAVE}")
    if (module, class_name) not in _CLASSES:
        raise _Refused(f"{where} names {class_name!r} from module {module!r}, which is not on "
                       f"secureml's allow-list (Keras built-in layers, initializers, "
                       f"regularizers, constraints and secureml's own layers); rebuild the "
                       f"model from those and {_RESAVE}")
    if registered not in (None, class_name, _CLASSES[(module, class_name)]):
        raise _Refused(f"{where} gives {class_name!r} the registered name {registered!r}, which "
                       f"would make Keras build another class: {_RESAVE}")


def _deserialize(data: bytes, path: Path, what: str) -> tf.keras.Model:
    """Keras builds the model from the checked bytes (a private copy: the file on disk may
    change after the check)."""
    with tempfile.TemporaryDirectory(prefix="secureml-model-") as folder:
        copy = Path(folder) / "model.keras"
        copy.write_bytes(data)
        try:
            return tf.keras.models.load_model(copy, custom_objects=_CUSTOM_OBJECTS,
                                              compile=False, safe_mode=True)
        except (OSError, ValueError, TypeError, KeyError, AttributeError,
                RecursionError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise DataError(f"cannot load the {what} at {path}: {reason}; {_RESAVE}") from None
