"""Per-example gradient norms and clipped sums from a layer's inputs and output gradients.

For a layer that applies the same linear map at P positions (Dense on sequences, Conv2D through
its im2col patches, the LSTM gates at each time step), example i's weight gradient is
G_i = sum_p a_ip^T g_ip, with a_ip the input at position p (K values) and g_ip the loss gradient
at the pre-activation output there (N values). Its squared norm can be had two exact ways:

- direct: form G_i (B*K*N values, P*K*N work per example), then the clipped sum is a cheap
  weighted sum of the G_i;
- ghost: ||G_i||^2 = sum_pq (a_ip . a_iq)(g_ip . g_iq), two P x P Gram matrices (P^2 (K+N) work,
  B*P^2 values), then one ordinary weight-gradient product on the clipping-rescaled g.

With one position the ghost form is just ||a_i||^2 ||g_i||^2. Otherwise direct does less work,
so it is used unless its per-example gradients would take much more memory than the tensors
backprop already holds for the layer (Bu et al. 2023, "mixed ghost clipping", decide the same
trade-off from the shapes).
"""
import tensorflow as tf

DIRECT, GHOST = "direct", "ghost"
# Direct per-example gradients may use up to this many times the memory of the layer's own inputs
# and output gradients (held for backprop anyway); beyond it the Gram form is used.
DIRECT_MEMORY_FACTOR = 2


def choose_method(positions: int | None, fan_in: int, fan_out: int) -> str:
    """The exact method with the least work whose memory stays near the layer's activations."""
    if positions == 1:
        return GHOST
    if positions is None:  # unknown length: Gram memory could grow without bound
        return DIRECT
    per_example_gradient = fan_in * fan_out
    activations = positions * (fan_in + fan_out)
    if per_example_gradient <= max(DIRECT_MEMORY_FACTOR * activations, positions**2):
        return DIRECT
    return GHOST


def _weighted_sum(weights, per_example):
    """sum_i weights[i] * per_example[i]."""
    return tf.tensordot(weights, per_example, axes=1)


class LinearGradients:
    """Per-example gradients of a linear map applied at P positions, with an optional bias.

    `input_parts` are tensors (B, ..., K_j) with the same leading dimensions, whose product is
    the P positions; joined on the last axis they are the inputs a (B, P, K) of the weight
    (K, N). `output_gradients` is (B, P, N). A bias is the weight of a constant input 1, so it is
    appended to a as one more column: one product then gives kernel and bias gradients, and every
    norm below includes the bias without a reduction of its own.
    """

    def __init__(self, input_parts, output_gradients, use_bias: bool, method: str):
        batch = tf.shape(output_gradients)[0]
        if use_bias:
            input_parts = [*input_parts, tf.ones_like(input_parts[0][..., :1])]
        joined = input_parts[0] if len(input_parts) == 1 else tf.concat(input_parts, axis=-1)
        self.a = tf.reshape(joined, (batch, -1, joined.shape[-1]))
        self.g, self.method, self.use_bias = output_gradients, method, use_bias
        self.per_example = (tf.matmul(self.a, output_gradients, transpose_a=True)
                            if method == DIRECT else None)

    def squared_norms(self):
        if self.method == DIRECT:
            # One pass, no squared copy of B * K * N values: several times faster on CPU.
            return tf.square(tf.math.reduce_euclidean_norm(self.per_example, axis=[1, 2]))
        if self.a.shape[1] == 1:
            return (tf.reduce_sum(tf.square(self.a), axis=[1, 2])
                    * tf.reduce_sum(tf.square(self.g), axis=[1, 2]))
        return tf.reduce_sum(tf.matmul(self.a, self.a, transpose_b=True)
                             * tf.matmul(self.g, self.g, transpose_b=True), axis=[1, 2])

    def clipped_sum(self, scale):
        """(sum_i scale_i G_i, sum_i scale_i bias_i or None)."""
        if self.method == DIRECT:
            weight = _weighted_sum(scale, self.per_example)
        else:
            fan_in, fan_out = self.a.shape[-1], self.g.shape[-1]
            scaled = self.g * scale[:, None, None]
            weight = tf.matmul(tf.reshape(self.a, (-1, fan_in)),
                               tf.reshape(scaled, (-1, fan_out)), transpose_a=True)
        if self.use_bias:
            return weight[:-1], weight[-1]
        return weight, None


class BatchGroups:
    """The per-example gradients of consecutive groups of a batch (`sizes` examples each) as
    one: norms in batch order, and one clipped sum."""

    def __init__(self, groups: list, sizes: list):
        self.groups, self.sizes = groups, sizes

    def squared_norms(self):
        return tf.concat([group.squared_norms() for group in self.groups], axis=0)

    def clipped_sum(self, scale):
        sums = [group.clipped_sum(part)
                for group, part in zip(self.groups, tf.split(scale, self.sizes))]
        return tuple(None if parts[0] is None else tf.add_n(list(parts)) for parts in zip(*sums))


class EmbeddingGradients:
    """Per-example gradients of an embedding lookup: rows of a (V, D) table.

    A token repeated within one example adds its output gradients into the same row, so the
    norm merges repeats first: ||G_i||^2 = sum_pq [id_ip == id_iq] (g_ip . g_iq). This Gram form
    keeps static shapes (XLA-friendly); at text lengths it costs far less than the recurrent
    layer after it. Masked positions have zero output gradient and add nothing.
    """

    method = GHOST

    def __init__(self, ids, output_gradients, vocab_size: int):
        self.ids, self.g, self.vocab_size = ids, output_gradients, vocab_size

    def squared_norms(self):
        same = tf.cast(tf.equal(self.ids[:, :, None], self.ids[:, None, :]), self.g.dtype)
        return tf.reduce_sum(same * tf.matmul(self.g, self.g, transpose_b=True), axis=[1, 2])

    def clipped_sum(self, scale):
        scaled = self.g * scale[:, None, None]
        return tf.math.unsorted_segment_sum(tf.reshape(scaled, (-1, self.g.shape[-1])),
                                            tf.reshape(self.ids, (-1,)), self.vocab_size)
