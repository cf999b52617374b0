"""Membership inference: attacks on a really overfit model, the null case, empirical epsilon."""
import numpy as np
import pytest
import tensorflow as tf

from secureml.audit import epsilon_from_rates, epsilon_lower_bound, one_run_epsilon_lower_bound
from secureml.audit.membership import Config, audit_membership
from secureml.audit.metrics import attack_metrics, clopper_pearson, null_auc_std
from secureml.errors import ConfigError
from secureml.training import train

N = 400          # members (the target's whole training set) and as many non-members
SHADOWS = 8
TRAINING = {"epochs": 30, "batch_size": 32, "learning_rate": 0.003}


def _mlp():
    # A wide MLP memorizes 400 digits in a few seconds: a small real overfit model.
    return tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(8, 8, 1)),
                                tf.keras.layers.Dense(256, activation="relu"),
                                tf.keras.layers.Dense(10)])


def _fit(x, y, seed):
    return train(_mlp(), x, y, config=TRAINING, seed=seed, progress=False).model


@pytest.fixture(scope="module")
def digits(digits_arrays):
    x, y = digits_arrays
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


@pytest.fixture(scope="module")
def overfit(digits):
    x, y = digits
    target = _fit(x[:N], y[:N], 0)
    section = audit_membership(
        target, (x[:N], y[:N]), (x[N:2 * N], y[N:2 * N]),
        config={"attacks": ["loss", "confidence", "entropy", "shadow", "lira_offline",
                            "lira_online"], "shadow_models": SHADOWS, "target_examples": N},
        population=(x[2 * N:], y[2 * N:]), train=_fit, target_train_size=N, seed=0,
        class_names=[str(i) for i in range(10)])
    return target, section


def test_overfit_model_leaks_membership(overfit):
    _, section = overfit
    bound = 0.5 + 5 * section["null_auc_std"]  # 5 standard deviations of a useless attack
    assert section["best"]["auc"] > bound, section["best"]
    assert section["attacks"]["loss"]["auc"] > 0.5 + 2 * section["null_auc_std"]
    for attack in ("lira_online", "lira_offline", "shadow"):
        assert section["attacks"][attack]["auc"] > 0.5 + 2 * section["null_auc_std"], attack
    assert section["settings"]["shadow_design"] == "online"
    assert section["settings"]["shadow_train_size"] == N  # shadows as big as the target's set
    per_class = section["attacks"]["lira_online"]["per_class"]
    assert sum(v["members"] for v in per_class.values()) == N
    assert len(section["exposed_examples"]) == 10
    # Most exposed examples are members, ranked by the strongest low-FPR attack.
    scores = [e["score"] for e in section["exposed_examples"]]
    assert scores == sorted(scores, reverse=True)


def test_lira_beats_loss_threshold_at_low_fpr(overfit):
    _, section = overfit
    at_1pct = {a: r["tpr_at_fpr"][1] for a, r in section["attacks"].items()}
    assert at_1pct["loss"]["fpr_achieved"] <= 0.01
    for attack in ("lira_online", "lira_offline"):
        # LiRA's TPR interval lies wholly above the loss attack's TPR at the same FPR.
        assert at_1pct[attack]["tpr_ci"][0] > at_1pct["loss"]["tpr"], (attack, at_1pct)
    assert section["attacks"]["lira_online"]["auc"] > section["attacks"]["loss"]["auc"] + 0.05


def test_members_and_non_members_from_one_unseen_pool_give_chance(overfit, digits):
    target, _ = overfit
    x, y = digits
    pool_x, pool_y = x[2 * N:], y[2 * N:]
    half = len(pool_y) // 2
    section = audit_membership(
        target, (pool_x[:half], pool_y[:half]), (pool_x[half:2 * half], pool_y[half:2 * half]),
        config={"attacks": ["loss", "confidence", "entropy", "lira_online"],
                "shadow_models": 4, "target_examples": half},
        population=(x[:2 * N], y[:2 * N]), train=_fit, target_train_size=N, seed=1)
    # Neither group trained the target: every attack's AUC is 0.5 up to sampling noise. With
    # 4 standard deviations a correct attack fails this less than once in 10,000 runs.
    bound = 4 * null_auc_std(half, half)
    for attack, result in section["attacks"].items():
        assert abs(result["auc"] - 0.5) < bound, (attack, result["auc"], bound)
        assert result["empirical_epsilon"]["epsilon_lower_bound"] == 0.0


