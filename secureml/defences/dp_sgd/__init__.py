"""The `dp_sgd` defence: DP-SGD training with its privacy accounted (RDP or PLD upper bounds).

```yaml
defences:
  dp_sgd: {target_epsilon: 3, l2_norm_clip: 1.0}   # delta: min(1e-5, 1/(10 N)) by default
```

Batch size, epochs, learning rate and optimizer come from `training`. The noise is calibrated
so that the planned epochs spend `target_epsilon` (or `noise_multiplier` is given and epsilon
follows); batches are Poisson-sampled by default so that the accounting holds as stated, and
they and the noise are drawn from the operating system's secure generator, not the run's seed;
every epoch logs the epsilon spent. From Python, `make_private(model, ...)` does the same for a
plain Keras model. See docs/dp-sgd.md.

This module imports neither TensorFlow nor tensorflow-privacy until a model is involved, so the
`secureml privacy` calculators start quickly.
"""
from ... import schema
from .accounting import PrivacyPlan, calibrate_noise, compute_epsilon, make_plan
from .config import Config


def make(config: Config | dict | None, data_kind: str):
    """The defence (`DPSGD`) for `data_kind` ('image' or 'text') data."""
    from .defence import DPSGD
    return DPSGD(schema.build(Config, config, "dp_sgd"), data_kind)


def __getattr__(name):
    if name == "make_private":
        from .api import make_private
        return make_private
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Config", "PrivacyPlan", "calibrate_noise", "compute_epsilon", "make",
           "make_plan", "make_private"]
