"""Named SQL: each `sql/<name>.sql` file is one query with `$named` parameters, run through one path."""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from engine.errors import LakeDamaged, QueryError

log = logging.getLogger(__name__)

#: Loaded into every connection before any query; see its header.
DEFINITIONS = "definitions"

T = TypeVar("T")
_VANISHED = ("No such file or directory", "No files found that match the pattern")
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
#: What DuckDB says of a Parquet file it cannot read (as opposed to a query it refuses), and the file named.
_DAMAGE = ("Invalid string encoding", "magic bytes", "too small to be a Parquet file", "Corrupt", "corrupt",
           "Invalid Parquet", "Parquet file is")
_DAMAGED_FILE = re.compile(r"""["']([^"']+\.parquet)["']""")
_STRIP = re.compile(r"--[^\n]*|'(?:[^']|'')*'", re.S)
# `run` takes a one-statement query's rows from its DB-API result on purpose (see `_fetched`).
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning, module=__name__)


def sql_dir() -> Path:
    """Where the .sql files are: inside the installed package, or the repository's `sql/` folder."""
    packaged = Path(__file__).parent / "sql"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "sql"


@dataclass(frozen=True)
class Query:
    """One .sql file: its name (the file stem), text, header comment and parameter names."""

    name: str
    text: str
    header: str
    params: frozenset[str]
    script: bool = False  # more than one statement (macro definitions)

    def render(self, params: dict[str, Any]) -> str:
        """The SQL with parameters shown as literals, for reading, never for running."""
        return _PARAM.sub(lambda m: _literal(params.get(m.group(1))), self.text)


@cache
def load(name: str) -> Query:
    """Read and parse `sql/<name>.sql`.

    Raises:
        QueryError: there is no such file.
    """
    path = sql_dir() / f"{name}.sql"
    if not path.is_file():
        raise QueryError(f"no query named {name!r} in {sql_dir()}")
    text = path.read_text()
    header = "\n".join(line[2:].strip() for line in text.splitlines() if line.startswith("--"))
    code = _STRIP.sub(" ", text)
    return Query(name, text, header, frozenset(_PARAM.findall(code)), script=";" in code.strip().rstrip(";"))


def names() -> list[str]:
    """Every query name, sorted."""
    return sorted(p.stem for p in sql_dir().glob("*.sql"))


def run(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> pa.Table:
    """Run a named query with exactly its parameters; log name, parameters and elapsed time.

    Raises:
        QueryError: unknown name, missing or unexpected parameters, or DuckDB failed.
    """
    query = _checked(name, params)
    started = time.perf_counter()
    try:
        if query.script:
            result = retrying(lambda: to_arrow(con.sql(query.text, params=params or None)))
        else:
            result = retrying(lambda: _fetched(con.execute(query.text, params or None)))
    except duckdb.Error as exc:
        raise damaged(exc) or QueryError(f"query {name!r} failed: {exc}") from exc
    log.info("query %s %s: %d rows in %.1f ms", name, params, result.num_rows,
             (time.perf_counter() - started) * 1000)
    return result


def stream(con: duckdb.DuckDBPyConnection, name: str, rows: int, **params: Any) -> Iterator[pa.RecordBatch]:
    """Run a named query as `run` does, its result in Arrow batches of at most `rows` rows, for a caller
    that folds the rows as they come instead of holding them all.

    A lake file that vanished mid-stream (compaction, retention) raises as it happened: wrap the
    whole consumption in `retrying`.

    Raises:
        QueryError: unknown name, missing or unexpected parameters, or DuckDB failed.
    """
    query = _checked(name, params)
    started = time.perf_counter()
    count = 0
    try:
        for batch in con.sql(query.text, params=params or None).to_arrow_reader(rows):
            count += batch.num_rows
            yield batch
    except (duckdb.Error, pa.ArrowException) as exc:
        if vanished(exc):
            raise
        raise QueryError(f"query {name!r} failed: {exc}") from exc
    log.info("query %s %s: %d rows streamed in %.1f ms", name, params, count, (time.perf_counter() - started) * 1000)


def _checked(name: str, params: dict[str, Any]) -> Query:
    """The query `name`, if `params` names exactly its parameters."""
    query = load(name)
    given = set(params)
    if given != query.params:
        missing, extra = sorted(query.params - given), sorted(given - query.params)
        raise QueryError(f"query {name!r} takes {sorted(query.params)}; missing {missing}, unexpected {extra}")
    return query


def retrying(read: Callable[[], T], attempts: int = 4) -> T:
    """Run `read`, again when a file it listed vanished before it opened it.

    Compaction and the log cleaner swap or remove whole partition folders (see `engine.partitions`);
    a query that listed a folder just before fails on a missing file rather than miscount, and a rerun
    lists the folder as it is now.
    """
    for attempt in range(attempts):
        try:
            return read()
        except (duckdb.IOException, pa.ArrowException) as exc:
            if attempt + 1 == attempts or not vanished(exc):
                raise
            log.info("a lake file vanished mid-query (compaction or retention); rerunning: %s", exc)
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def damaged(exc: BaseException) -> LakeDamaged | None:
    """The lake file a DuckDB error says it could not read (corrupt, truncated, invalid UTF-8), as LakeDamaged;
    None for any other error."""
    text = str(exc)
    if not any(mark in text for mark in _DAMAGE):
        return None
    found = _DAMAGED_FILE.search(text)
    return LakeDamaged(found.group(1) if found else "(unnamed)", text.strip().splitlines()[0][:300])


def vanished(exc: BaseException | None) -> bool:
    """Whether a DuckDB error (or an Arrow one, reading a DuckDB stream) says a lake file it listed was
    gone when it opened it."""
    return isinstance(exc, duckdb.IOException | pa.ArrowException) and any(m in str(exc) for m in _VANISHED)


def _fetched(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The rows of the statement `con` just executed, as Arrow.

    Executed, not made a relation: `con.sql` binds a statement once to describe it and again to run it, and
    for the small results of most named queries (a new lake file's stats part, an alert window) that
    second bind was a quarter of their time (~2.5 of ~10 ms). DuckDB warns that this copies the rows once
    more: a copy of the result, small beside the scan that made it.
    """
    return con.to_arrow_table()


def to_arrow(relation: duckdb.DuckDBPyRelation | None) -> pa.Table:
    """A relation's rows as Arrow; a statement that returns nothing gives an empty table."""
    return relation.to_arrow_table() if relation is not None else pa.table({})


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
