"""Encrypted inference on real digits: fidelity, packings, roles kept apart, clear errors."""
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from secureml.errors import DataError, UnsupportedError
from secureml.evaluation import predict_logits
from secureml.he import (CiphertextError, EncryptedBatch, FidelityError, HEClient, HEServer,
                         choose_parameters, compile_model, convert_to_polynomial, make_spec,
                         prepare)
from secureml.he.fidelity import compare
from secureml.he.params import CKKSParameters
from secureml.models import build_model, predicted_classes
from secureml.training import train


@pytest.fixture(scope="module")
def digits(digits_arrays):
    x, y = digits_arrays
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def he_model(digits):
    x, y, _, _ = digits
    tf.keras.utils.set_random_seed(0)
    model = build_model("he_cnn", (8, 8, 1), 10, filters=4, kernel_size=3, strides=1,
                        dense_units=16)
    train(model, x, y, config={"epochs": 10, "batch_size": 32}, progress=False)
    return model


@pytest.fixture(scope="module")
def roles(digits, he_model):
    """One key pair with both packings (Galois keys are the slow part)."""
    return prepare(he_model, digits[0][:256])


@pytest.fixture(scope="module")
def batched_result(digits, roles):
    """The encrypted result for all digits test images (a batch costs the same for 1 or 397)."""
    client, server = roles
    return server.infer(client.encrypt(digits[2], "batched"))


@pytest.fixture(scope="module")
def batched_run(digits, he_model, roles, batched_result):
    return roles[0].decrypt(batched_result), predict_logits(he_model, digits[2])


def test_encrypted_and_plaintext_predictions_agree_on_digits(digits, batched_run):
    logits, plain = batched_run
    fidelity = compare(logits, plain, tolerance=1e-3)
    assert len(logits) == len(digits[3]) == 397
    assert fidelity["agreement"] >= 0.99
    assert fidelity["max_abs_error"] < 1e-3
    plain_accuracy = np.mean(predicted_classes(plain) == digits[3])
    encrypted_accuracy = np.mean(predicted_classes(logits) == digits[3])
    assert plain_accuracy > 0.85
    assert abs(encrypted_accuracy - plain_accuracy) <= 0.01


def test_single_and_batched_packings_agree(digits, roles, batched_run):
    client, server = roles
    single = client.decrypt(server.infer(client.encrypt(digits[2][:3], "single")))
    np.testing.assert_allclose(single, batched_run[0][:3], atol=1e-3)
    assert (predicted_classes(single) == predicted_classes(batched_run[1][:3])).all()
    assert server._single.rotations < 60  # baby-step giant-step, not one per input


def test_server_has_no_secret_key_and_cannot_decrypt(roles, batched_result):
    client, server = roles
    assert client.context.has_secret_key()
    assert not server.context.has_secret_key()
    assert not hasattr(server, "decrypt")
    with pytest.raises(ValueError):
        server.context.secret_key()
    with pytest.raises(CiphertextError, match="no secret key"):
        HEClient(client.spec, server.context)
    with pytest.raises(ValueError):  # TenSEAL: the context holds no secret key
        server.context.decryptor()
    assert client.decrypt(batched_result).shape == (397, 10)


def test_ciphertext_from_another_key_is_rejected(digits, roles, batched_result):
    client, server = roles
    stranger = HEClient.generate(client.spec, packings=("batched",))
    # Handed a context with the secret key by mistake, the server keeps only the public part.
    careless = HEServer(server.plan, server.params, stranger.secret_context())
    assert not careless.context.has_secret_key()
    with pytest.raises(ValueError):  # make_context_public() would have kept the decryptor
        careless.context.decryptor()
    query = stranger.encrypt(digits[2][:2], "batched").to_bytes()
    with pytest.raises(CiphertextError, match="another key pair"):
        server.load_query(query)
    with pytest.raises(CiphertextError, match="another key pair"):
        stranger.decrypt(batched_result)


