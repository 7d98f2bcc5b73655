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
    description: str = ""
    #: Most characters a string may hold: longer values are refused, or cut to it where `truncate` is set.
    max_length: int | None = None
    truncate: bool = False

    @property
    def arrow(self) -> pa.Field:
        """The Arrow field; nullable unless a value is always stored."""
        return pa.field(self.name, self.type, nullable=not (self.required or self.default is not None))


FIELDS: tuple[Field, ...] = (
    Field("request_id", pa.string(), required=True, non_empty=True, max_length=200,
          description="The gateway's id of the request; unique per request."),
    Field("created_at", TIMESTAMP, required=True,
          description="When the request arrived: RFC 3339 text with an offset (`Z` or `+08:00`) or epoch "
          "milliseconds; within 2000-2100. Stored as UTC microseconds."),
    Field("master_id", pa.int64(), required=True, minimum=1,
          description="The tenant (master) the key belongs to."),
    Field("key_id", pa.int64(), required=True, minimum=1,
          description="The child API key the request used."),
    Field("group", pa.string(), required=False, max_length=200,
          description="The routing group or namespace."),
    Field("model", pa.string(), required=True, non_empty=True, max_length=200,
          description="The model asked for."),
    Field("provider_id", pa.int64(), required=False,
          description="The upstream provider; null when the gateway refused the request before routing."),
    Field("provider_type", pa.string(), required=False, max_length=100,
          description="e.g. openai, anthropic, gemini, codex, claude_code."),
    Field("provider_key_id", pa.int64(), required=False,
          description="The provider key that served the request; null when not routed."),
    Field("status_code", pa.int16(), required=True, minimum=100, maximum=599,
          description="The HTTP status answered to the client."),
    Field("error_type", pa.string(), required=False, max_length=100,
          description="e.g. rate_limited, upstream_error, timeout, invalid_request."),
    Field("error_message", pa.string(), required=False, max_length=2000, truncate=True,
          description="The error text."),
    Field("latency_ms", pa.int32(), required=True, minimum=0,
          description="Time to the full answer, in ms."),
    Field("ttft_ms", pa.int32(), required=False, minimum=0,
          description="Time to first token of a stream, in ms."),
    Field("prompt_tokens", pa.int32(), required=True, minimum=0,
          description="Prompt tokens (0 when unknown)."),
    Field("completion_tokens", pa.int32(), required=True, minimum=0,
          description="Completion tokens."),
    Field("quota_cost", pa.int64(), required=False, minimum=0, default=0,
          description="Quota units the request consumed."),
    Field("is_stream", pa.bool_(), required=False, default=False,
          description="Whether the answer was streamed."),
    Field("client_ip", pa.string(), required=False, max_length=64,
          description="The client's address."),
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)

#: The stored schema of a log record file (the `date` partition lives in the folder name).
LOG_RECORD_SCHEMA: pa.Schema = pa.schema([f.arrow for f in FIELDS])

#: Each Arrow type as JSON Schema describes what a client sends.
_JSON_TYPES = {pa.string(): "string", pa.int64(): "integer", pa.int32(): "integer", pa.int16(): "integer",
               pa.bool_(): "boolean"}


def json_schema() -> dict[str, object]:
    """The JSON Schema of one log record as a client sends it (the OpenAPI request body of POST /v1/logs).

    Integers also pass as integral floats or digit strings, and `created_at` as epoch milliseconds (see
    engine/validation.py); the schema states the canonical forms.
    """
    properties: dict[str, object] = {}
    for f in FIELDS:
        prop: dict[str, object]
        if f.type == TIMESTAMP:
            prop = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]}
        else:
            prop = {"type": _JSON_TYPES[f.type]}
        if f.minimum is not None:
            prop["minimum"] = f.minimum
        if f.maximum is not None:
            prop["maximum"] = f.maximum
        if f.non_empty:
            prop["minLength"] = 1
        if f.max_length is not None and not f.truncate:
            prop["maxLength"] = f.max_length
        if f.default is not None:
            prop["default"] = f.default
        if not f.required:
            prop = {"anyOf": [prop, {"type": "null"}]} if "anyOf" not in prop else prop
        properties[f.name] = {**prop, "description": f.description}
    return {"title": "LogRecord", "type": "object", "description": "One gateway request. Unknown fields are refused.",
            "properties": properties, "required": [f.name for f in FIELDS if f.required], "additionalProperties": False}


def type_name(f: Field) -> str:
    """The Arrow type of a field as the docs write it (`int64`, `timestamp[us, UTC]`)."""
    return "timestamp[us, UTC]" if f.type == TIMESTAMP else str(f.type)


def rule(f: Field) -> str:
    """A field's rule in words, as docs/reference.md lists it."""
    parts = ["required" if f.required else "optional"]
    if f.non_empty:
        parts.append("non-empty")
    if f.minimum is not None and f.maximum is not None:
        parts.append(f"{f.minimum}..{f.maximum}")
    elif f.minimum is not None:
        parts.append(f">= {f.minimum}" if f.minimum == 0 else f"> {f.minimum - 1}")
    if f.max_length is not None:
        parts.append(f"at most {f.max_length:,} characters" + (" (longer values are cut)" if f.truncate else ""))
    if f.default is not None:
        parts.append(f"default {str(f.default).lower()}")
    return ", ".join(parts)


def markdown_table() -> str:
    """The record schema as the Markdown table of docs/reference.md (a test checks the doc holds it)."""
    lines = ["| field | Arrow type | rule | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{f.name}` | {type_name(f)} | {rule(f)} | {f.description} |" for f in FIELDS]
    return "\n".join(lines) + "\n"


#: Hive partition column of the lake, typed DATE by every reader we ship.
PARTITION_COLUMN = "date"
