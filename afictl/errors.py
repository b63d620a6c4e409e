"""Errors that mean the user asked for something impossible (exit code 2, one line)."""

from __future__ import annotations


class UserError(Exception):
    """A usage or input error: the CLI prints ``afictl: error: <message>`` and exits with 2."""

    exit_code = 2
