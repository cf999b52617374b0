"""Instrumented forward passes for the layers that have a fast per-example clipping path.

Each tap re-computes its layer from the layer's own weights, exactly as Keras does, and marks
its pre-activation output z as a "probe". The gradient tape watches only the probes, so one
ordinary backward pass gives dL/dz at every layer (and, for the LSTM, at every time step) while
no weight gradient is computed by the tape (the weights enter through `stop_gradient`). The
layer's recorded inputs and those probe gradients are all the per-example algebra needs
(see `gradients`).
"""
import math
import os

import tensorflow as tf

from .gradients import BatchGroups, EmbeddingGradients, LinearGradients, choose_method


class Probes:
    """Marks pre-activations for `tape`. Watching the pre-activation tensor itself gives the same
    gradient as a watched zero tensor added to it, without allocating one per layer."""

    def __init__(self, tape: tf.GradientTape):
        self.tape = tape

    def attach(self, pre_activation):
        self.tape.watch(pre_activation)
        return pre_activation, pre_activation


class Record:
    """What one layer's forward pass kept: its probe (a tensor, or a list of them), how to turn
    the probe's gradient (of the same structure) into per-example gradients
    (`per_example(gradient)`), and which variables the parts of their clipped sum belong to
    (`variables_of(parts) -> [(variable, gradient)]`)."""

    def __init__(self, probe, per_example, variables_of):
        self.probe, self.per_example, self.variables_of = probe, per_example, variables_of


def _weight(variable):
    return tf.stop_gradient(tf.convert_to_tensor(variable))


def _after(gradient, make):
    """`make()` built only once `gradient` exists: tensors the per-example algebra alone needs
    (im2col patches) are then not held through the whole backward pass, lowering peak memory."""
    with tf.control_dependencies([gradient]):
        return make()


def _linear_output(layer, z, record_inputs, probes: Probes, method: str):
    """Bias, probe and activation of a Dense or Conv2D whose kernel product is `z`;
    `record_inputs()` gives its inputs at every position, as `LinearGradients` input parts."""
    if layer.use_bias:
        z = tf.nn.bias_add(z, _weight(layer.bias))
    z, probe = probes.attach(z)
    batch, fan_out = tf.shape(z)[0], layer.kernel.shape[-1]

    def per_example(gradient):
        return LinearGradients(_after(gradient, record_inputs),
                               tf.reshape(gradient, (batch, -1, fan_out)), layer.use_bias, method)

    def variables_of(parts):
        weight, bias = parts
        out = [(layer.kernel, tf.reshape(weight, layer.kernel.shape))]
        return out + ([(layer.bias, bias)] if layer.use_bias else [])
    return layer.activation(z), Record(probe, per_example, variables_of)


class DenseTap:
    """`Dense` on inputs of any rank: the kernel is applied at every leading position."""

    def unsupported(self, layer) -> str | None:
        return None

    def method(self, layer) -> str:
        shape = layer.input_shape
        positions = math.prod(shape[1:-1]) if None not in shape[1:-1] else None
        return choose_method(positions, shape[-1], layer.units)

    def forward(self, layer, inputs, mask, probes: Probes, method: str):
        z = tf.tensordot(inputs, _weight(layer.kernel), [[inputs.shape.rank - 1], [0]])
        return _linear_output(layer, z, lambda: [tf.stop_gradient(inputs)], probes, method)


