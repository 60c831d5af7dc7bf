"""The project's layout and set-up: the seam between engine and built-ins, CI, learn2learn."""

import ast
import importlib
import importlib.metadata as importlib_metadata
import subprocess
import sys
from pathlib import Path

import pytest

import sparsekit
from sparsekit.registry import KINDS, reload_plugins

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


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
    import tomllib

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


# --- the layering of docs/architecture.md ----------------------------------------------------


def test_import_contracts_of_pyproject_are_kept():
    """The layers contract of pyproject.toml (import-linter), run as ``make lint`` runs it."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


#: Function-level imports of sparsekit modules, each needed for an optional dependency.
LAZY_IMPORTS = {
    # sparsekit.testing imports pytest, which only the test extras install.
    ("plugins/masks/run_pattern.py", "sparsekit.testing"),
}


def test_sparsekit_is_imported_at_module_level():
    lazy = set()
    for path in _sources("sparsekit", "plugins"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                    "sparsekit"
                ):
                    lazy.add((str(path.relative_to(ROOT)), inner.module))
    assert lazy == LAZY_IMPORTS


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _sources("sparsekit", "plugins"):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.name}: {length} lines")
    assert not too_long


def test_core_tests_import_no_builtin_plugin():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imported_modules(path) if m.split(".")[0] == "sparsekit_plugins"
        )
        for path in _sources("tests/core")
    }
    assert not {path: mods for path, mods in offenders.items() if mods}


#: Built-in names that are ordinary words, and the literals in sparsekit/ that use the word,
#: not the plugin: (file, literal) pairs.
WORD_NAMES_IN_USE = {
    ("sparsekit/config/experiment.py", "random"),  # init: random weights, not the mask
    ("sparsekit/tasks/pixel.py", "none"),  # a depth normalisation, not the regrowth policy
    ("sparsekit/registry.py", "none"),  # "found: none" in a message
}


#: Built-in names that are no English word, though they have neither "_" nor a digit.
COINED_NAMES = {"maml", "fomaml", "anil", "mtl", "proxssi"}


def _distinctive(name: str) -> bool:
    return "_" in name or any(c.isdigit() for c in name) or name in COINED_NAMES


def test_the_core_names_no_builtin_plugin():
    """No built-in plugin's name in sparsekit/ outside docstrings: a distinctive name nowhere in
    code, comments or strings; a name that is an ordinary word not as a literal of its own."""
    import io
    import re
    import tokenize

    names = {r.name for r in sparsekit.list_plugins() if r.distribution == "sparsekit"}
    alternatives = "|".join(sorted(n for n in names if _distinctive(n)))
    distinctive = re.compile(r"(?<![\w.])(" + alternatives + r")(?!\w)")
    found = set()
    for path in _sources("sparsekit"):
        source = path.read_text(encoding="utf-8")
        docstrings = {
            node.body[0].value.lineno
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        where = str(path.relative_to(ROOT))
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.STRING and token.start[0] in docstrings:
                continue
            found.update((where, m.group(1)) for m in distinctive.finditer(token.string))
            if token.type == tokenize.STRING:
                literal = token.string.strip("\"'")
                if literal in names and not _distinctive(literal):
                    found.add((where, literal))
    assert found - WORD_NAMES_IN_USE == set()


def test_no_source_or_doc_file_is_ignored_by_git():
    """A file git ignores is in no clone: the package would not import from a fresh checkout."""
    files = [
        str(path.relative_to(ROOT))
        for base in ("sparsekit", "plugins", "tests", "docs", "configs", "benchmarks")
        for path in (ROOT / base).rglob("*")
        if path.is_file()
        and not {"__pycache__", "_work"} & set(path.parts)  # outputs, meant to be ignored
        and path.suffix != ".pyc"
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(files),
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.split()
    assert ignored == []