def test_ciphertext_under_other_parameters_is_rejected(digits, roles):
    """Even with a forged header, SEAL refuses ciphertexts of another parameter set."""
    client, server = roles
    other_params = choose_parameters(1, 50)
    other = HEClient.generate({**client.spec, "parameters": other_params.describe()},
                              packings=("batched",))
    foreign = other.encrypt(digits[2][:2], "batched")
    forged = EncryptedBatch("query", "batched", server.fingerprint, 2, foreign.ciphertexts,
                            foreign.layout)
    with pytest.raises(CiphertextError, match="not a valid ciphertext"):
        server.load_query(forged.to_bytes())


def test_corrupt_tampered_or_foreign_files_are_rejected(digits, roles, batched_result):
    client, server = roles
    data = client.encrypt(digits[2][:2], "batched").to_bytes()
    assert server.load_query(data).samples == 2
    tampered = bytearray(data)
    tampered[-100] ^= 0x01
    with pytest.raises(CiphertextError, match="tampered"):
        server.load_query(bytes(tampered))
    with pytest.raises(CiphertextError, match="truncated or corrupt"):
        server.load_query(data[:len(data) // 2])
    with pytest.raises(CiphertextError, match="not a secureml ciphertext"):
        server.load_query(b"\x89PNG" + data[4:])
    with pytest.raises(CiphertextError, match="already a result"):
        server.infer(batched_result)
    with pytest.raises(CiphertextError, match="not a result"):
        client.decrypt(server.load_query(data))


def test_wrong_input_shape_is_a_clear_error(digits, roles):
    client, _ = roles
    with pytest.raises(DataError, match=r"input shape \(9, 9, 1\)"):
        client.encrypt(np.zeros((2, 9, 9, 1), np.float32), "batched")


def test_exceeded_depth_or_scale_is_refused_not_returned(digits):
    """Values that outgrow the modulus come back as garbage without any error from CKKS.

    Inputs far outside the calibration data overflow the plan's headroom: the client's range
    check or the comparison with the plaintext model refuses the result. Parameters too small
    for the plan make SEAL stop, which also surfaces as a FidelityError.
    """
    x, _, x_test, _ = digits
    tf.keras.utils.set_random_seed(4)
    model = build_model("he_cnn", (8, 8, 1), 10, filters=1, kernel_size=3, strides=1,
                        dense_units=4)
    client, server = prepare(model, x[:256], packings=("batched",))
    far = x_test[:20] * 1000.0
    with pytest.raises(FidelityError, match="garbage"):
        logits = client.decrypt(server.infer(client.encrypt(far, "batched")))
        compare(logits, predict_logits(model, far), 1e-2)
    plan = server.plan
    small = CKKSParameters(16384, (30,) + (40,) * plan.depth + (40,), 40, 128)
    client = HEClient.generate(make_spec(plan, small), packings=("batched",))
    server = HEServer(plan, small, client.public_context())
    with pytest.raises(FidelityError, match="scale out of bounds"):
        server.infer(client.encrypt(x_test[:20], "batched"))
    with pytest.raises(FidelityError, match="refused"):
        compare(np.full((2, 10), 1e9), np.zeros((2, 10)), 1e-2)


def test_parameters_follow_the_standard_table():
    assert choose_parameters(1, 50).poly_degree == 8192
    five = choose_parameters(5, 50)
    assert five.poly_degree == 16384 and five.coeff_bits == (50, 40, 40, 40, 40, 40, 50)
    assert five.total_bits <= 438
    assert choose_parameters(5, 50, security=256).poly_degree == 32768
    with pytest.raises(UnsupportedError, match="poly_degree 8192 allows 218"):
        choose_parameters(5, 50, poly_degree=8192)
    with pytest.raises(UnsupportedError, match="shallower"):
        choose_parameters(30, 50)


def test_unsupported_layers_are_named_with_the_alternative(digits):
    relu = build_model("image_cnn", (8, 8, 1), 10, filters=[4, 4], dense_units=8)
    with pytest.raises(UnsupportedError, match=r"'conv1'.*relu.*he_cnn"):
        compile_model(relu, digits[0][:8])
    lstm = build_model("text_lstm", (10,), 2, vocab_size=40, lstm_units=4)
    ids = np.random.default_rng(0).integers(0, 40, (8, 10)).astype(np.int32)
    with pytest.raises(UnsupportedError, match=r"'lstm'.*split"):
        compile_model(lstm, ids)


def test_text_bag_of_words_plan_matches_the_model():
    tf.keras.utils.set_random_seed(1)
    model = build_model("he_text", (12,), 3, vocab_size=60, embedding_dim=4, dense_units=5,
                        activation="poly")
    ids = np.random.default_rng(1).integers(0, 60, (40, 12)).astype(np.int32)
    ids[:, 8:] = 0  # padding must not count in the mean
    plan, _ = compile_model(model, ids)
    # Vocabulary this small: the embedding merges with the dense layer (one level less).
    assert plan.input.kind == "bag" and plan.depth == 3
    np.testing.assert_allclose(plan.forward(plan_features(plan, ids)),
                               predict_logits(model, ids), atol=1e-5)
    client, server = prepare(model, ids, packings=("batched",))
    logits = client.decrypt(server.infer(client.encrypt(ids, "batched")))
    assert compare(logits, predict_logits(model, ids), 1e-3)["agreement"] == 1.0


def plan_features(plan, ids):
    from secureml.he.plan import client_features
    return client_features(plan.input, ids)


def test_split_mode_serves_the_lstm_head_on_ciphertexts():
    tf.keras.utils.set_random_seed(2)
    model = build_model("text_lstm", (10,), 2, vocab_size=40, embedding_dim=4, lstm_units=8)
    ids = np.random.default_rng(2).integers(1, 40, (30, 10)).astype(np.int32)
    client, server = prepare(model, ids, mode="split")
    assert server.plan.depth == 1 and client.params.poly_degree == 8192
    assert server.plan.ops[0].layers == ["logits"]
    plain = predict_logits(model, ids)
    for packing, count in (("batched", 30), ("single", 2)):
        logits = client.decrypt(server.infer(client.encrypt(ids[:count], packing)))
        assert compare(logits, plain[:count], 1e-3)["agreement"] == 1.0


def test_converted_relu_model_runs_encrypted(digits):
    x, y, x_test, _ = digits
    tf.keras.utils.set_random_seed(3)
    relu = build_model("image_cnn", (8, 8, 1), 10, filters=[4], dense_units=16)
    train(relu, x, y, config={"epochs": 2}, progress=False)
    twin = convert_to_polynomial(relu, x[:256])
    kinds = {type(layer).__name__ for layer in twin.layers}
    assert "MaxPooling2D" not in kinds and "PolyActivation" in kinds
    loss_before = _loss(twin, x, y)
    tuned = convert_to_polynomial(relu, x[:256], fine_tune=(x, y),
                                  training={"epochs": 2, "batch_size": 32})
    assert _loss(tuned, x, y) < loss_before
    client, server = prepare(tuned, x[:256], packings=("batched",))
    logits = client.decrypt(server.infer(client.encrypt(x_test[:40], "batched")))
    assert compare(logits, predict_logits(tuned, x_test[:40]), 1e-3)["agreement"] == 1.0


def _loss(model, x, y):
    from secureml.models import per_example_loss
    return float(np.mean(per_example_loss(tf.constant(predict_logits(model, x)),
                                          tf.constant(y))))


def test_cli_roles_on_files(tmp_path, digits, capsys):
    from secureml.cli import main
    x = digits[2][:5]
    tf.keras.utils.set_random_seed(5)
    he_model = build_model("he_cnn", (8, 8, 1), 10, filters=1, kernel_size=3, strides=1,
                           dense_units=4)
    he_model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "calibration.npy", digits[0][:256])
    keys = tmp_path / "keys"
    # Server publishes the spec; the client makes keys for it without the model file.
    assert main(["he", "spec", "--model", str(tmp_path / "model.keras"), "--calibration",
                 str(tmp_path / "calibration.npy"), "--out", str(tmp_path / "spec.json")]) == 0
    assert main(["he", "keygen", "--spec", str(tmp_path / "spec.json"), "--packing", "batched",
                 "--out", str(keys)]) == 0
    assert not (keys / "public" / "secret.context").exists()
    spec = json.loads((keys / "public" / "spec.json").read_text())
    assert spec["input"]["kind"] == "image" and "weights" not in json.dumps(spec)
    q, r = tmp_path / "query.he", tmp_path / "result.he"
    assert main(["he", "encrypt", "--keys", str(keys), "--input", str(tmp_path / "x.npy"),
                 "--packing", "batched", "--out", str(q)]) == 0
    assert main(["he", "infer", "--model", str(tmp_path / "model.keras"), "--keys",
                 str(keys / "public"), "--input", str(q), "--out", str(r)]) == 0
    assert main(["he", "decrypt", "--keys", str(keys), "--input", str(r), "--out",
                 str(tmp_path / "logits.npy")]) == 0
    logits = np.load(tmp_path / "logits.npy")
    np.testing.assert_allclose(logits, predict_logits(he_model, x), atol=1e-3)
    data = bytearray(r.read_bytes())
    data[-10] ^= 0xFF
    r.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["he", "decrypt", "--keys", str(keys), "--input", str(r)]) == 2
    assert "tampered" in capsys.readouterr().err
    # The server's folder cannot decrypt: it has no secret key file.
    assert main(["he", "decrypt", "--keys", str(keys / "public"), "--input", str(q)]) == 2


