"""Keras callbacks for per-epoch and per-step work: progress, step timing, epoch history."""
import sys
import time

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..errors import TrainingError


def _format_logs(logs: dict) -> dict:
    return {k: f"{float(v):.4g}" for k, v in (logs or {}).items()}


class Progress(tf.keras.callbacks.Callback):
    """A tqdm bar per epoch, then one line with every logged value (epsilon included).

    Goes last in the callback list so that values other callbacks add at epoch end show up.
    """

    def __init__(self, epochs: int, steps_per_epoch: int | None, label: str = "",
                 enabled: bool = True):
        super().__init__()
        self.epochs, self.steps, self.label, self.enabled = epochs, steps_per_epoch, label, enabled
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.enabled:
            self.bar = tqdm(total=self.steps, desc=f"{self.label}epoch {epoch + 1}/{self.epochs}",
                            unit="step", leave=False, file=sys.stderr, mininterval=0.5)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(_format_logs(logs), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is None:
            return
        elapsed = self.bar.format_dict.get("elapsed", 0.0)
        self.bar.close()
        self.bar = None
        values = " ".join(f"{k}={v}" for k, v in _format_logs(logs).items()
                          if k != "epoch_time_s")
        tqdm.write(f"{self.label}epoch {epoch + 1}/{self.epochs} [{elapsed:.1f}s] {values}",
                   file=sys.stderr)


class StepTimer(tf.keras.callbacks.Callback):
    """Wall time of every training step and epoch.

    The first `warmup` steps are left out of the step statistics: they include tracing and
    graph compilation, which a longer run amortizes away.
    """

    def __init__(self, warmup: int = 3):
        super().__init__()
        self.warmup = warmup
        self.step_times: list[float] = []
        self.epoch_times: list[float] = []
        self._step_start = self._epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs:  # reading a value waits for the step to finish on an asynchronous device
            float(next(iter(logs.values())))
        self.step_times.append(time.perf_counter() - self._step_start)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_times.append(time.perf_counter() - self._epoch_start)
        if logs is not None:
            logs["epoch_time_s"] = self.epoch_times[-1]

    def summary(self) -> dict:
        timed = self.step_times[self.warmup:] or self.step_times
        return {
            "steps": len(self.step_times),
            "step_time_median_s": float(np.median(timed)) if timed else None,
            "step_time_mean_s": float(np.mean(timed)) if timed else None,
            "epoch_times_s": [round(t, 4) for t in self.epoch_times],
        }


class EpochHistory(tf.keras.callbacks.Callback):
    """Every value logged at each epoch end, as JSON-ready floats (history.json)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self.epochs.append(row)


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Stops training at the first non-finite loss (checked every step) or weight (checked
    every epoch) and raises `TrainingError` saying where, instead of training on NaN.

    Goes last in the callback list: the error is raised when training ends, after the other
    callbacks closed their epoch. The running mean Keras logs turns non-finite at the first
    non-finite step and stays so, which makes this step the first bad one.
    """

    def __init__(self, learning_rate: float | None = None):
        super().__init__()
        self.learning_rate = learning_rate
        self.epoch = 0
        self.problem: str | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.problem is None and loss is not None and not np.isfinite(float(loss)):
            self._stop(f"the training loss is {float(loss)} at epoch {self.epoch}, "
                       f"step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if self.problem is not None:
            return
        bad = [k for k, v in (logs or {}).items() if not np.isfinite(float(v))]
        if bad:
            self._stop(f"{bad[0]} is {float(logs[bad[0]])} after epoch {epoch + 1}")
        elif not all(bool(tf.reduce_all(tf.math.is_finite(w))) for w in self.model.weights):
            self._stop(f"the model's weights are no longer finite after epoch {epoch + 1}")

    def _stop(self, problem: str) -> None:
        self.problem = problem
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.problem is None:
            return
        rate = "" if self.learning_rate is None else f" (now {self.learning_rate:g})"
        raise TrainingError(f"training stopped: {self.problem}. Lower learning_rate{rate}, "
                            f"and check the inputs for NaN or infinite values")
