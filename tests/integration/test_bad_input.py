"""Bad input, one row per probe: what a careless or hostile user gives, and what they get back.

Every error row must end in exactly one line on standard error, ``sparsekit: error: ...``,
naming the field or file, with exit status 2; nothing may be written where it was refused, and
no message may advise loading a file with ``weights_only=False``. The behaviour rows check that
what a user means is what runs.
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from sparsekit.cli import main
from sparsekit.config import load_config
from sparsekit.errors import PluginLoadWarning
from sparsekit.registry import list_plugins, reload_plugins

TINY = {
    "dataset": {"name": "shapes", "n_train": 16, "n_val": 8, "n_test": 8, "image_size": 16},
    "tasks": ["segmentation", "edges"],
    "steps": 2,
    "batch_size": 8,
    "eval_every": 2,
    "device": "cpu",
}


@dataclass
class World:
    """A directory with a config, a finished run (``good``) and room for damaged copies."""

    root: Path
    config: Path
    good: Path

    def file(self, name, content):
        path = self.root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def damaged(self, name, damage):
        """A copy of the finished run with ``damage(directory)`` done to it."""
        directory = self.root / name
        if not directory.exists():
            shutil.copytree(self.good, directory)
            damage(directory)
        return str(directory)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    good = root / "good"
    assert main(["run", str(config), "--run-dir", str(good), "--quiet"]) == 0
    return World(root, config, good)


def snapshot(path):
    """Every file under ``path`` (or ``path`` itself) with the hash of its bytes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def write_result(directory, text):
    (directory / "result.json").write_text(text)


def without_model_hash(directory):
    """A result.json as written before results recorded their model's hash."""
    record = json.loads((directory / "result.json").read_text())
    record.pop("model_sha256")
    (directory / "result.json").write_text(json.dumps(record))


def run(world, *sets, run_dir=None):
    argv = ["run", str(world.config), "--quiet"]
    for pair in sets:
        argv += ["--set", pair]
    return argv + ["--run-dir", run_dir or str(world.root / "refused")]


