"""Text loaders: CSV/TSV/JSONL (plain and .gz), .txt folders, aclImdb, SMS Spam Collection."""
import csv
import gzip
import json

import numpy as np
import pytest

from secureml.data import DataConfig, load_dataset
from secureml.errors import DataError

ROWS = [(f"text number {i} about {topic}", topic)
        for i, topic in enumerate(["sport", "politics", "music"] * 5)]


def write_table(path, rows, header=("text", "label"), delimiter=","):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path, records):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def load(path, **options):
    return load_dataset(DataConfig(path=str(path), **options), progress=False)


def all_examples(ds):
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    return dict(zip(x.tolist(), (ds.class_names[i] for i in y)))


@pytest.mark.parametrize("name,delimiter", [("data.csv", ","), ("data.csv.gz", ","),
                                            ("data.tsv", "\t"), ("data.tsv.gz", "\t")])
def test_csv_and_tsv_with_string_labels(tmp_path, name, delimiter):
    path = write_table(tmp_path / name, ROWS, delimiter=delimiter)
    ds = load(path)
    assert ds.kind == "text" and ds.source["format"] == name.split(".")[1]
    assert ds.class_names == ["music", "politics", "sport"]
    assert ds.x_train.dtype == object and isinstance(ds.x_train[0], str)
    assert all_examples(ds) == dict(ROWS)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (10, 2, 3)
    assert ds.name == "data"


def test_csv_quoted_fields_and_custom_columns(tmp_path):
    rows = [(str(i), f'line one, "quoted"\nline two {i}', "yes" if i % 2 else "no")
            for i in range(8)]
    path = write_table(tmp_path / "r.csv", rows, header=("id", "review", "verdict"))
    ds = load(path, text_column="review", label_column="verdict")
    assert ds.class_names == ["no", "yes"]
    assert all_examples(ds) == {text: label for _, text, label in rows}


def test_missing_column_names_the_columns(tmp_path):
    path = write_table(tmp_path / "r.csv", ROWS, header=("body", "label"))
    with pytest.raises(DataError) as err:
        load(path)
    message = str(err.value)
    assert str(path) in message and "no column 'text' (data.text_column)" in message
    assert "'body', 'label'" in message and "data.text_column" in message


def test_integer_labels_keep_their_ids(tmp_path):
    rows = [(f"t{i}", i % 3) for i in range(12)]
    ds = load(write_table(tmp_path / "i.csv", rows))
    assert ds.class_names == ["0", "1", "2"]
    assert all_examples(ds) == {t: str(label) for t, label in rows}


def test_sparse_integer_labels_become_contiguous_ids(tmp_path):
    # Star ratings 1, 4, 10: three classes named by their value, none left empty.
    rows = [(f"t{i}", [1, 4, 10][i % 3]) for i in range(12)]
    ds = load(write_table(tmp_path / "i.csv", rows))
    assert ds.class_names == ["1", "4", "10"]
    assert set(np.concatenate([ds.y_train, ds.y_val, ds.y_test]).tolist()) == {0, 1, 2}
    assert "classes_without_examples" not in ds.notes
    assert all_examples(ds) == {t: str(label) for t, label in rows}


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_jsonl(tmp_path, name):
    records = [{"text": t, "label": label, "extra": 1} for t, label in ROWS]
    ds = load(write_jsonl(tmp_path / name, records))
    assert ds.source["format"] == "jsonl"
    assert all_examples(ds) == dict(ROWS)


def test_folder_with_train_and_test_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl.gz", [{"text": t, "label": y} for t, y in ROWS])
    write_jsonl(tmp_path / "test.jsonl.gz", [{"text": "held out", "label": "music"},
                                             {"text": "also held out", "label": "sport"}])
    ds = load(tmp_path)
    assert sorted(ds.x_test.tolist()) == ["also held out", "held out"]
    assert len(ds.y_train) + len(ds.y_val) == 15 and "test_split" not in ds.notes


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n')
    with pytest.raises(DataError) as err:
        load(path)
    assert f"{path}:2: not valid JSON" in str(err.value)
    path.write_text('{"text": "a", "label": 1}\n{"body": "b", "label": 0}\n')
    with pytest.raises(DataError) as err:
        load(path)
    assert f"{path}:2: no key 'text' (data.text_column)" in str(err.value)
    assert "'body', 'label'" in str(err.value)


def test_empty_texts_are_dropped_and_counted(tmp_path):
    rows = ROWS + [("", "music"), ("   \n ", "sport")]
    ds = load(write_table(tmp_path / "e.csv", rows))
    assert ds.notes["dropped_empty_texts"] == 2
    assert all_examples(ds) == dict(ROWS)


