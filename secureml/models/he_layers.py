"""The polynomial activation of the HE-friendly models.

CKKS evaluates additions and multiplications only, so these models replace ReLU by
`a*x**2 + b*x + c`: fixed `x**2` (CryptoNets' square) or three trainable coefficients.
"""
import numpy as np
import tensorflow as tf

SQUARE = (0.0, 0.0, 1.0)
# A common quadratic stand-in for ReLU on about [-2, 2] (coefficients c0, c1, c2).
RELU_LIKE = (0.25, 0.5, 0.125)


@tf.keras.utils.register_keras_serializable(package="secureml")
class PolyActivation(tf.keras.layers.Layer):
    """Elementwise `c0 + c1*x + c2*x**2`; `learnable` makes the three coefficients trainable."""

    def __init__(self, coefficients=SQUARE, learnable: bool = False, **kwargs):
        super().__init__(**kwargs)
        if len(coefficients) != 3:
            raise ValueError(f"PolyActivation takes 3 coefficients (c0, c1, c2), got "
                             f"{list(coefficients)}")
        self.initial = tuple(float(c) for c in coefficients)
        self.learnable = bool(learnable)

    def build(self, input_shape):
        self.coefficients_var = self.add_weight(
            name="coefficients", shape=(3,), dtype="float32", trainable=self.learnable,
            initializer=tf.keras.initializers.Constant(self.initial))
        super().build(input_shape)

    def call(self, inputs):
        c = tf.cast(self.coefficients_var, inputs.dtype)
        return c[0] + inputs * (c[1] + c[2] * inputs)

    def coefficients(self) -> np.ndarray:
        """Current (c0, c1, c2) as float64."""
        return np.asarray(self.coefficients_var.numpy(), dtype=np.float64)

    def get_config(self):
        return {**super().get_config(), "coefficients": list(self.initial),
                "learnable": self.learnable}


def poly_activation(kind: str, name: str) -> PolyActivation:
    """'square' (fixed x**2) or 'poly' (trainable, starting near ReLU)."""
    if kind == "square":
        return PolyActivation(SQUARE, learnable=False, name=name)
    return PolyActivation(RELU_LIKE, learnable=True, name=name)
