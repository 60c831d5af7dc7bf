"""The built wheel installs into a clean virtual environment and works there.

The clean environment gets sparsekit only from the wheel; torch and the other dependencies come
from this environment's site-packages through a ``.pth`` line (nothing is downloaded). A path
added that way is not a site directory, so this environment's editable install of sparsekit is
not seen there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())

CHECK = """
import importlib.metadata as md, importlib.resources as res, sys, json
import sparsekit, sparsekit_plugins
from sparsekit.registry import list_plugins
print(json.dumps({
    "file": sparsekit.__file__,
    "version": sparsekit.__version__,
    "metadata_version": md.version("sparsekit"),
    "typed": res.files("sparsekit").joinpath("py.typed").is_file(),
    "installer": res.files("sparsekit").joinpath("install_learn2learn.py").is_file(),
    "kinds": sorted({row.kind for row in list_plugins()}),
    "license": md.metadata("sparsekit")["License"],
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    (path,) = out.glob("sparsekit-*.whl")
    return path


def test_the_wheel_ships_every_package_of_the_source_tree(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).parent.as_posix() for n in names if n.endswith("/__init__.py")}
    expected = {
        p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "sparsekit").rglob("__init__.py")
    }
    expected |= {
        "sparsekit_plugins" + p.parent.relative_to(ROOT / "plugins").as_posix().join(["/", ""])
        if p.parent != ROOT / "plugins"
        else "sparsekit_plugins"
        for p in (ROOT / "plugins").rglob("__init__.py")
    }
    assert shipped == {e.rstrip("/") for e in expected}
    assert "sparsekit/py.typed" in names and "sparsekit/install_learn2learn.py" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_the_wheel_installs_into_a_clean_environment_and_runs(wheel, tmp_path):
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Run outside the repository, whose sparsekit/ would otherwise be found first.
    found = subprocess.run(
        [str(python), "-c", CHECK], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    info = json.loads(found.stdout)
    assert Path(info["file"]).is_relative_to(site), "sparsekit must come from the wheel"
    assert info["version"] == info["metadata_version"]
    assert info["typed"] and info["installer"] and info["license"] == "MIT"
    assert "logger" in info["kinds"] and "model" in info["kinds"]
    cli = subprocess.run(
        [str(env / "bin" / "sparsekit"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert cli.stdout.strip() == f"sparsekit {info['version']}"
    runs = subprocess.run(
        [str(env / "bin" / "sparsekit"), "plugins", "--kind", "learner"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert "maml" in runs.stdout and runs.stderr == ""
