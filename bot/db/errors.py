"""Exceptions raised by the data layer.

Every message is safe to print or log: it never contains a password or any
personal data, only the (password-masked) database URL and revision ids.
"""

from __future__ import annotations


class DataLayerError(Exception):
    """Base class of the data layer's own errors (catch this in the CLI)."""


class DatabaseUnavailable(DataLayerError):
    """The database cannot be reached (server down, wrong host, bad credentials...)."""


class SchemaNotMigrated(DataLayerError):
    """The database schema is not at the revision this code needs."""

    def __init__(self, message: str, *, current: str | None, head: str) -> None:
        super().__init__(message)
        self.current = current
        self.head = head
