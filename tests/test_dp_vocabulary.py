"""The vocabulary of DP-SGD on text: DP partition selection (noisy bounded document counts over a
threshold), public vocabularies, the private one that voids the guarantee, its cost in the
accounting, per-variant vocabularies in a run, and a small DP text run end to end."""
import json
import math
import os
import random
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import tensorflow as tf

from secureml import schema
from secureml.config import load_config
from secureml.data import TextVectorizer, load_dataset
from secureml.data.vectorize import read_vocabulary, tokenize
from secureml.defences import dp_sgd
from secureml.defences.dp_sgd import Config, calibrate_noise, compute_epsilon, make_plan
from secureml.defences.dp_sgd.vocabulary import (PRIVATE_REASON, Vocabulary, VocabularyPlan,
                                                 build_vocabulary, document_counts,
                                                 plan_vocabulary, secure_normal, select_tokens)
from secureml.errors import ConfigError, DataError
from secureml.models import build_model
from secureml.runner import VariantInputs, run_experiment
from secureml.training import TrainingConfig, TrainingSetup

ROOT = Path(__file__).resolve().parent.parent
# Noise 2 on counts of at most 4 tokens a document: std 4, threshold about 20 documents.
SMALL = VocabularyPlan("dp", noise_multiplier=2.0, max_tokens_per_document=4,
                       threshold_delta=5e-6, accountant_delta=5e-6)


def reviews(n):
    """Synthetic labelled reviews: shared words, a sentiment pair, and an id no other has."""
    return [{"text": f"The film story {'great fine' if i % 2 else 'awful bad'} id{i}",
             "label": "pos" if i % 2 else "neg"} for i in range(n)]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def dp_config(**options):
    return schema.build(Config, options, "dp_sgd")


def test_threshold_releases_a_single_document_token_with_at_most_threshold_delta():
    k, sigma, tau = SMALL.max_tokens_per_document, SMALL.noise_std, SMALL.threshold
    # The k tokens of one document that no other document has each have count 1: the chance
    # that any of them is released is the threshold's delta, no more.
    any_released = 1 - NormalDist().cdf((tau - 1) / sigma) ** k
    assert any_released == pytest.approx(SMALL.threshold_delta, rel=1e-6)
    assert 15 < tau < 25 and sigma == 4.0


def test_each_document_counts_a_token_once_and_at_most_k_tokens():
    counts = document_counts(["common words here", "common rareword", "spam " * 1000,
                              "a b c d e f g h", "h a"], 4)
    assert counts == {"common": 2, "words": 1, "here": 1, "rareword": 1, "spam": 1,
                      "a": 2, "b": 1, "c": 1, "d": 1, "h": 1}


def test_a_token_of_one_document_is_never_released_and_frequent_tokens_always_are():
    texts = ["common words here"] * 60 + ["common rareword"] + ["spam " * 1000] \
        + ["a b c d e f g h"] * 60
    # Each count-1 token is released with probability 2.5e-11 a draw: the test cannot flake.
    strict = replace(SMALL, threshold_delta=1e-10)
    counts = document_counts(texts, strict.max_tokens_per_document)
    released = [set(select_tokens(counts, strict.noise_std, strict.threshold, 100))
                for _ in range(2000)]
    assert all(r == {"common", "words", "here", "a", "b", "c", "d"} for r in released)
    # "rareword" and "spam" (1,000 times, one document) have count 1; e..h, past the first 4
    # distinct tokens of their documents, none.


def test_noise_is_not_replayable_from_the_run_seed():
    # 30 tokens in exactly threshold-many documents each: every one is a coin flip.
    texts = [f"borderline{i}" for i in range(30) for _ in range(round(SMALL.threshold))]
    draws = []
    for _ in range(2):
        random.seed(0), np.random.seed(0), tf.keras.utils.set_random_seed(0)
        draws.append(build_vocabulary(SMALL, texts, 100, 5)[0].vocabulary)
    assert 2 < len(draws[0]) < 32 and set(draws[0]) != set(draws[1])


def test_secure_normal_is_standard_normal():
    z = secure_normal(200_000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z > 2) - NormalDist().cdf(-2)) < 0.002


