"""Why a SQL store cannot use a database: one line each, never a traceback."""

from __future__ import annotations

from .._errors import BatchFSMError

__all__ = ["SchemaVersionError", "StoreError"]


class StoreError(BatchFSMError):
    """A database a store cannot use; the message is one line saying why.

    Example:
        >>> import batchfsm as bf
        >>> issubclass(StoreError, bf.BatchFSMError)
        True
    """


class SchemaVersionError(StoreError):
    """The database's schema is newer than this batchfsm: it is left alone.

    Attributes:
        where: the database (a path, or a URL without its password).
        found: the version the database carries.
        supported: the newest version this batchfsm knows.

    Example:
        >>> print(SchemaVersionError("db.sqlite", 9, 2))
        db.sqlite has schema version 9, newer than this batchfsm's 2: upgrade batchfsm
    """

    def __init__(self, where: str, found: int, supported: int) -> None:
        super().__init__(where, found, supported)
        self.where = where
        self.found = found
        self.supported = supported

    def __str__(self) -> str:
        return (
            f"{self.where} has schema version {self.found}, newer than this "
            f"batchfsm's {self.supported}: upgrade batchfsm"
        )
