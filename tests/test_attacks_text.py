"""Text attacks: embedding space (Miyato) and discrete token swaps, on a learnable toy task
vectorized with the project's own TextVectorizer."""
import numpy as np
import pytest
import tensorflow as tf

from secureml.attacks import embedding_fgm, embedding_pgd, evaluate_robustness, token_swap
from secureml.attacks.text import embedding_perturbation, embedding_scale
from secureml.data import TextVectorizer
from secureml.defences.adversarial import make
from secureml.models import build_model
from secureml.models.split import embedding_split
from secureml.training import train

LENGTH = 14
TRAINING = {"epochs": 6, "batch_size": 64, "learning_rate": 0.02}


def toy_texts(n: int, seed: int):
    """Reviews of 6-12 filler words; class 1 iff the word 'great' appears."""
    rng = np.random.default_rng(seed)
    texts, labels = [], rng.integers(0, 2, size=n)
    for label in labels:
        words = [f"w{i}" for i in rng.integers(0, 40, size=rng.integers(6, 13))]
        if label:
            words[rng.integers(0, len(words))] = "great"
        texts.append(" ".join(words))
    return np.array(texts, dtype=object), labels


@pytest.fixture(scope="module")
def toy():
    texts, y = toy_texts(900, seed=0)
    vectorizer = TextVectorizer(vocab_size=60, sequence_length=LENGTH).fit(texts[:700])
    ids = vectorizer(texts)
    return vectorizer, ids[:700], y[:700], ids[700:], y[700:]


def build(vectorizer):
    return build_model("text_lstm", (LENGTH,), 2, vocab_size=len(vectorizer.vocabulary),
                       embedding_dim=8, lstm_units=16)


@pytest.fixture(scope="module")
def plain(toy):
    vectorizer, x, y, *_ = toy
    tf.keras.utils.set_random_seed(0)
    return train(build(vectorizer), x[:500], y[:500], config=TRAINING, progress=False).model


def accuracy(model, ids, y):
    return float(np.mean((model(ids).numpy()[:, 0] > 0) == y))


def test_token_swap_changes_at_most_k_tokens_and_flips_predictions(plain, toy):
    vectorizer, *_, xt, yt = toy
    assert accuracy(plain, xt, yt) > 0.9
    result = token_swap(plain, xt, yt, budget=2, progress=False)
    changed = (result.ids != xt).sum(axis=1)
    assert changed.max() <= 2
    np.testing.assert_array_equal(changed, result.tokens_changed)
    assert np.all(result.ids[xt == 0] == 0)  # padding stays padding
    assert np.all(result.ids[result.ids != xt] >= 2)  # never padding or out-of-vocabulary
    correct = (plain(xt).numpy()[:, 0] > 0) == yt
    flipped = result.flipped_at > 0
    assert flipped.sum() > 0.5 * correct.sum()  # one swap ('great' in or out) is enough
    adversarial_correct = (plain(result.ids).numpy()[:, 0] > 0) == yt
    np.testing.assert_array_equal(adversarial_correct, result.correct_within(2))
    assert np.array_equal(result.correct_within(0), correct)


def test_embedding_attacks_respect_the_budget_and_padding(plain, toy):
    *_, xt, yt = toy
    split = embedding_split(plain)
    scale = embedding_scale(split).numpy()
    for epsilon in (0.0, 0.5, 2.0):
        delta = embedding_pgd(plain, xt, yt, epsilon, steps=5, progress=False)
        standardized = np.linalg.norm((delta / scale).reshape(len(delta), -1), axis=1)
        assert standardized.max() <= epsilon * (1 + 1e-4) + 1e-6
        assert np.all(delta[xt == 0] == 0)
    zero = embedding_fgm(plain, xt, yt, 0.0, progress=False)
    assert not zero.any()


def test_embedding_perturbation_of_an_example_ignores_the_rest_of_the_batch(plain, toy):
    *_, xt, yt = toy
    split = embedding_split(plain)
    batch = embedding_perturbation(split, tf.constant(xt[:8]), tf.constant(yt[:8]), 1.0,
                                   steps=3, step_size=0.5).numpy()
    alone = embedding_perturbation(split, tf.constant(xt[3:4]), tf.constant(yt[3:4]), 1.0,
                                   steps=3, step_size=0.5).numpy()
    np.testing.assert_allclose(batch[3:4], alone, atol=1e-5)


