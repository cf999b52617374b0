"""Keras callbacks for per-epoch and per-step work: progress, step timing, epoch history."""
import sys
import time

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm


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
