"""User-facing errors: one line that says what is wrong and how to fix it."""

from __future__ import annotations


class SimplanError(Exception):
    """Bad input or an impossible request. The CLI prints it on one line and exits with 2."""
