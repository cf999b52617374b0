"""Experiment configs: validation messages, variants, overrides."""
import pytest

from secureml.config import apply_override, load_config
from secureml.errors import ConfigError

BASE = {"name": "t", "data": {"name": "digits"}, "model": {"name": "image_cnn"},
        "training": {"epochs": 2, "batch_size": 32}}


def config(**changes):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    raw.update(changes)
    return raw


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(raw)
    return str(err.value)


def test_defaults_are_filled_in():
    resolved = load_config(config()).to_dict()
    variant = resolved["variants"]["main"]
    assert variant["training"] == {"epochs": 2, "batch_size": 32, "optimizer": "adam",
                                   "learning_rate": 0.001, "momentum": 0.0,
                                   "eval_batch_size": 512, "plain_step_pairs": 10}
    assert variant["model"] == {"name": "image_cnn", "filters": [32, 64], "kernel_size": 3,
                                "dense_units": 64, "activation": "relu"}
    assert resolved["data"]["validation_fraction"] == 0.1
    assert resolved["runtime"]["strategy"] == "auto"


def test_unknown_key_names_the_path_and_suggests_the_fix():
    message = error_of(config(training={"epochz": 3}))
    assert "training" in message and "unknown key 'epochz'" in message
    assert "did you mean 'epochs'" in message


def test_unknown_top_level_key():
    message = error_of(config(trainig={}))
    assert "unknown key 'trainig'" in message and "did you mean 'training'" in message


def test_bad_choice_lists_the_allowed_values():
    message = error_of(config(training={"optimizer": "adamw"}))
    assert "'adamw' is not allowed" in message and "'adam'" in message and "'sgd'" in message


def test_wrong_type_and_range():
    assert "epochs must be an integer >= 1, got 'many'" in \
        error_of(config(training={"epochs": "many"}))
    assert "epochs must be an integer >= 1, got 0" in error_of(config(training={"epochs": 0}))
    assert "learning_rate must be a finite number > 0, got -1" in \
        error_of(config(training={"learning_rate": -1}))


def test_unknown_model_and_model_options_are_validated():
    assert "available models: image_cnn, text_lstm" in error_of(config(model={"name": "resnet"}))
    message = error_of(config(model={"name": "image_cnn", "units": 3}))
    assert "unknown key 'units'" in message


def test_unknown_defence_and_evaluation_names():
    assert "unknown defence 'dpsgd'" in error_of(config(defences={"dpsgd": {}}))
    assert "unknown evaluation 'robust'" in error_of(config(evaluation={"robust": {}}))


def test_variants_override_the_base():
    raw = config(variants={"plain": {}, "big": {"training": {"epochs": 5},
                                                "model": {"dense_units": 128}}})
    variants = {v.name: v for v in load_config(raw).variants}
    assert variants["plain"].training.epochs == 2
    assert variants["big"].training.epochs == 5 and variants["big"].training.batch_size == 32
    assert variants["big"].model["dense_units"] == 128
    assert variants["big"].model["filters"] == [32, 64]


def test_variant_with_other_architecture_drops_base_model_options():
    raw = config(model={"name": "image_cnn", "dense_units": 7},
                 variants={"text": {"model": {"name": "text_lstm"}}})
    (variant,) = load_config(raw).variants
    assert variant.model == {"name": "text_lstm", "embedding_dim": 16, "lstm_units": 128}


def test_variant_errors_name_the_variant():
    message = error_of(config(variants={"fast": {"training": {"batch_size": 0}}}))
    assert "variants.fast.training" in message
    message = error_of(config(variants={"fast": {"optimizer": "sgd"}}))
    assert "variants.fast" in message and "unknown key 'optimizer'" in message
    assert "variant name 'bad name' must be letters" in error_of(config(variants={"bad name": {}}))


def test_overrides_use_yaml_values_and_create_paths():
    raw = config()
    apply_override(raw, "training.epochs=7")
    apply_override(raw, "data.limit=100")
    apply_override(raw, "training.learning_rate=1e-2")
    resolved = load_config(raw)
    assert resolved.variants[0].training.epochs == 7
    assert resolved.data.limit == 100
    assert resolved.variants[0].training.learning_rate == pytest.approx(0.01)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_override(raw, "training.epochs")


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must contain a mapping"):
        load_config(listy)


def test_shipped_experiments_are_valid():
    from pathlib import Path
    experiments = sorted(Path(__file__).parent.parent.glob("experiments/*.yaml"))
    assert experiments, "no experiments shipped"
    for path in experiments:
        if path.name.startswith("bench"):
            continue  # benchmark grids have their own schema
        config_ = load_config(path)
        assert config_.variants, path


def test_membership_audit_default_and_its_removal():
    raw = config(variants={"plain": {}, "quiet": {"evaluation": {"membership": None}},
                           "lira": {"evaluation": {"membership": {"attacks": ["lira_offline"]}}}})
    variants = {v.name: v for v in load_config(raw).variants}
    assert variants["plain"].evaluation["membership"].attacks == ["loss", "confidence", "entropy"]
    assert "membership" not in variants["quiet"].evaluation  # null removes it, default or not
    assert variants["lira"].evaluation["membership"].attacks == ["lira_offline"]
    off = load_config(config(audit={"membership": False})).variants[0]
    assert "membership" not in off.evaluation


def test_resolved_config_loads_back_to_the_same_experiment():
    raw = config(variants={"plain": {}, "big": {"training": {"epochs": 5}}})
    resolved = load_config(raw).to_dict()
    assert load_config(resolved).to_dict() == resolved


def test_missing_model_is_named():
    raw = config()
    del raw["model"]
    assert "no model; set model.name" in error_of(raw)
