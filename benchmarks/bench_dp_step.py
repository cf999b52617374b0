"""The DP-SGD step (issue 4): plain vs tensorflow-privacy vs fast clipping, time and memory.

    pytest benchmarks/bench_dp_step.py --benchmark-only -s

For each reference model (image_cnn on CIFAR-10-shaped 32x32x3 images, text_lstm on IMDB-shaped
sequences: 10,000 words, length 100) and batch size (64, 256), one SGD step of:

- plain: ordinary training;
- microbatch: tensorflow-privacy's DPKerasSGDOptimizer with one microbatch per example;
- vectorized: tensorflow-privacy's VectorizedDPKerasSGDOptimizer;
- fast: secureml's FastClippingEngine.

Time: timed in this process; the summary gives each median as a ratio to the plain step of the
same group. Medians taken a minute apart move with the machine's load (10-20% here), so each DP
engine is also timed in interleaved pairs with a plain step: printed, and saved as extra_info
"paired_ratio_to_plain" (median of the per-pair ratios) and "interleaved_ratio_of_medians".

Memory: each case also trains a few steps in a fresh process (peak resident memory cannot be
reset within one), capped at MEMORY_CAP_GB so that a case that would exhaust the shared machine
fails alone and is reported as out of memory; its timing is then skipped.

With --benchmark-disable (the default test run) each engine runs once at toy sizes and one batch
size, only the fast engine's memory run is spawned, and tensorflow-privacy's LSTM cases are
skipped: tracing its per-example jacobian through an LSTM takes about a minute even when tiny.
"""
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from secureml.models import build_model
from secureml.training import PlainEngine, TrainingConfig, make_optimizer, train
from secureml.training.step_time import time_pairs

ENGINES = ("plain", "microbatch", "vectorized", "fast")
MODELS = ("image_cnn", "text_lstm")
BATCHES = (64, 256)
CASES = [(m, b, e) for m in MODELS for b in BATCHES for e in ENGINES]  # plain first per group
VOCABULARY, LENGTH = 10000, 100
CLIP, NOISE = 1.0, 1.0
MEMORY_STEPS = 6
MEMORY_CAP_GB = 8
_memory: dict[tuple, dict] = {}


def inputs(model_name: str, n: int, toy: bool = False, seed: int = 0):
    """Random inputs of the real shapes (step cost does not depend on the values) and a model
    builder for them."""
    rng = np.random.default_rng(seed)
    if model_name == "image_cnn":
        shape = (8, 8, 3) if toy else (32, 32, 3)
        x = rng.random((n, *shape), dtype=np.float32)
        return x, rng.integers(0, 10, n), lambda: build_model("image_cnn", shape, 10)
    length, vocabulary = (10, 50) if toy else (LENGTH, VOCABULARY)
    x = rng.integers(2, vocabulary, (n, length)).astype(np.int32)
    return x, rng.integers(0, 2, n), lambda: build_model("text_lstm", (length,), 2,
                                                         vocab_size=vocabulary)


class Engine:
    """A defence that only swaps the gradient engine, every engine with the same plain SGD."""

    name = "engine"

    def __init__(self, engine: str):
        self.engine_name = engine

    def apply(self, setup):
        config = dataclasses.replace(setup.config, optimizer="sgd", learning_rate=0.01)
        if self.engine_name in ("microbatch", "vectorized"):
            from secureml.defences.dp_sgd.engines import TFPrivacyEngine
            setup.engine = TFPrivacyEngine(self.engine_name, CLIP, NOISE)
            setup.make_optimizer = lambda _: setup.engine.make_optimizer(config)
            return
        if self.engine_name == "fast":
            from secureml.defences.dp_sgd.fast import FastClippingEngine
            setup.engine = FastClippingEngine(CLIP, NOISE)
        else:
            setup.engine = PlainEngine()
        setup.make_optimizer = lambda _: make_optimizer(config)

    def sections(self, result):
        return {}


def measure_memory(model_name: str, batch_size: int, engine: str, toy: bool) -> dict:
    """Train MEMORY_STEPS steps in this (fresh) process: peak resident memory and its increase
    over the process before training (tracing included)."""
    x, y, build = inputs(model_name, batch_size * MEMORY_STEPS, toy)
    result = train(build(), x, y, config=TrainingConfig(epochs=1, batch_size=batch_size),
                   defences=[Engine(engine)], progress=False)
    return {k: result.cost[k] for k in ("peak_rss_mb", "peak_rss_increase_mb",
                                        "step_time_median_s")}