def test_dp_vocabulary_epsilon_is_part_of_the_total_and_of_the_calibration():
    n, batch, epochs = 20000, 200, 3
    config = dp_config(target_epsilon=3.0, delta=1e-5)
    vocabulary = plan_vocabulary(config, n)
    assert vocabulary.epsilon == pytest.approx(0.3 * 3.0, abs=1e-3)
    assert vocabulary.threshold_delta + vocabulary.accountant_delta == pytest.approx(1e-5)
    alone = make_plan(data_size=n, batch_size=batch, epochs=epochs, target_epsilon=3.0,
                      delta=1e-5)
    plan = make_plan(data_size=n, batch_size=batch, epochs=epochs, target_epsilon=3.0, delta=1e-5,
                     vocabulary_noise=vocabulary.noise_multiplier,
                     threshold_delta=vocabulary.threshold_delta)
    assert plan.noise_multiplier > alone.noise_multiplier * 1.01
    assert 2.99 < plan.epsilon() <= 3.0 and plan.total_delta == pytest.approx(1e-5)
    training_only = compute_epsilon(plan.noise_multiplier, plan.sampling_rate, plan.steps,
                                    plan.delta)
    assert plan.epsilon() > training_only + 0.05
    assert plan.epsilon(0) == pytest.approx(vocabulary.epsilon)  # spent before the first step


def test_dp_vocabulary_needs_a_budget_or_its_own_noise():
    with pytest.raises(ConfigError, match="vocabulary.noise_multiplier"):
        plan_vocabulary(dp_config(noise_multiplier=1.1), 1000)
    plan = plan_vocabulary(dp_config(noise_multiplier=1.1, vocabulary={"noise_multiplier": 5}),
                           1000)
    assert plan.noise_multiplier == 5 and plan.epsilon > 0
    with pytest.raises(ConfigError, match="whole budget"):
        plan_vocabulary(dp_config(target_epsilon=1, vocabulary={"noise_multiplier": 0.5}), 1000)


@pytest.mark.parametrize("vocabulary,message", [
    ({"source": "public"}, "exactly one of vocabulary_file"),
    ({"source": "public", "vocabulary_file": "a", "corpus": "b"}, "exactly one"),
    ({"vocabulary_file": "v.txt"}, "goes with source: public"),
    ({"source": "private", "epsilon_share": 0.2}, "goes with source: dp"),
    ({"noise_multiplier": 3, "epsilon_share": 0.2}, "at most one"),
    ({"epsilon_share": 1.5}, r"in \(0, 1\)"),
    ({"noise_multiplier": float("nan")}, r"finite number in \(0, 1000\]"),
    ({"max_tokens_per_document": 0}, "an integer >= 1"),
    ({"source": "privat"}, "did you mean 'private'"),
])
def test_vocabulary_settings_are_validated(vocabulary, message):
    raw = {"data": {"name": "imdb"}, "model": {"name": "text_lstm"},
           "defences": {"dp_sgd": {"target_epsilon": 3, "vocabulary": vocabulary}}}
    with pytest.raises(ConfigError, match=message) as err:
        load_config(raw)
    assert "dp_sgd.vocabulary" in str(err.value)


def test_vocabulary_file_formats(tmp_path):
    (tmp_path / "tokens.txt").write_text("The\nmovie\n\nGreat!\nthe\n[UNK]\nbad\n")
    assert read_vocabulary(tmp_path / "tokens.txt", 10) == ["the", "movie", "great", "bad"]
    assert read_vocabulary(tmp_path / "tokens.txt", 2) == ["the", "movie"]
    saved = TextVectorizer(20, 5).fit(["good film", "bad film", "a film"]).save(tmp_path / "v")
    assert read_vocabulary(saved, 20) == TextVectorizer.load(saved).vocabulary[2:]
    assert read_vocabulary(saved / "vocabulary.json", 20) == read_vocabulary(saved, 20)
    (tmp_path / "bad.txt").write_text("good\nnew york\n")
    with pytest.raises(DataError, match="'new york' is 2 words"):
        read_vocabulary(tmp_path / "bad.txt", 10)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="no tokens"):
        read_vocabulary(tmp_path / "empty.json", 10)


