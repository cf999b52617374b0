"""Bad input as a careless user or an attacker would give it: non-finite and impossible numbers
in every config section and on every command line, bad labels, sizes that cannot fit in
memory, broken files. Each is refused with one line naming the key and what is allowed."""
import time
from pathlib import Path

import numpy as np
import pytest

import secureml.runner  # noqa: F401  (TensorFlow is imported here, not inside a timed call)
from secureml import memory, schema
from secureml.cli import main
from secureml.data import load_dataset
from secureml.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(ROOT / "experiments" / "quickstart.yaml")
DP = "defences.dp_sgd={target_epsilon: 3, "


def error_line(capsys, argv) -> str:
    """Run the CLI in-process; assert exit 2 and one `secureml: error:` line; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secureml: error: "), err
    return lines[0]


def run_line(capsys, tmp_path, *overrides) -> str:
    argv = ["run", QUICKSTART, "--out", str(tmp_path), "--quiet"]
    for override in overrides:
        argv += ["--set", override]
    return error_line(capsys, argv)


@pytest.mark.parametrize("override, expected", [
    # training
    ("training.epochs=.nan", "training.epochs must be an integer >= 1, got nan"),
    ("training.epochs=1e300", "training.epochs must be an integer in [1, 2147483647], got 1e+300"),
    ("training.epochs=2.5", "training.epochs must be an integer >= 1, got 2.5"),
    ("training.learning_rate=.inf", "training.learning_rate must be a finite number > 0, got inf"),
    ("training.learning_rate=1e39", "training.learning_rate must be a finite number in "
                                    "(0, 3.40282e+38], got 1e+39"),
    ("training.batch_size=true", "training.batch_size must be an integer >= 1, got True"),
    ("training.momentum=1", "training.momentum must be a finite number in [0, 1), got 1"),
    # top level and data
    ("seed=-1", "seed must be an integer in [0, 4294967295], got -1"),
    ("seed=4294967296", "seed must be an integer in [0, 4294967295], got 4294967296"),
    ("seed=.nan", "seed must be an integer in [0, 4294967295], got nan"),
    ("data.validation_fraction=-.inf",
     "data.validation_fraction must be a finite number in [0, 1), got -inf"),
    ("data.image_size=[32, .nan]", "data.image_size[1] must be an integer >= 1, got nan"),
    ("data.limit=false", "data.limit must be an integer >= 2, got False"),
    ("data.sequence_length=0", "data.sequence_length must be an integer >= 1, got 0"),
    # model options
    ("model.dense_units=0", "model.dense_units must be an integer >= 1, got 0"),
    ("model.filters=[32, .inf]", "model.filters[1] must be an integer >= 1, got inf"),
    # defences
    (DP + "l2_norm_clip: .inf}", "dp_sgd.l2_norm_clip must be a finite number in (0, 1e+06]"),
    (DP + "l2_norm_clip: 1e300}", "dp_sgd.l2_norm_clip must be a finite number in (0, 1e+06], "
                                  "got 1e+300"),
    (DP + "delta: 1}", "dp_sgd.delta must be a finite number in (0, 1), got 1"),
    ("defences.dp_sgd={noise_multiplier: .nan}", "dp_sgd.noise_multiplier must be a finite "
                                                 "number in (0, 1000] (0 means no privacy"),
    ("defences.adversarial_training={epsilon: .inf}",
     "adversarial_training: epsilon must be a finite number >= 0"),
    ("defences.adversarial_training={steps: 0}", "adversarial_training.steps must be an integer "
                                                 ">= 1, got 0"),
    ("defences.adversarial_training={trades_beta: .nan}",
     "adversarial_training.trades_beta must be a finite number >= 0, got nan"),
    # evaluations
    ("evaluation.robustness.epsilons=[0, .nan]", "robustness: epsilons[1] must be a finite "
                                                 "number >= 0, got nan"),
    ("evaluation.robustness.steps=-1", "robustness.steps must be an integer >= 1, got -1"),
    ("evaluation.membership.confidence_level=1",
     "membership.confidence_level must be a finite number in (0.5, 1), got 1"),
    ("evaluation.membership.seed=-5", "membership.seed must be an integer in [0, 4294967295]"),
    ("evaluation.encrypted_inference={tolerance: .inf}",
     "encrypted_inference.tolerance must be a finite number > 0, got inf"),
    ("evaluation.encrypted_inference={scale_bits: 100}",
     "encrypted_inference.scale_bits must be an integer in [20, 59], got 100"),
    # runtime, audit, output: numbers and booleans are not interchangeable
    ("runtime.cpu_devices=.inf", "runtime.cpu_devices must be an integer in [1, 64], got inf"),
    ("audit.membership=1", "audit.membership: expected true or false, got 1"),
    ("output.save_model=.nan", "output.save_model: expected true or false, got nan"),
])
def test_bad_setting_is_one_line_naming_key_and_range(capsys, tmp_path, override, expected):
    line = run_line(capsys, tmp_path, override)
    assert expected in line, line
    assert not any(tmp_path.iterdir()), "refused before a run folder was made"


SCHEDULE = ["--n", "1000", "--batch-size", "10", "--epochs", "2"]


@pytest.mark.parametrize("argv, expected", [
    (["privacy", "noise", "--epsilon", "nan", *SCHEDULE],
     "argument --epsilon: must be a finite number > 0, got nan"),
    (["privacy", "noise", "--epsilon", "inf", *SCHEDULE],
     "argument --epsilon: must be a finite number > 0, got inf"),
    (["privacy", "epsilon", "--noise", "inf", *SCHEDULE],
     "argument --noise: must be a finite number in (0, 1000]"),
    (["privacy", "epsilon", "--noise", "1e30", *SCHEDULE],
     "argument --noise: must be a finite number in (0, 1000]"),
    (["privacy", "epsilon", "--noise", "1", *SCHEDULE, "--n", "0"],
     "argument --n: must be an integer >= 1, got 0"),
    (["privacy", "noise", "--epsilon", "3", *SCHEDULE, "--epochs", "nan"],
     "argument --epochs: must be an integer >= 1, got nan"),
    (["privacy", "noise", "--epsilon", "3", *SCHEDULE, "--delta", "1"],
     "argument --delta: must be a finite number in (0, 1), got 1"),
    (["he", "demo", "--samples", "0"], "argument --samples: must be an integer >= 1, got 0"),
    (["he", "spec", "--model", "m", "--out", "o", "--scale-bits", "nan"],
     "argument --scale-bits: must be an integer in [20, 59], got nan"),
    (["he", "keygen", "--model", "m", "--out", "o", "--poly-degree", "5"],
     "argument --poly-degree: invalid choice: 5"),
])
def test_bad_number_argument_is_one_line(capsys, argv, expected):
    line = error_line(capsys, argv)
    assert expected in line and f"see secureml {argv[0]} {argv[1]} --help" in line, line


def test_bench_grid_seed_is_checked(capsys):
    line = error_line(capsys, ["bench", str(ROOT / "experiments" / "bench_digits_small.yaml"),
                               "--set", "seeds=[0, -1]", "--list"])
    assert "seeds[1] must be an integer in [0, 4294967295], got -1" in line


def test_python_entry_points_check_their_numbers():
    from secureml.defences.dp_sgd import make_plan
    from secureml.training import TrainingConfig, train

    with pytest.raises(ConfigError, match=r"training.learning_rate must be a finite number > 0, "
                                          r"got nan"):
        train(lambda: None, np.zeros((4, 2)), np.arange(4) % 2,
              config={"learning_rate": float("nan")})
    with pytest.raises(ConfigError, match="training.epochs must be an integer >= 1, got 0"):
        train(lambda: None, np.zeros((4, 2)), np.arange(4) % 2, config=TrainingConfig(epochs=0))
    with pytest.raises(ConfigError, match="train: seed must be an integer in"):
        train(lambda: None, np.zeros((4, 2)), np.arange(4) % 2, seed=-1)
    with pytest.raises(ConfigError, match="data_size must be an integer >= 1, got nan"):
        make_plan(data_size=float("nan"), batch_size=10, epochs=1, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="noise_multiplier must be a finite number"):
        make_plan(data_size=100, batch_size=10, epochs=1, noise_multiplier=float("inf"))


def test_make_private_checks_its_arguments():
    import tensorflow as tf
    from secureml.defences.dp_sgd import make_private

    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(ConfigError, match="make_private.l2_norm_clip must be a finite number"):
        make_private(model, data_size=100, batch_size=10, epochs=1, target_epsilon=3,
                     l2_norm_clip=float("inf"))
    with pytest.raises(ConfigError, match="make_private: data_size must be an integer >= 1"):
        make_private(model, data_size=0, batch_size=10, epochs=1, target_epsilon=3)
    with pytest.raises(ConfigError, match="make_private.learning_rate must be a finite number"):
        make_private(model, data_size=100, batch_size=10, epochs=1, target_epsilon=3,
                     learning_rate=float("nan"))


def test_schema_number_types():
    assert schema.coerce(schema.PositiveInt, 3.0, "k") == 3
    assert schema.coerce(schema.PositiveFloat, "1e-5", "k") == 1e-5
    assert schema.coerce(schema.PositiveFloat, np.float32(0.5), "k") == 0.5
    assert schema.coerce(schema.Seed, 2**32 - 1, "k") == 2**32 - 1
    for tp, value in ((float, float("nan")), (int, float("inf")), (float, True), (int, "x"),
                      (schema.Probability, 1.5), (schema.OpenProbability, 0.0)):
        with pytest.raises(ConfigError, match="^k must be "):
            schema.coerce(tp, value, "k")
    parse = schema.arg_type(schema.PositiveInt)
    assert parse("1e3") == 1000
    with pytest.raises(Exception, match="must be an integer >= 1, got -2"):
        parse("-2")


# --- labels -----------------------------------------------------------------------------------

def npz(path, y_train, y_test, n_test=None):
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    x = np.random.default_rng(0).random((len(y_train) + len(y_test), 4, 4)).astype("float32")
    np.savez(path, x_train=x[:len(y_train)], y_train=y_train, x_test=x[len(y_train):],
             y_test=y_test)
    return {"path": str(path)}


def test_nan_label_is_refused_not_a_new_class(tmp_path):
    y_train = np.tile(np.arange(10, dtype=float), 6)
    y_train[17] = np.nan
    with pytest.raises(DataError, match=r"training split: label 17 is missing \(nan\)"):
        load_dataset(npz(tmp_path / "d.npz", y_train, np.tile(np.arange(10), 2)), progress=False)


def test_nan_label_through_the_cli(capsys, tmp_path):
    y_train = np.tile(np.arange(3, dtype=float), 10)
    y_train[4] = np.nan
    data = npz(tmp_path / "d.npz", y_train, np.arange(3))
    line = run_line(capsys, tmp_path / "runs", f"data={{path: {data['path']}}}")
    assert "label 4 is missing (nan)" in line


@pytest.mark.parametrize("y_train, y_test, expected", [
    (np.tile([0.0, 1.5], 5), [0, 1], r"label 1 is 1.5, not a whole number"),
    (np.tile([0, 1, np.inf], 5), [0, 1], r"label 2 is missing \(inf\)"),
    (np.tile(["cat", "dog"], 5), [0, 1], r"the training labels are text such as 'cat'; the "
                                         r"test labels are numbers such as 0"),
    (np.tile([0, 1], 5), [0, 1, 2], r"1 test examples are of classes the training data lacks "
                                    r"\('2'\)"),
])
def test_bad_labels_are_refused(tmp_path, y_train, y_test, expected):
    with pytest.raises(DataError, match=expected):
        load_dataset(npz(tmp_path / "d.npz", y_train, y_test), progress=False)


def test_integral_float_labels_still_load(tmp_path):
    data = load_dataset(npz(tmp_path / "d.npz", np.tile([0.0, 1.0, 2.0], 5), [0, 1, 2]),
                        progress=False)
    assert data.class_names == ["0", "1", "2"]


def test_missing_number_in_a_csv_label_column(tmp_path):
    rows = [f"text {i},{i % 2}" for i in range(20)] + ["text x,nan"]
    (tmp_path / "t.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"label 20 is missing \('nan'\)"):
        load_dataset({"path": str(tmp_path / "t.csv")}, progress=False)


def test_train_refuses_nan_and_fractional_labels():
    from secureml.training import train

    for y in (np.array([0, 1, np.nan, 1]), np.array([0, 1, 0.5, 1]), np.array([0, -1, 0, 1])):
        with pytest.raises(ConfigError, match="labels must be class ids 0, 1, 2, ...; label"):
            train(lambda: None, np.zeros((4, 2)), y)


# --- memory -----------------------------------------------------------------------------------

def test_absurd_image_size_is_refused_before_allocating(capsys, tmp_path):
    started = time.perf_counter()
    line = run_line(capsys, tmp_path, "data.image_size=[100000, 100000]")
    assert time.perf_counter() - started < 5
    assert "1797 images of 100000x100000x1 (as float32) need about 65.4 TiB" in line
    assert "set data.image_size" in line


def test_available_memory_is_read():
    available = memory.available_bytes()
    assert available is None or available > 2**20


def test_image_folder_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image
    from secureml.data import images

    for label in ("a", "b"):
        for i in range(3):
            (tmp_path / label).mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / label / f"{i}.png")
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**30)

    def decode(*_):
        raise AssertionError("decoded although the images cannot fit")

    monkeypatch.setattr(images, "_decode_all", decode)
    with pytest.raises(ConfigError, match=r"6 images of 10000x10000x3 \(as float32\) need about "
                                          r"6.7 GiB of memory, but 1.0 GiB is available"):
        load_dataset({"path": str(tmp_path), "image_size": [10000, 10000]}, progress=False)


def test_token_ids_that_cannot_fit_are_refused(monkeypatch):
    from secureml.data import TextVectorizer

    vectorizer = TextVectorizer(vocab_size=20, sequence_length=10**6).fit(["a b c", "d e f"])
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**20)
    with pytest.raises(ConfigError, match="2 texts as token ids of sequence_length 1000000 "
                                          r"\(int32\) need about 7.6 MiB"):
        vectorizer(["a b", "c d"])


def test_model_that_cannot_fit_is_refused(monkeypatch):
    from secureml.models import check_memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 8 * 2**30)
    check_memory("text_lstm", (100,), 2, 64, vocab_size=10_000)
    with pytest.raises(ConfigError, match=r"text_lstm .*16,000,\d+,\d+ parameters"):
        check_memory("text_lstm", (100,), 2, 64, vocab_size=10**9)
    with pytest.raises(ConfigError, match=r"image_cnn on inputs of shape \(4000, 4000, 3\)"):
        check_memory("image_cnn", (4000, 4000, 3), 10, 64)


# --- files and command lines ------------------------------------------------------------------

def test_broken_config_files(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {name: digits\n")
    assert "bad.yaml is not valid YAML: line 3, column 1: expected ',' or '}'" in \
        error_line(capsys, ["run", str(bad)])
    assert "does not exist" in error_line(capsys, ["run", str(tmp_path / "missing.yaml")])
    (tmp_path / "folder.yaml").mkdir()
    assert "folder.yaml is a folder" in error_line(capsys, ["run", str(tmp_path / "folder.yaml")])
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert "is not a text file" in error_line(capsys, ["run", str(binary)])


def test_unreadable_config_file(capsys, tmp_path, monkeypatch):
    path = tmp_path / "secret.yaml"
    path.write_text("name: x\n")
    read_text = Path.read_text

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    assert f"config file {path} cannot be read: Permission denied" in \
        error_line(capsys, ["run", str(path)])


@pytest.mark.parametrize("args, expected", [
    (["--variant", "nope"], "no variant 'nope'"),
    (["--set", "trainig.epochs=3"], "unknown key 'trainig' (did you mean 'training'?)"),
    (["--set", "training.epochs=many"], "training.epochs must be an integer >= 1, got 'many'"),
    (["--set", "training"], "expected key.path=value"),
    (["--set", "training.epochs.x=1"], "'epochs' is 30, not a mapping"),
    (["--bogus"], "unrecognized arguments: --bogus (see secureml --help)"),
])
def test_bad_run_arguments(capsys, tmp_path, args, expected):
    assert expected in error_line(capsys, ["run", QUICKSTART, "--out", str(tmp_path), *args])


def test_out_must_be_a_writable_folder(capsys, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("")
    for out in (afile, afile / "sub"):
        line = error_line(capsys, ["run", QUICKSTART, "--out", str(out)])
        assert f"--out {out}: {afile} is a file, not a folder" in line
    monkeypatch.setattr("os.access", lambda *_: False)
    assert "permission denied" in error_line(capsys, ["run", QUICKSTART, "--out",
                                                      str(tmp_path / "new")])


def test_no_command_and_missing_subcommand(capsys):
    assert "no command given" in error_line(capsys, [])
    assert "privacy: the following arguments are required" in error_line(capsys, ["privacy"])


def test_environment_errors_name_the_file_and_bugs_keep_their_traceback(capsys, tmp_path,
                                                                         monkeypatch):
    import secureml.report

    def denied(*_):
        raise PermissionError(13, "Permission denied", "/reports/report.md")

    monkeypatch.setattr(secureml.report, "write_report", denied)
    assert error_line(capsys, ["report", str(tmp_path)]) == \
        "secureml: error: /reports/report.md: Permission denied"

    def bug(*_):
        raise OSError("no file involved")

    monkeypatch.setattr(secureml.report, "write_report", bug)
    with pytest.raises(OSError, match="no file involved"):
        main(["report", str(tmp_path)])


def test_multi_line_messages_are_printed_on_one_line(capsys, monkeypatch):
    import secureml.report

    def refuse(*_):
        raise DataError("first line\nsecond line")

    monkeypatch.setattr(secureml.report, "write_report", refuse)
    assert error_line(capsys, ["report", "x"]) == "secureml: error: first line second line"


@pytest.mark.parametrize("name,shape,options", [
    ("image_cnn", (8, 8, 1), {}), ("text_lstm", (12,), {"vocab_size": 50}),
    ("he_cnn", (8, 8, 1), {}), ("he_text", (12,), {"vocab_size": 50})])
def test_the_memory_check_leaves_models_made_before_it_working(name, shape, options):
    # Building in a throwaway graph once broke every Keras model of the process ("invalid
    # state"): a user's own model, or a test's, after any `secureml run` from Python.
    from secureml.models import build_model, check_memory

    model = build_model(name, shape, 3, **options)
    x = np.zeros((2, *shape), "float32" if len(shape) == 3 else "int32")
    before = model.predict(x, verbose=0)
    check_memory(name, shape, 3, 32, **options)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
