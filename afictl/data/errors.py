"""Data errors (one line, exit code 2) and the marker of an unreadable image."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = [
    "BrokenImage",
    "CorruptImageError",
    "DataMissingError",
    "DataWorkerError",
    "UnsafeDataError",
]


class DataMissingError(UserError):
    """A dataset that is not where we looked: the message names the folder and what it expects."""


class UnsafeDataError(UserError):
    """A data file refused unread: a pickle naming more than its format holds, or malformed."""


class CorruptImageError(UserError):
    """An image file that cannot be read or decoded; the message names the file."""

    def __str__(self) -> str:
        # Raised in a DataLoader worker, the error comes back as "Caught CorruptImageError in
        # DataLoader worker process 0. Original Traceback ...": keep only the original message.
        text = super().__str__()
        if text.startswith("Caught "):
            for line in reversed(text.strip().splitlines()):
                if "CorruptImageError: " in line:
                    return line.split("CorruptImageError: ", 1)[1]
        return text


class DataWorkerError(UserError):
    """A DataLoader worker process that died (a native crash, the OOM killer): one line, exit 2,
    instead of torch's traceback or a hang."""


@dataclass(frozen=True)
class BrokenImage:
    """Stands in for a sample whose file could not be read (``on_error="mark"``)."""

    path: str
    reason: str
