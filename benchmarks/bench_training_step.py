"""One training step of every defence, both reference models, fixed batch sizes.

    pytest benchmarks/bench_training_step.py --benchmark-only

Each group (model, batch size) prints its median step times; the summary at the end gives each
defence's ratio to the plain step measured in the same run. DP-SGD runs with secureml's fast
exact clipping at a fixed noise multiplier (a step costs the same at any epsilon);
benchmarks/bench_dp_step.py compares every clipping method, tensorflow-privacy's included.
Untimed (the default test run), the inputs are toy-sized.
"""
import pytest

from secureml import registry
from secureml.models import build_model

DP = {"dp_sgd": {"noise_multiplier": 1.0, "sampling": "shuffle", "clipping": "fast"}}
PGD = {"adversarial_training": {"method": "pgd", "steps": 7}}
# name -> (data kinds, defences in the order they apply)
DEFENCES = {
    "plain": (("image", "text"), {}),
    "dp_sgd": (("image", "text"), DP),
    "fast_at": (("image",), {"adversarial_training": {"method": "fast"}}),
    "pgd_at": (("image",), PGD),
    "embedding_at": (("text",), {"adversarial_training": {"method": "embedding"}}),
    "pgd_at+dp_sgd": (("image",), {**PGD, **DP}),
}
MODELS = {"image_cnn": ("image", (64, 256)), "text_lstm": ("text", (64,))}
CASES = [(model, batch, name) for model, (kind, batches) in MODELS.items() for batch in batches
         for name, (kinds, _) in DEFENCES.items() if kind in kinds]


def make_defences(name: str, data_kind: str) -> list:
    return [registry.defence_module(defence).make(params, data_kind)
            for defence, params in DEFENCES[name][1].items()]


@pytest.mark.parametrize("model_name, batch_size, defence", CASES,
                         ids=[f"{m}-b{b}-{d}" for m, b, d in CASES])
def test_training_step(benchmark, ratios, training_step, image_batch, text_batch, sizes,
                       model_name, batch_size, defence):
    if model_name == "image_cnn":
        x, y = image_batch(batch_size)
        model = build_model("image_cnn", x.shape[1:], 10)
    else:
        x, y = text_batch(batch_size)
        model = build_model("text_lstm", x.shape[1:], 2, vocab_size=sizes["vocabulary"])
    step = training_step(model, x, y, make_defences(defence, MODELS[model_name][0]))
    benchmark.group = f"train step {model_name} batch {batch_size}"
    logs = benchmark(step)
    assert logs["loss"] > 0
    ratios.record(benchmark, defence)