def test_cli_demo_runs_all_four_roles_and_checks_fidelity(tmp_path, digits, capsys):
    from secureml.cli import main
    tf.keras.utils.set_random_seed(5)
    model = build_model("he_cnn", (8, 8, 1), 10, filters=1, kernel_size=3, strides=1,
                        dense_units=4)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", digits[2][:64])
    np.save(tmp_path / "y.npy", digits[3][:64])
    assert main(["he", "demo", "--model", str(tmp_path / "model.keras"), "--input",
                 str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--samples", "3",
                 "--packing", "both", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr()
    for packing in ("single", "batched"):
        assert re.search(rf"{packing}: agreement with plaintext 1\.000, max error .*accuracy",
                         out.out), out.out
        assert (tmp_path / "demo" / f"logits-{packing}.npy").is_file()
    for stage in ("keygen", "encrypt (batched)", "infer (single, server side)", "decrypt"):
        assert stage in out.out + out.err
    assert not (tmp_path / "demo" / "keys" / "public" / "secret.context").exists()


def test_run_writes_the_he_section(tmp_path):
    from secureml.runner import run_experiment
    config = {"name": "he_stage", "data": {"name": "digits", "limit": 600},
              "model": {"name": "he_cnn", "filters": 2, "kernel_size": 3, "strides": 1,
                        "dense_units": 8},
              "training": {"epochs": 3, "batch_size": 32},
              "evaluation": {"encrypted_inference": {"samples": 60, "packings": ["batched"]}},
              "audit": {"data": False, "report": False}, "output": {"timestamp": False}}
    result = run_experiment(config, out_dir=tmp_path, progress=False)
    he = result.metrics["main"]["he"]
    assert he["samples"] == 60 and he["agreement"] >= 0.99
    # 60 samples cannot show 99.5% agreement: the interval the he_agreement rule rates says so.
    assert he["agreement_ci"][0] < 0.99 <= he["agreement"] <= he["agreement_ci"][1]
    assert he["confidence_level"] == 0.95
    assert he["encrypted_accuracy"] == pytest.approx(he["plaintext_accuracy"], abs=0.02)
    assert he["max_abs_error"] < 1e-3 and he["latency_s_per_sample"] is None
    batched = he["packings"]["batched"]
    assert batched["slots"] == he["parameters"]["slots"] == 8192
    assert batched["query_bytes"] > batched["ciphertexts_in"] * 100_000
    assert he["parameters"]["total_coeff_modulus_bits"] <= he["parameters"][
        "max_coeff_modulus_bits"]
    assert he["sizes"]["galois_keys_bytes"] == 0  # batched only: no rotations, no Galois keys
    spec = json.loads((result.directory / "main" / "he" / "spec.json").read_text())
    assert spec["depth"] == he["plan"]["depth"] == 5
    saved = json.loads((result.directory / "main" / "metrics.json").read_text())
    assert saved["he"]["encrypted_accuracy"] == he["encrypted_accuracy"]