# Each row: (id, argv built from the world, what the one line must say). Exit status 2.
ERROR_PROBES = [
    ("binary-config", lambda w: ["run", w.file("bin.yaml", os.urandom(300) + b"\xff")], "UTF-8"),
    (
        "latin-1-config",
        lambda w: ["run", w.file("latin.yaml", "steps: 2\ncaf\xe9: 1\n".encode("latin-1"))],
        "is not UTF-8 text (byte 0xe9",
    ),
    ("lr-inf", lambda w: run(w, "optimizer.lr=inf"), "optimizer.lr: Input should be a finite"),
    ("weight-decay-inf", lambda w: run(w, "optimizer.weight_decay=.inf"), "weight_decay"),
    ("lam-nan", lambda w: run(w, "lam=nan"), "lam: lam must be greater than or equal to 0"),
    ("betas-out-of-range", lambda w: run(w, "optimizer.betas=[2, 3]"), "betas must be in [0, 1)"),
    ("seed-2**70", lambda w: run(w, f"seed={2**70}"), "seed: Input should be less than"),
    ("seed-negative", lambda w: run(w, "seed=-1"), "seed: Input should be greater than"),
    ("steps-true", lambda w: run(w, "steps=true"), "steps: expected int, not true/false"),
    ("steps-fraction", lambda w: run(w, "steps=2.5"), "steps"),
    (
        "duplicate-yaml-key",
        lambda w: ["run", w.file("dup.yaml", "steps: 2\nlam: 0.1\nsteps: 3\n")],
        "duplicate key 'steps' (first given at line 1) at line 3",
    ),
    ("bad-override-yaml", lambda w: run(w, "tasks=[segmentation"), "override 'tasks=["),
    ("unknown-key", lambda w: run(w, "stpes=3"), "unknown config key 'stpes'"),
    ("file-as-run-dir", lambda w: run(w, run_dir=w.file("a-file", "text")), "is a file"),
    (
        "run-dir-inside-a-file",
        lambda w: run(w, run_dir=w.file("b-file", "text") + "/run"),
        "is a file, not a directory (inside",
    ),
    ("existing-run-dir", lambda w: run(w, run_dir=str(w.good)), "already holds a run"),
    (
        "resume-another-config",
        lambda w: ["run", str(w.config), "--set", "steps=3", "--run-dir", str(w.good), "--resume"],
        "holds a run of another config",
    ),
    (
        "truncated-result",
        lambda w: [
            "report",
            w.damaged("truncated", lambda d: write_result(d, (d / "result.json").read_text()[:99])),
        ],
        "result.json is not a complete sparsekit result",
    ),
    (
        "result-a-list",
        lambda w: ["report", w.damaged("a-list", lambda d: write_result(d, "[1, 2, 3]"))],
        "result.json is not a complete sparsekit result (it holds a list",
    ),
    (
        "result-wrong-fields",
        lambda w: ["report", w.damaged("fields", lambda d: write_result(d, '{"metrics": 5}'))],
        "result.json is not a complete sparsekit result",
    ),
    (
        "result-of-an-unfinished-run",
        lambda w: [
            "report",
            w.damaged("unfinished", lambda d: write_result(d, '{"status": "running"}')),
        ],
        "result.json is of a run that did not complete",
    ),
    ("no-result", lambda w: ["report", str(w.root)], "missing result.json"),
    (
        "random-model",
        lambda w: [
            "compact",
            w.damaged("random", lambda d: (d / "model.pt").write_bytes(os.urandom(4096))),
        ],
        "model.pt is not the model result.json was saved with",
    ),
    (
        "empty-model",
        lambda w: ["export", w.damaged("empty", lambda d: (d / "model.pt").write_bytes(b""))],
        "model.pt is not the model result.json was saved with",
    ),
    (
        "missing-model",
        lambda w: ["finetune", w.damaged("missing", lambda d: (d / "model.pt").unlink())],
        "model.pt is missing",
    ),
    (
        "random-model-of-an-old-result",
        lambda w: [
            "compact",
            w.damaged(
                "old-random",
                lambda d: (
                    without_model_hash(d),
                    (d / "model.pt").write_bytes(os.urandom(4096)),
                ),
            ),
        ],
        "model.pt is not a readable sparsekit model checkpoint",
    ),
    (
        "empty-model-of-an-old-result",
        lambda w: [
            "compact",
            w.damaged(
                "old-empty", lambda d: (without_model_hash(d), (d / "model.pt").write_bytes(b""))
            ),
        ],
        "model.pt is not a readable sparsekit model checkpoint",
    ),
    (
        "finetune-unknown-key",
        lambda w: ["finetune", str(w.good), "--set", "mdoe=head"],
        "unknown finetune key 'mdoe'",
    ),
    (
        "finetune-out-is-a-file",
        lambda w: ["finetune", str(w.good), "--run-dir", w.file("c-file", "text")],
        "--run-dir: ",
    ),
    ("sweep-without-a-sweep", lambda w: ["sweep", "report", str(w.root)], "no sweep in"),
]

if not torch.cuda.is_available():
    ERROR_PROBES.append(("cuda-without-cuda", lambda w: run(w, "device=cuda"), "no CUDA device"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [pytest.param(argv, message, id=name) for name, argv, message in ERROR_PROBES],
)
def test_bad_input_is_one_line_naming_the_culprit(world, capsys, argv, message):
    args = argv(world)
    refused = world.root / "refused"
    before = snapshot(world.root)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("sparsekit: error: "), err
    assert message in err, err
    assert "weights_only=False" not in err and "Traceback" not in err
    assert not refused.exists()  # nothing written where a run was refused
    if args[0] == "run":
        assert snapshot(world.root) == before  # a refused directory is left as it was


def test_a_report_of_several_directories_reports_every_readable_one(world, capsys):
    bad = world.damaged("bad-for-report", lambda d: write_result(d, "{"))
    assert main(["report", str(world.good), bad, str(world.good)]) == 2
    out, err = capsys.readouterr()
    assert out.count("| good ") == 2
    assert err.count("\n") == 1 and "bad-for-report/result.json" in err


# -- what a user means is what runs ---------------------------------------------------------


def test_finetune_set_options_are_applied(world, capsys):
    out_dir = world.root / "ft"
    args = ["finetune", str(world.good), "--run-dir", str(out_dir), "--quiet"]
    args += ["--set", "mode=head", "--set", "tasks=[segmentation]", "--set", "steps=1"]
    assert main(args) == 0
    finetune = json.loads((out_dir / "result.json").read_text())["config"]["finetune"]
    assert finetune["mode"] == "head" and finetune["tasks"] == ["segmentation"]
    assert finetune["steps"] == 1
    assert "finetune (head)" in capsys.readouterr().out
    assert main(args) == 2  # the directory now holds a run
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args[:-6], "--set", "steps=2", "--overwrite"]) == 0
    assert json.loads((out_dir / "result.json").read_text())["config"]["finetune"]["steps"] == 2


