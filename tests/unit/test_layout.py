"""The project's layout and set-up: the seam between engine and built-ins, CI, learn2learn."""

import ast
import importlib
import importlib.metadata as importlib_metadata
import sys
from pathlib import Path

import pytest

import sparsekit
from sparsekit.registry import KINDS, reload_plugins

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def test_engine_never_imports_the_builtin_plugins():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m
            for m in _imported_modules(path)
            if m.split(".")[0] in {"sparsekit_plugins", "plugins"}
        )
        for path in (ROOT / "sparsekit").rglob("*.py")
    }
    offenders = {path: mods for path, mods in offenders.items() if mods}
    assert not offenders, f"the engine imports built-in plugins directly: {offenders}"


def test_builtins_are_declared_as_entry_points_of_group_sparsekit():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["project"]["entry-points"]["sparsekit"]
    installed = {
        ep.name: ep.value
        for ep in importlib_metadata.distribution("sparsekit").entry_points
        if ep.group == "sparsekit"
    }
    assert installed == declared
    assert all(target.startswith("sparsekit_plugins.") for target in declared.values())
    assert pyproject["tool"]["setuptools"]["package-dir"]["sparsekit_plugins"] == "plugins"
    assert pyproject["project"]["requires-python"] == ">=3.10,<3.14"


def test_blocking_every_builtin_entry_point_leaves_no_component(monkeypatch):
    """The engine has no second route to the built-ins: without their entry points, nothing."""
    names = [
        ep.name
        for ep in importlib_metadata.distribution("sparsekit").entry_points
        if ep.group == "sparsekit"
    ]
    monkeypatch.setenv("SPARSEKIT_DISABLE_PLUGINS", ",".join(f"sparsekit:{n}" for n in names))
    try:
        reload_plugins()
        assert [r for r in sparsekit.list_plugins() if r.distribution == "sparsekit"] == []
        for kind in KINDS:
            assert [r.name for r in sparsekit.list_plugins(kind)] == [], kind
    finally:
        monkeypatch.undo()
        reload_plugins()
    assert {"penalty", "learner", "loss_combiner", "dataset", "model"} <= {
        r.kind for r in sparsekit.list_plugins()
    }


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert commands[-1] == "make test"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"\n{target}: $(STAMP)" in makefile, f"make {target} must depend on the set-up"


def test_learn2learn_is_installed_with_its_compiled_extensions():
    learn2learn = importlib.import_module("learn2learn")
    assert learn2learn.__version__ == "0.2.0"
    meta_dataset = importlib.import_module("learn2learn.data.meta_dataset")
    suffix = Path(meta_dataset.__file__).name
    assert suffix.endswith(".so") or suffix.endswith(".pyd"), (
        f"learn2learn.data.meta_dataset is not the compiled extension: {suffix}"
    )
    assert sys.version_info >= (3, 10)


@pytest.mark.parametrize("kind", ["penalty", "learner", "loss_combiner", "dataset", "model"])
def test_foundation_kinds_map_to_their_hooks(kind):
    plural = {"penalty": "penalties"}.get(kind, f"{kind}s")
    assert KINDS[kind].hook == f"sparsekit_register_{plural}"
