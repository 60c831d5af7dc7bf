"""Runs: what a run measured (:mod:`~sparsekit.runs.record`) and its directory on disk
(:mod:`~sparsekit.runs.store`)."""
