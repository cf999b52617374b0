"""`load_dataset`: find the source, decode it (or take it from the cache), split it."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import schema
from ..errors import DataError
from . import arrays, cache, images, sources, texts
from .config import NAMED_SETS, DataConfig
from .dataset import Dataset
from .decoded import Decoded, finalize
from .formats import locate
from .pii import anonymize_dataset
from .splits import to_dataset

log = logging.getLogger(__name__)

_READERS = {
    "image_folder": images.read_image_folder,
    "npz": arrays.read_npz,
    "cifar_pickle": arrays.read_cifar_pickle,
    "idx": arrays.read_idx,
    "csv": texts.read_table,
    "tsv": texts.read_table,
    "jsonl": texts.read_jsonl,
    "text_folder": texts.read_text_folder,
    "aclimdb": texts.read_text_folder,
    "sms_spam": texts.read_sms,
}
# Array formats load about as fast as a cache entry would, so caching them only copies them.
_UNCACHED = frozenset({"npz", "cifar_pickle", "idx"})


def load_dataset(config: DataConfig | dict | str, seed: int = 0,
                 progress: bool = True) -> Dataset:
    """Load a named set or the files at a path, split into train, validation and test.

    `config` is a `DataConfig`, the `data:` mapping of an experiment config, or a string
    naming a set ("cifar10") or a path. The result depends only on the config, the files
    and `seed`.
    """
    config = _as_config(config)
    source = sources.resolve(config)
    if source.origin == "bundled":
        decoded = finalize(arrays.load_digits(config), "sklearn digits")
        provenance = {"origin": "bundled", "path": "sklearn.datasets.load_digits",
                      "format": "sklearn_digits"}
    else:
        decoded, provenance = _decode(source.path, config, progress)
        provenance = {"origin": source.origin, **provenance}
        if source.url:
            provenance["url"] = source.url
    name = config.name or _stem(Path(config.path))
    if config.name is not None:
        decoded = _as_named(decoded, sources.NAMED[config.name], provenance["path"])
    data = to_dataset(decoded, config, seed, name, provenance)
    if config.anonymize:
        if data.kind != "text":
            raise DataError(f"data.anonymize replaces personal data in texts, but {name} is an "
                            "image data set; remove data.anonymize")
        data = anonymize_dataset(data)
    return data


def _as_config(config) -> DataConfig:
    if isinstance(config, str):
        if config in NAMED_SETS:
            return DataConfig(name=config)
        if not Path(config).expanduser().exists():
            raise DataError(f"{config!r} is neither a named data set ({', '.join(NAMED_SETS)}) "
                            f"nor an existing file or folder")
        return DataConfig(path=config)
    return schema.build(DataConfig, config, "data")


def _decode(path: Path, config: DataConfig, progress: bool) -> tuple[Decoded, dict]:
    located = locate(path, config.format)
    files_hash = cache.fingerprint(located)
    provenance = {"path": str(located.root), "format": located.format,
                  "fingerprint": files_hash[:16]}
    entry = None if located.format in _UNCACHED else cache.entry_path(located, files_hash, config)
    if entry is not None:
        decoded = cache.load(entry)
        if decoded is not None:
            log.info("loaded %s from the data cache %s", located.root, entry)
            return decoded, provenance
    decoded = finalize(_READERS[located.format](located, config, progress), located.root)
    if entry is not None:
        cache.save(entry, decoded)
    return decoded, provenance


def _as_named(decoded: Decoded, spec, where: str) -> Decoded:
    """Check a named set's files hold that set, and give its classes their real names/order."""
    if decoded.kind != spec.kind:
        raise DataError(f"{where}: holds {decoded.kind} data, but {spec.name!r} ({spec.title}) "
                        f"is {spec.kind} data; point data.path at {spec.title} or drop data.name "
                        f"to load these files as your own data set")
    expected = list(spec.class_names or decoded.class_names)
    found = decoded.class_names
    if found == expected:
        return decoded
    if found == [str(i) for i in range(len(found))] and len(found) <= len(expected):
        return Decoded(decoded.kind, decoded.parts, expected, decoded.notes)
    if set(found) <= set(expected):
        order = np.array([expected.index(n) for n in found], dtype=np.int64)
        parts = {p: (x, order[y]) for p, (x, y) in decoded.parts.items()}
        return Decoded(decoded.kind, parts, expected, decoded.notes)
    raise DataError(f"{where}: classes {found} do not match {spec.title}'s classes {expected}; "
                    f"fix the class names, or drop data.name to load the files as your own set")


def _stem(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".gz", ".jsonl", ".csv", ".tsv", ".npz"):
        name = name.removesuffix(suffix)
    return name or "data"
