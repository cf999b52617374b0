"""The real data sets in ../shared/datasets (or $SECUREML_DATA_DIR), loaded the normal way."""
import numpy as np
import pytest

from secureml.data import TextVectorizer, list_sources, load_dataset

pytestmark = pytest.mark.realdata

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


@pytest.fixture(autouse=True)
def data_dir(shared_datasets, monkeypatch):
    monkeypatch.setenv("SECUREML_DATA_DIR", str(shared_datasets))
    return shared_datasets


def test_cifar10_limited(data_dir):
    ds = load_dataset({"name": "cifar10", "limit": 1000, "test_limit": 500}, progress=False)
    assert ds.source["origin"] == "env" and ds.source["format"] == "image_folder"
    assert ds.source["path"] == str(data_dir / "cifar10")
    assert ds.class_names == CIFAR10 and ds.input_shape == (32, 32, 3)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (900, 100, 500)
    assert np.bincount(np.concatenate([ds.y_train, ds.y_val])).tolist() == [100] * 10
    assert np.bincount(ds.y_test).tolist() == [50] * 10
    assert ds.x_train.dtype == np.float32 and ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    # CIFAR-10 per-channel means are about 0.49, 0.48, 0.45.
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), [0.49, 0.48, 0.45], atol=0.03)
    assert ds.notes == {"image_modes": {"RGB": 60000}}


def test_imdb_limited(data_dir):
    ds = load_dataset({"name": "imdb", "limit": 2000, "test_limit": 1000}, progress=False)
    assert ds.source["format"] == "jsonl" and ds.kind == "text"
    assert ds.class_names == ["negative", "positive"]
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1800, 200, 1000)
    assert np.bincount(ds.y_test).tolist() == [500, 500]
    assert any("<br />" in text for text in ds.x_train)  # raw text is kept
    vectorizer = TextVectorizer(vocab_size=5000, sequence_length=50).fit(ds.x_train)
    ids = vectorizer(ds.x_test)
    assert ids.shape == (1000, 50) and "br" not in vectorizer.vocabulary
    assert vectorizer.vocabulary[2:5] == ["the", "and", "a"]


def test_sms_spam_full(data_dir):
    ds = load_dataset("sms_spam", progress=False)
    assert ds.class_names == ["ham", "spam"]
    dropped = ds.notes.get("dropped_empty_texts", 0)
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert len(y) == 5574 - dropped
    assert np.bincount(y).tolist() == [4827, 747]  # the file has no empty messages
    assert dropped == 0 and "texts_with_undecodable_bytes" not in ds.notes
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (4013, 446, 1115)
    # stratified: the spam share is the same in every split, to a message
    for part in (ds.y_train, ds.y_val, ds.y_test):
        assert abs(part.mean() - 747 / 5574) < 0.003


def test_digits_fallback_and_listing(data_dir):
    ds = load_dataset("digits", progress=False)
    assert ds.source["origin"] == "bundled" and len(ds.class_names) == 10
    rows = {row["name"]: row for row in list_sources()}
    for name in ("cifar10", "imdb", "sms_spam"):
        assert rows[name]["status"] == "found" and rows[name]["origin"] == "env"