def test_metrics_on_known_scores():
    is_member = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    scores = np.r_[np.arange(1000) + 500.0, np.arange(1000, dtype=float)]
    m = attack_metrics(scores, is_member)
    assert m["auc"] == pytest.approx(1 - 500 * 500 / 1e6 / 2, abs=1e-3)  # overlap of 500
    assert m["advantage"] == pytest.approx(0.5, abs=1e-3)
    at = m["tpr_at_fpr"][0]
    # At most 1 of 1000 non-members (scores 0..999) above the threshold: t = 998, so members
    # with score > 998 count: 500..1499 gives 501.
    assert at["fpr_achieved"] <= 0.001 and at["true_positives"] == 501
    assert at["tpr_ci"][0] < 0.501 < at["tpr_ci"][1]
    assert m["roc"]["fpr"][0] == 0.0 and m["roc"]["tpr"][-1] == 1.0


def test_clopper_pearson_known_values():
    low, high = clopper_pearson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.0362, abs=1e-4)
    low, high = clopper_pearson(50, 100)
    assert (low, high) == pytest.approx((0.3983, 0.6017), abs=1e-4)


def test_epsilon_from_rates_follows_the_dp_inequality():
    # An attack with TPR 0.5 at FPR 0.01 shows epsilon >= log(0.5 / 0.01).
    assert epsilon_from_rates(0.01, 0.5) == pytest.approx(np.log(0.5 / 0.01))
    assert epsilon_from_rates(0.01, 0.5, delta=0.1) == pytest.approx(np.log(0.4 / 0.01))
    assert epsilon_from_rates(0.5, 0.5) == 0.0


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_lower_bound_from_synthetic_eps_dp_attack_never_exceeds_epsilon(epsilon):
    """Scores of the optimal attack on randomized response with parameter epsilon: an
    epsilon-DP mechanism whose TPR = e^eps FPR exactly. The bound must stay below epsilon and
    approach it with many examples."""
    rng = np.random.default_rng(0)
    n = 20000
    p = np.exp(epsilon) / (1 + np.exp(epsilon))
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    says_member = np.where(is_member, rng.random(2 * n) < p, rng.random(2 * n) > p)
    scores = says_member.astype(float)
    bound = epsilon_lower_bound(scores, is_member, confidence=0.95, seed=0)
    assert bound["epsilon_lower_bound"] <= epsilon
    assert bound["epsilon_lower_bound"] > 0.8 * epsilon


def test_lower_bound_of_a_perfect_attack_is_capped_by_sample_size():
    is_member = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    bound = epsilon_lower_bound(is_member.astype(float), is_member)
    assert bound["epsilon_lower_bound"] == pytest.approx(bound["max_provable"])
    assert 3 < bound["max_provable"] < 6  # log(1 / CP upper bound of 0 errors in 250)


def test_one_run_bound():
    # All 200 guesses right out of 1000 canaries proves a lot; half right proves nothing.
    strong = one_run_epsilon_lower_bound(1000, 200, 200)
    assert 3.5 < strong < 6
    assert one_run_epsilon_lower_bound(1000, 200, 100) == 0.0
    # delta only weakens the bound.
    assert one_run_epsilon_lower_bound(1000, 200, 180, delta=1e-5) <= \
        one_run_epsilon_lower_bound(1000, 200, 180)
    with pytest.raises(ValueError):
        one_run_epsilon_lower_bound(10, 20, 5)


def test_config_errors_say_what_to_do():
    from secureml import schema
    with pytest.raises(ConfigError, match="even number"):
        schema.build(Config, {"attacks": ["lira_online"], "shadow_models": 3}, "membership")
    with pytest.raises(ConfigError, match="at least 2 shadow models"):
        schema.build(Config, {"attacks": ["shadow"], "shadow_models": 0}, "membership")
    with pytest.raises(ConfigError, match="did you mean 'lira_offline'"):
        schema.build(Config, {"attacks": ["lira_ofline"]}, "membership")
    with pytest.raises(ConfigError, match="need shadow models"):
        audit_membership(None, (np.zeros((30, 2)), np.zeros(30, int)),
                         (np.zeros((30, 2)), np.zeros(30, int)),
                         config={"attacks": ["shadow"]})
