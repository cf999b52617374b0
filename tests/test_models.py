"""The two baseline classifiers: shapes, logits conventions, clear errors."""
import numpy as np
import pytest
import tensorflow as tf

from secureml.errors import ConfigError
from secureml.models import build_model, log_probabilities, per_example_loss, predicted_classes


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3),
                                   (96, 80, 4), (5, 5, 1)])
@pytest.mark.parametrize("classes", [2, 10, 100])
def test_image_cnn_adapts_to_input_and_classes(shape, classes):
    model = build_model("image_cnn", shape, classes)
    out = model(np.zeros((3, *shape), np.float32))
    assert out.shape == (3, 1 if classes == 2 else classes)


def test_image_cnn_is_the_reference_network_on_cifar_shapes():
    model = build_model("image_cnn", (32, 32, 3), 10)
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense",
                     "Dense"]
    assert model.get_layer("conv1").output_shape == (None, 30, 30, 32)
    assert model.get_layer("conv2").output_shape == (None, 13, 13, 64)
    assert model.get_layer("logits").activation.__name__ == "linear"
    assert model.count_params() == 167_562


def test_image_cnn_options():
    model = build_model("image_cnn", (32, 32, 3), 10, filters=[8, 16, 16], dense_units=32,
                        activation="tanh")
    assert model.get_layer("conv3").filters == 16
    assert model.get_layer("dense").units == 32
    assert model.get_layer("dense").activation.__name__ == "tanh"


@pytest.mark.parametrize("classes", [2, 5])
def test_text_lstm_shapes(classes):
    model = build_model("text_lstm", (40,), classes, vocab_size=500, embedding_dim=8,
                        lstm_units=16)
    ids = np.random.default_rng(0).integers(0, 500, size=(4, 40)).astype(np.int32)
    assert model(ids).shape == (4, 1 if classes == 2 else classes)
    assert [layer.name for layer in model.layers[1:]] == ["embedding", "lstm", "logits"]
    assert model.get_layer("embedding").mask_zero


def test_padding_does_not_change_text_predictions():
    model = build_model("text_lstm", (10,), 2, vocab_size=50)
    short = np.array([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    longer = np.concatenate([short[:, :3], np.zeros((1, 17), np.int32)], axis=1)
    model20 = build_model("text_lstm", (20,), 2, vocab_size=50)
    model20.set_weights(model.get_weights())
    np.testing.assert_allclose(model(short).numpy(), model20(longer).numpy(), atol=1e-6)


def test_wrong_inputs_give_clear_errors():
    with pytest.raises(ConfigError, match="text_lstm"):
        build_model("image_cnn", (100,), 2)
    with pytest.raises(ConfigError, match="image_cnn"):
        build_model("text_lstm", (32, 32, 3), 2, vocab_size=10)
    with pytest.raises(ConfigError, match="vocabulary size"):
        build_model("text_lstm", (10,), 2)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("image_cnn", (8, 8, 1), 1)
    with pytest.raises(ConfigError, match="unknown model 'cnn'"):
        build_model("cnn", (8, 8, 1), 2)


def test_binary_and_multiclass_outputs_agree_with_keras_losses():
    logits = tf.constant([[2.0], [-1.0]])
    labels = tf.constant([1, 1])
    expected = tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction="none")(
        tf.reshape(tf.cast(labels, tf.float32), (-1, 1)), logits)
    np.testing.assert_allclose(per_example_loss(logits, labels), expected, rtol=1e-6)
    np.testing.assert_allclose(tf.exp(log_probabilities(logits)).numpy().sum(axis=1), 1, rtol=1e-6)
    assert predicted_classes(logits.numpy()).tolist() == [1, 0]
    logits = tf.constant([[0.1, 3.0, -1.0]])
    expected = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(
        tf.constant([1]), logits)
    np.testing.assert_allclose(per_example_loss(logits, tf.constant([1])), expected, rtol=1e-6)
    assert predicted_classes(logits.numpy()).tolist() == [1]
