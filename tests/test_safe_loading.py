"""No code runs from a model file: attacker models planted at every load site run nothing, the
loader refuses what Keras would run or resolve freely, a split client loads only the model its
spec names by SHA-256, and every model secureml saves still loads with the same predictions."""
import hashlib
import io
import json
import shutil
import uuid
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow as tf

from secureml.cli import main
from secureml.errors import DataError, UnsafeModelError
from secureml.evaluation import predict_logits
from secureml.models import build_model
from secureml.security import loading
from secureml.security.loading import load_model


def _marker_lambda(marker):
    # The marker's path is a constant inside the lambda's own bytecode, which Keras stores.
    return eval(f"lambda x: (open({str(marker)!r}, 'w').write('code ran'), x)[1]")


def _lambda_model(marker):
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Lambda(_marker_lambda(marker))(inputs)
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))


def _small_model():
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Flatten(name="flatten")(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(10, name="logits")(x))


def _edited(source, path, edit=None, members=None):
    """A copy of the .keras zip `source` at `path`, config.json changed by `edit(config)` and
    the member list replaced by `members` ({name: bytes or None to drop})."""
    with zipfile.ZipFile(source) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    if edit is not None:
        config = json.loads(contents["config.json"])
        edit(config)
        contents["config.json"] = json.dumps(config).encode()
    for name, data in (members or {}).items():
        if data is None:
            contents.pop(name)
        else:
            contents[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


def _layer(config, class_name):
    return next(layer for layer in config["config"]["layers"]
                if layer["class_name"] == class_name)


def _plant(kind, path, marker, work, monkeypatch):
    """Write the attacker's model `kind` at `path`: if loading it runs code, `marker` appears."""
    work.mkdir(parents=True, exist_ok=True)
    if kind == "legacy_h5_lambda":  # a legacy HDF5 file with Lambda bytecode, named .keras
        _lambda_model(marker).save(work / "planted.h5", save_format="h5")
        shutil.move(work / "planted.h5", path)
    elif kind == "zip_lambda":  # a real Keras v3 zip with a Lambda
        _lambda_model(marker).save(work / "planted.keras")
        shutil.move(work / "planted.keras", path)
    else:
        _small_model().save(work / "clean.keras")
        if kind == "zip_module":  # safe_mode bypass: Keras imports whatever `module` names
            module = f"planted_{uuid.uuid4().hex}"
            (work / f"{module}.py").write_text(  # runs on import, then serves the real class
                f"open({str(marker)!r}, 'w').write('code ran')\n"
                f"from keras.src.engine.functional import Functional\n")
            monkeypatch.syspath_prepend(str(work))
            edit = lambda config: config.update(module=module)  # noqa: E731
        else:  # "zip_os_system": a function from any module, as an activation
            edit = lambda config: _layer(config, "Dense")["config"].update(  # noqa: E731
                activation={"module": "os", "class_name": "function", "config": "system",
                            "registered_name": "system"})
        _edited(work / "clean.keras", path, edit)
    marker.unlink(missing_ok=True)  # building a Lambda model runs the lambda once
    return path


KINDS = ["legacy_h5_lambda", "zip_lambda", "zip_module", "zip_os_system"]


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory):
    from secureml.runner import run_experiment
    config = {"name": "planted", "seed": 0, "data": {"name": "digits", "limit": 300},
              "model": {"name": "image_cnn", "filters": [4], "dense_units": 8},
              "training": {"epochs": 1, "batch_size": 64},
              "audit": {"membership": False, "report": False}, "output": {"timestamp": False}}
    return run_experiment(config, out_dir=tmp_path_factory.mktemp("runs"),
                          progress=False).directory


@pytest.fixture(scope="module")
def split_server(tmp_path_factory):
    """A server folder from `he spec --mode split` (spec.json and client_model.keras), the
    model, a client's keys for it, token ids and their encrypted query."""
    root = tmp_path_factory.mktemp("split")
    tf.keras.utils.set_random_seed(4)
    model = build_model("text_lstm", (10,), 2, vocab_size=40, embedding_dim=4, lstm_units=8)
    model.save(root / "model.keras")
    ids = np.random.default_rng(4).integers(0, 40, (30, 10)).astype(np.int32)
    np.save(root / "ids.npy", ids)
    server = root / "server"
    server.mkdir()
    assert main(["he", "spec", "--model", str(root / "model.keras"), "--calibration",
                 str(root / "ids.npy"), "--mode", "split", "--out",
                 str(server / "spec.json")]) == 0
    assert main(["he", "keygen", "--spec", str(server / "spec.json"), "--packing", "batched",
                 "--out", str(root / "keys")]) == 0
    assert main(["he", "encrypt", "--keys", str(root / "keys"), "--input", str(root / "ids.npy"),
                 "--out", str(root / "query.he")]) == 0
    return {"root": root, "server": server, "keys": root / "keys", "model": model, "ids": ids}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _name_in_spec(spec_path, model_path):
    """The attacker also controls the spec: it names the planted file's digest."""
    spec = json.loads(spec_path.read_text())
    spec["client_model_sha256"] = _sha256(model_path)
    spec_path.write_text(json.dumps(spec))


