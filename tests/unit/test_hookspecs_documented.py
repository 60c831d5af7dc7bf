"""Every hook spec has a contract check, a kind name, and a section in docs/plugins.md."""

import inspect
from pathlib import Path

from sparsekit import hookspecs
from sparsekit.testing import CHECKS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def _hook_functions():
    return [
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("sparsekit_") and hasattr(obj, "sparsekit_spec")
    ]


def test_hookspecs_are_mapped_to_kinds():
    assert sorted(_hook_functions()) == sorted(hookspecs.HOOKS_BY_KIND.values())


def test_every_hook_has_a_contract_check():
    for kind in hookspecs.HOOKS_BY_KIND:
        assert kind in CHECKS, f"kind {kind!r} has no contract check in sparsekit.testing"


def test_every_hook_is_documented():
    text = DOCS.read_text()
    for kind, hook in hookspecs.HOOKS_BY_KIND.items():
        assert hook in text, f"{hook} is not documented in docs/plugins.md"
        assert f"`{kind}`" in text, f"kind {kind!r} is not documented in docs/plugins.md"


def test_every_hook_has_a_docstring():
    for hook in hookspecs.HOOKS_BY_KIND.values():
        assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"{hook} has no docstring"
