"""How the CLI prints: tables for people, JSON/CSV/Parquet for scripts, progress on stderr."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import pyarrow as pa

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error on stderr; `raise fail(...)` exits non-zero (1 unless `code` says otherwise)."""
    error(message)
    return typer.Exit(code)


def error(message: str) -> None:
    """One `error: ...` line on stderr, the message printed as is (no rich markup)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """JSON on stdout, one document, for scripts; engine answers (pydantic models) as the API serializes them."""
    sys.stdout.write(json.dumps(data, default=_json_default, ensure_ascii=False, indent=2) + "\n")


def print_arrow(table: pa.Table, fmt: str = "table", output: Path | None = None, limit: int = 1000) -> None:
    """Print (or write to `output`) an Arrow table as a rich table, csv, json lines or parquet."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        if output is None:
            raise fail("--format parquet needs --output FILE")
        pq.write_table(table, output, compression="zstd")
        err.print(f"wrote {table.num_rows} rows to {output}")
        return
    if fmt == "csv":
        import pyarrow as pa
        import pyarrow.csv as pcsv

        sink = pa.BufferOutputStream()
        pcsv.write_csv(table, sink)
        _emit(sink.getvalue().to_pybytes().decode(), output)
        return
    if fmt == "json":
        lines = (json.dumps(row, default=_json_default, ensure_ascii=False) for row in table.to_pylist())
        _emit("".join(line + "\n" for line in lines), output)
        return
    grid = Table(show_header=True, header_style="bold")
    for name in table.column_names:
        grid.add_column(name, overflow="fold")
    for row in table.slice(0, limit).to_pylist():
        grid.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(grid)
    if table.num_rows > limit:
        err.print(f"({table.num_rows} rows, first {limit} shown; use --format csv for all)")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, decimal.Decimal):  # DuckDB sums of integers are HUGEINT/DECIMAL
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
