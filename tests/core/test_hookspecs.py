"""Every hook spec has a contract check, a kind name, and a section in docs/plugins.md."""

import inspect
from pathlib import Path

from sparsekit import hookspecs
from sparsekit.registry import KINDS
from sparsekit.reporting.tables import kinds_markdown
from sparsekit.testing import CHECKS

HOOKS_BY_KIND = {name: kind.hook for name, kind in KINDS.items()}

DOCS = (
    next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    / "docs"
    / "plugins.md"
)


def _hook_functions():
    return [
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("sparsekit_") and hasattr(obj, "sparsekit_spec")
    ]


def test_hookspecs_are_mapped_to_kinds():
    assert sorted(_hook_functions()) == sorted(HOOKS_BY_KIND.values())


def test_every_hook_has_a_contract_check():
    for kind in HOOKS_BY_KIND:
        assert kind in CHECKS, f"kind {kind!r} has no contract check in sparsekit.testing"


def test_every_hook_is_documented():
    text = DOCS.read_text()
    for kind, hook in HOOKS_BY_KIND.items():
        assert hook in text, f"{hook} is not documented in docs/plugins.md"
        assert f"`{kind}`" in text, f"kind {kind!r} is not documented in docs/plugins.md"


def test_every_hook_has_a_docstring():
    for hook in HOOKS_BY_KIND.values():
        assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"{hook} has no docstring"


def test_every_hook_names_its_kinds_interface():
    """A hook's one-line docstring points at the interface whose docstring is the contract."""
    for kind in KINDS.values():
        doc = getattr(hookspecs, kind.hook).__doc__ or ""
        assert f"sparsekit.interfaces.{kind.interface.__name__}" in doc, kind.hook
        assert f"(kind ``{kind.name}``)" in doc, kind.hook
        contract = kind.interface.__doc__ or ""
        assert f"Kind ``{kind.name}`` (hook ``{kind.hook}``)" in contract, kind.interface


def test_the_kinds_in_the_docs_are_generated_from_the_interfaces():
    """docs/plugins.md holds exactly what ``sparsekit plugins --markdown`` prints."""
    text = DOCS.read_text()
    start = text.index("<!-- generated: sparsekit plugins --markdown -->\n") + len(
        "<!-- generated: sparsekit plugins --markdown -->\n"
    )
    end = text.index("\n<!-- end of generated -->")
    assert text[start:end] == kinds_markdown().rstrip()
