"""The contract suite every plugin component must pass, shipped for third-party authors.

sparsekit's own ``tests/contract/`` run these checks over every registered component, so a new
plugin is tested the moment it registers. A third-party package can do the same::

    from sparsekit.testing import check_component
    def test_my_penalty(tmp_path):
        check_component("penalty", MyPenalty, tmp_path)

This module is also a pytest plugin (entry point ``pytest11``) providing the fixture
``sparsekit_registry``. The checks run components on tiny doubles of their own
(:mod:`sparsekit.testing.doubles`), so a third-party plugin is checked without sparsekit's
built-in plugins installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsekit.interfaces import Component
from sparsekit.registry import Registry, get_registry
from sparsekit.testing.checks import (
    CHECKS,
    check_config,
    check_regrowth,
    contract_model,
    make_instance,
    save_contract_run,
)
from sparsekit.testing.doubles import contract_components

__all__ = [
    "CHECKS",
    "check_component",
    "check_regrowth",
    "contract_model",
    "make_instance",
    "save_contract_run",
]


@pytest.fixture
def sparsekit_registry() -> Registry:
    """The registry of the running process."""
    return get_registry()


def check_component(kind: str, cls: type[Component], workdir: Path) -> None:
    """Every contract check for a component of ``kind``, with the doubles registered."""
    with contract_components():
        check_config(cls, workdir)
        CHECKS[kind](cls, workdir)
