"""Near-duplicate images: distinct look-alikes are never grouped or counted as a train/test leak,
chains of look-alikes are not merged, and real copies (noised, brightness-shifted,
JPEG-recompressed) are found within and across splits."""
import io

import numpy as np
import pytest
from PIL import Image

from secureml.audit import audit_dataset
from secureml.audit import duplicates as D
from secureml.data import Dataset

THRESHOLD = 0.08  # the default near_duplicate_threshold


@pytest.fixture(scope="module")
def digits28():
    """scikit-learn's 1,797 distinct digits upscaled to 28x28 (MNIST's size): many images of
    one digit are close in hash space."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    d = load_digits()
    x = tf.image.resize((d.images / 16.0).astype("float32")[..., None], (28, 28)).numpy()
    order = np.random.default_rng(0).permutation(len(x))
    return np.clip(x, 0, 1)[order], d.target[order].astype(np.int64)


def _dataset(x_train, y_train, x_test, y_test):
    return Dataset("d", "image", x_train, y_train, x_train[:0], y_train[:0], x_test, y_test,
                   [str(i) for i in range(10)])


def _near(data, **options):
    return audit_dataset(data, options={"label_check": False, **options})["duplicates"]["near"]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(buffer, "JPEG",
                                                                         quality=quality)
    return (np.asarray(Image.open(buffer), dtype=np.float32) / 255)[..., None]


@pytest.mark.parametrize("bits", [4, 8])
def test_distinct_look_alikes_are_no_duplicates_and_no_leak(digits28, bits):
    x, y = digits28
    hashes, _ = D.image_signatures(x)
    # The hash alone links many different digits (hashes within `bits` of each other).
    assert len(D._band_pairs(hashes, bits)) > 50
    near = _near(_dataset(x[:1200], y[:1200], x[1200:], y[1200:]),
                 near_duplicate_distance=bits)
    train = near["within"]["train"]
    assert train["groups"] == 0 and train["redundant_copies"] == 0, train["example_groups"]
    assert train["label_conflicts"] == 0
    assert near["within"]["test"]["groups"] == 0
    assert near["across"]["train_test"]["examples"] == 0, near["across"]["train_test"]
    assert near["across"]["train_test"]["hash_neighbours"] > 0   # shown, for review only
    assert near["compared_pairs"] > 50 and near["verified_pairs"] == 0
    assert near["distinct_all"] == near["total_all"] == len(x)


def test_a_chain_of_look_alikes_is_not_merged(digits28):
    x, y = digits28
    a, b = x[0], x[1]
    chain = np.stack([a + t * (b - a) for t in np.linspace(0, 1, 9)])
    _, thumbs = D.image_signatures(chain)
    steps = D.thumbnail_distance(thumbs[:-1], thumbs[1:])
    # Each image is a near duplicate of the next; the ends are far apart.
    assert steps.max() <= THRESHOLD
    assert D.thumbnail_distance(thumbs[:1], thumbs[-1:])[0] > 3 * THRESHOLD
    x_train = np.concatenate([chain, x[2:300]])
    y_train = np.concatenate([np.full(9, y[0]), y[2:300]])
    near = _near(_dataset(x_train, y_train, x[300:400], y[300:400]), examples=50)
    groups = [g["indices"] for g in near["within"]["train"]["example_groups"]]
    assert groups, "links of the chain are near duplicates"
    for members in groups:
        inner = thumbs[[i for i in members if i < 9]]
        for i in range(len(inner)):  # every two members of a group are close
            assert D.thumbnail_distance(inner[i:i + 1], inner).max() <= THRESHOLD, members
        assert max(members) - min(members) <= 2, members
    assert all(g["max_distance"] <= THRESHOLD for g in near["within"]["train"]["example_groups"])


def test_copies_are_found_within_and_across_splits(digits28):
    x, y = digits28
    x_train, y_train = x[:1000].copy(), y[:1000].copy()
    x_test, y_test = x[1000:1300].copy(), y[1000:1300].copy()
    rng = np.random.default_rng(1)
    copies = {  # train index -> a copy of it
        0: np.clip(x_train[0] + rng.normal(0, 0.02, x_train[0].shape), 0, 1),
        1: x_train[1] * 0.9 + 0.05,                       # brightness and contrast
        2: _jpeg(x_train[2], 75),
        3: _jpeg(np.clip(x_train[3] + 0.04, 0, 1), 90),
        4: x_train[4],                                     # exact
    }
    for k, (source, copy) in enumerate(copies.items()):   # into the test split ...
        x_test[k], y_test[k] = copy, y_train[source]
    x_train[900] = np.clip(x_train[5] + rng.normal(0, 0.02, x_train[5].shape), 0, 1)
    y_train[900] = (y_train[5] + 1) % 10                  # ... and a mislabeled one into train
    audit = audit_dataset(_dataset(x_train, y_train, x_test, y_test),
                          options={"label_check": False, "examples": 20})
    near = audit["duplicates"]["near"]
    leak = near["across"]["train_test"]
    assert leak["examples"] == len(copies)
    assert {(p["index"], p["match"]) for p in leak["example_pairs"]} == \
        {(k, source) for k, source in enumerate(copies)}
    assert all(p["distance"] <= THRESHOLD for p in leak["example_pairs"])
    assert [p["distance"] for p in leak["example_pairs"]][4] == 0.0  # the exact copy
    assert audit["duplicates"]["exact"]["across"]["train_test"]["examples"] == 1
    train = near["within"]["train"]
    assert [g["indices"] for g in train["example_groups"]] == [[5, 900]]
    assert train["label_conflicts"] == 1
    assert audit["duplicates"]["exact"]["within"]["train"]["groups"] == 0


def test_group_members_are_pairwise_verified():
    # b is close to a and to c, a and c are not close: b joins one of them, never both.
    pairs = np.array([[0, 1], [1, 2], [3, 4], [3, 5], [4, 5]])
    distances = np.array([0.05, 0.02, 0.01, 0.01, 0.03], dtype=np.float32)
    group = D.clique_groups(7, pairs, distances)
    assert group[1] == group[2] != group[0]
    assert group[3] == group[4] == group[5]
    assert group[6] == 6


def test_text_near_duplicates_are_equal_after_normalization_only():
    texts = np.array(["A fine film.", "a FINE film!!", "a fine film indeed", "unrelated words"],
                     dtype=object)
    y = np.array([0, 1, 0, 1])
    data = Dataset("t", "text", texts, y, texts[:0], y[:0], texts[:1], y[:1], ["a", "b"])
    audit = audit_dataset(data, options={"label_check": False})
    near = audit["duplicates"]["near"]
    assert [g["indices"] for g in near["within"]["train"]["example_groups"]] == [[0, 1]]
    assert near["within"]["train"]["label_conflicts"] == 1
    assert near["across"]["train_test"]["examples"] == 1
    assert audit["duplicates"]["exact"]["within"]["train"]["groups"] == 0


def test_threshold_is_validated():
    from secureml.errors import ConfigError
    data = _dataset(np.zeros((4, 8, 8, 1), "float32"), np.arange(4) % 2,
                    np.zeros((2, 8, 8, 1), "float32"), np.arange(2))
    with pytest.raises(ConfigError, match="near_duplicate_threshold"):
        audit_dataset(data, options={"near_duplicate_threshold": 0})


@pytest.mark.parametrize("chunk", [7, 2_000_000])
def test_hash_candidates_are_exactly_the_close_hashes(chunk):
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2 ** 63, 1500, dtype=np.uint64) & np.uint64(0xFFFF0000FFFF)
    hashes = np.concatenate([hashes, hashes[:40] ^ np.uint64(1)])  # collisions, big buckets
    i, j = np.triu_indices(len(hashes), 1)
    for bits in (4, 8):
        expected = np.stack([i, j], 1)[D._hamming(hashes[i], hashes[j]) <= bits]
        np.testing.assert_array_equal(D._band_pairs(hashes, bits, chunk=chunk), expected)

