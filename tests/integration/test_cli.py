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


def test_version_and_help_with_examples(capsys):
    from sparsekit import __version__

    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"sparsekit {__version__}"
    for command in ("run", "finetune", "sweep", "export", "plugins", "config"):
        try:
            main([command, "--help"])
        except SystemExit as stop:
            assert stop.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"sparsekit {command}" in out, command
    try:
        main(["sweep", "--help"])
    except SystemExit:
        pass
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert (
        usage.startswith("usage: sparsekit sweep SWEEP.yaml") and "sweep report SWEEP_DIR" in usage
    )


def test_config_fields_list_every_field_with_type_default_and_description(capsys):
    from sparsekit.config import ExperimentConfig

    assert main(["config", "fields"]) == 0
    out = capsys.readouterr().out
    for name, info in ExperimentConfig.model_fields.items():
        if name == "optimizer":
            assert "optimizer.lr" in out and "learning rate" in out
            continue
        assert re.search(rf"^  {name} ", out, re.M), name
        assert info.description and info.description.split()[0] in out, name
    assert re.search(r"^  steps +int +default 600$", out, re.M)
    assert main(["config", "fields", "--finetune"]) == 0
    assert "add_tasks" in capsys.readouterr().out


def test_plugin_params_from_the_config_schema_and_its_docstring(capsys):
    assert main(["plugins", "--params", "small_resnet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model small_resnet (sparsekit")
    assert re.search(r"^  widths +tuple\[int, \.\.\.\] +default \[16, 32, 64\]$", out, re.M), out
    assert re.search(r"^ +output channels of each stage\.$", out, re.M)  # from its docstring
    assert main(["plugins", "--params", "random"]) == 0  # a mask and a regrowth policy
    out = capsys.readouterr().out
    assert "mask random" in out and "regrowth random" in out and "prob" in out
    assert main(["plugins", "--params", "group_laso"]) == 2
    assert "Did you mean 'group_lasso'?" in capsys.readouterr().err


def test_cuda_without_cuda_is_one_line_before_anything_is_written(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        return  # the machine has CUDA: nothing to refuse
    config = tmp_path / "exp.yaml"
    config.write_text(CONFIG.replace("device: cpu", "device: cuda"))
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err
    assert not (tmp_path / "run").exists()


def test_run_dir_is_a_path_threads_are_set_and_quiet_has_no_bar(tmp_path, capsys, monkeypatch):
    import torch

    config = tmp_path / "exp.yaml"
    config.write_text(
        CONFIG.replace("steps: 6", "steps: 2").replace("eval_every: 3", "eval_every: 1")
    )
    seen = []
    real_run = __import__("sparsekit").Experiment.run

    def spy(self, on_step=None, progress=None):
        seen.append(self.config.threads)
        return real_run(self, lambda info: seen.append(torch.get_num_threads()), progress)

    monkeypatch.setattr("sparsekit.engine.experiment.Experiment.run", spy)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    assert main(["run", str(config), "--run-dir", "out #2", "--threads", "2", "--quiet"]) == 0
    assert (tmp_path / "out #2" / "result.json").is_file()
    assert seen[0] == 2 and set(seen[1:]) == {2} and torch.get_num_threads() == before
    assert "it/s" not in capsys.readouterr().err and "step/s" not in capsys.readouterr().err


def test_finetune_set_options_are_applied(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(CONFIG.replace("steps: 6", "steps: 2"))
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    args = ["finetune", str(run_dir), "--steps", "2", "--set", "mode=head", "--quiet"]
    assert main([*args, "--set", "tasks=[edges]"]) == 0
    saved = json.loads((run_dir / "finetune" / "result.json").read_text())
    assert saved["config"]["finetune"]["mode"] == "head"
    assert saved["config"]["finetune"]["tasks"] == ["edges"]


def test_ctrl_c_checkpoints_and_prints_the_command_that_resumes(tmp_path, capsys):
    import os
    import shlex
    import signal
    import time

    config = tmp_path / "exp.yaml"
    config.write_text(CONFIG)
    run_dir = tmp_path / "run"
    argv = ["run", str(config), "--set", "steps=1500", "--set", "eval_every=500"]
    argv += ["--run-dir", str(run_dir), "--quiet"]
    with subprocess.Popen(
        [sys.executable, "-m", "sparsekit", *argv], stderr=subprocess.PIPE, text=True
    ) as process:
        state = run_dir / "state.json"
        deadline = time.monotonic() + 120
        while not (state.exists() and json.loads(state.read_text())["status"] == "running"):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGINT)
        err = process.stderr.read()
        assert process.wait(timeout=60) == 130, err
    line = err.strip().splitlines()[-1]
    assert err.strip().count("\n") == 0, err  # one line
    assert line.startswith("sparsekit: interrupted after step ") and "resume with: " in line
    stopped = json.loads(state.read_text())
    assert stopped["status"] == "interrupted" and stopped["step"] > 0
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[0] == "sparsekit" and command[-1] == "--resume"
    assert main([*command[1:], "--quiet"]) == 0
    resumed = json.loads(state.read_text())
    assert resumed["status"] == "complete" and resumed["resumed"]["train"] == stopped["step"]