def _same_padding(size: int, out: int, kernel: int, stride: int, dilation: int):
    """TensorFlow's 'SAME' padding: the odd pixel goes after."""
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _patches(inputs, layer, out_h: int, out_w: int) -> list:
    """im2col as kh * kw strided slices (B, out_h, out_w, C) in the kernel's (kh, kw) order:
    joined on the channel axis they are the patches in the kernel's (kh, kw, C) order. Slices
    are several times faster on CPU than tf.image.extract_patches."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    if layer.padding == "same":
        inputs = tf.pad(inputs, [(0, 0), _same_padding(inputs.shape[1], out_h, kh, sh, dh),
                                 _same_padding(inputs.shape[2], out_w, kw, sw, dw), (0, 0)])
    return [inputs[:, i * dh:i * dh + (out_h - 1) * sh + 1:sh,
                   j * dw:j * dw + (out_w - 1) * sw + 1:sw, :]
            for i in range(kh) for j in range(kw)]


class Conv2DTap:
    """`Conv2D` (channels last, one group, any stride, padding and dilation) through the
    im2col patches of its input: the convolution is a Dense map applied at every output pixel."""

    def unsupported(self, layer) -> str | None:
        if layer.data_format != "channels_last":
            return "data_format 'channels_first' (only 'channels_last' is supported)"
        if layer.groups != 1:
            return f"groups={layer.groups} (only groups=1 is supported)"
        if None in layer.input_shape[1:3]:
            return "images of unknown size (give the model's Input a fixed height and width)"
        return None

    def method(self, layer) -> str:
        _, height, width, _ = layer.output_shape
        positions = height * width if height and width else None
        fan_in = math.prod(layer.kernel.shape[:3])
        return choose_method(positions, fan_in, layer.filters)

    def forward(self, layer, inputs, mask, probes: Probes, method: str):
        z = tf.nn.convolution(inputs, _weight(layer.kernel), strides=layer.strides,
                              padding=layer.padding.upper(), dilations=layer.dilation_rate)
        out_h, out_w = z.shape[1:3]

        return _linear_output(
            layer, z, lambda: _patches(tf.stop_gradient(inputs), layer, out_h, out_w),
            probes, method)


class EmbeddingTap:
    def unsupported(self, layer) -> str | None:
        if getattr(layer, "sparse", False):
            return "sparse=True (sparse outputs are not supported)"
        return None

    def method(self, layer) -> str:
        return EmbeddingGradients.method

    def forward(self, layer, inputs, mask, probes: Probes, method: str):
        ids = tf.cast(inputs, tf.int32)
        z, probe = probes.attach(tf.gather(_weight(layer.embeddings), ids))
        batch = tf.shape(ids)[0]
        flat_ids = tf.reshape(ids, (batch, -1))

        def per_example(gradient):
            return EmbeddingGradients(flat_ids,
                                      tf.reshape(gradient, (batch, -1, layer.output_dim)),
                                      layer.input_dim)
        return z, Record(probe, per_example, lambda table: [(layer.embeddings, table)])


def recurrence_chains() -> int:
    """How many groups of examples run their recurrences side by side.

    On CPU one recurrence is a chain of small dependent operations that leaves cores idle; two
    half-batch chains keep both cores of a 2-core machine busy and ran the instrumented LSTM
    faster, three or four slower (docs/fast-clipping.md). Not measured on more cores, so two at
    most; one on a GPU, which runs one stream.
    """
    if tf.config.list_logical_devices("GPU"):
        return 1
    return min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


class LSTMTap:
    """Keras' `LSTM` (gate order i, f, c, o; any activations; masking carries the state over
    masked steps) returning its last output.

    The input projection x_t W + b of all steps is computed at once and probed, so the probe
    gradient is dL/dz_t for every gate pre-activation z_t = x_t W + h_{t-1} U + b. The gates are
    then one linear map of [x_t, h_{t-1}] at every time step, which `LinearGradients` handles.
    """

    def unsupported(self, layer) -> str | None:
        flags = {"return_sequences": False, "return_state": False, "go_backwards": False,
                 "stateful": False, "time_major": False}
        wrong = [f"{k}={getattr(layer, k)}" for k, v in flags.items() if getattr(layer, k) != v]
        if layer.dropout or layer.recurrent_dropout:
            wrong.append(f"dropout={layer.dropout}, recurrent_dropout={layer.recurrent_dropout}")
        if wrong:
            return (f"{', '.join(wrong)} (supported: the last output of a forward LSTM "
                    "without dropout)")
        return None

    def method(self, layer) -> str:
        _, steps, features = layer.input_shape
        return choose_method(steps, features + layer.units, 4 * layer.units)

    def forward(self, layer, inputs, mask, probes: Probes, method: str):
        cell = layer.cell
        recurrent = _weight(cell.recurrent_kernel)

        def step(z_t, states):
            h, c = states
            i, f, candidate, o = tf.split(z_t + tf.matmul(h, recurrent), 4, axis=1)
            c = (cell.recurrent_activation(f) * c
                 + cell.recurrent_activation(i) * cell.activation(candidate))
            # The output is the state entering the step, which the step's gate gradients pair
            # with (at masked steps those are zero, so what is output there does not matter).
            return h, [cell.recurrent_activation(o) * cell.activation(c), c]

        def recurrence(x, x_mask):
            """One group of examples: (its probe, last output, states entering each step)."""
            # Time-major, as the recurrence reads it: z and its gradient (B * T * 4 units
            # values, the largest tensors here) are then transposed once instead of three times.
            z = tf.tensordot(tf.transpose(x, [1, 0, 2]), _weight(cell.kernel), [[2], [0]])
            if cell.use_bias:
                z = tf.nn.bias_add(z, _weight(cell.bias))
            z, probe = probes.attach(z)
            zeros = tf.zeros((tf.shape(x)[0], layer.units), x.dtype)
            _, entering, (last, _) = tf.keras.backend.rnn(
                step, z, [zeros, zeros], mask=None if x_mask is None else tf.transpose(x_mask),
                unroll=layer.unroll, input_length=inputs.shape[1], time_major=True)
            return probe, last, entering

        # Consecutive groups of examples, each its own recurrence (see `recurrence_chains`).
        batch, chains = tf.shape(inputs)[0], recurrence_chains()
        sizes = [batch // chains] * (chains - 1) + [batch - (chains - 1) * (batch // chains)]
        groups = tf.split(inputs, sizes)
        group_masks = [None] * chains if mask is None else tf.split(mask, sizes)
        group_probes, lasts, entering = zip(*map(recurrence, groups, group_masks))
        last = tf.concat(lasts, axis=0)
        if layer.zero_output_for_mask and mask is not None:
            last = tf.where(mask[:, -1:], last, tf.zeros_like(last))
        features = inputs.shape[-1]

        def per_example(gradients):  # one per group
            return BatchGroups([
                LinearGradients(
                    _after(gradient, lambda x=x, h=h: [
                        tf.stop_gradient(x), tf.stop_gradient(tf.transpose(h, [1, 0, 2]))]),
                    tf.transpose(gradient, [1, 0, 2]), cell.use_bias, method)
                for x, h, gradient in zip(groups, entering, gradients)], sizes)

        def variables_of(parts):
            weight, bias = parts
            out = [(cell.kernel, weight[:features]), (cell.recurrent_kernel, weight[features:])]
            return out + ([(cell.bias, bias)] if cell.use_bias else [])
        return last, Record(list(group_probes), per_example, variables_of)


# Exact classes: a subclass (Conv2DTranspose is a Conv2D) may compute something else.
TAPS = {
    tf.keras.layers.Dense: DenseTap(),
    tf.keras.layers.Conv2D: Conv2DTap(),
    tf.keras.layers.Embedding: EmbeddingTap(),
    tf.keras.layers.LSTM: LSTMTap(),
}

# Layers without trainable weights that treat every example on its own: called as they are.
PER_EXAMPLE_LAYERS = (
    tf.keras.layers.Activation, tf.keras.layers.ReLU, tf.keras.layers.LeakyReLU,
    tf.keras.layers.ELU, tf.keras.layers.Softmax,
    tf.keras.layers.Flatten, tf.keras.layers.Reshape, tf.keras.layers.Permute,
    tf.keras.layers.Dropout, tf.keras.layers.SpatialDropout1D, tf.keras.layers.SpatialDropout2D,
    tf.keras.layers.GaussianNoise, tf.keras.layers.Masking, tf.keras.layers.Rescaling,
    tf.keras.layers.MaxPooling1D, tf.keras.layers.MaxPooling2D,
    tf.keras.layers.AveragePooling1D, tf.keras.layers.AveragePooling2D,
    tf.keras.layers.GlobalAveragePooling1D, tf.keras.layers.GlobalAveragePooling2D,
    tf.keras.layers.GlobalMaxPooling1D, tf.keras.layers.GlobalMaxPooling2D,
    tf.keras.layers.ZeroPadding2D, tf.keras.layers.Cropping2D,
    tf.keras.layers.LayerNormalization,
    # Frozen copies of the layers with taps (BatchNormalization is decided by the caller: only
    # frozen, that is in inference mode, does it leave examples independent).
    *TAPS,
)
