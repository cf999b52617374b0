"""Clean-data metrics of a trained classifier (the `test` section of metrics.json)."""
import numpy as np
import tensorflow as tf
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .audit.metrics import proportion_interval
from .models.outputs import per_example_loss, predicted_classes

# Of the accuracy interval (Clopper-Pearson) that every rating of an accuracy uses.
CONFIDENCE_LEVEL = 0.95


def predict_logits(model: tf.keras.Model, x, batch_size: int = 512) -> np.ndarray:
    """Logits for all of x, batched, without Keras' per-call progress output."""
    outputs = [model(x[i:i + batch_size], training=False).numpy()
               for i in range(0, len(x), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, model.output_shape[-1]))


def classification_metrics(model: tf.keras.Model, x, y, class_names: list[str],
                           batch_size: int = 512) -> dict:
    """Accuracy (with its Clopper-Pearson interval), mean loss, per-class
    precision/recall/F1/support and the confusion matrix.

    Confusion matrix rows are true classes and columns predicted classes, in `class_names` order.
    """
    y = np.asarray(y).reshape(-1).astype(np.int64)
    logits = predict_logits(model, x, batch_size)
    predicted = predicted_classes(logits)
    losses = per_example_loss(tf.constant(logits), tf.constant(y)).numpy()
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    accuracy = float(np.mean(predicted == y))
    return {
        "examples": int(len(y)),
        "accuracy": accuracy,
        "accuracy_ci": proportion_interval(accuracy, len(y), CONFIDENCE_LEVEL),
        "confidence_level": CONFIDENCE_LEVEL,
        "loss": float(np.mean(losses)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
    }
