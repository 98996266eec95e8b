"""User-facing errors: one line that says what is wrong and how to fix it."""

from __future__ import annotations


class SimplanError(Exception):
    """Bad input or an impossible request. The CLI prints it on one line and exits with 2."""


# exit statuses of the command line
EXIT_BAD_INPUT = 2  # a one-line error on stderr; nothing written
EXIT_DOES_NOT_FIT = 3  # `simulate`: the result is printed, but a device's memory overflows
