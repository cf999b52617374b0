"""Config validation, where named sets come from, list_sources, and the splits."""
import pickle
import re

import numpy as np
import pytest

from secureml import schema
from secureml.data import DataConfig, list_sources, load_dataset
from secureml.data import sources as sources_module
from secureml.data.config import NAMED_SETS
from secureml.errors import ConfigError, DataError


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No $SECUREML_DATA_DIR and an empty Keras cache: named sets are found nowhere."""
    monkeypatch.delenv("SECUREML_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return tmp_path


def write_sms(path, ham=8, spam=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"ham\thello {i}" for i in range(ham)] + [f"spam\tprize {i}" for i in range(spam)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_texts_csv(path, per_class, classes=("a", "b", "c")):
    rows = [f"{c}-{i},{c}" for c in classes for i in range(per_class)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


# --- config --------------------------------------------------------------------------------

def test_named_sets_match_the_registry():
    assert tuple(sources_module.NAMED) == NAMED_SETS


def test_config_from_mapping_coerces_and_validates():
    cfg = schema.build(DataConfig, {"name": "cifar10", "image_size": [24, 24], "limit": 100},
                       "data")
    assert cfg.image_size == (24, 24) and cfg.limit == 100


@pytest.mark.parametrize("mapping,message", [
    ({}, "data: name: set a named data set (cifar10, mnist"),
    ({"name": "cifar11"}, "unknown data set 'cifar11'; named sets are cifar10, mnist, "
                          "fashion_mnist, cifar100, digits, imdb, sms_spam"),
    ({"name": "imdb", "format": "csv"}, "format: 'csv' describes the files at data.path"),
    ({"path": "x", "format": "parquet"}, "choose one of 'auto', 'image_folder'"),
    ({"path": "x", "validation_fraction": 1.0},
     "data.validation_fraction must be a finite number in [0, 1), got 1.0"),
    ({"path": "x", "test_fraction": 0}, "data.test_fraction must be a finite number in (0, 1)"),
    ({"path": "x", "channels": 4}, "channels: must be 1 (grayscale), 3 (RGB) or null"),
    ({"path": "x", "image_size": [0, 5]}, "data.image_size[0] must be an integer >= 1, got 0"),
    ({"path": "x", "image_size": [5]}, "data.image_size: expected a list of 2 values"),
    ({"path": "x", "limit": 1}, "data.limit must be an integer >= 2, got 1"),
    ({"path": "x", "vocab_size": 2}, "data.vocab_size must be an integer >= 3, got 2"),
    ({"path": "x", "on_corupt": "skip"}, "did you mean 'on_corrupt'?"),
])
def test_bad_config_says_what_is_allowed(mapping, message):
    with pytest.raises(ConfigError) as err:
        load_dataset(mapping)
    assert message in str(err.value)


def test_config_instance_is_validated_too():
    with pytest.raises(ConfigError, match="data.limit must be an integer >= 2, got 0"):
        load_dataset(DataConfig(path=".", limit=0))


def test_unknown_string_lists_named_sets(nowhere):
    with pytest.raises(DataError) as err:
        load_dataset("cifar-10")
    assert "neither a named data set (cifar10, mnist" in str(err.value)


def test_missing_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset({"name": "sms_spam", "path": str(tmp_path / "nope")})
    assert str(tmp_path / "nope") in str(err.value) and "does not exist" in str(err.value)
    assert "remove it to let secureml find the named set 'sms_spam'" in str(err.value)


# --- where named sets come from ------------------------------------------------------------

def test_named_set_not_found_lists_places_and_fix(nowhere):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10")
    message = str(err.value)
    assert "data set 'cifar10' (CIFAR-10) was not found" in message
    assert "SECUREML_DATA_DIR is not set" in message
    assert str(nowhere / "keras-home" / "datasets" / "cifar-10-batches-py") in message
    assert "downloads are disabled by SECUREML_NO_DOWNLOAD=1" in message
    assert "train/<class>/" in message and "data_batch_1" in message  # what to put there
    assert "'digits' ships with scikit-learn" in message


def test_sources_in_order(nowhere, monkeypatch):
    keras_copy = write_sms(nowhere / "keras-home" / "datasets" / "sms_spam" / "SMSSpamCollection")
    ds = load_dataset("sms_spam", progress=False)
    assert ds.source["origin"] == "keras_cache" and ds.source["path"] == str(keras_copy.parent)

    env_copy = write_sms(nowhere / "data" / "sms_spam" / "SMSSpamCollection", ham=6)
    monkeypatch.setenv("SECUREML_DATA_DIR", str(nowhere / "data"))
    ds = load_dataset("sms_spam", progress=False)
    assert ds.source["origin"] == "env" and ds.source["path"] == str(env_copy.parent)

    own = write_sms(nowhere / "mine.txt", ham=10)
    ds = load_dataset({"name": "sms_spam", "path": str(own), "format": "sms_spam"},
                      progress=False)
    assert ds.source["origin"] == "path" and ds.name == "sms_spam"
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 14


def test_download_when_allowed(nowhere, monkeypatch):
    monkeypatch.setenv("SECUREML_NO_DOWNLOAD", "")
    fetched = []

    def fake_fetch(download):  # what keras.utils.get_file would leave in the Keras cache
        fetched.append(download.origin)
        write_sms(sources_module.keras_home() / download.subdir / "SMSSpamCollection")

    monkeypatch.setattr(sources_module, "_fetch", fake_fetch)
    with pytest.raises(DataError) as err:
        load_dataset({"name": "sms_spam", "download": False})
    assert "downloads are disabled by data.download: false" in str(err.value) and not fetched
    ds = load_dataset("sms_spam", progress=False)
    assert fetched == [sources_module.NAMED["sms_spam"].downloads[0].origin]
    assert ds.source["origin"] == "download" and ds.source["url"] == fetched[0]


def test_failed_download_is_reported(nowhere, monkeypatch):
    monkeypatch.setenv("SECUREML_NO_DOWNLOAD", "0")

    def offline(download):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sources_module, "_fetch", offline)
    with pytest.raises(DataError) as err:
        load_dataset("imdb")
    assert "aclImdb_v1.tar.gz: failed (OSError: network is unreachable)" in str(err.value)


def test_digits_is_the_offline_fallback(nowhere):
    ds = load_dataset("digits", progress=False)
    assert ds.source["origin"] == "bundled" and ds.input_shape == (8, 8, 1)
    assert ds.class_names == [str(i) for i in range(10)]
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797
    assert ds.x_train.dtype == np.float32 and ds.x_train.min() == 0 and ds.x_train.max() == 1
    resized = load_dataset({"name": "digits", "image_size": [16, 16], "channels": 3},
                           progress=False)
    assert resized.input_shape == (16, 16, 3)


def test_named_set_class_names_and_kind_are_checked(nowhere):
    imdb = nowhere / "imdb.jsonl"
    imdb.write_text("".join(f'{{"text": "review {i}", "label": {i % 2}}}\n' for i in range(10)))
    ds = load_dataset({"name": "imdb", "path": str(imdb)}, progress=False)
    assert ds.class_names == ["negative", "positive"]
    assert all(ds.class_names[y] == ("positive" if int(x.split()[1]) % 2 else "negative")
               for x, y in zip(ds.x_train, ds.y_train))

    spam = nowhere / "spam.csv"
    spam.write_text("text,label\n" + "".join(f"t{i},{'spam' if i % 3 else 'ham'}\n"
                                             for i in range(9)))
    ds = load_dataset({"name": "sms_spam", "path": str(spam)}, progress=False)
    assert ds.class_names == ["ham", "spam"]

    other = write_texts_csv(nowhere / "other.csv", 3)
    with pytest.raises(DataError, match=r"classes \['a', 'b', 'c'\] do not match"):
        load_dataset({"name": "sms_spam", "path": str(other)}, progress=False)
    with pytest.raises(DataError, match=r"text data, but 'cifar10' \(CIFAR-10\) is image data"):
        load_dataset({"name": "cifar10", "path": str(other)}, progress=False)


def test_list_sources(nowhere, monkeypatch):
    write_sms(nowhere / "data" / "sms_spam" / "SMSSpamCollection")
    monkeypatch.setenv("SECUREML_DATA_DIR", str(nowhere / "data"))
    rows = {row["name"]: row for row in list_sources({"imdb": str(nowhere / "missing")})}
    assert list(rows) == list(NAMED_SETS)
    assert rows["sms_spam"]["status"] == "found" and rows["sms_spam"]["origin"] == "env"
    assert rows["sms_spam"]["location"] == str(nowhere / "data" / "sms_spam")
    assert rows["digits"]["status"] == "bundled"
    assert rows["cifar10"]["status"] == "not found" and "cifar10/" in rows["cifar10"]["hint"]
    assert rows["imdb"]["status"] == "not found" and "does not exist" in rows["imdb"]["hint"]
    assert rows["cifar10"]["kind"] == "image" and rows["imdb"]["kind"] == "text"
    monkeypatch.setenv("SECUREML_NO_DOWNLOAD", "")
    rows = {row["name"]: row for row in list_sources()}
    assert rows["mnist"]["status"] == "download"
    assert rows["mnist"]["location"].endswith("mnist.npz")


def test_datasets_command_shows_a_configs_path(nowhere, monkeypatch, capsys):
    from secureml.cli import main
    sms = write_sms(nowhere / "mine" / "SMSSpamCollection").parent
    config = nowhere / "exp.yaml"
    config.write_text("name: e\ndata: {name: sms_spam}\nmodel: {name: text_lstm}\n")
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"digits\s+image\s+bundled\s+scikit-learn", out)
    assert re.search(r"sms_spam\s+text\s+not found", out) and "sms_spam/" in out
    assert main(["datasets", str(config), "--set", f"data.path={sms}"]) == 0
    assert re.search(rf"sms_spam\s+text\s+found\s+{re.escape(str(sms))}", capsys.readouterr().out)
    assert main(["datasets", "--set", "data.path=x"]) == 2
    assert "needs a config" in capsys.readouterr().err


# --- splits ---------------------------------------------------------------------------------

def test_splits_are_stratified_deterministic_and_disjoint(tmp_path):
    path = write_texts_csv(tmp_path / "s.csv", 40, classes=("a", "b", "c", "d"))
    options = {"path": str(path), "validation_fraction": 0.25, "test_fraction": 0.25}
    ds = load_dataset(options, seed=1, progress=False)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (90, 30, 40)
    assert np.bincount(ds.y_test).tolist() == [10] * 4
    assert sorted(np.bincount(ds.y_val).tolist()) == [7, 7, 8, 8]
    parts = [set(ds.x_train), set(ds.x_val), set(ds.x_test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(parts[0] | parts[1] | parts[2]) == 160
    again = load_dataset(options, seed=1, progress=False)
    assert again.x_train.tolist() == ds.x_train.tolist()
    assert again.x_test.tolist() == ds.x_test.tolist()
    other = load_dataset(options, seed=2, progress=False)
    assert set(other.x_test) != set(ds.x_test)


def test_limit_and_test_limit_are_stratified(tmp_path):
    path = write_texts_csv(tmp_path / "l.csv", 50, classes=("a", "b"))
    ds = load_dataset({"path": str(path), "limit": 20, "test_limit": 10}, progress=False)
    assert len(ds.y_train) + len(ds.y_val) == 20 and len(ds.y_test) == 10
    assert np.bincount(np.concatenate([ds.y_train, ds.y_val])).tolist() == [10, 10]
    assert np.bincount(ds.y_test).tolist() == [5, 5]


def test_tiny_class_falls_back_to_random_split(tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text("text,label\n" + "".join(f"big {i},big\n" for i in range(20)) + "lone,small\n")
    ds = load_dataset({"path": str(path)}, progress=False)
    assert "least populated class" in ds.notes["unstratified"]["test"]
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 21


def test_keras_cache_layouts(nowhere):
    datasets = nowhere / "keras-home" / "datasets"
    datasets.mkdir(parents=True)
    x = np.zeros((6, 28, 28), dtype=np.uint8)
    np.savez(datasets / "mnist.npz", x_train=x, y_train=np.arange(6) % 3,
             x_test=x[:3], y_test=np.arange(3))
    ds = load_dataset("mnist", progress=False)
    assert ds.source == {"origin": "keras_cache", "path": str(datasets / "mnist.npz"),
                         "format": "npz", "fingerprint": ds.source["fingerprint"]}
    assert ds.class_names == [str(i) for i in range(10)] and ds.input_shape == (28, 28, 1)

    cifar = datasets / "cifar-10-batches-py"
    cifar.mkdir()
    batch = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 1]}
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        (cifar / name).write_bytes(pickle.dumps(batch, protocol=2))
    (cifar / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": [b"airplane", b"automobile", b"bird"]}, protocol=2))
    ds = load_dataset("cifar10", progress=False)
    assert ds.source["format"] == "cifar_pickle" and ds.class_names[:3] == ["airplane",
                                                                            "automobile", "bird"]
    assert len(ds.class_names) == 10 and len(ds.y_test) == 4

    for part in ("train", "test"):
        for label in ("neg", "pos"):
            folder = datasets / "aclImdb" / part / label
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"{i}_1.txt").write_text(f"{label} review {i}")
    ds = load_dataset("imdb", progress=False)
    assert ds.source["format"] == "aclimdb" and ds.class_names == ["negative", "positive"]
    assert sorted(ds.x_test.tolist())[0] == "neg review 0"
