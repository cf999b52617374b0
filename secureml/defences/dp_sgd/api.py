"""`make_private`: DP-SGD for a Keras model in one call (in the spirit of Opacus' `make_private`).

```python
from secureml.defences import dp_sgd

private = dp_sgd.make_private(model, data_size=len(x), batch_size=256, epochs=30,
                              target_epsilon=3.0, optimizer="sgd", learning_rate=0.1,
                              hyperparameters="public")       # chosen without this data
history = private.fit(x, y, validation_data=(x_val, y_val))   # history.history["epsilon"]
private.privacy["epsilon"]                                      # spent so far
private.compare_step_time(x, y)["ratio"]                        # DP step / plain step
model.save("model.keras")                                       # `model` is trained in place
```
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ... import schema
from ...errors import ConfigError, UnsupportedError
from ...training import Objective, TrainingConfig, TrainingSetup
from ...training.callbacks import StopOnNonFinite
from ...training.step_time import compare_with_plain
from ...training.wrapper import HardenedModel
from .config import Config
from .defence import DPSGD


def _refuse_optimizer(optimizer) -> None:
    from .engines import is_dp_optimizer
    if is_dp_optimizer(optimizer):
        raise UnsupportedError(
            f"pass the optimizer by name ('adam' or 'sgd') with learning_rate: secureml builds "
            f"the DP optimizer itself so that its noise and clipping match the accounting, not "
            f"a {type(optimizer).__name__} configured separately")
    raise UnsupportedError(
        f"optimizer {type(optimizer).__name__} is not differentially private: it would apply "
        "unclipped, noiseless gradients and void the guarantee. Pass optimizer='adam' or 'sgd' "
        "with learning_rate; secureml builds tensorflow-privacy's DP version")


class PrivateModel(HardenedModel):
    """The user's model, compiled for DP-SGD. `fit(x, y)` samples its own batches (the
    accounting depends on how batches are drawn) and adds the accounting callback; `privacy`
    is the guarantee so far. The wrapped model is trained in place.

    Every `fit` draws fresh sampling and noise, and `privacy` composes the steps of all of
    them; once the budget is spent (`stop_at_budget`, the default), a further `fit` is refused.
    """

    def __init__(self, defence: DPSGD, setup: TrainingSetup):
        super().__init__(setup.model, setup.objective, setup.engine)
        self.defence, self.setup = defence, setup
        super().compile(optimizer=setup.make_optimizer(setup.config))

    def compile(self, optimizer=None, *args, **kwargs):
        if optimizer is not None and not isinstance(optimizer, str):
            _refuse_optimizer(optimizer)
        raise UnsupportedError("a private model is compiled by make_private; pass optimizer, "
                               "learning_rate and momentum there")

    @property
    def privacy(self) -> dict:
        """The `privacy` report: epsilon spent, delta, noise, sampling, whether it holds."""
        return self.defence.report()

    def compare_step_time(self, x, y, pairs: int = 10) -> dict:
        """This model's DP training step timed against a plain step (same optimizer, the first
        batch of (x, y), copies of the model, `pairs` interleaved pairs): the `ratio` and both
        median step times, as a run records them in metrics.json `cost.vs_plain_step`."""
        return compare_with_plain(self.setup, np.asarray(x), np.asarray(y).reshape(-1), pairs)

    def fit(self, x=None, y=None, batch_size=None, epochs=None, verbose="auto", callbacks=None,
            validation_data=None, **unsupported):
        if unsupported:
            raise UnsupportedError(
                f"fit({', '.join(unsupported)}=...) is not supported under DP-SGD: batches, "
                "steps and weights are fixed by the privacy accounting. Pass x, y, epochs, "
                "validation_data, callbacks and verbose")
        plan, config = self.defence.plan, self.setup.config
        if isinstance(x, tf.data.Dataset) or y is None:
            raise UnsupportedError("pass the training data as arrays x, y: DP-SGD draws its own "
                                   "batches so that the privacy accounting holds")
        x, y = np.asarray(x), np.asarray(y).reshape(-1).astype(np.int64)
        if len(x) != plan.data_size or len(y) != plan.data_size:
            raise ConfigError(f"make_private was planned for data_size={plan.data_size} "
                              f"examples but fit got {len(x)}; the accounting depends on N. "
                              "Call make_private again with the right data_size")
        if batch_size is not None and batch_size != plan.batch_size:
            raise ConfigError(f"fit(batch_size={batch_size}) differs from make_private's "
                              f"batch_size={plan.batch_size}, which the accounting uses; "
                              "leave it out")
        dataset, steps = self.setup.batching.dataset(x, y, plan.batch_size, self.setup.seed,
                                                     self.setup.drop_remainder)
        if validation_data is not None:
            validation_data = tf.data.Dataset.from_tensor_slices(
                (validation_data[0], np.asarray(validation_data[1]).reshape(-1))
            ).batch(config.eval_batch_size)
        return super().fit(dataset, epochs=epochs or plan.epochs, steps_per_epoch=steps,
                           verbose=verbose, validation_data=validation_data,
                           callbacks=[*self.setup.callbacks, *(callbacks or []),
                                      StopOnNonFinite(config.learning_rate)])


def make_private(model: tf.keras.Model, *, data_size: int, batch_size: int, epochs: int,
                 target_epsilon: float | None = None, noise_multiplier: float | None = None,
                 delta: float | None = None, l2_norm_clip: float = 1.0,
                 optimizer: str = "adam", learning_rate: float = 1e-3, momentum: float = 0.0,
                 objective: Objective | None = None, seed: int = 0, **options) -> PrivateModel:
    """Wrap a logits `model` for DP-SGD training on `data_size` examples.

    Give `target_epsilon` (the noise is calibrated to spend it over `epochs` epochs of
    `batch_size`) or `noise_multiplier`. `delta` defaults to min(1e-5, 1/(10 N)). `options` are
    the other `dp_sgd` config keys: accountant, sampling, clipping, num_microbatches,
    stop_at_budget, epsilon_budget, hyperparameters (how they were chosen: 'default', 'public'
    or 'private_unaccounted'; unstated, no guarantee is claimed) and reproducible (noise and
    sampling from `seed`, which voids the guarantee; otherwise `seed` does not determine them).
    `objective` (default cross-entropy) may be an adversarial training objective. Build `model`
    inside a `tf.distribute` strategy's scope to train on several devices.
    """
    if not isinstance(optimizer, str):
        _refuse_optimizer(optimizer)
    data_size = schema.coerce(schema.PositiveInt, data_size, "make_private: data_size")
    seed = schema.coerce(schema.Seed, seed, "make_private: seed")
    config = schema.build(Config, {"target_epsilon": target_epsilon,
                                   "noise_multiplier": noise_multiplier, "delta": delta,
                                   "l2_norm_clip": l2_norm_clip, **options}, "make_private")
    training = schema.build(TrainingConfig, {"epochs": epochs, "batch_size": batch_size,
                                             "optimizer": optimizer, "learning_rate": learning_rate,
                                             "momentum": momentum}, "make_private")
    strategy = tf.distribute.get_strategy()
    setup = TrainingSetup(model=model, config=training, num_examples=data_size,
                          strategy=strategy, seed=seed, objective=objective or Objective())
    data_kind = "text" if model.inputs and model.inputs[0].dtype.is_integer else "image"
    defence = DPSGD(config, data_kind)
    with strategy.scope():
        defence.apply(setup)
        return PrivateModel(defence, setup)
