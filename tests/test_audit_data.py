"""Data audit: planted duplicates, leaks, flipped labels and personal data are found;
anonymization removes the personal data; the real IMDB duplicates are reported."""
import os
from pathlib import Path

import numpy as np
import pytest

from secureml.audit import anonymize_texts, audit_dataset, scan_texts
from secureml.data.pii import luhn_valid
from secureml.data import Dataset


def _digits_with_planted_problems():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:1400].copy(), y[:1400].copy(), x[1400:], y[1400:]
    planted = {}
    # Exact copies of 5 training images, and near copies (faint noise) of 5 others.
    x_train[1000:1005], y_train[1000:1005] = x_train[:5], y_train[:5]
    noise = np.random.default_rng(1).uniform(-0.015, 0.015, size=x_train[10:15].shape)
    x_train[1010:1015] = np.clip(x_train[10:15] + noise, 0, 1)
    y_train[1010:1015] = y_train[10:15]
    # 7 test images leaked into the training set.
    x_train[1100:1107], y_train[1100:1107] = x_test[:7], y_test[:7]
    # 20 flipped labels.
    flipped = np.arange(200, 220)
    y_train[flipped] = (y_train[flipped] + 1 + np.arange(20) % 9) % 10
    planted["flipped"] = flipped
    data = Dataset("digits", "image", x_train, y_train, x_train[:0], y_train[:0], x_test, y_test,
                   [str(i) for i in range(10)])
    return data, planted


@pytest.fixture(scope="module")
def image_audit():
    data, planted = _digits_with_planted_problems()
    return audit_dataset(data, options={"examples": 50}), planted


def _groups(report, split="train"):
    return [set(g["indices"]) for g in report["within"][split]["example_groups"]]


def test_planted_exact_and_near_duplicates_are_found(image_audit):
    audit, _ = image_audit
    exact, near = audit["duplicates"]["exact"], audit["duplicates"]["near"]
    exact_groups = _groups(exact)
    for i in range(5):
        assert {i, 1000 + i} in exact_groups
    assert exact["within"]["train"]["redundant_copies"] == 5
    near_groups = _groups(near)
    for i in range(10, 15):
        assert any({i, 1000 + i} <= g for g in near_groups), i
    # Noisy copies are not exact copies.
    assert not any({10, 1010} <= g for g in exact_groups)


def test_planted_train_test_leak_is_found(image_audit):
    audit, _ = image_audit
    leak = audit["duplicates"]["exact"]["across"]["train_test"]
    assert leak["examples"] == 7
    assert [(p["index"], p["match"]) for p in leak["example_pairs"][:7]] == \
        [(k, 1100 + k) for k in range(7)]
    assert audit["duplicates"]["near"]["across"]["train_test"]["examples"] >= 7


def test_flipped_labels_are_found(image_audit):
    audit, planted = image_audit
    labels = audit["labels"]
    assert labels["trusted"] and labels["checker_accuracy"] > 0.9
    flagged = {e["index"] for e in labels["examples"]}
    found = flagged & set(planted["flipped"].tolist())
    assert len(found) >= 16, sorted(found)               # recall >= 80%
    assert labels["suspicious"] <= 20 + 30               # and few false alarms (of 1,400)
    assert audit["class_balance"]["imbalance_ratio"] < 1.3


def test_image_outliers_and_balance(image_audit):
    audit, _ = image_audit
    counts = audit["class_balance"]["counts"]["train"]
    assert sum(counts.values()) == 1400
    assert audit["outliers"]["by_reason"]["constant"] == 0
    assert audit["cost"]["total_s"] > 0
    assert "personal_data" not in audit


