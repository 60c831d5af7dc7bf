"""The version of sparsekit, defined here once (``pyproject.toml`` reads it)."""

__version__ = "0.2.0"
