"""Run the benchmarks: ``python -m benchmarks [NAME ...]``.

Every module ``bench_<name>.py`` in this package with a ``run() -> dict`` is discovered, so adding a
benchmark is adding a file. Each result is printed as a table and merged by name into
``benchmarks/results.json`` together with the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import sys
from pathlib import Path
from typing import Any

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_PATH = PACKAGE_DIR / "results.json"
PREFIX = "bench_"


def discover() -> list[str]:
    """Names (without the ``bench_`` prefix) of every benchmark module in this package."""
    return sorted(
        info.name[len(PREFIX) :]
        for info in pkgutil.iter_modules([str(PACKAGE_DIR)])
        if info.name.startswith(PREFIX)
    )


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def format_table(name: str, result: dict[str, Any]) -> str:
    """A two-column table of one benchmark's result."""
    rows = [
        (key, f"{value:.4g}" if isinstance(value, float) else str(value))
        for key, value in result.items()
    ]
    width = max([len(key) for key, _ in rows] + [len(name)])
    lines = [f"== {name} ==", *(f"{key:<{width}}  {value}" for key, value in rows)]
    return "\n".join(lines)


def merge_results(path: Path, name: str, entry: dict[str, Any]) -> None:
    """Replace ``name``'s entry in the JSON file at ``path``, keeping the others."""
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
    data[name] = entry
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the selected (default: all) benchmarks, print them and record them."""
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available})")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="results JSON file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
    for name in args.names or available:
        module = importlib.import_module(f"{__package__ or 'benchmarks'}.{PREFIX}{name}")
        result = module.run()
        print(format_table(name, result), flush=True)
        entry = {
            "result": result,
            "machine": machine_info(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        merge_results(args.output, name, entry)
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