PII_TEXTS = [
    "Write to jane.doe@example.com for tickets",
    "Call me at +44 20 7946 0958 tonight",
    "my card 4111 1111 1111 1111 was charged twice",
    "server at 192.168.10.25 is down, see https://status.example.org/page?id=3.",
    "US office (555) 123-4567 and www.example.net",
    "UK mobile 07700 900123 or 08712460324 now",
]
CLEAN_TEXTS = [
    "A great film, rated 7/10 in 1999, 2000 and 2001.",
    "Order 4111111111111112 is not a card (fails Luhn) and version 1.2.3.4a is no IP",
    "Scores 3.5 and 10 out of 10; the year 1984 was long",
]


def test_personal_data_is_found_and_masked():
    scan = scan_texts(PII_TEXTS + CLEAN_TEXTS)
    by_type = scan["by_type"]
    assert {k: v["matches"] for k, v in by_type.items()} == \
        {"email": 1, "ip": 1, "card": 1, "phone": 4}
    assert scan["links"]["matches"] == 2 and scan["links"]["texts"] == 2
    assert scan["texts_with_personal_data"] == len(PII_TEXTS)
    shown = [e["masked"] for v in by_type.values() for e in v["examples"]]
    assert "************1111" in shown
    for raw in ("jane.doe@example.com", "4111 1111 1111 1111", "192.168.10.25", "7946 0958"):
        assert not any(raw in s for s in shown)


def test_anonymization_removes_planted_personal_data():
    cleaned, counts = anonymize_texts(PII_TEXTS + CLEAN_TEXTS)
    assert counts == {"url": 2, "email": 1, "ip": 1, "card": 1, "phone": 4}
    assert scan_texts(cleaned)["texts_with_personal_data"] == 0
    assert cleaned[0] == "Write to [EMAIL] for tickets"
    assert cleaned[3] == "server at [IP] is down, see [URL]."
    assert cleaned[len(PII_TEXTS):] == CLEAN_TEXTS  # nothing else touched


def test_anonymized_dataset_keeps_labels_and_records_counts():
    from secureml.audit import anonymize_dataset
    texts = np.array(PII_TEXTS + CLEAN_TEXTS, dtype=object)
    y = np.arange(len(texts)) % 2
    data = Dataset("t", "text", texts, y, texts[:2], y[:2], texts[2:4], y[2:4], ["a", "b"])
    clean = anonymize_dataset(data)
    assert scan_texts(clean.x_train)["texts_with_personal_data"] == 0
    assert (clean.y_train == y).all() and len(clean.x_train) == len(texts)
    assert clean.notes["anonymized"]["train"]["phone"] == 4
    assert clean.notes["anonymized"]["validation"] == {"url": 0, "email": 1, "ip": 0,
                                                       "card": 0, "phone": 1}
    assert data.x_train[0] == PII_TEXTS[0]  # the original is untouched


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


def test_text_audit_finds_duplicates_leaks_and_personal_data():
    rng = np.random.default_rng(0)
    words = ["good", "bad", "movie", "plot", "actor", "boring", "great", "awful", "fun", "slow"]
    train = [" ".join(rng.choice(words, 12)) for _ in range(300)]
    y = rng.integers(0, 2, 300)
    train[100] = train[5]                          # exact duplicate
    train[101] = train[6].upper() + "!!"            # duplicate after normalization
    train[102] = "Reach me: bob@mail.example.com"
    test = [" ".join(rng.choice(words, 12)) for _ in range(60)]
    test[0] = train[7]                              # leak
    data = Dataset("t", "text", np.array(train, dtype=object), y, np.array([], dtype=object),
                   y[:0], np.array(test, dtype=object), rng.integers(0, 2, 60),
                   ["neg", "pos"])
    audit = audit_dataset(data)
    exact, near = audit["duplicates"]["exact"], audit["duplicates"]["near"]
    assert exact["within"]["train"]["redundant_copies"] == 1
    assert near["within"]["train"]["redundant_copies"] == 2
    assert exact["across"]["train_test"]["examples"] == 1
    assert audit["personal_data"]["train"]["by_type"]["email"]["matches"] == 1
    assert audit["personal_data"]["train"]["by_type"]["email"]["examples"][0]["index"] == 102
    assert audit["personal_data"]["test"]["texts_with_personal_data"] == 0


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("SECUREML_DATA_DIR"),
                      Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"):
        if candidate and (Path(candidate) / "imdb").is_dir():
            return Path(candidate)
    return None


