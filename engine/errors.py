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
    """The input's content type, content encoding or file format is not one ezstats reads."""


class PayloadTooLarge(EzError):
    """A body is over the size limit (EZ_MAX_BODY_BYTES), decompressed size included."""


class IdempotencyKeyReused(EzError):
    """An Idempotency-Key already names a batch with a different body; nothing was stored."""


class DiskFull(EzError):
    """The disk holding the data dir is full: nothing of the write was kept; retry once space is freed."""


class LakeDamaged(EzError):
    """A lake file cannot be read (corrupt, wrong schema, invalid UTF-8); `ezstats lake check --repair` fixes it."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"lake file {path} cannot be read ({reason}); run `ezstats lake check --repair` to move it "
                         "to quarantine and recompute the hours it held")


class ConfigurationError(EzError):
    """The process configuration (EZ_* environment) is invalid; raised at start."""


class BatchInProgress(EzError):
    """Another writer is storing a batch with the same id right now; retry later."""


class QueryError(EzError):
    """A named query was called wrongly (unknown name, parameters that differ) or failed."""


class NotFound(EzError):
    """The thing asked for does not exist (an alert id, a key, a job name)."""


class InvalidParameter(EzError):
    """A caller's argument is out of its domain (an unknown period, from > to, a bad threshold)."""


class LimitExceeded(InvalidParameter):
    """A request asks for more work or a bigger answer than a documented limit allows; the message says
    which limit and what to ask instead."""


class Conflict(EzError):
    """The request conflicts with the current state (a stale version, a duplicate)."""


class PreconditionFailed(Conflict):
    """An If-Match version is not the current one."""


class SecretKeyError(EzError):
    """Stored secrets cannot be decrypted with the configured keys (EZ_SECRET_KEY or <data>/secret.key)."""