def _cap_memory():
    limit = MEMORY_CAP_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def memory_in_subprocess(model_name: str, batch_size: int, engine: str, toy: bool) -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), model_name,
                          str(batch_size), engine, str(int(toy))], capture_output=True,
                         text=True, timeout=3600, preexec_fn=_cap_memory)
    if out.returncode == 0:
        return json.loads(out.stdout.strip().splitlines()[-1])
    if any(sign in out.stderr for sign in ("ResourceExhausted", "OOM", "bad_alloc",
                                           "MemoryError")):
        return {"oom": f"out of memory (over the {MEMORY_CAP_GB} GB cap)"}
    raise RuntimeError(f"memory run {model_name} {batch_size} {engine} failed:\n"
                       f"{out.stderr[-3000:]}")


def _ratio(value, baseline) -> str:
    return f"x{value / baseline:.2f}" if value and baseline else "n/a"


@pytest.mark.parametrize("model_name, batch_size, engine", CASES,
                         ids=[f"{m}-b{b}-{e}" for m, b, e in CASES])
def test_dp_step(benchmark, ratios, training_step, model_name, batch_size, engine):
    toy = benchmark.disabled
    if toy and batch_size != BATCHES[0]:
        pytest.skip("untimed runs use one toy batch size")
    if toy and model_name == "text_lstm" and engine in ("microbatch", "vectorized"):
        pytest.skip("tensorflow-privacy's LSTM step takes a minute to trace; timed runs only")
    group = (model_name, batch_size)
    if not toy or (model_name, engine) == ("image_cnn", "fast"):
        memory = _memory.setdefault(group, {})[engine] = memory_in_subprocess(
            model_name, batch_size, engine, toy)
        if "oom" in memory:
            pytest.skip(f"{model_name} batch {batch_size} {engine}: {memory['oom']}")
        plain = _memory[group].get("plain", {})
        benchmark.extra_info.update(memory)
        print(f"\n{model_name} batch {batch_size} {engine}: peak RSS {memory['peak_rss_mb']} MB "
              f"({_ratio(memory['peak_rss_mb'], plain.get('peak_rss_mb'))} plain), increase "
              f"{memory['peak_rss_increase_mb']} MB "
              f"({_ratio(memory['peak_rss_increase_mb'], plain.get('peak_rss_increase_mb'))})")
    n = 4 if toy else batch_size
    x, y, build = inputs(model_name, n, toy)
    step = training_step(build(), x, y, [Engine(engine)])
    benchmark.group = f"dp step {model_name} batch {batch_size}"
    rounds = 1 if toy else _rounds(step)
    logs = benchmark.pedantic(step, rounds=rounds, warmup_rounds=0 if toy else 1)
    assert np.isfinite(logs["loss"])
    ratios.record(benchmark, engine)
    if not toy and engine != "plain":
        plain_step = training_step(build(), x, y, [Engine("plain")])
        timed = time_pairs(step, plain_step, 2 * rounds)
        of_medians = timed["step_time_median_s"] / timed["plain_step_time_median_s"]
        benchmark.extra_info.update({"paired_ratio_to_plain": timed["ratio"],
                                     "interleaved_ratio_of_medians": of_medians})
        print(f"{model_name} batch {batch_size} {engine}: x{timed['ratio']:.2f} plain (median "
              f"of {2 * rounds} interleaved pairs; ratio of their medians x{of_medians:.2f}, "
              f"{timed['step_time_median_s'] * 1000:.1f} / "
              f"{timed['plain_step_time_median_s'] * 1000:.1f} ms)")


def _rounds(step, budget_s: float = 20.0) -> int:
    """As many rounds as fit in `budget_s` (5 to 40), from the time of one step."""
    start = time.perf_counter()
    step()
    return int(min(40, max(5, budget_s / max(time.perf_counter() - start, 1e-3))))


if __name__ == "__main__":  # one memory run: MODEL BATCH ENGINE TOY
    name, batch, engine_name, toy_flag = sys.argv[1:5]
    print(json.dumps(measure_memory(name, int(batch), engine_name, bool(int(toy_flag)))))
