"""Every registered component of every kind passes its kind's contract.

Parametrised over the live registry, so a new plugin is tested the moment it registers.
"""

import pytest

from sparsekit.registry import KINDS, get_registry
from sparsekit.testing import CHECKS, check_component

CASES = [(row.kind, row.name) for row in get_registry().rows()]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_component_contract(kind, name, tmp_path):
    check_component(kind, get_registry().get(kind, name), tmp_path)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_builtin_components(kind):
    assert get_registry().names(kind), f"no built-in {kind} plugin is registered"


def test_every_kind_has_a_contract_check():
    assert set(CHECKS) == set(KINDS)
