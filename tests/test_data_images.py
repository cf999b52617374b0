"""Image loaders: image folders in every mode and format, .npz, CIFAR pickles, IDX, the cache."""
import gzip
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from secureml.data import DataConfig, load_dataset
from secureml.data import images as images_module
from secureml.errors import DataError

# One solid colour per class, so every decoded image can be checked against its label.
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "frog": (40, 40, 200)}


def solid(path, colour, size=(6, 4), mode="RGB", fmt=None):
    """A solid image; size is (width, height) as PIL takes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def class_folders(root, per_class=6, split=True, ext="png"):
    parts = {"train": per_class, "test": 2} if split else {"": per_class}
    for part, count in parts.items():
        for name, colour in COLOURS.items():
            for i in range(count):
                solid(root / part / name / f"{i:03d}.{ext}", colour)
    return root


def config(path, **options):
    return DataConfig(path=str(path), **options)


def check_colours(x, y, class_names):
    """Every image is its class colour (lossless formats), so labels and pixels line up."""
    for image, label in zip(x, y):
        expected = np.array(COLOURS[class_names[label]], dtype=np.float32) / 255
        np.testing.assert_allclose(image[0, 0], expected, atol=1e-6)


def test_image_folder_train_test_layout(tmp_path):
    ds = load_dataset(config(class_folders(tmp_path / "pets")), progress=False)
    assert ds.kind == "image" and ds.name == "pets"
    assert ds.class_names == ["cat", "dog", "frog"]
    assert ds.x_train.dtype == np.float32 and ds.input_shape == (4, 6, 3)
    assert ds.y_train.dtype == np.int64
    # train/ holds 18 images: 10% (ceil -> 2) go to validation; test/ is used as is.
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (16, 2, 6)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        check_colours(x, y, ds.class_names)
    assert ds.source["origin"] == "path" and ds.source["format"] == "image_folder"
    assert ds.notes["image_modes"] == {"RGB": 24}


def test_flat_class_folders_split_by_seed(tmp_path):
    root = class_folders(tmp_path / "flat", per_class=10, split=False)
    ds = load_dataset(config(root, validation_fraction=0.0), seed=3, progress=False)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (24, 0, 6)
    assert ds.x_val.shape == (0, 4, 6, 3)
    assert np.bincount(ds.y_test).tolist() == [2, 2, 2]
    assert "test_split" in ds.notes
    check_colours(ds.x_test, ds.y_test, ds.class_names)


@pytest.mark.parametrize("ext,fmt", [("jpg", "JPEG"), ("jpeg", "JPEG"), ("bmp", "BMP"),
                                     ("gif", "GIF"), ("PNG", "PNG")])
def test_every_image_format_decodes(tmp_path, ext, fmt):
    for name, colour in COLOURS.items():
        for i in range(3):
            solid(tmp_path / "set" / name / f"{i}.{ext}", colour, fmt=fmt)
    ds = load_dataset(config(tmp_path / "set", validation_fraction=0), progress=False)
    assert len(ds.y_train) + len(ds.y_test) == 9
    tolerance = 0.05 if fmt == "JPEG" else 0.02  # lossy JPEG; GIF palette quantisation
    for image, label in zip(ds.x_train, ds.y_train):
        expected = np.array(COLOURS[ds.class_names[label]]) / 255
        assert np.abs(image.mean(axis=(0, 1)) - expected).max() < tolerance


def test_mixed_modes_become_rgb_and_channels_option(tmp_path):
    root = tmp_path / "mixed"
    solid(root / "cat" / "gray.png", (120, 120, 120), mode="L")
    solid(root / "cat" / "rgba.png", COLOURS["cat"], mode="RGBA")
    solid(root / "cat" / "palette.gif", COLOURS["cat"], fmt="GIF")
    solid(root / "dog" / "rgb.jpg", COLOURS["dog"])
    solid(root / "dog" / "bits.png", (255, 255, 255), mode="1")
    solid(root / "dog" / "rgb.bmp", COLOURS["dog"])
    ds = load_dataset(config(root, test_fraction=0.5, validation_fraction=0), progress=False)
    assert ds.input_shape == (4, 6, 3)
    assert ds.notes["grayscale_converted_to_rgb"] == 2
    assert ds.notes["image_modes"] == {"1": 1, "L": 1, "P": 1, "RGB": 2, "RGBA": 1}
    everything = np.concatenate([ds.x_train, ds.x_test])
    gray = [img for img in everything if np.allclose(img[0, 0], 120 / 255)]
    assert len(gray) == 1 and np.allclose(gray[0][..., 0], gray[0][..., 2])

    as_gray = load_dataset(config(root, channels=1, test_fraction=0.5, validation_fraction=0),
                           progress=False)
    assert as_gray.input_shape == (4, 6, 1)
    as_rgb = load_dataset(config(root, channels=3, test_fraction=0.5), progress=False)
    assert as_rgb.input_shape == (4, 6, 3)


def test_all_grayscale_set_keeps_one_channel(tmp_path):
    for name in ("a", "b"):
        for i in range(3):
            solid(tmp_path / "g" / name / f"{i}.png", (90, 90, 90), mode="L")
    ds = load_dataset(config(tmp_path / "g"), progress=False)
    assert ds.input_shape == (4, 6, 1)
    assert np.allclose(ds.x_train, 90 / 255)


def test_rgba_drops_alpha_and_gif_uses_first_frame(tmp_path):
    root = tmp_path / "anim"
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        for i in range(2):
            frames = [Image.new("RGB", (5, 5), colour), Image.new("RGB", (5, 5), (0, 255, 0))]
            (root / name).mkdir(parents=True, exist_ok=True)
            frames[0].save(root / name / f"{i}.gif", save_all=True, append_images=frames[1:])
    rgba = Image.new("RGBA", (5, 5), (0, 0, 255, 0))  # fully transparent blue
    rgba.save(root / "blue" / "clear.png")
    ds = load_dataset(config(root, test_fraction=0.4, validation_fraction=0), progress=False)
    for image, label in zip(np.concatenate([ds.x_train, ds.x_test]),
                            np.concatenate([ds.y_train, ds.y_test])):
        expected = (1, 0, 0) if ds.class_names[label] == "red" else (0, 0, 1)
        assert np.allclose(image[2, 2], expected, atol=0.02)


def test_sixteen_bit_png_keeps_high_byte(tmp_path):
    for name, value in (("dark", 1000), ("light", 60000)):
        for i in range(2):
            (tmp_path / "d" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((3, 3), value, dtype=np.uint16)).save(
                tmp_path / "d" / name / f"{i}.png")
    ds = load_dataset(config(tmp_path / "d", test_fraction=0.5, validation_fraction=0),
                      progress=False)
    values = {ds.class_names[y]: x[0, 0, 0] for x, y in zip(ds.x_train, ds.y_train)}
    assert values == pytest.approx({"dark": (1000 >> 8) / 255, "light": (60000 >> 8) / 255})


def test_mixed_sizes_need_image_size(tmp_path):
    root = tmp_path / "sizes"
    solid(root / "cat" / "small.png", COLOURS["cat"], size=(6, 4))
    solid(root / "cat" / "other.png", COLOURS["cat"], size=(6, 4))
    solid(root / "dog" / "big.png", COLOURS["dog"], size=(10, 8))
    solid(root / "dog" / "other.png", COLOURS["dog"], size=(6, 4))
    with pytest.raises(DataError) as err:
        load_dataset(config(root), progress=False)
    message = str(err.value)
    assert "cat/other.png is 4x6" in message and "dog/big.png is 8x10" in message
    assert "data.image_size" in message
    ds = load_dataset(config(root, image_size=(5, 7)), progress=False)
    assert ds.input_shape == (5, 7, 3)
    check_colours(ds.x_train, ds.y_train, ds.class_names)


def test_corrupt_image_errors_or_is_skipped(tmp_path):
    root = class_folders(tmp_path / "c", split=False)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError) as err:
        load_dataset(config(root), progress=False)
    assert "broken.png" in str(err.value) and "on_corrupt: skip" in str(err.value)
    ds = load_dataset(config(root, on_corrupt="skip"), progress=False)
    assert ds.notes["corrupt_images_skipped"] == 1
    assert ds.notes["corrupt_image_examples"] == ["dog/broken.png"]
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 18


def test_hidden_files_and_other_extensions_are_ignored(tmp_path):
    root = class_folders(tmp_path / "h", split=False)
    (root / "cat" / "._000.png").write_bytes(b"macOS resource fork, not an image")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("a data set")
    ds = load_dataset(config(root), progress=False)
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 18


def test_no_images_found_names_extensions(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "t" / name).mkdir(parents=True)
        (tmp_path / "t" / name / "a.tiff").write_bytes(b"II*\x00")
    with pytest.raises(DataError) as err:
        load_dataset(config(tmp_path / "t"), progress=False)
    assert ".jpg .jpeg .png .bmp .gif" in str(err.value) and "data.format" in str(err.value)
    with pytest.raises(DataError) as err:
        load_dataset(config(tmp_path / "t", format="image_folder"), progress=False)
    assert "does not look like format 'image_folder'" in str(err.value)
    assert ".png" in str(err.value)


def test_test_class_without_training_folder(tmp_path):
    root = class_folders(tmp_path / "x")
    solid(root / "test" / "zebra" / "0.png", (0, 0, 0))
    with pytest.raises(DataError) as err:
        load_dataset(config(root), progress=False)
    assert "zebra" in str(err.value) and str(root / "train") in str(err.value)


def test_single_class_is_an_error(tmp_path):
    for i in range(4):
        solid(tmp_path / "one" / "cat" / f"{i}.png", COLOURS["cat"])
    with pytest.raises(DataError) as err:
        load_dataset(config(tmp_path / "one"), progress=False)
    assert "same label ('cat')" in str(err.value) and "two classes" in str(err.value)


# --- arrays -----------------------------------------------------------------------------------

def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def labels_for(n, classes=3):
    return np.arange(n) % classes


def test_npz_uint8_without_channel_axis(tmp_path):
    x = np.arange(12 * 4 * 5, dtype=np.uint8).reshape(12, 4, 5)
    path = save_npz(tmp_path / "set.npz", x_train=x, y_train=labels_for(12),
                    x_test=x[:6], y_test=labels_for(6))
    ds = load_dataset(config(path), progress=False)
    assert ds.input_shape == (4, 5, 1) and ds.class_names == ["0", "1", "2"]
    assert ds.source["format"] == "npz" and ds.name == "set"
    together = np.concatenate([ds.x_train, ds.x_val])
    assert sorted(together[:, 0, 0, 0] * 255) == pytest.approx(sorted(x[:, 0, 0].astype(float)))
    np.testing.assert_allclose(np.sort(ds.x_test[:, 0, 0, 0]), np.sort(x[:6, 0, 0]) / 255)


def test_npz_float_in_unit_range_is_kept(tmp_path):
    x = np.random.default_rng(0).random((10, 3, 3, 3)).astype(np.float64)
    path = save_npz(tmp_path / "f.npz", x_train=x, y_train=labels_for(10, 2))
    ds = load_dataset(config(path, validation_fraction=0, test_fraction=0.2), progress=False)
    assert ds.x_train.dtype == np.float32
    assert sorted(ds.x_train[:, 0, 0, 0].tolist() + ds.x_test[:, 0, 0, 0].tolist()) == \
        pytest.approx(sorted(x[:, 0, 0, 0].tolist()), abs=1e-6)


@pytest.mark.parametrize("x,message", [
    (np.full((6, 4, 4), 300.0), "range from 300.0 to 300.0"),
    (np.full((6, 4, 4), -1, dtype=np.int16), "range from -1 to -1"),
    (np.zeros((6, 3, 8, 8), dtype=np.uint8), "x.transpose(0, 2, 3, 1)"),
])
def test_npz_bad_arrays(tmp_path, x, message):
    path = save_npz(tmp_path / "bad.npz", x_train=x, y_train=labels_for(6, 2))
    with pytest.raises(DataError) as err:
        load_dataset(config(path), progress=False)
    assert message in str(err.value) and str(path) in str(err.value)


def test_npz_missing_arrays(tmp_path):
    path = save_npz(tmp_path / "keys.npz", images=np.zeros((4, 2, 2)), labels=np.zeros(4))
    with pytest.raises(DataError) as err:
        load_dataset(config(path), progress=False)
    assert "found images, labels" in str(err.value) and "numpy.savez" in str(err.value)


def test_npz_one_hot_labels_resize_and_gray(tmp_path):
    x = np.zeros((8, 4, 4, 3), dtype=np.uint8)
    x[:, :, :, 0] = 255  # pure red: luma 0.299
    y = np.eye(2)[labels_for(8, 2)]
    path = save_npz(tmp_path / "oh.npz", x_train=x, y_train=y)
    ds = load_dataset(config(path, channels=1, image_size=(2, 3)), progress=False)
    assert ds.input_shape == (2, 3, 1) and ds.notes["one_hot_labels_converted"] is True
    assert np.allclose(ds.x_train, round(255 * 0.299) / 255)
    assert sorted(np.concatenate([ds.y_train, ds.y_val, ds.y_test]).tolist()) == [0] * 4 + [1] * 4


def test_npz_text_and_keras_imdb_token_ids(tmp_path):
    texts = np.array(["good film", "bad film", "great", "awful", "fine", "poor"])
    path = save_npz(tmp_path / "texts.npz", x_train=texts, y_train=labels_for(6, 2))
    ds = load_dataset(config(path, validation_fraction=0, test_fraction=0.34), progress=False)
    assert ds.kind == "text" and ds.x_train.dtype == object
    assert sorted(ds.x_train.tolist() + ds.x_test.tolist()) == sorted(texts.tolist())

    folder = tmp_path / "keras"
    folder.mkdir()
    ids = np.empty(4, dtype=object)
    # Keras ids: 1 = start, 2 = unknown, word index + 3 for words.
    ids[:] = [[1, 4, 5], [1, 6, 2], [1, 4, 6], [1, 5, 5]]
    np.savez(folder / "imdb.npz", x_train=ids, y_train=np.array([1, 0, 1, 0]),
             x_test=ids, y_test=np.array([1, 0, 1, 0]))
    with pytest.raises(DataError) as err:
        load_dataset(config(folder / "imdb.npz"), progress=False)
    assert "imdb_word_index.json" in str(err.value)
    (folder / "imdb_word_index.json").write_text('{"great": 1, "movie": 2, "dull": 3}')
    ds = load_dataset(config(folder / "imdb.npz"), progress=False)
    assert sorted(ds.x_test.tolist()) == ["dull [UNK]", "great dull", "great movie",
                                          "movie movie"]
    assert ds.notes["texts_rebuilt_from_token_ids"] is True


def test_npz_refuses_pickled_objects(tmp_path):
    import datetime

    evil = np.empty(3, dtype=object)
    evil[:] = [datetime.date(2020, 1, 1)] * 3
    path = save_npz(tmp_path / "evil.npz", x_train=evil, y_train=labels_for(3, 2))
    with pytest.raises(DataError) as err:
        load_dataset(config(path), progress=False)
    assert "refusing to load datetime.date" in str(err.value)


def write_cifar(folder, n_per_batch=6, hundred=False):
    """Fake CIFAR batches in the python pickle layout Keras caches (bytes keys, Python 2 style)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n, offset):
        labels = [(offset + i) % 3 for i in range(n)]
        planes = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        for i, label in enumerate(labels):
            planes[i, 0], planes[i, 1], planes[i, 2] = 10 * (label + 1), 100, 200
        planes[:, :, 1:, :] = rng.integers(0, 255, (n, 3, 31, 32))
        key = b"fine_labels" if hundred else b"labels"
        return {b"data": planes.reshape(n, 3072), key: labels, b"batch_label": b"x"}

    def dump(name, value):
        with open(folder / name, "wb") as f:
            pickle.dump(value, f, protocol=2)

    if hundred:
        dump("train", batch(3 * n_per_batch, 0))
        dump("test", batch(n_per_batch, 1))
        dump("meta", {b"fine_label_names": [b"apple", b"bee", b"cloud"]})
    else:
        for i in range(1, 4):
            dump(f"data_batch_{i}", batch(n_per_batch, i))
        dump("test_batch", batch(n_per_batch, 0))
        dump("batches.meta", {b"label_names": [b"plane", b"car", b"bird"]})
    return folder


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_pickle_batches(tmp_path, hundred):
    folder = write_cifar(tmp_path / ("cifar-100-python" if hundred else "cifar-10-batches-py"),
                         hundred=hundred)
    ds = load_dataset(config(tmp_path), progress=False)  # finds the Keras-named subfolder
    assert ds.source["format"] == "cifar_pickle" and ds.source["path"] == str(folder)
    assert ds.input_shape == (32, 32, 3)
    assert ds.class_names == (["apple", "bee", "cloud"] if hundred else ["plane", "car", "bird"])
    assert len(ds.y_train) + len(ds.y_val) == 18 and len(ds.y_test) == 6
    # Channel-first rows become channels-last pixels: red encodes the label.
    for image, label in zip(ds.x_train, ds.y_train):
        assert image[0, 0].tolist() == pytest.approx([10 * (label + 1) / 255, 100 / 255, 200 / 255])