def test_no_texts_left_is_an_error(tmp_path):
    path = write_table(tmp_path / "empty.csv", [("", "a"), (" ", "b")])
    with pytest.raises(DataError) as err:
        load(path)
    assert str(path) in str(err.value) and "after dropping 2 empty texts" in str(err.value)


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "latin.csv"
    lines = [b"text,label"] + [f"plain {i},a".encode() for i in range(4)] + \
        [b"caf\xe9 au lait,b", b"na\xefve \xff,b", "café ok,b".encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    ds = load(path)
    assert ds.notes["texts_with_undecodable_bytes"] == 2
    texts = set(all_examples(ds))
    assert {"caf\ufffd au lait", "na\ufffdve \ufffd", "café ok"} <= texts


def test_single_label_is_an_error(tmp_path):
    path = write_table(tmp_path / "one.csv", [(f"t{i}", "spam") for i in range(5)])
    with pytest.raises(DataError) as err:
        load(path)
    assert str(path) in str(err.value) and "same label ('spam')" in str(err.value)


def write_texts(folder, texts):
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (folder / f"{i}_7.txt").write_text(text, encoding="utf-8")


def test_text_folder_flat_and_split(tmp_path):
    for topic in ("ham", "eggs"):
        write_texts(tmp_path / "flat" / topic, [f"{topic} {i}" for i in range(5)])
        write_texts(tmp_path / "split" / "train" / topic, [f"{topic} {i}" for i in range(5)])
        write_texts(tmp_path / "split" / "test" / topic, [f"{topic} test"])
    flat = load(tmp_path / "flat")
    assert flat.source["format"] == "text_folder" and flat.class_names == ["eggs", "ham"]
    assert all(text.split()[0] == label for text, label in all_examples(flat).items())
    split = load(tmp_path / "split")
    assert sorted(split.x_test.tolist()) == ["eggs test", "ham test"]


def test_aclimdb_layout(tmp_path):
    root = tmp_path / "download" / "aclImdb"
    for part in ("train", "test"):
        write_texts(root / part / "neg", [f"bad {part} {i}<br />awful" for i in range(4)])
        write_texts(root / part / "pos", [f"good {part} {i}" for i in range(4)])
    write_texts(root / "train" / "unsup", ["no label"] * 3)
    (root / "train" / "labeledBow.feat").write_text("0 0:1\n")
    ds = load(tmp_path / "download")  # the folder the archive was unpacked in
    assert ds.source["format"] == "aclimdb" and ds.source["path"] == str(root)
    assert ds.class_names == ["negative", "positive"]
    assert len(ds.y_test) == 8 and len(ds.y_train) + len(ds.y_val) == 8
    examples = all_examples(ds)
    assert "no label" not in examples
    assert all((label == "negative") == text.startswith("bad") for text, label in examples.items())
    assert "bad train 0<br />awful" in examples  # raw text: HTML is removed by the vectorizer


def test_sms_file(tmp_path):
    path = tmp_path / "SMSSpamCollection"
    lines = [f"ham\thello {i}" for i in range(8)] + [f"spam\tWIN £{i} now!" for i in range(4)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = load(path)
    assert ds.source["format"] == "sms_spam" and ds.class_names == ["ham", "spam"]
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert np.bincount(y).tolist() == [8, 4]
    assert "WIN £0 now!" in all_examples(ds)


def test_sms_malformed_line(tmp_path):
    path = tmp_path / "SMSSpamCollection"
    path.write_text("ham\tfine\nspam no tab here\n")
    with pytest.raises(DataError) as err:
        load(path)
    assert f"{path}:2: expected '<label><TAB><text>'" in str(err.value)


def test_undetectable_format_lists_formats(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")
    with pytest.raises(DataError) as err:
        load(tmp_path / "data.bin")
    message = str(err.value)
    assert "cannot tell the format" in message and "data.format" in message
    for fmt in ("image_folder", "npz", "cifar_pickle", "csv", "tsv", "jsonl", "text_folder",
                "aclimdb", "sms_spam"):
        assert f"  - {fmt}:" in message
    ds = load(write_table(tmp_path / "table.dat", ROWS, delimiter="\t"), format="tsv")
    assert ds.source["format"] == "tsv" and len(ds.class_names) == 3


def test_path_may_use_environment_variables(tmp_path, monkeypatch):
    write_table(tmp_path / "d.csv", [(f"t{i}", i % 2) for i in range(10)])
    monkeypatch.setenv("MY_DATA", str(tmp_path))
    ds = load("$MY_DATA/d.csv")
    assert len(all_examples(ds)) == 10
    monkeypatch.delenv("MY_DATA")
    with pytest.raises(DataError, match="environment variable in it is not set"):
        load("$MY_DATA/d.csv")


def test_anonymize_replaces_personal_data_before_training(tmp_path):
    rows = [(f"call me on +44 7700 900{i:03d} or mail j{i}@example.com", i % 2)
            for i in range(20)]
    ds = load(write_table(tmp_path / "pii.csv", rows), anonymize=True)
    texts = " ".join(np.concatenate([ds.x_train, ds.x_val, ds.x_test]).tolist())
    assert "@example.com" not in texts and "7700" not in texts
    assert sum(ds.notes["anonymized"]["train"].values()) > 0
    with pytest.raises(DataError, match="remove data.anonymize"):
        load_dataset(DataConfig(name="digits", anonymize=True), progress=False)