def test_public_sources_cost_nothing_and_use_no_training_text(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("public words only")
    (tmp_path / "corpus" / "b.txt").write_text("public words")
    plan = plan_vocabulary(dp_config(target_epsilon=3, vocabulary={
        "source": "public", "corpus": str(tmp_path / "corpus")}), 1000)
    vectorizer, built = build_vocabulary(plan, ["private secret"], 50, 5)
    assert vectorizer.vocabulary[2:] == ["words", "public", "only"] and built.size == 3
    assert built.describe()["source"] == "public" and "epsilon" not in built.describe()
    missing = plan_vocabulary(dp_config(target_epsilon=3, vocabulary={
        "source": "public", "vocabulary_file": str(tmp_path / "nope.txt")}), 1000)
    with pytest.raises(DataError, match="nope.txt does not exist"):
        build_vocabulary(missing, ["x"], 50, 5)


def test_an_empty_dp_vocabulary_is_refused():
    plan = plan_vocabulary(dp_config(target_epsilon=1), 100)
    with pytest.raises(DataError, match="DP vocabulary is empty"):
        build_vocabulary(plan, [r["text"] for r in reviews(100)], 50, 5)


def test_variants_share_a_vocabulary_only_when_planned_alike(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", reviews(800))
    raw = {"data": {"path": str(path), "vocab_size": 50, "sequence_length": 6},
           "model": {"name": "text_lstm"},
           "variants": {"plain": {}, "a": {"defences": {"dp_sgd": {"target_epsilon": 3}}},
                        "b": {"defences": {"dp_sgd": {"target_epsilon": 3}}},
                        "c": {"defences": {"dp_sgd": {"target_epsilon": 8}}}}}
    config = load_config(raw)
    inputs = VariantInputs(load_dataset(config.data, progress=False), config.data,
                           config.variants)
    plain, a, b, c = (inputs(v) for v in config.variants)
    assert a is b and a is not c and plain.vocabulary.plan.source == "private"
    # Each id is one review's: only the private vocabulary has them.
    assert any(t.startswith("id") for t in plain.vectorizer.vocabulary)
    for dp in (a, c):
        assert dp.vocabulary.plan.source == "dp"
        assert not any(t.startswith("id") for t in dp.vectorizer.vocabulary)
        assert dp.vocab_size == len(dp.vectorizer.vocabulary) == dp.vocabulary.size + 2


def test_a_run_refuses_an_unplannable_vocabulary_before_training(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", reviews(200))
    raw = {"data": {"path": str(path)}, "model": {"name": "text_lstm"},
           "variants": {"plain": {}, "dp": {"defences": {"dp_sgd": {"noise_multiplier": 1.1}}}},
           "audit": {"report": False, "data": False}}
    with pytest.raises(ConfigError, match="no budget to take the DP vocabulary's share"):
        run_experiment(load_config(raw), out_dir=tmp_path / "runs", progress=False)
    assert not list((tmp_path / "runs").rglob("metrics.json"))


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """A small IMDB subset from the shared data sets when present, else synthetic reviews."""
    configured = os.environ.get("SECUREML_DATA_DIR")
    shared = Path(configured) if configured else ROOT.parent / "shared" / "datasets"
    if (shared / "imdb").is_dir():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SECUREML_DATA_DIR", str(shared))
            yield {"name": "imdb", "limit": 1500, "test_limit": 200}
        return
    yield {"path": str(write_jsonl(tmp_path_factory.mktemp("text") / "r.jsonl", reviews(1500)))}


@pytest.fixture(scope="module")
def dp_text_run(text_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocabulary")
    (folder / "public.txt").write_text("the\nmovie\nGreat\n\nbad\n")
    dp = {"target_epsilon": 8, "l2_norm_clip": 1.0, "hyperparameters": "default"}
    raw = {"name": "vocab", "seed": 3,
           "data": {**text_data, "vocab_size": 2000, "sequence_length": 20},
           "model": {"name": "text_lstm", "embedding_dim": 8, "lstm_units": 8},
           "training": {"epochs": 1, "batch_size": 64, "plain_step_pairs": 0},
           "variants": {
               "dp": {"defences": {"dp_sgd": dp}},
               "public": {"defences": {"dp_sgd": {**dp, "vocabulary": {
                   "source": "public", "vocabulary_file": str(folder / "public.txt")}}}}},
           "audit": {"report": False, "data": False, "membership": False}}
    config = load_config(raw)
    data = load_dataset(config.data, seed=config.seed, progress=False)
    return run_experiment(config, out_dir=folder / "runs", progress=False), data


def saved_vocabulary(run, variant):
    return TextVectorizer.load(run.directory / variant / "vectorizer").vocabulary


def test_dp_text_run_records_the_vocabulary_in_the_privacy_section(dp_text_run):
    run, data = dp_text_run
    privacy = run.metrics["dp"]["privacy"]
    vocabulary = privacy["vocabulary"]
    assert vocabulary["source"] == "dp" and run.metrics["dp"]["vocabulary"] == vocabulary
    assert privacy["guarantee_holds"] is True and privacy["epsilon"] <= 8.0
    assert "of the vocabulary and the trained weights" in privacy["guarantee"]
    assert 0 < vocabulary["epsilon"] < privacy["epsilon"]
    assert privacy["delta"] == pytest.approx(vocabulary["delta"])
    assert vocabulary["threshold"] > 1 and vocabulary["max_tokens_per_document"] == 64
    tokens = saved_vocabulary(run, "dp")
    assert vocabulary["size"] == len(tokens) - 2 == run.metrics["dp"]["data"]["vocab_size"] - 2
    # The training texts have words of one text each; none of them is released.
    documents = {}
    for words in tokenize(data.x_train):
        for word in set(words):
            documents[word] = documents.get(word, 0) + 1
    assert min(documents[t] for t in tokens[2:]) > 1 and 1 in documents.values()


def test_public_vocabulary_is_used_as_given_and_costs_nothing(dp_text_run):
    run, _ = dp_text_run
    assert saved_vocabulary(run, "public") == ["", "[UNK]", "the", "movie", "great", "bad"]
    assert run.metrics["public"]["data"]["vocab_size"] == 6
    public, dp = run.metrics["public"]["privacy"], run.metrics["dp"]["privacy"]
    assert public["vocabulary"]["source"] == "public" and public["guarantee_holds"] is True
    steps = public["planned_steps"]
    assert public["noise_multiplier"] == pytest.approx(
        calibrate_noise(8.0, public["sampling_rate"], steps, public["delta"]), abs=1e-6)
    assert public["delta"] == pytest.approx(min(1e-5, 1 / (10 * public["data_size"])))
    # Same target: the DP vocabulary's share leaves training less, so more noise.
    assert dp["noise_multiplier"] > public["noise_multiplier"]
    assert math.isclose(dp["delta"], public["delta"])


@pytest.mark.parametrize("source,holds,note", [
    ("private", False, f"NOT AS STATED: {PRIVATE_REASON}"),
    ("public", True, "declared public"),
    (None, True, "not built by secureml"),
])
def test_privacy_section_states_what_the_vocabulary_does_to_the_guarantee(source, holds, note):
    model = build_model("text_lstm", (5,), 2, vocab_size=12, lstm_units=4)
    vocabulary = Vocabulary(VocabularyPlan(source), 10) if source else None
    setup = TrainingSetup(model=model, config=TrainingConfig(epochs=1, batch_size=10),
                          num_examples=100, strategy=tf.distribute.get_strategy(),
                          vocabulary=vocabulary)
    defence = dp_sgd.make({"target_epsilon": 3, "hyperparameters": "default"}, "text")
    defence.apply(setup)
    privacy = defence.report()
    assert privacy["guarantee_holds"] is holds
    assert sum(n.startswith(note) or note in n for n in privacy["notes"]) == 1
    assert privacy["vocabulary"] == (vocabulary.describe() if vocabulary else None)
    if source == "private":
        assert privacy["vocabulary"]["reason"] == PRIVATE_REASON
