"""Errors that mean the user asked for something impossible (exit code 2, one line).

Defined here, free of torch, so that the command line can catch them without importing models.
"""

from __future__ import annotations


class UserError(Exception):
    """A usage or input error: the CLI prints ``afictl: error: <message>`` and exits with 2."""

    exit_code = 2


class UnknownModelError(KeyError):
    """An unregistered model name; the message names the closest registered ones."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0])


class StageError(ValueError):
    """A stage name the model does not have; the message lists the valid names."""


class ModelOptionError(UserError, ValueError):
    """An option or argument a model cannot take (one line; a ValueError, as timm raises)."""
