"""The `adversarial_training` defence: train on adversarial inputs crafted against the model.

```yaml
defences:
  adversarial_training: {method: pgd, epsilon: 8/255, steps: 7, warmup_epochs: 2}
```

Images: `pgd` (Madry et al. 2018), `fast` (FGSM from a random start, Wong et al. 2020),
`trades` (Zhang et al. 2019). Text: `embedding` (Miyato et al. 2017, perturbations of the
embedded sequence). It replaces the training objective only, so it composes with `dp_sgd`
(which replaces the gradient engine): each example's adversarial loss depends on that example
and the current model alone. See docs/adversarial.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import tensorflow as tf

from ... import schema
from ...attacks.budget import (check_epsilon, default_relative_step, epsilon_label, parse_epsilon,
                               parse_norm)
from ...errors import ConfigError, UnsupportedError
from ...models.split import embedding_split
from .objectives import EmbeddingAdversarialObjective, ImageAdversarialObjective

IMAGE_METHODS = ("pgd", "fast", "trades")
# Per method: attack steps, step size as a fraction of epsilon, weight of the clean loss.
_DEFAULTS = {
    "pgd": {"steps": 7, "relative_step_size": None, "clean_weight": 0.0},  # default_relative_step
    "fast": {"steps": 1, "relative_step_size": 1.25, "clean_weight": 0.0},
    "trades": {"steps": 10, "relative_step_size": 0.25, "clean_weight": None},
    "embedding": {"steps": 1, "relative_step_size": None, "clean_weight": 0.5},
}


@dataclass
class Config:
    method: Literal["pgd", "fast", "trades", "embedding"] | None = None  # pgd / embedding
    epsilon: Any = None           # images: 8/255 (L-inf, pixels in [0, 1]); text: 1.0
    norm: Any = None              # images: linf (default) or l2; text: l2 (Miyato)
    steps: schema.PositiveInt | None = None
    relative_step_size: schema.PositiveFloat | None = None  # of epsilon
    # Below 1: at 1 it would be plain training.
    clean_weight: Annotated[float, schema.Range(0, 1, "[)")] | None = None
    warmup_epochs: schema.NonNegativeInt = 0
    trades_beta: schema.NonNegativeFloat = 6.0
    value_range: tuple[float, float] = (0.0, 1.0)

    def validate(self):
        if self.norm is not None:
            self.norm = parse_norm(self.norm, "norm")
        if self.epsilon is not None:
            self.epsilon = parse_epsilon(self.epsilon, "epsilon")
            if self.epsilon == 0:
                raise ConfigError("epsilon must be positive for adversarial training; remove "
                                  "the defence to train without it")
        if self.clean_weight is not None and self.method == "trades":
            raise ConfigError("clean_weight does not apply to trades, whose clean term is "
                              "weighted by trades_beta; remove clean_weight")
        if self.value_range[0] >= self.value_range[1]:
            raise ConfigError(f"value_range must be [low, high] with low < high, got "
                              f"{list(self.value_range)}")


class EpsilonWarmup(tf.keras.callbacks.Callback):
    """Raises epsilon linearly over the first `warmup_epochs` epochs, then holds it.

    Epoch e (from 0) trains at epsilon * min(1, (e + 1) / (warmup_epochs + 1)); the value is
    logged as `adversarial_epsilon` in history.json.
    """

    def __init__(self, variable: tf.Variable, epsilon: float, warmup_epochs: int):
        super().__init__()
        self.variable, self.epsilon, self.warmup_epochs = variable, epsilon, warmup_epochs

    def value(self, epoch: int) -> float:
        return self.epsilon * min(1.0, (epoch + 1) / (self.warmup_epochs + 1))

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(self.value(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["adversarial_epsilon"] = self.value(epoch)


class AdversarialTraining:
    """Replaces the training objective with an adversarial one (see `objectives`)."""

    name = "adversarial_training"

    def __init__(self, config: Config, data_kind: str):
        method = config.method or ("embedding" if data_kind == "text" else "pgd")
        if (data_kind == "text") != (method == "embedding"):
            allowed = "embedding" if data_kind == "text" else ", ".join(IMAGE_METHODS)
            raise ConfigError(f"adversarial_training.method '{method}' does not apply to "
                              f"{data_kind} data; use {allowed}")
        self.norm = config.norm or ("l2" if method == "embedding" else "linf")
        if method == "embedding" and self.norm != "l2":
            raise ConfigError("adversarial_training.norm: text training perturbs embeddings "
                              "in L2 (Miyato et al.); remove norm or set it to l2")
        defaults = _DEFAULTS[method]
        self.config = config
        self.method = method
        self.epsilon = config.epsilon if config.epsilon is not None else \
            (1.0 if method == "embedding" else 8 / 255)
        if method != "embedding":
            check_epsilon(self.epsilon, self.norm, config.value_range, None,
                          "adversarial_training.epsilon")
        self.steps = config.steps or defaults["steps"]
        self.relative_step_size = (config.relative_step_size or defaults["relative_step_size"]
                                   or default_relative_step(self.steps))
        self.clean_weight = config.clean_weight if config.clean_weight is not None else \
            defaults["clean_weight"]
        self.warmup: EpsilonWarmup | None = None
        self.objective = None

    def apply(self, setup) -> None:
        model = setup.model
        if self.method == "embedding":
            embedding_split(model)  # refuses models without an embedding to perturb
        elif not model.inputs or not model.inputs[0].dtype.is_floating:
            raise UnsupportedError(
                f"adversarial_training.method '{self.method}' perturbs float image inputs, but "
                f"model '{model.name}' takes {model.inputs[0].dtype.name if model.inputs else '?'}"
                " inputs; for token ids use a text model and method 'embedding'")
        epsilon = tf.Variable(self.epsilon, trainable=False, dtype=tf.float32,
                              name="adversarial_epsilon")
        self.warmup = EpsilonWarmup(epsilon, self.epsilon, self.config.warmup_epochs)
        if self.method == "embedding":
            self.objective = EmbeddingAdversarialObjective(
                epsilon, self.steps, self.relative_step_size, self.clean_weight)
        else:
            self.objective = ImageAdversarialObjective(
                self.method, epsilon, self.norm, self.steps, self.relative_step_size,
                self.clean_weight or 0.0, self.config.trades_beta, self.config.value_range)
        setup.objective = self.objective
        setup.callbacks.append(self.warmup)

    def sections(self, result) -> dict[str, dict]:
        norm = self.norm
        epochs = result.cost.get("epochs", 0)
        return {"adversarial_training": {
            "method": self.method,
            "norm": norm,
            "epsilon": self.epsilon,
            "epsilon_label": epsilon_label(self.epsilon, norm),
            "steps": self.steps,
            "relative_step_size": self.relative_step_size,
            "random_start": self.method != "embedding",
            "clean_weight": None if self.method == "trades" else self.clean_weight,
            "trades_beta": self.config.trades_beta if self.method == "trades" else None,
            "warmup_epochs": self.config.warmup_epochs,
            "epsilon_by_epoch": [round(self.warmup.value(e), 6) for e in range(epochs)],
            "objective": self.objective.describe(),
        }}


def make(config: Config | dict | None, data_kind: str) -> AdversarialTraining:
    """The defence for `data_kind` ('image' or 'text') data."""
    return AdversarialTraining(schema.build(Config, config, "adversarial_training"), data_kind)


__all__ = ["AdversarialTraining", "Config", "EpsilonWarmup", "make"]
