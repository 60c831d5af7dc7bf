"""learn2learn is imported quietly where it exists, and its absence is one clear error."""

import subprocess
import sys

import pytest

from sparsekit.errors import MissingDependency
from sparsekit_plugins.learners._meta import import_learn2learn


def test_a_missing_learn2learn_names_the_command_that_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "learn2learn", None)  # import learn2learn → ImportError
    with pytest.raises(MissingDependency, match=r"python -m sparsekit\.install_learn2learn"):
        import_learn2learn()


def test_a_meta_learner_without_learn2learn_is_exit_2_with_one_line(tmp_path):
    script = (
        "import sys; sys.modules['learn2learn'] = None\n"
        "from sparsekit.cli import main\n"
        "sys.exit(main(['run', sys.argv[1]]))\n"
    )
    config = tmp_path / "meta.yaml"
    config.write_text(
        "dataset: {name: shapes, n_train: 16, n_val: 8, n_test: 8, image_size: 16}\n"
        "learner: maml\nlam: learned\nsteps: 1\ndevice: cpu\n"
        f"run_dir: {tmp_path / 'run'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "install_learn2learn" in done.stderr


def test_importing_learn2learn_prints_and_warns_nothing():
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "from sparsekit_plugins.learners._meta import import_learn2learn\n"
        "import_learn2learn()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
