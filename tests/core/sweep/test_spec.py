"""Sweep configs expand into the right runs; the results database keeps every concurrent write;
the report's statistics, bold best and arrows are right."""

import csv
import multiprocessing
import statistics
from pathlib import Path

import pytest

from sparsekit import ConfigError
from sparsekit.sweep import ResultStore, Sweep
from sparsekit.sweep.claims import Owner
from sparsekit.sweep.report import write_report
from sparsekit.sweep.spec import RunSpec, config_hash

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def test_cases_grid_and_seeds_multiply_and_dotted_keys_nest(tmp_path):
    sweep = Sweep(
        base={"steps": 5},
        cases=[{"penalty": "group_lasso"}, {"penalty": "l1"}],
        grid={"lam": [0.1, 0.2, 0.3], "optimizer.lr": [0.01]},
        seeds=[0, 1],
        directory=tmp_path,
    )
    runs = sweep.runs()
    assert len(runs) == 2 * 3 * 2
    assert {r.config["penalty"]["name"] for r in runs} == {"group_lasso", "l1"}
    assert {r.config["optimizer"]["lr"] for r in runs} == {0.01}
    # Merged, not replaced: the kind keeps its default (None, the learner's choice).
    assert {r.config["optimizer"]["name"] for r in runs} == {None}
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(r.config["run_dir"].endswith(r.run_id) for r in runs)
    assert all(r.run_id == config_hash(r.config) for r in runs)


def test_run_of_resolves_to_the_same_seed_run_of_an_earlier_stage(tmp_path):
    sweep = Sweep(
        base={"steps": 5},
        stages=[
            {"name": "dense", "set": {"penalty": None, "lam": 0.0}},
            {
                "name": "pruned",
                "set": {"penalty": None, "init": "dense", "init_from": {"run_of": "dense"}},
                "cases": [{"scheduler": "one_shot", "mask": "random", "target": 0.2}],
            },
        ],
        seeds=[3, 4],
        directory=tmp_path,
    )
    runs = sweep.runs()
    dense = {r.seed: r for r in runs if r.stage == "dense"}
    for run in (r for r in runs if r.stage == "pruned"):
        assert run.config["init_from"] == dense[run.seed].config["run_dir"]
        assert run.depends_on == (dense[run.seed].run_id,)


def test_bad_sweeps_are_rejected_naming_the_culprit(tmp_path):
    with pytest.raises(ConfigError, match="names no earlier stage"):
        Sweep(
            stages=[{"name": "a", "set": {"init_from": {"run_of": "later"}}}], directory=tmp_path
        ).runs()
    with pytest.raises(ConfigError, match="stage 'a'.*lam"):
        Sweep(stages=[{"name": "a", "grid": {"lam": [-1.0]}}], directory=tmp_path).runs()
    with pytest.raises(ConfigError, match="same config"):
        Sweep(cases=[{"lam": 0.1}, {"lam": 0.1}], directory=tmp_path).runs()
    with pytest.raises(ConfigError, match="unknown config key 'grids'"):
        Sweep(grids={"lam": [0.1]}, directory=tmp_path)
    with pytest.raises(ConfigError, match="seeds"):
        Sweep(seeds=[], directory=tmp_path)
    with pytest.raises(ConfigError, match="either stages or"):
        Sweep(stages=[{"name": "a"}], grid={"lam": [0.1]}, directory=tmp_path)


def test_the_table5_sweep_has_every_row_of_the_paper(tmp_path):
    sweep = Sweep.from_yaml(ROOT / "configs" / "table5_shapes.yaml", {"directory": str(tmp_path)})
    runs = sweep.runs()
    assert len(sweep.config.seeds) >= 3
    rows = {
        (
            (r.config["scheduler"] or {}).get("name"),
            (r.config["mask"] or {}).get("name"),
            r.config["init"],
        )
        for r in runs
        if r.stage == "baselines"
    }
    # Meta-Sparsity, Table 5: approach × mask × initialisation before sparsification.
    assert rows == {
        ("one_shot", "magnitude", "dense"),
        ("one_shot", "random", "dense"),
        ("one_shot", "meta", "dense"),
        ("iterative", "magnitude", "dense"),
        ("iterative", "meta", "dense"),
        ("progressive", "magnitude", "random"),
        ("progressive", "random", "random"),
        ("progressive", "meta", "random"),
        ("sparse_training", "magnitude", "random"),
        ("sparse_training", "random", "random"),
        ("sparse_training", "meta", "random"),
    }
    meta = {r.seed: r for r in runs if r.stage == "meta"}
    assert all(m.config["lam"] == "learned" for m in meta.values())
    for run in (r for r in runs if r.stage == "baselines"):
        # Every baseline at the parameter sparsity meta-sparsity reached with the same seed.
        assert run.config["target"] == {"from_run": meta[run.seed].config["run_dir"]}
        if run.config["mask"]["name"] == "meta":
            assert run.config["mask"]["from_run"] == meta[run.seed].config["run_dir"]


