"""The ``sparsekit`` command line: parses, calls the API, prints.

``sparsekit --help`` lists the commands; each command's ``--help`` ends with examples. Every
error a user can cause (a bad config, an unknown plugin, a missing or unusable file, a missing
dependency) is one line on standard error and exit status 2; ``report`` reports every run
directory it can read and one such line for each it cannot.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from sparsekit.cli.commands import USER_ERRORS, error_line
from sparsekit.cli.parser import build_parser
from sparsekit.errors import PluginLoadWarning

__all__ = ["build_parser", "main"]


def _plugin_warning_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202, PLR0913
    """Plugin warnings as one ``sparsekit: warning:`` line; other warnings as Python shows them."""
    if issubclass(category, PluginLoadWarning):
        print(f"sparsekit: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    warnings.showwarning = _plugin_warning_line
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
