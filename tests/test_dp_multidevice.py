"""DP-SGD under MirroredStrategy on 2 logical CPU devices.

Logical devices must be configured before TensorFlow initializes, so each configuration trains
in a fresh Python process.
"""
import numpy as np
import pytest

SCRIPT = """
    from secureml.defences import dp_sgd

    rng = np.random.default_rng(0)
    x = rng.random((256, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    tf.keras.utils.set_random_seed(0)
    initial = build_model("image_cnn", (8, 8, 1), 10).get_weights()

    def builder():
        model = build_model("image_cnn", (8, 8, 1), 10)
        model.set_weights(initial)
        return model

    def run(pairs=0, **params):
        tf.keras.utils.set_random_seed(0)
        defence = dp_sgd.make({"clipping": "microbatch", "delta": 1e-4, "l2_norm_clip": 0.5,
                               **params}, "image")
        result = train(builder, x, y, strategy=strategy, defences=[defence], progress=False,
                       config={"epochs": 1, "batch_size": 64, "optimizer": "sgd",
                               "learning_rate": 1.0, "plain_step_pairs": pairs})
        update = np.concatenate([(a - b).ravel()
                                 for a, b in zip(result.model.get_weights(), initial)])
        return {"update": update.tolist(), "privacy": result.sections["privacy"],
                "training": result.setup.describe(),
                "vs_plain_step": result.cost.get("vs_plain_step")}

    # Reproducible: one device and two replicas must see the same batches to compare updates.
    print(json.dumps({"poisson": run(pairs=3, noise_multiplier=1e-9, reproducible=True),
                      "shuffle": run(noise_multiplier=1e-9, sampling="shuffle", reproducible=True),
                      "noisy": run(noise_multiplier=100.0, sampling="shuffle")}))
"""


@pytest.fixture(scope="module")
def single_and_mirrored(run_on_devices):
    return run_on_devices(SCRIPT, 1), run_on_devices(SCRIPT, 2)


@pytest.mark.parametrize("sampling", ["poisson", "shuffle"])
def test_two_replicas_take_the_same_clipped_steps_as_one_device(single_and_mirrored, sampling):
    single, mirrored = single_and_mirrored
    # Same batches, (almost) no noise: the per-replica sums and the rescaling must add up to
    # the one-device update, neither halved nor doubled.
    np.testing.assert_allclose(mirrored[sampling]["update"], single[sampling]["update"],
                               atol=2e-5)
    assert np.abs(single[sampling]["update"]).max() > 1e-3  # the weights did move
    privacy = mirrored[sampling]["privacy"]
    assert privacy["replicas"] == 2 and privacy["steps"] == 4
    assert mirrored[sampling]["training"]["drop_remainder"] is True
    if sampling == "poisson":  # the step-time comparison runs on the replicas too
        compared = mirrored[sampling]["vs_plain_step"]
        assert compared["batch_size"] == 64 and compared["pairs"] == 3 and compared["ratio"] > 0


def test_replicas_noise_adds_up_to_what_the_accountant_assumes(single_and_mirrored):
    for result in single_and_mirrored:
        privacy = result["noisy"]["privacy"]
        # 4 steps of SGD at learning rate 1, each with noise std sigma * C / B per weight.
        expected = 100.0 * 0.5 / 64 * np.sqrt(4)
        assert np.std(result["noisy"]["update"]) == pytest.approx(expected, rel=0.03)
        assert privacy["noise_multiplier_per_replica"] == pytest.approx(
            100.0 / np.sqrt(privacy["replicas"]))
