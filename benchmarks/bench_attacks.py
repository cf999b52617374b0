"""What an attack costs, against one plain forward pass over the same inputs.

    pytest benchmarks/bench_attacks.py --benchmark-only

Image attacks run on CIFAR-10-sized images against the reference image_cnn, text attacks on
IMDB-sized texts against the reference text_lstm (toy sizes when untimed, see conftest.py). The
models are untrained: an attack's cost is its number of forward and backward passes, which does
not depend on the weights (only token_swap stops early on texts it has already flipped, so its
figure is an upper bound per text). Slow attacks (CW, SPSA) run with few steps here; their cost
grows linearly in steps. The first round includes tracing; the median leaves it out.
"""
import pytest

from secureml.attacks import (carlini_wagner_l2, embedding_fgm, embedding_pgd, fgsm, pgd, spsa,
                              token_swap)
from secureml.evaluation import predict_logits
from secureml.models import build_model


def inference(model, x, y):
    return predict_logits(model, x)


# target -> (benchmark group, attack name -> attack(model, x, y)). Each group's baseline is
# `inference`.
ATTACKS = {
    "image": ("attack image_cnn, 64 CIFAR-10-sized images", {
        "inference": inference,
        "fgsm": lambda m, x, y: fgsm(m, x, y, 8 / 255, progress=False),
        "pgd-10": lambda m, x, y: pgd(m, x, y, 8 / 255, steps=10, progress=False),
        "pgd-20x2": lambda m, x, y: pgd(m, x, y, 8 / 255, steps=20, restarts=2, progress=False),
        # Two images: SPSA estimates each gradient from 32 forward passes per image.
        "spsa-2x32": lambda m, x, y: spsa(m, x[:2], y[:2], 8 / 255, steps=2, samples=32,
                                          progress=False),
        # Eight images: CW searches one image at a time (see carlini_wagner_l2).
        "cw-l2-8x10": lambda m, x, y: carlini_wagner_l2(m, x[:8], y[:8], steps=10,
                                                        binary_search_steps=1, progress=False),
    }),
    "text": ("attack text_lstm, 16 IMDB-sized texts", {
        "inference": inference,
        "embedding_fgm": lambda m, x, y: embedding_fgm(m, x, y, 1.0, progress=False),
        "embedding_pgd-10": lambda m, x, y: embedding_pgd(m, x, y, 1.0, steps=10,
                                                          progress=False),
        "token_swap-k2": lambda m, x, y: token_swap(m, x, y, 2, progress=False),
    }),
}
CASES = [(target, name) for target, (_, attacks) in ATTACKS.items() for name in attacks]


@pytest.fixture(scope="module")
def targets(image_batch, text_batch, sizes):
    """`targets(kind)`: an untrained reference model and a batch of its inputs, built once."""
    built = {}

    def make(kind: str):
        if kind not in built:
            if kind == "text":
                x, y = text_batch(16)
                model = build_model("text_lstm", x.shape[1:], 2, vocab_size=sizes["vocabulary"])
            else:
                x, y = image_batch(64)
                model = build_model("image_cnn", x.shape[1:], 10)
            built[kind] = model, x, y
        return built[kind]
    return make


@pytest.mark.parametrize("target, name", CASES, ids=[f"{t}-{n}" for t, n in CASES])
def test_attack(benchmark, ratios, targets, target, name):
    model, x, y = targets(target)
    group, attacks = ATTACKS[target]
    benchmark.group = group
    out = benchmark(attacks[name], model, x, y)
    # One result (logits, adversarial input or perturbation) per input attacked; token_swap
    # returns its adversarial texts with a record of the swaps.
    subset = {"spsa": 2, "cw-l2": 8}.get(name.rsplit("-", 1)[0], len(y))
    assert len(getattr(out, "ids", out)) == subset
    ratios.record(benchmark, name, baseline="inference")
