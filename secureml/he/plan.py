"""Compile a trained Keras model into an encrypted evaluation plan.

A plan is what the server evaluates on ciphertexts: a chain of `Affine` maps (matrix and bias
over the flattened features) and `Square`s. Every supported layer is affine (Dense, Conv2D,
average pooling, flatten, the embedding mean) or a degree-2 `PolyActivation`, which the
compiler rewrites as `c2*(x + d)**2 + k`: the shift `d` joins the affine map before it, `c2`
and `k` the one after, so each activation costs exactly one multiplicative level. Adjacent
affine maps are merged when that does not add multiplications. The multiplicative depth is
the number of affine maps plus squares, and it sets the CKKS parameters.

The plan's float64 reference `forward` runs on calibration inputs to bound every intermediate
value; the bound sets the headroom of the last prime and lets the client recognise garbage
(CKKS returns it silently when a value outgrows the modulus).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from ..errors import DataError, UnsupportedError
from ..models.he_layers import PolyActivation
from .params import bits_for
from .fidelity import worst_error

# A value may exceed the largest calibration value by this factor before the plan refuses it.
BOUND_MARGIN = 16.0
_PROBE_CHUNK = 512

_RESHAPING = (tf.keras.layers.Flatten, tf.keras.layers.Reshape, tf.keras.layers.Dropout)
_ALTERNATIVE = ("use an HE-friendly model (model: {name: he_cnn} for images, he_text for "
                "text), convert this one to its polynomial twin (encrypted_inference: "
                "{convert_epochs: 5}, or secureml.he.convert_to_polynomial), or for text_lstm "
                "run encrypted inference in split mode (encrypted_inference: {mode: split})")


@dataclass
class Affine:
    matrix: np.ndarray  # (n_in, n_out), float64
    bias: np.ndarray  # (n_out,)
    layers: list[str]
    # Set while this map is exactly one Conv2D applied to the input image: the single
    # packing then evaluates it on an im2col layout the client prepares.
    conv: dict | None = None

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.matrix))


@dataclass
class Square:
    layers: list[str]


@dataclass
class InputSpec:
    """What the client encrypts. kind: image (pixels), bag (normalized word counts over the
    vocabulary, ids 0..V-1) or features (the output of a client-side model part)."""

    kind: str
    shape: tuple
    mask_zero: bool = True
    split_layer: str | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Plan:
    input: InputSpec
    ops: list
    num_outputs: int
    model_name: str
    bounds: list[float] = field(default_factory=list)  # max |value| after each op
    input_bound: float = 1.0

    @property
    def depth(self) -> int:
        return len(self.ops)

    def forward(self, features: np.ndarray) -> np.ndarray:
        """The plan in float64 on plaintext features: what the ciphertexts must decrypt to."""
        return self._run(np.asarray(features, dtype=np.float64))[-1]

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        outputs = []
        for op in self.ops:
            x = x @ op.matrix + op.bias if isinstance(op, Affine) else x * x
            outputs.append(x)
        return outputs

    def calibrate(self, features: np.ndarray) -> None:
        outputs = self._run(np.asarray(features, dtype=np.float64))
        self.input_bound = float(np.max(np.abs(features), initial=1e-12))
        self.bounds = [float(np.max(np.abs(o), initial=1e-12)) for o in outputs]

    def first_prime_bits(self, scale_bits: int) -> int:
        """Bits the first prime needs so no value, times the scale, outgrows its modulus.

        After op k, `depth - k - 1` primes of `scale_bits` remain above the first one.
        """
        needed = bits_for(self.input_bound * BOUND_MARGIN) + scale_bits - self.depth * scale_bits
        for k, bound in enumerate(self.bounds):
            remaining = self.depth - k - 1
            needed = max(needed, bits_for(bound * BOUND_MARGIN) + scale_bits
                         - remaining * scale_bits)
        return needed

    @property
    def output_bound(self) -> float:
        return self.bounds[-1] * BOUND_MARGIN

    def multiplications(self) -> dict:
        """Plaintext-ciphertext products per sample in the batched packing, and squarings."""
        return {"plain_products": sum(op.nnz for op in self.ops if isinstance(op, Affine)),
                "squares": sum(_width(self.ops[:i], name=op.layers[0])
                               for i, op in enumerate(self.ops) if isinstance(op, Square))}

    def describe(self) -> dict:
        return {"model": self.model_name, "input": {"kind": self.input.kind,
                                                    "shape": list(self.input.shape),
                                                    "split_layer": self.input.split_layer},
                "depth": self.depth, "num_outputs": self.num_outputs,
                "ops": [_describe_op(op) for op in self.ops], **self.multiplications()}


def _describe_op(op) -> dict:
    if isinstance(op, Affine):
        return {"op": "affine", "inputs": op.matrix.shape[0], "outputs": op.matrix.shape[1],
                "nonzero_weights": op.nnz, "layers": op.layers, "im2col": op.conv is not None}
    return {"op": "square", "layers": op.layers}


def compile_model(model: tf.keras.Model, calibration_inputs, *, mode: str = "full",
                  split_layer: str = "lstm", tolerance: float = 1e-3) -> tuple[Plan, object]:
    """The plan of `model` and, in split mode, the client-side model (else None).

    `calibration_inputs` are raw model inputs (images, token ids) that bound the values; the
    compiled plan is checked against the Keras model on them. Without them, random inputs of
    the model's input shape stand in (enough to check and evaluate the plan; the bounds that
    set CKKS parameters should come from real data).
    """
    if calibration_inputs is None:
        calibration_inputs = _random_inputs(model)
    layers = _chain(model)
    client_model = None
    if mode == "split":
        names = [layer.name for layer in layers]
        if split_layer not in names:
            raise UnsupportedError(f"split mode: model '{model.name}' has no layer named "
                                   f"'{split_layer}' (layers: {', '.join(names)}); split mode "
                                   f"is for text_lstm, whose client part ends at 'lstm'")
        cut = names.index(split_layer) + 1
        client_model = tf.keras.Model(model.inputs, layers[cut - 1].output,
                                      name=f"{model.name}_client")
        shape = tuple(int(d) for d in layers[cut - 1].output.shape[1:])
        spec = InputSpec("features", (int(np.prod(shape)),), split_layer=split_layer)
        ops = _server_ops(layers[cut:], shape)
    elif mode == "full":
        spec, ops = _full_ops(model, layers)
    else:
        raise UnsupportedError(f"mode must be 'full' or 'split', got {mode!r}")
    ops = _fold(ops)
    if not ops or not isinstance(ops[-1], Affine):
        raise UnsupportedError(f"model '{model.name}' must end with a Dense logits layer")
    num_outputs = ops[-1].matrix.shape[1]
    plan = Plan(spec, ops, num_outputs, model.name)
    features = client_features(spec, calibration_inputs, client_model)
    plan.calibrate(features)
    _check_against_model(plan, model, calibration_inputs, features, tolerance)
    return plan, client_model


def _random_inputs(model, count: int = 64):
    rng = np.random.default_rng(0)
    shape = (count, *(int(d) for d in model.inputs[0].shape[1:]))
    if model.inputs[0].dtype.is_integer:
        embedding = next(layer for layer in model.layers
                         if isinstance(layer, tf.keras.layers.Embedding))
        return rng.integers(0, embedding.input_dim, shape).astype(np.int32)
    return rng.random(shape).astype(np.float32)


def client_features(spec: InputSpec, x, client_model=None) -> np.ndarray:
    """What the client encrypts for raw inputs `x`, as float64 of shape (N, features)."""
    x = _checked_inputs(x)
    if spec.kind == "image":
        if tuple(x.shape[1:]) != tuple(spec.shape):
            raise DataError(f"input shape {tuple(x.shape[1:])} does not match the model's "
                            f"{tuple(spec.shape)}; pass images of that shape")
        return x.reshape(len(x), -1).astype(np.float64)
    if spec.kind == "bag":
        return bag_of_words(x, spec.shape[0], spec.mask_zero)
    if client_model is None:
        raise UnsupportedError("split mode needs the client-side model part to compute "
                               "features")
    _check_model_inputs(client_model, x)
    from ..evaluation import predict_logits  # batched predict, no Keras progress output
    return predict_logits(client_model, x).reshape(len(x), -1).astype(np.float64)


def _checked_inputs(x) -> np.ndarray:
    """A non-empty batch of finite real numbers: NaN or infinity would encrypt to garbage."""
    x = np.asarray(x)
    if x.ndim < 2 or x.size == 0:
        raise DataError(f"the inputs hold no samples (shape {x.shape}); pass a batch of shape "
                        f"(N, ...) with N >= 1")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer)
                               or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"the inputs must be real numbers, got dtype {x.dtype}; save images "
                        f"as float32 and token ids as integers")
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    if len(bad):
        raise DataError(f"{len(bad)} input samples hold NaN or infinite values (first: sample "
                        f"{bad[0]}); clean or drop them before encrypting")
    return x


def _check_model_inputs(model: tf.keras.Model, x: np.ndarray) -> None:
    """Inputs of the client's model part (token ids for text_lstm): shape, type, vocabulary."""
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != x.ndim - 1 or any(d not in (None, g) for d, g in zip(shape, x.shape[1:])):
        raise DataError(f"input shape {tuple(x.shape[1:])} does not match the client model's "
                        f"{shape}; pass inputs of that shape")
    if not model.inputs[0].dtype.is_integer:
        return
    if not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"the client model takes integer token ids, got {x.dtype}; pass the "
                        f"ids from the run's vectorizer")
    embedding = next((layer for layer in model.layers
                      if isinstance(layer, tf.keras.layers.Embedding)), None)
    if embedding is not None and (x.min() < 0 or x.max() >= embedding.input_dim):
        raise DataError(f"token ids must lie in [0, {embedding.input_dim}) (the model's "
                        f"vocabulary); got [{x.min()}, {x.max()}]")