def _site_audit(tmp, plant, audit_run, split_server):
    run = shutil.copytree(audit_run, tmp / "run")
    plant(run / "main" / "model" / "model.keras")
    return ["audit", str(run), "--quiet"]


def _site_spec(tmp, plant, audit_run, split_server):
    return ["he", "spec", "--model", str(plant(tmp / "model.keras")), "--out",
            str(tmp / "spec.json")]


def _site_keygen(tmp, plant, audit_run, split_server):
    server = shutil.copytree(split_server["server"], tmp / "server")
    _name_in_spec(server / "spec.json", plant(server / "client_model.keras"))
    return ["he", "keygen", "--spec", str(server / "spec.json"), "--packing", "batched",
            "--out", str(tmp / "keys")]


def _site_encrypt(tmp, plant, audit_run, split_server):
    keys = shutil.copytree(split_server["keys"], tmp / "keys")
    _name_in_spec(keys / "spec.json", plant(keys / "client_model.keras"))
    return ["he", "encrypt", "--keys", str(keys), "--input",
            str(split_server["root"] / "ids.npy"), "--out", str(tmp / "query.he")]


def _site_infer(tmp, plant, audit_run, split_server):
    # A query file must exist to get past infer's own checks; the model is refused before
    # the query is parsed.
    (tmp / "query.he").write_bytes(b"never parsed")
    return ["he", "infer", "--model", str(plant(tmp / "model.keras")), "--keys",
            str(split_server["keys"] / "public"), "--input",
            str(split_server["root"] / "query.he"),
            "--out", str(tmp / "result.he")]


def _site_demo(tmp, plant, audit_run, split_server):
    return ["he", "demo", "--model", str(plant(tmp / "model.keras")), "--input",
            str(split_server["root"] / "ids.npy"), "--workdir", str(tmp / "demo")]


SITES = {"audit RUN_DIR": _site_audit, "he spec --model": _site_spec,
         "he keygen --spec": _site_keygen, "he encrypt --keys": _site_encrypt,
         "he infer --model": _site_infer, "he demo --model": _site_demo}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("site", SITES)
def test_planted_model_runs_no_code_at_any_load_site(site, kind, tmp_path, audit_run,
                                                     split_server, monkeypatch, capsys):
    marker = tmp_path / "marker"
    plant = lambda path: _plant(kind, path, marker, tmp_path / "attacker", monkeypatch)  # noqa
    argv = SITES[site](tmp_path, plant, audit_run, split_server)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), f"{site}: code from the {kind} model ran"
    assert code == 2, err
    assert err.startswith("secureml: error: refusing to load") and "\n" not in err, err


def test_bench_inference_timing_reports_a_planted_model_without_running_it(tmp_path,
                                                                         monkeypatch):
    from secureml.bench.execute import inference_timing
    marker = tmp_path / "marker"
    for kind in KINDS:
        path = _plant(kind, tmp_path / f"{kind}.keras", marker, tmp_path / kind, monkeypatch)
        result = inference_timing(path)
        assert not marker.exists(), kind
        assert result["error"].startswith("refusing to load"), result


# -- what the loader refuses, and why -----------------------------------------------------------

@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean") / "clean.keras"
    _small_model().save(path)
    return path