def test_cifar_pickle_refuses_code(tmp_path):
    folder = write_cifar(tmp_path / "c")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f)
    with pytest.raises(DataError) as err:
        load_dataset(config(folder), progress=False)
    assert "data_batch_1" in str(err.value) and "refusing to load" in str(err.value)
    assert not (tmp_path / "pwned").exists()


def write_idx(folder, n_train=9, n_test=3):
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, array):
        header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(
            int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 3
        write(f"{prefix}-images-idx3-ubyte", np.repeat(labels * 50, 28 * 28).reshape(n, 28, 28))
        write(f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def test_idx_files_and_keras_cached_fashion_mnist(tmp_path, monkeypatch):
    folder = write_idx(tmp_path / "keras" / "datasets" / "fashion-mnist")
    ds = load_dataset(config(folder), progress=False)
    assert ds.source["format"] == "idx" and ds.input_shape == (28, 28, 1)
    assert np.allclose(ds.x_test[:, 5, 5, 0], ds.y_test * 50 / 255)

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("SECUREML_DATA_DIR", raising=False)
    ds = load_dataset("fashion_mnist", progress=False)
    assert ds.source["origin"] == "keras_cache"
    assert ds.class_names[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    assert len(ds.class_names) == 10


# --- cache and parallel decoding ----------------------------------------------------------------

def count_decodes(monkeypatch):
    calls = []
    original = images_module._decode_file

    def counting(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(images_module, "_decode_file", counting)
    return calls


def test_cache_skips_decoding_and_tracks_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_CACHE_DIR", str(tmp_path / "cache"))
    root = class_folders(tmp_path / "data")
    calls = count_decodes(monkeypatch)
    first = load_dataset(config(root), progress=False)
    assert len(calls) == 24
    second = load_dataset(config(root, limit=9), progress=False)  # other limit, same cache
    third = load_dataset(config(root), progress=False)
    assert len(calls) == 24
    np.testing.assert_array_equal(first.x_train, third.x_train)
    assert len(second.y_train) + len(second.y_val) == 9
    assert first.notes == third.notes and first.source == third.source
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"
    assert not [p for p in root.rglob("*") if p.suffix not in (".png", "")]  # nothing written

    solid(root / "train" / "cat" / "000.png", (1, 2, 3), size=(6, 4))  # contents change
    os.utime(root / "train" / "cat" / "000.png", ns=(1, 1))
    changed = load_dataset(config(root), progress=False)
    assert len(calls) == 48
    assert changed.source["fingerprint"] != first.source["fingerprint"]
    load_dataset(config(root, image_size=(3, 3)), progress=False)  # decoding option: new entry
    assert len(calls) == 72


def test_parallel_decoding_matches_one_process(tmp_path, monkeypatch):
    root = class_folders(tmp_path / "p", per_class=20)
    monkeypatch.setenv("SECUREML_CACHE_DIR", str(tmp_path / "c1"))
    monkeypatch.setenv("SECUREML_DATA_WORKERS", "1")
    one = load_dataset(config(root), progress=False)
    monkeypatch.setenv("SECUREML_CACHE_DIR", str(tmp_path / "c2"))
    monkeypatch.setenv("SECUREML_DATA_WORKERS", "2")
    monkeypatch.setattr(images_module, "_PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(images_module, "_CHUNK", 7)
    assert images_module._worker_count(66) == (2 if images_module.sys.platform == "linux" else 1)
    two = load_dataset(config(root), progress=False)
    np.testing.assert_array_equal(one.x_train, two.x_train)
    np.testing.assert_array_equal(one.y_test, two.y_test)
