"""Configuration errors a user meets are clear and name the culprit."""

import pytest

from sparsekit import ConfigError, Experiment, ExperimentConfig, PluginError, load_config


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lam: 0.1\nlearning_rate: 0.01\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rate'.*valid keys:.*lam"):
        load_config(path)


def test_unknown_nested_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizer.learning_rate'"):
        Experiment(optimizer={"learning_rate": 0.1})


def test_negative_lambda_is_rejected():
    with pytest.raises(ConfigError, match=r"lam: .*greater than or equal to 0.*-0.5"):
        Experiment(lam=-0.5)


def test_unknown_plugin_name_is_named_with_closest_match():
    with pytest.raises(PluginError, match=r"'grouplasso'.*Did you mean 'group_lasso'"):
        Experiment(penalty="grouplasso", steps=1).run()


def test_bad_component_param_names_component():
    with pytest.raises(ConfigError, match=r"penalty 'group_lasso': unknown config key 'alpha'"):
        Experiment(penalty={"name": "group_lasso", "alpha": 1}, steps=1).run()


def test_unknown_task_lists_available():
    with pytest.raises(ValueError, match=r"no task 'sky'.*segmentation.*depth"):
        Experiment(tasks=["sky"], steps=1, device="cpu").run()


def test_unreadable_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lam: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("penalty: l1\noptimizer:\n  name: sgd_prox\n")
    config = load_config(path, ["lam=0.25", "optimizer.lr=0.05", "tasks=[depth, edges]"])
    assert config.lam == 0.25 and config.optimizer.lr == 0.05
    assert config.optimizer.name == "sgd_prox" and config.tasks == ["depth", "edges"]
    assert config.penalty == {"name": "l1"}


def test_config_round_trips_through_yaml_dict():
    config = ExperimentConfig(penalty={"name": "group_lasso"}, lam=0.3, tasks=["depth"])
    assert ExperimentConfig(**config.to_dict()) == config


def test_cpu_amp_is_a_clear_error():
    with pytest.raises(ConfigError, match="amp .* needs a CUDA device"):
        Experiment(amp=True, device="cpu", steps=1).run()
