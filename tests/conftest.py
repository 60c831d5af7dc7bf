"""Shared test configuration."""

import os
import signal
import sys
import textwrap

import pytest
import torch

# Two cores are shared by the whole suite; one intra-op thread per test keeps timings stable.
torch.set_num_threads(int(os.environ.get("SPARSEKIT_TEST_THREADS", "1")))

# The Ctrl-C tests send SIGINT to this process and to the processes it starts. A suite started
# in the background of a non-interactive shell inherits SIGINT ignored (and passes that on to
# every child), so the tests would see runs that cannot be interrupted: deliver it as Python does.
signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _make_distribution(root, dist, version, entry_points, modules):
    """A throwaway installed distribution: a *.dist-info with entry_points.txt, plus modules."""
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[sparsekit]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def make_distribution():
    """``make_distribution(root, dist, version, entry_points, modules)`` (use with ``site``)."""
    return _make_distribution


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path for throwaway distributions; the registry is rebuilt after."""
    from sparsekit.registry import reload_plugins

    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("thirdparty_")]:
        del sys.modules[name]
    monkeypatch.undo()
    reload_plugins()
