"""What every command shares: one-line errors and exit codes."""
from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # also: no model bundle
EXIT_NO_SERIES = 3


class CommandError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def run_command(name: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except CommandError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
