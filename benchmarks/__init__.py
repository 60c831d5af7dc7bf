"""Micro-benchmarks: each ``bench_*.py`` module here exposes ``run() -> dict``.

Run them all with ``python -m benchmarks`` (or some of them: ``python -m benchmarks prox``); the
results are printed and merged into ``benchmarks/results.json`` by benchmark name.
"""
