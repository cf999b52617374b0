"""The HE-friendly twins: shapes, the polynomial layer, saving and loading, training."""
import numpy as np
import pytest
import tensorflow as tf

from secureml.errors import ConfigError
from secureml.evaluation import predict_logits
from secureml.models import build_model
from secureml.models.he_layers import PolyActivation
from secureml.training import train


@pytest.mark.parametrize("shape,options", [((28, 28, 1), {}), ((32, 32, 3), {"pool_size": 2}),
                                           ((8, 8, 1), {"kernel_size": 3, "strides": 1})])
def test_he_cnn_shapes_and_layers(shape, options):
    model = build_model("he_cnn", shape, 10, **options)
    assert model(np.zeros((2, *shape), np.float32)).shape == (2, 10)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds[:2] == ["Conv2D", "PolyActivation"]
    assert "MaxPooling2D" not in kinds and "ReLU" not in kinds
    assert model.get_layer("conv").activation.__name__ == "linear"


def test_he_cnn_is_cryptonets_size_on_28x28():
    model = build_model("he_cnn", (28, 28, 1), 10)
    assert model.get_layer("conv").output_shape == (None, 12, 12, 5)
    assert model.get_layer("dense").units == 100


def test_he_text_means_embeddings_over_real_tokens():
    model = build_model("he_text", (6,), 2, vocab_size=30, embedding_dim=4, dense_units=3)
    assert model(np.array([[3, 4, 0, 0, 0, 0]], np.int32)).shape == (1, 1)
    mean = tf.keras.Model(model.inputs, model.get_layer("mean").output)
    table = model.get_layer("embedding").get_weights()[0]
    np.testing.assert_allclose(mean(np.array([[3, 4, 0, 0, 0, 0]], np.int32))[0],
                               (table[3] + table[4]) / 2, atol=1e-6)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="kernel_size"):
        build_model("he_cnn", (4, 4, 1), 10)
    with pytest.raises(ConfigError, match="he_text"):
        build_model("he_cnn", (40,), 2)
    with pytest.raises(ConfigError, match="vocabulary"):
        build_model("he_text", (40,), 2)


def test_trainable_polynomial_learns_and_survives_save_and_load(tmp_path, digits_arrays):
    x, y = digits_arrays[0][:600], digits_arrays[1][:600]
    model = build_model("he_cnn", (8, 8, 1), 10, kernel_size=3, strides=1, dense_units=16,
                        activation="poly")
    before = model.get_layer("act1").coefficients().copy()
    result = train(model, x, y, config={"epochs": 3, "batch_size": 32}, progress=False)
    after = model.get_layer("act1").coefficients()
    assert not np.allclose(before, after)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    model.save(tmp_path / "model.keras")
    loaded = tf.keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("act1"), PolyActivation)
    np.testing.assert_allclose(loaded.get_layer("act1").coefficients(), after)
    np.testing.assert_allclose(predict_logits(loaded, x[:20]), predict_logits(model, x[:20]),
                               atol=1e-6)
