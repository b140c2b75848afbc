"""The one error type of the ``tickscope`` command line: printed, then exit code 2."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A bad argument or input file; its message is printed and the exit code is 2."""
