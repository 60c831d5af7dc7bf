"""The plugin registry: discovery by entry point, errors, warnings, disabling."""

import pytest

import sparsekit
from sparsekit.errors import PluginError, PluginLoadWarning
from sparsekit.registry import reload_plugins

PENALTY_MODULE = """
    import torch
    import sparsekit
    from sparsekit.interfaces import ComponentConfig, Penalty

    class {cls}(Penalty):
        name = "{name}"
        granularity = "element"

        class Config(ComponentConfig):
            pass

        def value(self, weight):
            return weight.pow(2).sum()

        def prox(self, weight, step, lam, precond=None):
            return weight / (1 + 2 * step * lam)

        def active_mask(self, weight):
            return weight != 0

    @sparsekit.hookimpl
    def sparsekit_register_penalties(register):
        register({cls})
"""


def test_builtins_are_found_through_entry_points():
    rows = sparsekit.list_plugins("penalty")
    assert {("group_lasso", "sparsekit"), ("l1", "sparsekit")} <= {
        (r.name, r.distribution) for r in rows
    }
    assert all(r.version == sparsekit.__version__ for r in rows if r.distribution == "sparsekit")


def test_unknown_name_lists_available_and_closest_match():
    with pytest.raises(PluginError, match=r"'grup_lasso'.*Did you mean 'group_lasso'.*l1"):
        sparsekit.create("penalty", "grup_lasso")


def test_unknown_kind_lists_kinds():
    with pytest.raises(PluginError, match=r"plugin kind 'penalties'.*Did you mean 'penalty'"):
        sparsekit.list_plugins("penalties")


def test_create_validates_params():
    with pytest.raises(sparsekit.ConfigError, match="init_log_vr"):
        sparsekit.create("loss_combiner", "uncertainty", init_log_vr=1.0)
    combiner = sparsekit.create("loss_combiner", "uncertainty", init_log_var=0.5)
    assert combiner.config.init_log_var == 0.5


def test_third_party_penalty_is_listed_and_usable_by_name(site, make_distribution):
    make_distribution(
        site,
        "thirdparty-ridge",
        "1.2.3",
        {"ridge": "thirdparty_ridge"},
        {"thirdparty_ridge": PENALTY_MODULE.format(cls="Ridge", name="ridge")},
    )
    reload_plugins()
    rows = {(r.kind, r.name): r for r in sparsekit.list_plugins()}
    assert rows[("penalty", "ridge")].distribution == "thirdparty-ridge"
    assert rows[("penalty", "ridge")].version == "1.2.3"
    result = sparsekit.Experiment(
        dataset={"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 16},
        tasks=["segmentation"],
        penalty="ridge",
        lam=0.1,
        steps=2,
        batch_size=8,
        eval_every=1,
        device="cpu",
    ).run()
    assert result.config["penalty"] == {"name": "ridge"}
    assert result.metrics["segmentation"]["miou"] >= 0


def test_a_duplicate_name_names_both_distributions_and_the_built_in_stays(site, make_distribution):
    make_distribution(
        site,
        "thirdparty-a",
        "1.0",
        {"a": "thirdparty_a"},
        {"thirdparty_a": PENALTY_MODULE.format(cls="A", name="group_lasso")},
    )
    with pytest.warns(
        PluginLoadWarning, match=r"group_lasso.*sparsekit.*thirdparty-a|thirdparty-a.*sparsekit"
    ):
        reload_plugins()
    rows = {(r.kind, r.name): r for r in sparsekit.list_plugins()}
    assert rows[("penalty", "group_lasso")].distribution == "sparsekit"


def test_failing_plugin_warns_and_the_rest_works(site, make_distribution):
    make_distribution(
        site,
        "thirdparty-broken",
        "0.1",
        {"broken": "thirdparty_broken"},
        {"thirdparty_broken": "raise ImportError('missing native library')\n"},
    )
    with pytest.warns(
        PluginLoadWarning, match=r"'broken'.*thirdparty-broken.*missing native library"
    ):
        reload_plugins()
    assert "group_lasso" in get_names("penalty")


def test_disable_env_blocks_plugins(site, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DISABLE_PLUGINS", "penalties")
    reload_plugins()
    assert get_names("penalty") == []
    assert "mtl" in get_names("learner")


def get_names(kind):
    return [r.name for r in sparsekit.list_plugins(kind)]