def test_text_robustness_section(plain, toy, tmp_path):
    vectorizer, *_, xt, yt = toy
    section = evaluate_robustness(
        plain, xt, yt, {"examples": 120, "budget": 2, "embedding_epsilons": [0, 1, 3, 10],
                        "attacks": ["embedding_fgm", {"name": "embedding_pgd", "steps": 5},
                                    "token_swap"], "chance_embedding_epsilon": 100},
        kind="text", vectorizer=vectorizer, progress=False, directory=tmp_path)
    assert section["data_kind"] == "text" and section["value_range"] is None
    swap = section["token_swap"]
    assert swap["budget"] == 2 and swap["tokens_changed_max"] <= 2
    assert swap["success_rate"] > 0.5
    example = swap["examples"][0]
    assert "[" in example["adversarial"] and "->" in example["adversarial"]
    assert section["headline"].startswith("token swap k=2: ")
    curve = section["robust_accuracy"]["token swap"]
    assert curve["k=0"] == pytest.approx(section["clean_accuracy"]) and curve["k=2"] < curve["k=0"]
    fgm = section["robust_accuracy"]["embedding FGM l2"]
    assert fgm["0"] == pytest.approx(section["clean_accuracy"]) and fgm["10"] < fgm["0"]
    # The worst case covers every attack run: token swaps too, not only the embedding ones.
    assert section["worst_case"]["tokens"]["k=2"] == pytest.approx(curve["k=2"])
    every = section["worst_case_all_attacks"]
    assert every["robust_accuracy"] <= min(curve["k=2"], fgm["10"],
                                           section["robust_accuracy"]["embedding PGD-5 l2"]["10"])
    assert {"token swap k=2", "embedding FGM L2 10", "embedding PGD-5 L2 10"} <= \
        set(every["covers"])
    if every["robust_accuracy"] < curve["k=2"]:
        assert "worst case over every attack" in section["headline"]
    checks = {c["name"]: c["passed"] for c in section["sanity_checks"]}
    assert checks["embedding_pgd_not_weaker_than_embedding_fgm"] is True
    assert checks["perturbations_within_budget"] is True
    assert checks["zero_budget_leaves_accuracy_unchanged"] is True
    assert checks["large_epsilon_reaches_chance"] is True


def test_worst_case_over_every_attack_is_the_intersection():
    """Text budgets (embedding L2 and tokens) are not comparable, but an example counts as
    robust only if it withstood every attack run, each at its largest budget."""
    from secureml.attacks.robustness import _worst_case, _worst_case_all_attacks
    from secureml.attacks.sanity import Measurement
    clean = np.array([True, True, True, True, False])
    everything = np.arange(5)
    runs = [Measurement("embedding_pgd", "embedding PGD-10", "l2", 0.0, everything, clean),
            Measurement("embedding_pgd", "embedding PGD-10", "l2", 2.0, everything,
                        np.array([True, True, False, True, False])),
            Measurement("token_swap", "token swap", None, 5.0, everything,
                        np.array([True, False, True, True, False])),
            Measurement("embedding_pgd", "embedding PGD-20", "l2", 2.0, np.arange(2),
                        np.array([True, True]), role="stronger"),
            Measurement("embedding_pgd", "embedding PGD-10", "l2", 50.0, everything,
                        np.zeros(5, bool), role="chance")]
    every = _worst_case_all_attacks(runs, clean)
    assert every["robust_accuracy"] == pytest.approx(2 / 5)  # examples 0 and 3
    assert set(every["covers"]) == {"embedding PGD-10 L2 2", "token swap k=5",
                                    "embedding PGD-20 L2 2 (stronger run)"}
    worst = _worst_case(runs, clean)
    assert worst["l2"]["2"] == pytest.approx(3 / 5) and worst["tokens"]["k=5"] == \
        pytest.approx(3 / 5)


def test_embedding_adversarial_training_runs_end_to_end(toy):
    vectorizer, x, y, xt, yt = toy
    tf.keras.utils.set_random_seed(0)
    result = train(build(vectorizer), x[:500], y[:500], config=TRAINING,
                   defences=[make({"epsilon": 1.0, "warmup_epochs": 1}, "text")], progress=False)
    assert accuracy(result.model, xt, yt) > 0.9
    assert [h["adversarial_epsilon"] for h in result.history[:3]] == [0.5, 1.0, 1.0]
    record = result.sections["adversarial_training"]
    assert record["method"] == "embedding" and record["norm"] == "l2"
    assert record["clean_weight"] == 0.5
    assert record["objective"] == {"name": "embedding_adversarial", "single_pass": False}
