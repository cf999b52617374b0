"""Shared benchmark fixtures: input batches, one training step, ratios to a baseline.

Timed: `pytest benchmarks/ --benchmark-only`. The default test run passes
`--benchmark-disable`, which calls each benchmark once without timing so that none can rot;
untimed runs use toy input sizes (`sizes`) to stay quick. Step times do not depend on pixel or
token values, so the CIFAR-10- and IMDB-shaped batches are random; digits are the real
bundled images.
"""
import numpy as np
import pytest

from secureml.training import TrainingConfig, TrainingSetup  # first: quiets TensorFlow's logs
from secureml.training.step_time import compiled_step

import tensorflow as tf  # noqa: E402

TIMED_SIZES = {"image": (32, 32, 3), "length": 100, "vocabulary": 10000}
TOY_SIZES = {"image": (8, 8, 3), "length": 10, "vocabulary": 50}


@pytest.fixture(scope="session")
def timed(request) -> bool:
    """Whether pytest-benchmark times this run (the same rule as pytest-benchmark's own)."""
    option = request.config.getoption
    return not (option("benchmark_disable") and not option("benchmark_enable"))


@pytest.fixture(scope="session")
def sizes(timed) -> dict:
    """Input sizes: CIFAR-10 images, IMDB length and vocabulary when timed."""
    return TIMED_SIZES if timed else TOY_SIZES


@pytest.fixture(scope="session")
def image_batch(sizes):
    """`image_batch(n)`: n random images of `sizes["image"]`, 10 classes."""
    def make(n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        return (rng.random((n, *sizes["image"]), dtype=np.float32),
                rng.integers(0, 10, n).astype("int64"))
    return make


@pytest.fixture(scope="session")
def text_batch(sizes):
    """`text_batch(n)`: n random token-id sequences of `sizes["length"]`, 2 classes."""
    def make(n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        return (rng.integers(2, sizes["vocabulary"], (n, sizes["length"])).astype("int32"),
                rng.integers(0, 2, n).astype("int64"))
    return make


@pytest.fixture(scope="session")
def training_step():
    """`training_step(model, x, y, defences)`: see `_training_step`."""
    return _training_step


def _training_step(model: tf.keras.Model, x, y, defences=(), num_examples: int = 50000,
                   learning_rate: float = 1e-3):
    """A function running one training step on (x, y) with `defences`, already traced.

    The step is the one `secureml.training.train` runs: the defences edit the same
    `TrainingSetup`, and `compiled_step` runs it as `fit` does.
    `num_examples` is the training-set size a DP defence calibrates its noise for.
    """
    config = TrainingConfig(batch_size=len(y), learning_rate=learning_rate)
    setup = TrainingSetup(model=model, config=config, num_examples=num_examples,
                          strategy=tf.distribute.get_strategy())
    for defence in defences:
        defence.apply(setup)
    return compiled_step(setup.model, setup.objective, setup.engine,
                         setup.make_optimizer(config), tf.constant(x), tf.constant(y))


class Ratios:
    """Median times per benchmark group, printed as ratios to the group's baseline at the end."""

    def __init__(self):
        self.groups: dict[str, dict[str, float]] = {}
        self.baselines: dict[str, str] = {}

    def record(self, benchmark, name: str, baseline: str = "plain") -> None:
        if benchmark.disabled or benchmark.stats is None:
            return
        self.groups.setdefault(benchmark.group, {})[name] = benchmark.stats.stats.median
        self.baselines[benchmark.group] = baseline

    def lines(self) -> list[str]:
        out = []
        for group, times in self.groups.items():
            base = times.get(self.baselines[group])
            for name, seconds in times.items():
                ratio = f"x{seconds / base:.2f}" if base else "(no baseline timed)"
                out.append(f"{group:45s} {name:32s} {seconds * 1000:10.3f} ms  {ratio}")
        return out


_RATIOS = Ratios()


@pytest.fixture(scope="session")
def ratios() -> Ratios:
    return _RATIOS


def pytest_terminal_summary(terminalreporter):
    lines = _RATIOS.lines()
    if lines:
        terminalreporter.section("median time, ratio to the group's baseline (same run)")
        for line in lines:
            terminalreporter.write_line(line)
