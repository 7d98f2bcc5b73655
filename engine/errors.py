"""Exceptions the engine raises; the API and the CLI turn each into a clear answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class EzError(Exception):
    """Base of every error ezstats raises on purpose."""


@dataclass(frozen=True)
class RecordError:
    """One problem in one record of a batch: row is 1-based within the batch."""

    row: int
    field: str | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return asdict(self)

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.reason}"


class InvalidBatch(EzError):
    """A batch has invalid records; nothing of it was stored."""

    def __init__(self, errors: list[RecordError], total: int | None = None) -> None:
        self.errors = errors
        self.total = total if total is not None else len(errors)
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{self.total} invalid record(s), batch refused: {shown}{more}")


class MalformedBody(InvalidBatch):
    """The body as a whole cannot be decoded (not JSON, not an Arrow stream)."""


class UnsupportedFormat(EzError):
    """The input's content type or file format is not one ezstats reads."""


class BatchInProgress(EzError):
    """Another writer is storing a batch with the same id right now; retry later."""


class QueryError(EzError):
    """A named query was called wrongly (unknown name, parameters that differ) or failed."""


class NotFound(EzError):
    """The thing asked for does not exist (an alert id, a key, a job name)."""


class InvalidParameter(EzError):
    """A caller's argument is out of its domain (an unknown period, from > to, a bad threshold)."""


class Conflict(EzError):
    """The request conflicts with the current state (a stale version, a duplicate)."""


class PreconditionFailed(Conflict):
    """An If-Match version is not the current one."""


class SecretKeyError(EzError):
    """Stored secrets cannot be decrypted with the configured keys (EZ_SECRET_KEY or <data>/secret.key)."""
