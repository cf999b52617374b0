"""DP-SGD accounting: epsilon, noise calibration, delta, config checks, `secureml privacy`."""
import argparse
import json
import math
import re

import dp_accounting
import pytest

from secureml import schema
from secureml.defences.dp_sgd import Config, calibrate_noise, compute_epsilon, make_plan
from secureml.defences.dp_sgd import cli
from secureml.errors import ConfigError


def reference_epsilon(noise, n, batch_size, epochs, delta, accountant):
    """dp-accounting's own DP-SGD computation, built here independently of secureml (PLD on
    secureml's loss grid, 1e-3)."""
    steps = epochs * math.ceil(n / batch_size)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(batch_size / n, dp_accounting.GaussianDpEvent(noise)),
        steps)
    ledger = (dp_accounting.rdp.RdpAccountant() if accountant == "rdp"
              else dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3))
    return ledger.compose(event).get_epsilon(delta)


@pytest.mark.parametrize("noise, n, batch_size, epochs, delta, accountant", [
    (1.1, 60000, 256, 60, 1e-5, "rdp"),   # TF Privacy's MNIST tutorial setting
    (1.1, 60000, 256, 60, 1e-5, "pld"),
    (0.8, 50000, 64, 5, 1e-5, "rdp"),
    (2.0, 1294, 64, 30, 1e-5, "rdp"),
    (1.5, 1000, 100, 3, 1e-4, "pld"),
])
def test_epsilon_equals_dp_accounting(noise, n, batch_size, epochs, delta, accountant):
    plan = make_plan(data_size=n, batch_size=batch_size, epochs=epochs, noise_multiplier=noise,
                     delta=delta, accountant=accountant)
    assert plan.epsilon() == pytest.approx(
        reference_epsilon(noise, n, batch_size, epochs, delta, accountant), rel=1e-12)


def test_mnist_tutorial_setting_matches_known_values():
    plan = make_plan(data_size=60000, batch_size=256, epochs=60, noise_multiplier=1.1,
                     delta=1e-5)
    assert plan.steps == 14100 and plan.sampling_rate == pytest.approx(256 / 60000)
    # RDP gives about 2.6 here (TF Privacy's tutorial quotes 2.9-3.0 from coarser RDP orders);
    # PLD is tighter.
    assert 2.5 < plan.epsilon() < 2.7
    assert plan.epsilon(accountant="pld") < plan.epsilon()
    assert plan.epsilon(steps=0) == 0
    assert plan.epsilon(steps=100) < plan.epsilon(steps=1000) < plan.epsilon()


@pytest.mark.parametrize("target, accountant", [(3.0, "rdp"), (1.0, "rdp"), (8.0, "rdp"),
                                                (3.0, "pld")])
def test_calibration_round_trips(target, accountant):
    q, steps, delta = 64 / 5000, 780 if accountant == "rdp" else 160, 1e-5
    noise = calibrate_noise(target, q, steps, delta, accountant)
    assert compute_epsilon(noise, q, steps, delta, accountant) <= target
    # The smallest noise that meets the target: a little less exceeds it.
    assert compute_epsilon(noise * (1 - 1e-3), q, steps, delta, accountant) > target


def test_plan_calibrates_to_the_target_over_the_planned_steps():
    plan = make_plan(data_size=60000, batch_size=256, epochs=60, target_epsilon=3.0,
                     delta=1e-5)
    assert 3.0 - 1e-3 < plan.epsilon() <= 3.0
    assert plan.noise_multiplier == pytest.approx(1.015, abs=1e-3)


