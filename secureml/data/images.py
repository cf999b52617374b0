"""Decoding image folders, and bringing image arrays to one size, channel count and range.

Channel rule when `channels` is not set: grayscale modes (1, L, LA, I;16, I, F) give one
channel and every other mode (RGB, RGBA, P, CMYK, ...) gives RGB with any alpha dropped; a
set that mixes grayscale and colour images becomes RGB.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import memory
from ..errors import DataError
from .decoded import Decoded, encode_labels
from .formats import Located, relative

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# Starting worker processes costs about a second; below this many files one process is faster.
_PARALLEL_MIN_FILES = 2000
_CHUNK = 500
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


def read_image_folder(located: Located, config, progress: bool) -> Decoded:
    items = [(part, path, label) for part, pairs in located.parts.items()
             for path, label in pairs]
    mode = {1: "L", 3: "RGB", None: None}[config.channels]
    size = tuple(config.image_size) if config.image_size else None
    first = _peek(items[0][1]) if items else None
    if size or first:
        channels = config.channels or (1 if first is None or first[1] in GRAY_MODES else 3)
        _require_memory(len(items), size or first[0], channels, located.root,
                        first[0] if first else None)
    results = _decode_all([path for _, path, _ in items], mode, size, progress,
                          desc=f"decoding images in {located.root.name}")
    notes = dict(located.notes)
    decoded, corrupt = [], []
    for (part, path, label), result in zip(items, results):
        if isinstance(result, str):
            corrupt.append((path, result))
        else:
            decoded.append(_Image(part, path, label, *result))
    if corrupt:
        path, reason = corrupt[0]
        if config.on_corrupt == "error":
            more = f" (and {len(corrupt) - 1} more)" if len(corrupt) > 1 else ""
            raise DataError(f"{path}: cannot decode image: {reason}{more}. Replace or delete the "
                            f"file, or set data.on_corrupt: skip to leave unreadable images out "
                            f"(they are counted in the data set notes)")
        notes["corrupt_images_skipped"] = len(corrupt)
        notes["corrupt_image_examples"] = [relative(p, located.root) for p, _ in corrupt[:5]]
    if not decoded:
        raise DataError(f"{located.root}: none of the {len(items)} images could be decoded; "
                        f"first failure: {corrupt[0][0]}: {corrupt[0][1]}")
    _check_same_size(decoded, located.root)
    notes["image_modes"] = dict(sorted(Counter(d.mode for d in decoded).items()))
    channels = max(d.array.shape[-1] for d in decoded)
    promoted = sum(1 for d in decoded if d.array.shape[-1] < channels)
    if promoted:
        notes["grayscale_converted_to_rgb"] = promoted
    arrays = {part: [] for part in located.parts}
    raw_labels = {part: [] for part in located.parts}
    for d in decoded:
        arrays[d.part].append(np.repeat(d.array, channels, axis=-1)
                              if d.array.shape[-1] < channels else d.array)
        raw_labels[d.part].append(d.label)
    labels, class_names = encode_labels(raw_labels, located.root)
    parts = {part: (np.stack(arrays[part]), labels[part]) for part in arrays if arrays[part]}
    return Decoded("image", parts, class_names, notes)


class _Image(NamedTuple):
    part: str
    path: str
    label: str
    array: np.ndarray
    mode: str


def _peek(path: str) -> tuple[tuple[int, int], str] | None:
    """((height, width), mode) from an image's header, without decoding it; None if unreadable
    (decoding reports why)."""
    try:
        with Image.open(path) as image:
            return (image.size[1], image.size[0]), image.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _require_memory(count: int, size: tuple[int, int], channels: int, where,
                    source_size: tuple[int, int] | None) -> None:
    """Refuse before decoding when the set, as the float32 arrays the model trains on, cannot
    fit in memory."""
    height, width = size
    held = f" (the files hold {source_size[0]}x{source_size[1]} images)" if source_size else ""
    memory.require(4 * count * height * width * channels,
                   f"{where}: {count} images of {height}x{width}x{channels} (as float32)",
                   f"set data.image_size to a smaller [height, width]{held}, or use fewer "
                   f"images")


def _check_same_size(decoded: list[_Image], root: Path) -> None:
    def describe(d: _Image) -> str:
        return f"{relative(d.path, root)} is {d.array.shape[0]}x{d.array.shape[1]}"

    first = decoded[0]
    for other in decoded[1:]:
        if other.array.shape[:2] != first.array.shape[:2]:
            raise DataError(f"{root}: images have different sizes (height x width): "
                            f"{describe(first)} but {describe(other)}. Set data.image_size: "
                            f"[height, width] to resize every image to one size")


def _decode_all(paths: list[str], mode, size, progress: bool, desc: str) -> list:
    """Decode every path in order; each result is (uint8 HxWxC array, source mode) or an error str.

    Small images spend most time in PIL's Python header parsing, which holds the GIL, so
    threads do not help (measured: slower); worker processes roughly halve the time on two cores.
    """
    workers = _worker_count(len(paths))
    results = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress,
              leave=False) as bar:
        if workers == 1:
            for path in paths:
                results.append(_decode_file(path, mode, size))
                bar.update()
            return results
        chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
        # fork: spawn and forkserver re-import the user's __main__ module in every worker,
        # which runs unguarded scripts again. The workers touch only PIL and numpy.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for chunk in pool.map(_decode_chunk, chunks, repeat(mode), repeat(size)):
                results += chunk
                bar.update(len(chunk))
    return results


def _worker_count(n_files: int) -> int:
    """Worker processes for decoding: $SECUREML_DATA_WORKERS, else one per usable CPU (max 8)."""
    if n_files < _PARALLEL_MIN_FILES or not sys.platform.startswith("linux"):
        return 1
    setting = os.environ.get("SECUREML_DATA_WORKERS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise DataError(f"SECUREML_DATA_WORKERS={setting!r} must be a whole number >= 1")
        return int(setting)
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def _decode_chunk(paths: list[str], mode, size) -> list:
    return [_decode_file(path, mode, size) for path in paths]


def _decode_file(path: str, mode: str | None, size: tuple[int, int] | None):
    """(uint8 array (H, W, C), source mode) for one image, or the reason it failed as a str."""
    try:
        with Image.open(path) as image:
            source_mode = image.mode
            if size is not None:
                image.draft(None, (size[1], size[0]))  # JPEG: decode at a reduced scale if possible
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                # convert("L") would clip 16-bit values at 255; keep the high byte instead.
                high = np.right_shift(np.asarray(image, dtype=np.uint32), 8)
                image = Image.fromarray(np.minimum(high, 255).astype(np.uint8), "L")
            target = mode or ("L" if source_mode in GRAY_MODES else "RGB")
            if image.mode != target:
                image = image.convert(target)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return (array[..., None] if array.ndim == 2 else array), source_mode


def conform_images(x: np.ndarray, config, where: str) -> tuple[np.ndarray, dict]:
    """Image arrays from npz/pickle/IDX files as uint8 or float32 [0, 1] (N, H, W, C)."""
    notes = {}
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        hint = ""
        if x.ndim == 4 and x.shape[1] in (1, 3, 4):
            hint = " It looks channels-first; transpose it with x.transpose(0, 2, 3, 1)."
        raise DataError(f"{where}: image array has shape {x.shape}; expected (N, height, width) "
                        f"or channels-last (N, height, width, 1|3|4).{hint}")
    _require_memory(len(x), tuple(config.image_size or x.shape[1:3]),
                    config.channels or min(x.shape[-1], 3), where, x.shape[1:3])
    x = _unit_range(x, where)
    if x.shape[-1] == 4:
        x = x[..., :3]
        notes["alpha_dropped"] = True
    if config.channels == 1 and x.shape[-1] == 3:
        gray = np.tensordot(x.astype(np.float32), _LUMA, axes=([-1], [0]))[..., None]
        x = np.rint(gray).astype(np.uint8) if x.dtype == np.uint8 else gray
    elif config.channels == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if config.image_size and tuple(x.shape[1:3]) != tuple(config.image_size):
        x = _resize(x, tuple(config.image_size))
    return x, notes


def _unit_range(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: holds {x.dtype} values, not image pixels; expected uint8 "
                        f"0..255 or floats in [0, 1]")
    if x.size == 0:
        raise DataError(f"{where}: the image array is empty")
    low, high = x.min(), x.max()
    if np.issubdtype(x.dtype, np.integer) and low >= 0 and high <= 255:
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return x.astype(np.float32, copy=False)
    raise DataError(f"{where}: image values range from {low} to {high} ({x.dtype}); expected "
                    f"uint8 0..255 or floats in [0, 1]. Rescale the array before saving it")


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of every image and channel with PIL (float mode keeps full precision)."""
    height, width = size
    out = np.empty((len(x), height, width, x.shape[-1]), dtype=np.float32)
    for i, image in enumerate(x):
        for c in range(x.shape[-1]):
            plane = Image.fromarray(image[..., c].astype(np.float32), "F")
            out[i, ..., c] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    if x.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.clip(out, 0.0, 1.0)
