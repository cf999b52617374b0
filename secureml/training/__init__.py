"""Training: objectives, gradient engines, the training loop and its cost measurements."""
from .engine import PlainEngine
from .objective import Objective
from .strategy import RuntimeConfig, configure_runtime, make_strategy
from .trainer import (Defence, ShuffledBatches, TrainingConfig, TrainingSetup, TrainResult,
                      make_optimizer, train)

__all__ = ["Defence", "Objective", "PlainEngine", "RuntimeConfig", "ShuffledBatches",
           "TrainResult", "TrainingConfig", "TrainingSetup", "configure_runtime",
           "make_optimizer", "make_strategy", "train"]