def test_unreachable_budget_names_the_nearest_reachable_setting():
    with pytest.raises(ConfigError, match=r"out of reach.*noise multiplier 1000 gives epsilon "
                                          r"0\.00[0-9]+.*fewer epochs"):
        make_plan(data_size=60000, batch_size=256, epochs=60, target_epsilon=1e-6, delta=1e-5)
    # The nearest reachable setting is worked out: at noise 1000 the target holds for exactly
    # the number of steps named, and not one step more.
    with pytest.raises(ConfigError, match=r"at most (\d+) steps") as caught:
        make_plan(data_size=1000, batch_size=500, epochs=100, target_epsilon=0.01, delta=1e-5)
    most = int(re.search(r"at most (\d+) steps", str(caught.value)).group(1))
    assert 0 < most < 200
    assert compute_epsilon(1000.0, 0.5, most, 1e-5) <= 0.01 < compute_epsilon(1000.0, 0.5,
                                                                               most + 1, 1e-5)
    with pytest.raises(ConfigError, match="noise protects little"):
        make_plan(data_size=1000, batch_size=500, epochs=1, target_epsilon=1e4)


def test_delta_defaults_below_one_over_n_and_refuses_larger():
    assert make_plan(data_size=60000, batch_size=256, epochs=1,
                     noise_multiplier=1.0).delta == pytest.approx(1 / 600000)
    assert make_plan(data_size=1000, batch_size=10, epochs=1, noise_multiplier=1.0).delta == 1e-5
    with pytest.raises(ConfigError, match=r"below 1/N = 0\.001 \(N = 1000\)"):
        make_plan(data_size=1000, batch_size=10, epochs=1, noise_multiplier=1.0, delta=1e-3)


def test_steps_follow_the_sampling():
    shuffle = dict(data_size=1000, batch_size=64, epochs=2, noise_multiplier=1.0,
                   sampling="shuffle")
    assert make_plan(**shuffle).steps == 2 * 16
    assert make_plan(**shuffle, drop_remainder=True).steps == 2 * 15
    assert make_plan(**{**shuffle, "sampling": "poisson"}, drop_remainder=True).steps == 2 * 16


@pytest.mark.parametrize("params, message", [
    ({}, "exactly one of target_epsilon"),
    ({"target_epsilon": 3, "noise_multiplier": 1.0}, "exactly one of target_epsilon"),
    ({"noise_multiplier": 0}, "0 means no privacy"),
    ({"target_epsilon": 3, "l2_norm_clip": 0},
     r"l2_norm_clip must be a finite number in \(0, 1e\+06\], got 0"),
    ({"target_epsilon": 3, "num_microbatches": 8}, "Poisson batches vary in size"),
    ({"target_epsilon": 3, "num_microbatches": 8, "sampling": "shuffle", "clipping": "fast"},
     "clips every example on its own"),
    ({"target_epsilon": 3, "epsilon_budget": 2}, "with target_epsilon the target is the budget"),
    ({"target_epsilon": 3, "sampling": "poison"}, "did you mean 'poisson'"),
    ({"target_epsilon": 3, "l2_norm_clp": 1.0}, "did you mean 'l2_norm_clip'"),
    ({"target_epsilon": 3, "hyperparameters": "tuned"},
     "choose one of 'default', 'public', 'private_unaccounted'"),
    ({"target_epsilon": 3, "reproducible": "yes"}, "expected true or false"),
])
def test_config_refuses_with_a_fix(params, message):
    with pytest.raises(ConfigError, match=message):
        schema.build(Config, params, "dp_sgd")


def run_cli(capsys, *argv) -> str:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.main(parser.parse_args(argv)) == 0
    return capsys.readouterr().out


def test_cli_epsilon_and_noise_are_inverse(capsys):
    schedule = ["--n", "60000", "--batch-size", "256", "--epochs", "60", "--delta", "1e-5"]
    out = json.loads(run_cli(capsys, "epsilon", "--noise", "1.1", *schedule, "--json"))
    assert out["epsilon"] == pytest.approx(
        reference_epsilon(1.1, 60000, 256, 60, 1e-5, "rdp"), rel=1e-12)
    assert out["steps"] == 14100 and out["accountant"] == "rdp"
    out = json.loads(run_cli(capsys, "noise", "--epsilon", f"{out['epsilon']}", *schedule,
                             "--json"))
    assert out["noise_multiplier"] == pytest.approx(1.1, abs=2e-4)
    text = run_cli(capsys, "noise", "--epsilon", "3", *schedule, "--sampling", "shuffle")
    assert "noise multiplier  1.01" in text and "assumes Poisson sampling" in text