def bag_of_words(ids: np.ndarray, vocab_size: int, mask_zero: bool) -> np.ndarray:
    """Word counts divided by the text length: the embedding mean is then one matrix product."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"a bag-of-words input needs integer token ids of shape (N, length), "
                        f"got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise DataError(f"token ids must lie in [0, {vocab_size}) (the model's vocabulary); "
                        f"got [{ids.min()}, {ids.max()}]")
    counts = np.zeros((len(ids), vocab_size))
    np.add.at(counts, (np.repeat(np.arange(len(ids)), ids.shape[1]), ids.reshape(-1)), 1.0)
    if mask_zero:
        counts[:, 0] = 0.0
    lengths = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(lengths, 1.0)


def _chain(model: tf.keras.Model) -> list:
    layers = [layer for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]
    for previous, layer in zip(layers, layers[1:]):
        inbound = [n.inbound_layers for n in layer._inbound_nodes]
        if len(inbound) != 1 or inbound[0] is not previous:
            raise UnsupportedError(f"layer '{layer.name}' does not simply follow "
                                   f"'{previous.name}'; encrypted inference supports chains of "
                                   f"layers (no branches or shared layers)")
    if len(model.inputs) != 1:
        raise UnsupportedError("encrypted inference supports models with one input")
    return layers


def _full_ops(model, layers):
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if isinstance(layers[0], tf.keras.layers.Embedding):
        embedding = layers[0]
        if len(layers) < 2 or not isinstance(layers[1], tf.keras.layers.GlobalAveragePooling1D):
            nxt = layers[1] if len(layers) > 1 else None
            raise UnsupportedError(
                f"layer '{nxt.name if nxt else embedding.name}' "
                f"({type(nxt).__name__ if nxt else 'end'}) after the embedding cannot run on "
                f"ciphertexts: only a mean over tokens (GlobalAveragePooling1D) is linear in the "
                f"bag of words. {_ALTERNATIVE}")
        table = embedding.get_weights()[0].astype(np.float64)
        spec = InputSpec("bag", (table.shape[0],), mask_zero=bool(embedding.mask_zero))
        first = Affine(table, np.zeros(table.shape[1]), [embedding.name, layers[1].name])
        return spec, [first] + _server_ops(layers[2:], (table.shape[1],))
    if len(input_shape) not in (1, 3):
        raise UnsupportedError(f"input shape {input_shape}: encrypted inference takes images "
                               f"(H, W, C) or flat feature vectors")
    kind = "image" if len(input_shape) == 3 else "features"
    return InputSpec(kind, input_shape), _server_ops(layers, input_shape, first_is_input=True)


def _server_ops(layers, shape: tuple, first_is_input: bool = False) -> list:
    ops = []
    for layer in layers:
        out_shape = tuple(int(d) for d in layer.output_shape[1:])
        if isinstance(layer, PolyActivation):
            ops.append((layer.name, layer.coefficients()))
        elif isinstance(layer, tf.keras.layers.Activation) and _is_linear(layer.activation):
            pass
        elif isinstance(layer, _RESHAPING):
            pass  # channels-last flattening keeps the flat order
        elif isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Conv2D)):
            _require_linear_activation(layer)
            ops.append(_conv_affine(layer, shape, out_shape, first_is_input and not ops)
                       if isinstance(layer, tf.keras.layers.Conv2D)
                       else _dense_affine(layer, shape))
        elif isinstance(layer, (tf.keras.layers.AveragePooling2D,
                                tf.keras.layers.GlobalAveragePooling2D,
                                tf.keras.layers.ZeroPadding2D)):
            ops.append(Affine(_probe(_float64_op(layer), shape), np.zeros(int(np.prod(out_shape))),
                              [layer.name]))
        else:
            raise UnsupportedError(_unsupported_message(layer))
        shape = out_shape
    return ops


def _unsupported_message(layer) -> str:
    kind = type(layer).__name__
    if isinstance(layer, tf.keras.layers.MaxPooling2D):
        hint = "max is not a polynomial: use AveragePooling2D"
    elif isinstance(layer, (tf.keras.layers.LSTM, tf.keras.layers.GRU,
                            tf.keras.layers.SimpleRNN)):
        hint = "recurrent layers cannot run on ciphertexts"
    elif isinstance(layer, tf.keras.layers.Activation) or isinstance(layer, tf.keras.layers.ReLU):
        hint = "only polynomial activations (secureml PolyActivation) run on ciphertexts"
    else:
        hint = "it is not affine or a degree-2 polynomial"
    return f"layer '{layer.name}' ({kind}) is not supported by encrypted inference: {hint}. " \
           f"{_ALTERNATIVE}"


def _is_linear(activation) -> bool:
    return activation in (None, tf.keras.activations.linear) or \
        getattr(activation, "__name__", "") == "linear"


def _require_linear_activation(layer) -> None:
    if not _is_linear(layer.activation):
        name = getattr(layer.activation, "__name__", str(layer.activation))
        raise UnsupportedError(f"layer '{layer.name}' ({type(layer).__name__}) applies "
                               f"activation '{name}', which is not a polynomial. {_ALTERNATIVE}")


def _dense_affine(layer, shape) -> Affine:
    if len(shape) != 1:
        raise UnsupportedError(f"layer '{layer.name}' (Dense) on a {len(shape)}-D input; "
                               f"add Flatten before it")
    kernel, *bias = layer.get_weights()
    bias = bias[0] if bias else np.zeros(kernel.shape[1])
    return Affine(kernel.astype(np.float64), bias.astype(np.float64), [layer.name])


def _conv_affine(layer, shape, out_shape, on_input: bool) -> Affine:
    if layer.data_format != "channels_last" or getattr(layer, "groups", 1) != 1 \
            or tuple(layer.dilation_rate) != (1, 1):
        raise UnsupportedError(f"layer '{layer.name}' (Conv2D): encrypted inference supports "
                               f"channels_last convolutions without dilation or groups")
    kernel, *bias = layer.get_weights()
    bias = bias[0] if bias else np.zeros(kernel.shape[-1])
    kernel64 = tf.constant(kernel, tf.float64)

    def convolve(x):
        return tf.nn.conv2d(x, kernel64, strides=layer.strides, padding=layer.padding.upper())

    matrix = _probe(convolve, shape)
    geometry = None
    if on_input:
        geometry = {"kernel": kernel.astype(np.float64), "kernel_size": tuple(kernel.shape[:2]),
                    "strides": tuple(layer.strides),
                    "padding": layer.padding, "input_shape": tuple(shape),
                    "output_shape": tuple(out_shape)}
    return Affine(matrix, np.tile(bias.astype(np.float64), int(np.prod(out_shape[:2]))),
                  [layer.name], conv=geometry)


def _float64_op(layer):
    if isinstance(layer, tf.keras.layers.AveragePooling2D):
        return lambda x: tf.nn.avg_pool2d(x, layer.pool_size, layer.strides,
                                          layer.padding.upper())
    if isinstance(layer, tf.keras.layers.GlobalAveragePooling2D):
        return lambda x: tf.reduce_mean(x, axis=(1, 2), keepdims=layer.keepdims)
    return lambda x: tf.pad(x, [[0, 0], list(layer.padding[0]), list(layer.padding[1]), [0, 0]])


def _probe(fn, shape: tuple) -> np.ndarray:
    """The matrix of a linear map: its outputs on the identity basis, in float64."""
    n = int(np.prod(shape))
    rows = []
    for start in range(0, n, _PROBE_CHUNK):
        basis = np.zeros((min(_PROBE_CHUNK, n - start), n))
        basis[np.arange(len(basis)), np.arange(start, start + len(basis))] = 1.0
        out = fn(tf.constant(basis.reshape(len(basis), *shape)))
        rows.append(np.asarray(out).reshape(len(basis), -1))
    return np.concatenate(rows)


def _fold(raw: list) -> list:
    """Polynomials into squares between affine maps; adjacent affine maps merged when cheaper."""
    ops = []
    for item in raw:
        if isinstance(item, Affine):
            ops.append(item)
            continue
        name, (c0, c1, c2) = item
        width = _width(ops, name)
        if c2 == 0.0:
            ops.append(Affine(np.eye(width) * c1, np.full(width, c0), [name]))
            continue
        shift = c1 / (2.0 * c2)
        ops.append(Affine(np.eye(width), np.full(width, shift), [name]))
        ops.append(Square([name]))
        ops.append(Affine(np.eye(width) * c2, np.full(width, c0 - c1 * shift / 2.0), [name]))
    return _merge_affines(ops)


def _width(ops, name: str) -> int:
    for op in reversed(ops):
        if isinstance(op, Affine):
            return op.matrix.shape[1]
    raise UnsupportedError(f"layer '{name}' (PolyActivation) must follow an affine layer "
                           f"(Dense or Conv2D)")


def _merge_affines(ops: list) -> list:
    """Merge adjacent affine maps where that lowers the estimated cost.

    Merging saves a multiplicative level (one prime less under every earlier operation) but
    may multiply more weights (pooling then a convolution). Cost: weights (or squarings, each
    worth `_SQUARE_COST` products) times the primes their ciphertexts carry. Scalings and
    shifts from polynomial activations always merge.
    """
    ops = list(ops)
    while True:
        best, best_cost = None, _cost(ops)
        for i in range(len(ops) - 1):
            first, second = ops[i], ops[i + 1]
            if not (isinstance(first, Affine) and isinstance(second, Affine)):
                continue
            merged = _compose(first, second)
            candidate = ops[:i] + [merged] + ops[i + 2:]
            if _is_diagonal(first.matrix) or _is_diagonal(second.matrix):
                best, best_cost = candidate, -1.0
                break
            cost = _cost(candidate)
            if cost < best_cost:
                best, best_cost = candidate, cost
        if best is None:
            return ops
        ops = best


_SQUARE_COST = 30  # a squaring with relinearization costs about this many plaintext products


def _cost(ops: list) -> float:
    total, width = 0.0, 0
    for k, op in enumerate(ops):
        primes = len(ops) - k + 1
        if isinstance(op, Affine):
            total += op.nnz * primes
            width = op.matrix.shape[1]
        else:
            total += _SQUARE_COST * width * primes
    return total


def _compose(first: Affine, second: Affine) -> Affine:
    return Affine(first.matrix @ second.matrix, first.bias @ second.matrix + second.bias,
                  list(dict.fromkeys(first.layers + second.layers)),
                  conv=first.conv if _is_identity(second.matrix) else None)


def _is_diagonal(matrix: np.ndarray) -> bool:
    return matrix.shape[0] == matrix.shape[1] and \
        np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0


def _is_identity(matrix: np.ndarray) -> bool:
    return matrix.shape[0] == matrix.shape[1] and np.array_equal(matrix, np.eye(len(matrix)))


def _check_against_model(plan: Plan, model, x, features, tolerance: float) -> None:
    from ..evaluation import predict_logits
    expected = predict_logits(model, np.asarray(x)).astype(np.float64)
    error, allowed = worst_error(plan.forward(features), expected, tolerance)
    if not error <= allowed:  # NaN or infinite included
        raise UnsupportedError(f"the compiled plan of model '{model.name}' differs from the "
                               f"model by {error:.3g} on plaintext inputs; a layer is not "
                               f"translated faithfully (please report this)")