@pytest.mark.realdata
@pytest.mark.skipif(_shared_data() is None, reason="needs ../shared/datasets/imdb or "
                                                   "SECUREML_DATA_DIR")
def test_imdb_known_duplicates_are_reported(monkeypatch):
    from secureml.data import load_dataset
    monkeypatch.setenv("SECUREML_DATA_DIR", str(_shared_data()))
    data = load_dataset("imdb", progress=False)
    audit = audit_dataset(data, options={"label_check": False}, record_key=b"k" * 32)
    exact = audit["duplicates"]["exact"]
    assert exact["total_all"] == 50000
    assert exact["distinct_all"] == 49582   # the data set's README: 49,582 distinct texts
    assert exact["within"]["train"]["redundant_copies"] > 0
    assert exact["across"]["train_test"]["examples"] > 0
    assert audit["duplicates"]["near"]["distinct_all"] <= 49582
    group = exact["within"]["train"]["example_groups"][0]
    assert len(group["indices"]) >= 2 and len(set(group["hashes"])) == 1  # copies: one hash
    assert data.x_train[group["indices"][0]] == data.x_train[group["indices"][1]]
    leak = exact["across"]["train_test"]["example_pairs"][0]
    assert data.x_test[leak["index"]] == data.x_train[leak["match"]]


def test_record_key_is_private_kept_and_checked(tmp_path):
    import stat

    from secureml.audit import records
    from secureml.errors import DataError
    key = records.run_key(tmp_path)
    assert len(key) == 32 and records.run_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / records.KEY_FILE).stat().st_mode) == 0o600
    text = "call me, it is Ann"
    assert records.record_hash(text, key) != records.record_hash(text, b"x" * 32)
    assert records.describe(np.array([text], dtype=object), 0, key, False) == \
        {"hash": records.record_hash(text, key)}
    assert records.describe(np.array([text], dtype=object), 0, None, True) == {"excerpt": text}
    (tmp_path / records.KEY_FILE).write_text("not hex")
    with pytest.raises(DataError, match="not a record key"):
        records.run_key(tmp_path)


def test_links_in_news_are_not_personal_data_and_do_not_fail(tmp_path):
    from secureml.audit import load_policy, score
    from secureml.audit.scorecard import data_facts
    news = np.array([f"Story {i}: read more at https://news.example.org/{i} and www.agency.net"
                     for i in range(40)] + ["Tips: mail desk@paper.example.com"], dtype=object)
    y = np.arange(len(news)) % 2
    data = Dataset("news", "text", news, y, news[:0], y[:0], news[:4], y[:4], ["a", "b"])
    audit = audit_dataset(data, options={"label_check": False})
    train = audit["personal_data"]["train"]
    assert train["links"]["matches"] == 80 and train["links"]["texts"] == 40
    assert train["links"]["fraction"] == 40 / 41
    assert train["texts_with_personal_data"] == 1 and "url" not in train["by_type"]
    rows = {r["rule"]: r for r in score(data_facts(audit), load_policy(), "data")}
    assert rows["links"]["status"] == "pass" and rows["links"]["value"] == 40 / 41
    assert rows["personal_data"]["value"] == 1 / 41 and rows["personal_data"]["status"] == "fail"
    # A policy may still rate links.
    (tmp_path / "policy.yaml").write_text(
        "version: 1\nrules:\n  links: {fact: data_audit.personal_data.train.links.fraction, "
        "warn_above: 0.5}\n")
    strict = score(data_facts(audit), load_policy(tmp_path / "policy.yaml"), "data")
    assert {r["rule"]: r["status"] for r in strict}["links"] == "warn"