def write_rows(path, worker, count):
    store = ResultStore(path)
    owner = Owner.here()
    for i in range(count):
        spec = RunSpec(f"{worker}-{i}", "s", "s", i, {}, {"i": i})
        store.register(spec)
        assert store.claim(spec.run_id, owner)
        store.mark_finished(spec.run_id, {"metrics": {"t": {"m": float(i)}}})


def test_concurrent_writers_lose_no_row(tmp_path):
    path = tmp_path / "sweep.db"
    ResultStore(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=write_rows, args=(path, w, 40)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    rows = ResultStore(path).rows()
    assert len(rows) == 160 and {r.status for r in rows} == {"finished"}
    assert {r.run_id for r in rows} == {f"{w}-{i}" for w in range(4) for i in range(40)}


def test_report_statistics_bold_best_and_directions(tmp_path):
    store = ResultStore(tmp_path / "sweep.db")
    values = {"a": [0.30, 0.34, 0.32], "b": [0.50, 0.40, 0.45]}  # miou ↑
    errors = {"a": [1.0, 1.2, 1.1], "b": [2.0, 2.2, 2.1]}  # mae ↓
    for label in ("a", "b"):
        for seed in range(3):
            spec = RunSpec(f"{label}{seed}", "st", "st", seed, {"x": label}, {"x": label})
            store.register(spec)
            store.mark_finished(
                spec.run_id,
                {
                    "metrics": {
                        "seg": {"miou": values[label][seed]},
                        "dep": {"mae": errors[label][seed]},
                    },
                    "directions": {"seg": {"miou": True}, "dep": {"mae": False}},
                    "sparsity": {"parameter": 0.1 * seed, "group": 0.0},
                    "efficiency": {"cr": 1.0, "sp": 1.0, "speedup": 1.0},
                },
            )
    failed = RunSpec("a9", "st", "st", 9, {"x": "a"}, {"x": "a"})
    store.register(failed)
    store.mark_failed("a9", "boom")
    table = write_report(store.rows(), tmp_path, ["x"])
    lines = table.splitlines()
    assert "seg miou ↑" in lines[0] and "dep mae ↓" in lines[0]
    row_a = next(line for line in lines if line.startswith("| st | a "))
    row_b = next(line for line in lines if line.startswith("| st | b "))
    mean_b, std_b = statistics.fmean(values["b"]), statistics.stdev(values["b"])
    assert f"**{mean_b:.4f} ± {std_b:.4f}**" in row_b  # best miou (higher) is b
    mean_a, std_a = statistics.fmean(errors["a"]), statistics.stdev(errors["a"])
    assert f"**{mean_a:.4f} ± {std_a:.4f}**" in row_a  # best mae (lower) is a
    assert row_a.rstrip(" |").endswith("3/4") and row_b.rstrip(" |").endswith("3/3")
    assert "10.0 ± 10.0" in row_a  # % parameter sparsity: 0, 10, 20
    with (tmp_path / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[1]["seg.miou.mean"]) == pytest.approx(mean_b)
    assert float(rows[1]["seg.miou.std"]) == pytest.approx(std_b)
    assert (tmp_path / "metrics_vs_sparsity.png").stat().st_size > 10_000


def test_cli_style_overrides_reach_the_sweep_config(tmp_path):
    from sparsekit.config import parse_overrides

    path = tmp_path / "sweep.yaml"
    path.write_text(f"directory: {tmp_path}\nbase: {{steps: 9}}\ngrid: {{lam: [0.1]}}\n")
    sweep = Sweep.from_yaml(path, parse_overrides(["seeds=[5, 6]", "base.batch_size=4"]))
    runs = sweep.runs()
    assert [r.seed for r in runs] == [5, 6]
    assert all(r.config["steps"] == 9 and r.config["batch_size"] == 4 for r in runs)