@pytest.mark.parametrize("name", ["out #2", "2024", "~/home-run"])
def test_run_dir_is_a_path_as_typed(world, monkeypatch, name):
    monkeypatch.chdir(world.root)
    monkeypatch.setenv("HOME", str(world.root / "home"))
    assert main(run(world, run_dir=name)) == 0
    where = world.root / "home" / "home-run" if name.startswith("~") else world.root / name
    assert (where / "result.json").is_file()


def test_a_dotted_override_merges_into_a_component_spec(world, tmp_path):
    merged = load_config(world.config, ["dataset.n_train=12"]).dataset
    assert merged == {**TINY["dataset"], "n_train": 12}
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump({**TINY, "dataset": "shapes"}))
    assert load_config(named, ["dataset.n_train=12"]).dataset == {"name": "shapes", "n_train": 12}
    unset = tmp_path / "unset.yaml"
    unset.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "dataset"}))
    assert load_config(unset, ["dataset.n_train=12"]).dataset == {
        "name": "default",
        "n_train": 12,
    }
    assert load_config(world.config, ["dataset=digits"]).dataset == {"name": "digits"}


def test_yaml_numbers_are_read_as_a_user_writes_them(world):
    assert load_config(world.config, ["optimizer.lr=3e-3"]).optimizer.lr == 0.003


# -- plugins that are not right -------------------------------------------------------------

NO_NAME = """
    import sparsekit
    from sparsekit.interfaces import ComponentConfig, Penalty

    class Nameless(Penalty):
        class Config(ComponentConfig):
            pass

    @sparsekit.hookimpl
    def sparsekit_register_penalties(register):
        register(Nameless)
"""

NO_CONFIG = """
    import sparsekit
    from sparsekit.interfaces import Penalty

    class NoConfig(Penalty):
        name = "no_config"

        class Config:  # a plain class, not a ComponentConfig (pydantic) model
            lr = 0.1

    @sparsekit.hookimpl
    def sparsekit_register_penalties(register):
        register(NoConfig)
"""

DUPLICATE = """
    import sparsekit
    from sparsekit.interfaces import ComponentConfig, Penalty

    class Impostor(Penalty):
        name = "l1"

        class Config(ComponentConfig):
            pass

    @sparsekit.hookimpl
    def sparsekit_register_penalties(register):
        register(Impostor)
"""

MISSPELT_HOOK = """
    import sparsekit

    @sparsekit.hookimpl
    def sparsekit_register_penalty(register):
        pass
"""

NOT_A_COMPONENT = """
    import sparsekit

    class Plain:
        name = "plain"

    @sparsekit.hookimpl
    def sparsekit_register_penalties(register):
        register(Plain)
"""

PLUGIN_PROBES = [
    ("no-name", NO_NAME, "has no `name`"),
    ("no-config", NO_CONFIG, "Config"),
    ("duplicate-name", DUPLICATE, "'l1'"),
    ("misspelt-hook", MISSPELT_HOOK, "did you mean 'sparsekit_register_penalties'"),
    ("not-a-component", NOT_A_COMPONENT, "is not a Penalty"),
]


@pytest.mark.parametrize(
    ("source", "message"),
    [pytest.param(source, message, id=name) for name, source, message in PLUGIN_PROBES],
)
def test_a_malformed_plugin_is_skipped_with_a_warning_and_the_rest_works(
    site, make_distribution, capsys, source, message
):
    make_distribution(
        site, "thirdparty-bad", "0.3", {"bad": "thirdparty_bad"}, {"thirdparty_bad": source}
    )
    with pytest.warns(PluginLoadWarning) as caught:
        reload_plugins()
    text = " ".join(str(w.message) for w in caught)
    assert message in text and "thirdparty-bad" in text, text
    rows = {(r.kind, r.name): r.distribution for r in list_plugins()}
    assert rows[("penalty", "l1")] == "sparsekit" and ("penalty", "group_lasso") in rows
    assert main(["plugins"]) == 0
    assert "group_lasso" in capsys.readouterr().out


def test_an_unknown_name_in_the_disable_variable_is_warned_about(site, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DISABLE_PLUGINS", "penaltys")
    with pytest.warns(PluginLoadWarning, match=r"names penaltys.*the names there are: .*penalties"):
        reload_plugins()
    assert "group_lasso" in {r.name for r in list_plugins("penalty")}
