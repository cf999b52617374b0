"""The single packing: one sample per ciphertext, for latency.

A *block* is a ciphertext whose slots repeat with a power-of-two `period`; slot t holds
feature `features[t % period]` (-1: zero padding). Repetition across the whole ring lets a
rotation wrap around without masking.

- A convolution on the input image runs on an im2col layout the client prepares (its own
  pixels, rearranged): column c of the patch matrix fills slots [c*W, c*W + windows) of a block
  (W: windows padded to a power of two). Per filter, one plaintext product with the kernel
  laid out the same way and log2(columns) rotations sum the columns: filter f's feature map
  lands in its own block.
- Any other affine map uses the diagonal method (Halevi-Shoup) with baby-step giant-step
  rotations, over several input blocks at once, into one block of period m (outputs padded to a
  power of two): about 2*sqrt(min(n, m)) + log2(n/m) rotations for n inputs.
Plaintext products are encoded at the scale of the prime the next rescaling drops, so every
layer rescales once and keeps the scale exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from .ckks import Engine
from .plan import Affine, Plan


@dataclass
class Block:
    period: int
    features: np.ndarray  # (period,) feature index per slot, -1 for padding


def pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


# ---- the input layout, shared by the client (encrypt) and the server (plan program) ----

def im2col_geometry(conv: dict, slots: int) -> dict | None:
    """Window and column padding for an im2col layout, or None when one window row of all
    columns cannot fit a ciphertext."""
    (oh, ow), (kh, kw) = conv["output_shape"][:2], conv["kernel_size"]
    windows, columns = oh * ow, kh * kw * conv["input_shape"][2]
    padded_windows = pow2(windows)
    if padded_windows > slots:
        return None
    per_block = min(pow2(columns), slots // padded_windows)
    return {"windows": windows, "padded_windows": padded_windows, "columns": columns,
            "columns_per_block": per_block, "blocks": -(-columns // per_block)}


def im2col(images: np.ndarray, conv: dict) -> np.ndarray:
    """Patches of shape (N, windows, kh*kw*C), in TensorFlow's padding convention."""
    (h, w, _), (kh, kw), (sh, sw) = conv["input_shape"], conv["kernel_size"], conv["strides"]
    oh, ow = conv["output_shape"][:2]
    if conv["padding"] == "same":
        ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
        images = np.pad(images, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                                 (0, 0)])
    patches = [images[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :].reshape(len(images), -1)
               for i in range(oh) for j in range(ow)]
    return np.stack(patches, axis=1)


