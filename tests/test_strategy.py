"""Multi-device training through MirroredStrategy, tested on 2 logical CPU devices."""

SCRIPT = """
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    tf.keras.utils.set_random_seed(0)
    result = train(lambda: build_model("image_cnn", (8, 8, 1), 10), x, y, strategy=strategy,
                   config={"epochs": 1, "batch_size": 64, "optimizer": "sgd",
                           "learning_rate": 0.5}, progress=False)
    print(json.dumps({"replicas": result.cost["device"]["replicas"],
                      "strategy": result.cost["device"]["strategy"],
                      "weights": [w.ravel()[:50].tolist() for w in result.model.get_weights()]}))
"""


def test_two_replicas_take_the_same_step_as_one_device(run_on_devices):
    single, mirrored = run_on_devices(SCRIPT, 1), run_on_devices(SCRIPT, 2)
    assert single["replicas"] == 1
    assert mirrored["replicas"] == 2 and mirrored["strategy"] == "MirroredStrategy"
    # One SGD step on one full batch: the mean gradient must not depend on how the batch is
    # split across replicas (a missing 1/replicas scale would double the step).
    for a, b in zip(single["weights"], mirrored["weights"]):
        assert max(abs(p - q) for p, q in zip(a, b)) < 1e-5