def _refusal(path, **kwargs) -> str:
    with pytest.raises(UnsafeModelError) as err:
        load_model(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def _set_activation(value):
    return lambda config: _layer(config, "Dense")["config"].update(activation=value)


CRAFTED = {
    "lambda_layer": (lambda c: c["config"]["layers"].insert(1, {
        "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
        "config": {"name": "l", "function": {"class_name": "__lambda__",
                                             "config": {"value": ["4wAAAA==", None, None]}}},
        "name": "l", "inbound_nodes": []}), "Lambda"),
    "builtins_exec": (_set_activation({"module": "builtins", "class_name": "function",
                                       "config": "exec", "registered_name": "function"}),
                      "Python function builtins.exec"),
    "unknown_module": (lambda c: _layer(c, "Flatten").update(module="subprocess",
                                                             class_name="Popen"),
                       "'Popen' from module 'subprocess'"),
    "keras_module_other_symbol": (lambda c: _layer(c, "Flatten").update(
        module="keras.utils", class_name="get_file"), "'get_file' from module 'keras.utils'"),
    "registered_name_hijack": (lambda c: _layer(c, "Dense").update(
        registered_name="Custom>Adam"), "Custom>Adam"),
    "registered_string": (lambda c: _layer(c, "Dense")["config"].update(
        kernel_initializer="Custom>SGD"), "registered object 'Custom>SGD'"),
    "activation_not_builtin": (_set_activation("deserialize"), "'deserialize'"),
    "not_a_model": (lambda c: c.update(module="keras.layers", class_name="Dense",
                                       registered_name=None),
                    "not a functional or Sequential"),
    "no_class_name": (lambda c: c.clear(), "not a functional or Sequential"),
    "model_module_not_a_string": (lambda c: [c.pop("class_name"), c.update(module=[1])],
                                  "not a functional or Sequential"),
    "class_name_not_a_string": (lambda c: _layer(c, "Dense").update(class_name=["Dense"]),
                                "other than strings"),
    "module_not_a_string": (lambda c: _layer(c, "Flatten").update(module={"keras": 1}),
                            "other than strings"),
    "deep_nesting": (lambda c: _layer(c, "Dense")["config"].update(
        extra=json.loads("[" * 150 + "]" * 150)), "deeper than"),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_config_entries_outside_the_allow_list_are_refused(case, clean, tmp_path):
    edit, expected = CRAFTED[case]
    message = _refusal(_edited(clean, tmp_path / "crafted.keras", edit))
    assert expected in message, message


def test_files_that_are_not_a_keras_v3_archive_are_refused(clean, tmp_path):
    model = _small_model()
    model.save(tmp_path / "legacy.h5", save_format="h5")
    assert "only Keras v3 .keras" in _refusal(tmp_path / "legacy.h5")
    shutil.copy(tmp_path / "legacy.h5", tmp_path / "renamed.keras")
    assert "legacy HDF5 file under a .keras name" in _refusal(tmp_path / "renamed.keras")
    model.save(tmp_path / "saved_model", save_format="tf")
    (tmp_path / "saved_model").rename(tmp_path / "saved_model.keras")  # a SavedModel folder
    assert "folder" in _refusal(tmp_path / "saved_model.keras")
    (tmp_path / "noise.keras").write_bytes(b"PK\x03\x04" + bytes(200))
    assert "not a zip" in _refusal(tmp_path / "noise.keras")
    (tmp_path / "empty.keras").write_bytes(b"")
    assert "empty" in _refusal(tmp_path / "empty.keras")
    extra = _edited(clean, tmp_path / "extra.keras", members={"assets/run.py": b"print(1)"})
    assert "assets/run.py" in _refusal(extra)
    missing = _edited(clean, tmp_path / "missing.keras", members={"model.weights.h5": None})
    assert "members are ['config.json', 'metadata.json']" in _refusal(missing)
    with pytest.raises(DataError, match="no model at"):
        load_model(tmp_path / "absent.keras")


@pytest.mark.parametrize("how", ["external_storage", "external_link", "virtual"])
def test_weights_that_read_other_files_are_refused(clean, tmp_path, how):
    """HDF5 weights can take their bytes from any file: a model would carry it into its kernel."""
    secret = tmp_path / "secret.bin"
    np.full((64, 10), 7.0, np.float32).tofile(secret)
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other["kernel"] = np.full((64, 10), 7.0, np.float32)
    with zipfile.ZipFile(clean) as archive:
        buffer = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(buffer, "r+") as weights:
        del weights["layers/dense/vars/0"]
        if how == "external_storage":
            weights.create_dataset("layers/dense/vars/0", (64, 10), "float32",
                                   external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
        elif how == "external_link":
            weights["layers/dense/vars/0"] = h5py.ExternalLink(str(tmp_path / "other.h5"),
                                                               "kernel")
        else:
            layout = h5py.VirtualLayout((64, 10), "float32")
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "kernel", (64, 10))
            weights.create_virtual_dataset("layers/dense/vars/0", layout)
    planted = _edited(clean, tmp_path / "planted.keras",
                      members={"model.weights.h5": buffer.getvalue()})
    assert "layers/dense/vars/0" in _refusal(planted)
    noise = _edited(clean, tmp_path / "noise.keras", members={"model.weights.h5": bytes(300)})
    assert "not a readable HDF5 file" in _refusal(noise)


def test_a_digest_that_does_not_match_is_refused(clean):
    assert "SHA-256" in _refusal(clean, sha256="0" * 64)
    assert isinstance(load_model(clean, sha256=_sha256(clean)), tf.keras.Model)


# -- split mode: the client loads only the model its spec names --------------------------------

def test_split_mode_on_files_names_the_client_model_by_digest(split_server, tmp_path):
    server, keys, ids = split_server["server"], split_server["keys"], split_server["ids"]
    digest = json.loads((server / "spec.json").read_text())["client_model_sha256"]
    assert digest == _sha256(server / "client_model.keras")
    # keygen keeps the server's file, so the client's copy still has the digest its spec names
    assert json.loads((keys / "spec.json").read_text())["client_model_sha256"] == digest
    assert _sha256(keys / "client_model.keras") == digest
    query, result = tmp_path / "q.he", tmp_path / "r.he"
    assert main(["he", "encrypt", "--keys", str(keys), "--input",
                 str(split_server["root"] / "ids.npy"), "--out", str(query)]) == 0
    assert main(["he", "infer", "--model", str(split_server["root"] / "model.keras"), "--keys",
                 str(keys / "public"), "--input", str(query), "--out", str(result)]) == 0
    assert main(["he", "decrypt", "--keys", str(keys), "--input", str(result), "--out",
                 str(tmp_path / "logits.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"),
                               predict_logits(split_server["model"], ids), atol=1e-3)


def test_forced_keygen_in_split_mode_keeps_the_client_model(split_server, tmp_path):
    """--force replaces a split key folder's keys and client model together: from the server's
    spec, from the folder's own spec, and from the model."""
    root, keys = split_server["root"], shutil.copytree(split_server["keys"], tmp_path / "keys")
    for source in (["--spec", str(split_server["server"] / "spec.json")],
                   ["--spec", str(keys / "spec.json")],
                   ["--model", str(root / "model.keras"), "--calibration", str(root / "ids.npy"),
                    "--mode", "split"]):
        old = (keys / "secret.context").read_bytes()
        assert main(["he", "keygen", *source, "--packing", "batched", "--out", str(keys),
                     "--force"]) == 0, source
        assert (keys / "secret.context").read_bytes() != old
        digest = json.loads((keys / "spec.json").read_text())["client_model_sha256"]
        assert (keys / "client_model.keras").is_file() and \
            _sha256(keys / "client_model.keras") == digest, source
        assert main(["he", "encrypt", "--keys", str(keys), "--input", str(root / "ids.npy"),
                     "--out", str(tmp_path / "q.he")]) == 0, source


def test_a_client_model_the_spec_does_not_name_is_refused(split_server, tmp_path, capsys):
    other = tmp_path / "other.keras"
    load_model(split_server["server"] / "client_model.keras").save(other)  # same model, new file
    server = shutil.copytree(split_server["server"], tmp_path / "server")
    shutil.copy(other, server / "client_model.keras")
    keys = shutil.copytree(split_server["keys"], tmp_path / "keys")
    shutil.copy(other, keys / "client_model.keras")
    full = tmp_path / "full"  # a full-mode spec (names no client model), a file beside it
    full.mkdir()
    spec = json.loads((server / "spec.json").read_text())
    (full / "spec.json").write_text(json.dumps({**spec, "client_model_sha256": None}))
    shutil.copy(other, full / "client_model.keras")
    ids = str(split_server["root"] / "ids.npy")
    for argv, expected in (
            (["he", "keygen", "--spec", str(server / "spec.json"), "--out",
              str(tmp_path / "k1")], "SHA-256"),
            (["he", "encrypt", "--keys", str(keys), "--input", ids, "--out",
              str(tmp_path / "q.he")], "SHA-256"),
            (["he", "keygen", "--spec", str(full / "spec.json"), "--out",
              str(tmp_path / "k2")], "names no client model")):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    (server / "client_model.keras").unlink()
    capsys.readouterr()
    assert main(["he", "keygen", "--spec", str(server / "spec.json"), "--out",
                 str(tmp_path / "k3")]) == 2
    assert "is missing" in capsys.readouterr().err


# -- every model secureml saves still loads -----------------------------------------------------

def _secureml_models():
    from secureml.he import compile_model, convert_to_polynomial
    tf.keras.utils.set_random_seed(7)
    images = np.random.default_rng(7).random((16, 8, 8, 1)).astype(np.float32)
    ids = np.random.default_rng(7).integers(0, 40, (16, 10)).astype(np.int32)
    image_cnn = build_model("image_cnn", (8, 8, 1), 10, filters=[4, 4], dense_units=8)
    text_lstm = build_model("text_lstm", (10,), 3, vocab_size=40, embedding_dim=4,
                            lstm_units=8)
    return {
        "image_cnn": (image_cnn, images),
        "text_lstm": (text_lstm, ids),
        "he_cnn": (build_model("he_cnn", (8, 8, 1), 10, filters=2, kernel_size=3, strides=1,
                               pool_size=2, dense_units=8, activation="poly"), images),
        "he_text": (build_model("he_text", (10,), 2, vocab_size=40, embedding_dim=4,
                                dense_units=4), ids),
        "split_client": (compile_model(text_lstm, ids, mode="split")[1], ids),
        "polynomial_twin": (convert_to_polynomial(image_cnn, images), images),
    }


def test_every_model_secureml_saves_loads_with_the_same_predictions(tmp_path):
    for name, (model, x) in _secureml_models().items():
        model.save(tmp_path / f"{name}.keras")
        loaded = load_model(tmp_path / f"{name}.keras")
        np.testing.assert_array_equal(predict_logits(loaded, x), predict_logits(model, x),
                                      err_msg=name)


def test_mixed_precision_models_load(tmp_path):
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("image_cnn", (8, 8, 1), 10, filters=[4], dense_units=8)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    model.save(tmp_path / "mixed.keras")
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(predict_logits(load_model(tmp_path / "mixed.keras"), x),
                                  predict_logits(model, x))


def test_every_allow_listed_builtin_layer_loads(tmp_path):
    """One model holding each built-in layer on the allow-list: the names match what Keras
    writes (a wrong entry would be refused here) and the model reloads with its weights."""
    L = tf.keras.layers
    images = tf.keras.Input((8, 8, 3))
    x = images
    for layer in (L.Conv2D(2, 3, padding="same", activation="gelu"),
                  L.Conv2DTranspose(2, 3, padding="same"), L.DepthwiseConv2D(3, padding="same"),
                  L.SeparableConv2D(2, 3, padding="same"), L.ReLU(), L.LeakyReLU(), L.PReLU(),
                  L.ELU(), L.Softmax(), L.SpatialDropout2D(0.1), L.GaussianNoise(0.1),
                  L.GaussianDropout(0.1), L.AlphaDropout(0.1), L.Rescaling(0.5),
                  L.ZeroPadding2D(1), L.Cropping2D(1), L.UpSampling2D(2), L.MaxPooling2D(2),
                  L.AveragePooling2D(2), L.BatchNormalization(), L.LayerNormalization(),
                  L.UnitNormalization(), L.Activation("swish")):
        x = layer(x)
    a, b = L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)
    merged = L.Concatenate()([merge()([a, b]) for merge in (L.Add, L.Subtract, L.Multiply,
                                                              L.Average, L.Maximum, L.Minimum)]
                             + [L.Dot(axes=1)([a, b])])
    s = L.Permute((2, 1))(L.Permute((2, 1))(L.Reshape((-1, 1))(merged)))
    for layer in (L.Conv1D(2, 3, padding="same", kernel_regularizer="l2",
                           kernel_constraint="max_norm"),
                  L.SpatialDropout1D(0.1), L.ZeroPadding1D(1), L.Cropping1D(1),
                  L.UpSampling1D(2), L.MaxPooling1D(2), L.AveragePooling1D(2), L.Masking(),
                  # unrolled: the fused kernels of GRU and LSTM take long to set up
                  L.Bidirectional(L.GRU(3, return_sequences=True, unroll=True)),
                  L.SimpleRNN(3, return_sequences=True, unroll=True),
                  L.LSTM(3, return_sequences=True, unroll=True)):
        s = layer(s)
    pooled = L.Concatenate()([L.GlobalAveragePooling1D()(s), L.GlobalMaxPooling1D()(s)])
    tokens = tf.keras.Input((5,), dtype="int32")
    embedded = L.Flatten()(L.Embedding(10, 3)(tokens))
    out = L.Dense(2)(L.Dropout(0.1)(L.Flatten()(L.RepeatVector(2)(
        L.Concatenate()([pooled, embedded])))))
    model = tf.keras.Model([images, tokens], out)
    used = {type(layer).__name__ for layer in model.layers} | {"GRU"}  # GRU: inside Bidirectional
    assert used == set(loading._LAYERS)
    model.save(tmp_path / "all.keras")
    loaded = load_model(tmp_path / "all.keras")
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    for mine, theirs in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