def input_vectors(features: np.ndarray, conv: dict | None, slots: int) -> list[np.ndarray]:
    """The slot vectors the client encrypts for one sample's features."""
    geometry = im2col_geometry(conv, slots) if conv else None
    if geometry is None:
        return [np.tile(block_values, slots // len(block_values))
                for block_values in _flat_blocks(features, slots)]
    patches = im2col(features.reshape(1, *conv["input_shape"]), conv)[0]
    return [np.tile(values, slots // len(values))
            for values in _im2col_blocks(patches.T, geometry)]


def _flat_blocks(values: np.ndarray, slots: int) -> list[np.ndarray]:
    n = len(values)
    period = min(pow2(n), slots)
    padded = np.zeros(-(-n // period) * period)
    padded[:n] = values
    return list(padded.reshape(-1, period))


def _im2col_blocks(columns: np.ndarray, geometry: dict) -> list[np.ndarray]:
    """Rows of `columns` (one per im2col column, each over the windows) into blocks."""
    per, width = geometry["columns_per_block"], geometry["padded_windows"]
    blocks = []
    for b in range(geometry["blocks"]):
        values = np.zeros(per * width)
        for local, row in enumerate(columns[b * per:(b + 1) * per]):
            values[local * width:local * width + len(row)] = row
        blocks.append(values)
    return blocks


def input_blocks(size: int, slots: int) -> list[Block]:
    """The blocks of a flat input of `size` features (see `_flat_blocks`)."""
    period = min(pow2(size), slots)
    blocks = []
    for start in range(0, size, period):
        features = np.arange(start, start + period)
        features[features >= size] = -1
        blocks.append(Block(period, features))
    return blocks


def input_layout(plan: Plan, slots: int) -> tuple[dict | None, list[Block] | None]:
    """(the im2col geometry of a first convolution, else None; else the flat input's blocks)."""
    first = plan.ops[0]
    conv = first.conv if isinstance(first, Affine) else None
    geometry = im2col_geometry(conv, slots) if conv else None
    return geometry, None if geometry else input_blocks(plan.input.size, slots)


def input_count(plan: Plan, slots: int) -> int:
    """Ciphertexts per sample in a single-packing query of `plan`."""
    geometry, blocks = input_layout(plan, slots)
    return geometry["blocks"] if geometry else len(blocks)


# ---- the server's program ----

class Program:
    """The single packing of a plan on one engine: plaintexts are encoded once, on first use."""

    def __init__(self, plan: Plan, engine: Engine):
        self.engine = engine
        slots = engine.slots
        self.geometry, blocks = input_layout(plan, slots)
        self.steps = []
        for op in plan.ops:
            if not isinstance(op, Affine):
                self.steps.append(("square", None))
            elif blocks is None:
                step = _ConvStep(op, self.geometry, slots)
                blocks = step.output_blocks
                self.steps.append(("conv", step))
            else:
                step = _LinearStep(op, blocks, slots)
                blocks = [step.output_block]
                self.steps.append(("linear", step))
        self.rotations = sum(step.rotations for kind, step in self.steps if step is not None)

    def evaluate(self, cts: list) -> list:
        for kind, step in self.steps:
            if kind == "square":
                cts = [self.engine.square(ct) for ct in cts]
            else:
                cts = step.run(self.engine, cts)
        return cts


class _Plaintexts:
    """Encoded plaintexts, kept for the level they were made at."""

    def __init__(self):
        self.cache = {}

    def get(self, engine: Engine, key, values, like, scale):
        hit = self.cache.get(key)
        if hit is None or hit[0] != like.parms_id():
            hit = (like.parms_id(), engine.encode(values, like, scale))
            self.cache[key] = hit
        return hit[1]


class _ConvStep:
    def __init__(self, op: Affine, geometry: dict, slots: int):
        kernel = op.conv["kernel"].reshape(-1, op.conv["kernel"].shape[-1])  # (columns, F)
        filters = kernel.shape[1]
        windows, width = geometry["windows"], geometry["padded_windows"]
        self.kernels = [[np.tile(v, slots // len(v)) for v in _im2col_blocks(
            np.repeat(kernel[:, f:f + 1], windows, axis=1), geometry)] for f in range(filters)]
        self.strides = [width << e for e in range(int(math.log2(geometry["columns_per_block"])))]
        self.output_blocks, self.biases = [], []
        for f in range(filters):
            features = np.full(width, -1)
            features[:windows] = np.arange(windows) * filters + f
            self.output_blocks.append(Block(width, features))
            self.biases.append(_spread(op.bias, features, slots))
        self.rotations = filters * len(self.strides)
        self.plain = _Plaintexts()

    def run(self, engine: Engine, cts: list) -> list:
        prime = engine.next_prime(cts[0])
        outputs = []
        for f, kernels in enumerate(self.kernels):
            acc = None
            for b, (ct, values) in enumerate(zip(cts, kernels)):
                if values.any():
                    acc = engine.accumulate(acc, ct, self.plain.get(engine, (f, b), values, ct,
                                                                    prime))
            engine.rotate_and_sum_inplace(acc, self.strides)
            engine.finish_sum(acc, self.biases[f])
            outputs.append(acc)
        return outputs


class _LinearStep:
    def __init__(self, op: Affine, blocks: list[Block], slots: int):
        m = op.matrix.shape[1]
        width = pow2(m)
        if width > slots:
            raise UnsupportedError(
                f"layer(s) {', '.join(op.layers)}: {m} outputs do not fit the {slots} slots of "
                f"one ciphertext in the single packing; use packing 'batched'")
        period = max(max(b.period, width) for b in blocks)
        diagonals = max(min(b.period, width) for b in blocks)
        self.baby = 1 << math.ceil(math.log2(diagonals) / 2)
        self.terms: dict[int, list] = {}  # giant step -> [(block, baby step, plaintext values)]
        for k, block in enumerate(blocks):
            self._add_block_terms(op, k, block, width, period, slots)
        self.giants = max(self.terms, default=0) + 1
        self.baby_steps = {k: max(r for g in self.terms.values() for kk, r, _ in g if kk == k)
                           for k in {kk for g in self.terms.values() for kk, _, _ in g}}
        self.strides = [width << e for e in range(int(math.log2(period // width)))]
        self.output_block = Block(width, np.where(np.arange(width) < m, np.arange(width), -1))
        self.bias = _spread(op.bias, self.output_block.features, slots)
        self.rotations = sum(self.baby_steps.values()) + self.giants - 1 + len(self.strides)
        self.plain = _Plaintexts()

    def _add_block_terms(self, op, k, block, width, period, slots):
        n, m = block.period, op.matrix.shape[1]
        span = max(n, width)
        t = np.arange(span)
        j = t % width
        for i in range(min(n, width)):
            u = block.features[(t + i) % n]
            valid = (u >= 0) & (j < m)
            ring = np.zeros(period)
            ring[:span][valid] = op.matrix[u[valid], j[valid]]
            if not ring.any():
                continue
            giant, baby = divmod(i, self.baby)
            # Pre-rotated by -giant*baby so the giant-step rotation of the sum lines it up.
            values = np.roll(np.tile(ring, slots // period), giant * self.baby)
            self.terms.setdefault(giant, []).append((k, baby, values))

    def run(self, engine: Engine, cts: list) -> list:
        prime = engine.next_prime(cts[0])
        rotated = {}
        for k, steps in self.baby_steps.items():
            rotated[k, 0] = cts[k]
            for r in range(1, steps + 1):
                rotated[k, r] = engine.rotate(rotated[k, r - 1], 1)
        z = None
        for giant in range(self.giants - 1, -1, -1):
            if z is not None:
                z = engine.rotate(z, self.baby)
            for k, r, values in self.terms.get(giant, []):
                ct = rotated[k, r]
                z = engine.accumulate(z, ct, self.plain.get(engine, (giant, k, r), values, ct,
                                                            prime))
        engine.rotate_and_sum_inplace(z, self.strides)
        engine.finish_sum(z, self.bias)
        return [z]


def _spread(bias: np.ndarray, features: np.ndarray, slots: int) -> np.ndarray:
    values = np.where(features >= 0, bias[np.maximum(features, 0)], 0.0)
    return np.tile(values, slots // len(values))
