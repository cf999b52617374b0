"""`PrivacyAccounting`: epsilon spent after every epoch, and a stop before the budget is spent."""
import warnings

import tensorflow as tf

from ...errors import SecureMLError
from .accounting import PrivacyPlan


class PrivacyBudgetSpent(SecureMLError):
    """Training was asked to continue although the next epoch would exceed the budget."""


class PrivacyAccounting(tf.keras.callbacks.Callback):
    """Counts DP-SGD steps and adds `epsilon` (spent so far) to every epoch's logs, so it shows
    in the progress line and in history.json.

    Steps accumulate across `fit` calls, each of which draws fresh sampling and noise, so the
    epsilon composes every step of every fit. With a `budget` and `stop_at_budget`, training
    stops at the end of an epoch when one more epoch would take epsilon over the budget, and a
    later `fit` is refused; without `stop_at_budget`, training goes on and a warning says when
    epsilon exceeds the budget.
    """

    def __init__(self, plan: PrivacyPlan, budget: float | None = None,
                 stop_at_budget: bool = True):
        super().__init__()
        self.plan, self.budget, self.stop_at_budget = plan, budget, stop_at_budget
        self.steps = 0
        self.epochs = 0
        self.stopped_at_budget = False
        self._warned_over_budget = False

    def _next_epoch_exceeds_budget(self) -> bool:
        return (self.stop_at_budget and self.budget is not None
                and self.plan.epsilon(self.steps + self.plan.steps_per_epoch) > self.budget)

    def on_train_begin(self, logs=None):
        if self._next_epoch_exceeds_budget():
            raise PrivacyBudgetSpent(
                f"the privacy budget is spent: epsilon {self.plan.epsilon(self.steps):.4g} after "
                f"{self.steps} steps, and one more epoch would reach "
                f"{self.plan.epsilon(self.steps + self.plan.steps_per_epoch):.4g} > "
                f"{self.budget:g}. Stop training, or plan a larger budget from the start")

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        epsilon = self.plan.epsilon(self.steps)
        if logs is not None:
            logs["epsilon"] = epsilon
        if self.budget is not None and epsilon > self.budget and not self._warned_over_budget:
            self._warned_over_budget = True
            warnings.warn(f"dp_sgd: OVER BUDGET: epsilon {epsilon:.4g} after {self.steps} steps "
                          f"exceeds the budget {self.budget:g} (stop_at_budget is off); the "
                          "privacy section reports within_budget: false", stacklevel=2)
        if epoch + 1 < self.params.get("epochs", 0) and self._next_epoch_exceeds_budget():
            self.model.stop_training = True
            self.stopped_at_budget = True
