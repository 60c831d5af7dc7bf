"""The ``sparsekit`` command line: parses, calls the API, prints.

``sparsekit --help`` lists the commands; each command's ``--help`` ends with examples. Every
error a user can cause (a bad config, an unknown plugin, a missing file or dependency) is one
line on standard error and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sparsekit.cli.parser import build_parser
from sparsekit.errors import ConfigError, MissingDependency, PluginError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PluginError, MissingDependency, FileNotFoundError) as exc:
        print(f"sparsekit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
