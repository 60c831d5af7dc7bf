"""The command line: run with overrides and a progress bar, list plugins, report a run."""

import json
import re
import subprocess
import sys

from sparsekit.cli import main

CONFIG = """\
dataset: {name: shapes, n_train: 32, n_val: 8, n_test: 8, image_size: 16}
tasks: [segmentation, edges]
penalty: group_lasso
lam: 0.2
steps: 6
batch_size: 8
eval_every: 3
device: cpu
"""


def test_run_then_report(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(CONFIG)
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(config),
                "--set",
                "lam=0.3",
                "--set",
                "optimizer.lr=0.01",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "segmentation/miou ↑" in out and "group sp. %" in out
    # The progress bar, with loss, λ and sparsity: 6 steps and 6 // 3 debiasing steps.
    assert "8/8" in err and "group sp." in err
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["config"]["lam"] == 0.3 and saved["config"]["optimizer"]["lr"] == 0.01
    assert main(["report", str(run_dir)]) == 0
    assert "edges/mae ↓" in capsys.readouterr().out


def test_plugins_lists_builtins(capsys):
    assert main(["plugins", "--kind", "penalty"]) == 0
    out = capsys.readouterr().out
    assert "group_lasso" in out and "l1" in out and "sparsekit" in out


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("lam: -1\n")
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparsekit: error: lam:") and "Traceback" not in err
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_user_errors_name_the_culprit_without_a_traceback(tmp_path, capsys):
    cases = {
        "tasks: [segmentation, sky]\n": r"no task 'sky'.*it has: segmentation",
        "penalty: grup_lasso\n": r"'grup_lasso'.*Did you mean 'group_lasso'",
        "learning_rate: 0.1\n": r"unknown config key 'learning_rate'",
    }
    for i, (text, message) in enumerate(cases.items()):
        config = tmp_path / f"bad{i}.yaml"
        config.write_text("steps: 1\ndevice: cpu\n" + text)
        assert main(["run", str(config), "--run-dir", str(tmp_path / f"run{i}")]) == 2, text
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # after the progress bar, if it had started
        assert last.startswith("sparsekit: error: ") and "Traceback" not in err
        assert re.search(message, last), (text, err)
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_python_dash_m_is_the_same_cli():
    done = subprocess.run(
        [sys.executable, "-m", "sparsekit", "plugins", "--kind", "learner"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "mtl" in done.stdout
