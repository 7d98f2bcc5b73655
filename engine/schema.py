"""The log record: one Arrow schema and the rules of SPEC.md, declared once."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Field:
    """One column of the log record and the rule SPEC.md gives it."""

    name: str
    type: pa.DataType
    required: bool
    minimum: int | None = None
    maximum: int | None = None
    non_empty: bool = False
    default: object = None
    #: Most characters a string may hold: longer values are refused, or cut to it where `truncate` is set.
    max_length: int | None = None
    truncate: bool = False

    @property
    def arrow(self) -> pa.Field:
        """The Arrow field; nullable unless a value is always stored."""
        return pa.field(self.name, self.type, nullable=not (self.required or self.default is not None))


FIELDS: tuple[Field, ...] = (
    Field("request_id", pa.string(), required=True, non_empty=True, max_length=200),
    Field("created_at", TIMESTAMP, required=True),
    Field("master_id", pa.int64(), required=True, minimum=1),
    Field("key_id", pa.int64(), required=True, minimum=1),
    Field("group", pa.string(), required=False, max_length=200),
    Field("model", pa.string(), required=True, non_empty=True, max_length=200),
    Field("provider_id", pa.int64(), required=False),
    Field("provider_type", pa.string(), required=False, max_length=100),
    Field("provider_key_id", pa.int64(), required=False),
    Field("status_code", pa.int16(), required=True, minimum=100, maximum=599),
    Field("error_type", pa.string(), required=False, max_length=100),
    Field("error_message", pa.string(), required=False, max_length=2000, truncate=True),
    Field("latency_ms", pa.int32(), required=True, minimum=0),
    Field("ttft_ms", pa.int32(), required=False, minimum=0),
    Field("prompt_tokens", pa.int32(), required=True, minimum=0),
    Field("completion_tokens", pa.int32(), required=True, minimum=0),
    Field("quota_cost", pa.int64(), required=False, minimum=0, default=0),
    Field("is_stream", pa.bool_(), required=False, default=False),
    Field("client_ip", pa.string(), required=False, max_length=64),
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)

#: The stored schema of a log record file (the `date` partition lives in the folder name).
LOG_RECORD_SCHEMA: pa.Schema = pa.schema([f.arrow for f in FIELDS])

#: Hive partition column of the lake, typed DATE by every reader we ship.
PARTITION_COLUMN = "date"
