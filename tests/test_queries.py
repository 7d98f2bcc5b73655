"""The named-SQL path: parameter checking, rendering, and the shared definitions of SPEC.md."""

from __future__ import annotations

import duckdb
import pytest

from engine import Engine, queries
from engine.errors import QueryError


def test_definitions_match_spec(engine: Engine):
    con = engine.connect()
    rows = con.execute(
        "SELECT s, is_success(s), is_rate_limited(s), is_error(s), is_provider_failure(pk, s), status_class(s) "
        "FROM (VALUES (200, 1), (399, 1), (400, 1), (429, 1), (499, NULL), (500, 1), (500, NULL), (599, 2)) t(s, pk)"
    ).fetchall()
    assert rows == [
        (200, True, False, False, False, "2xx"),
        (399, True, False, False, False, "3xx"),
        (400, False, False, True, False, "4xx"),
        (429, False, True, False, False, "4xx"),
        (499, False, False, True, False, "4xx"),
        (500, False, False, True, True, "5xx"),
        (500, False, False, True, False, "5xx"),
        (599, False, False, True, True, "5xx"),
    ]
    big = 2**31 - 1
    assert con.execute(f"SELECT total_tokens({big}::INT, {big}::INT)").fetchone() == (2 * big,)


def test_run_refuses_parameters_that_differ(tmp_path, monkeypatch):
    folder = tmp_path / "sql"
    folder.mkdir()
    (folder / "probe.sql").write_text("-- probe: echoes\n-- Parameters: $a, $b\nSELECT $a::INT + $b::INT AS s, '$c' AS t\n")
    monkeypatch.setattr(queries, "sql_dir", lambda: folder)
    queries.load.cache_clear()
    try:
        con = duckdb.connect()
        assert queries.load("probe").params == {"a", "b"}
        assert queries.run(con, "probe", a=1, b=2).to_pylist() == [{"s": 3, "t": "$c"}]
        with pytest.raises(QueryError, match="missing \\['b'\\]"):
            queries.run(con, "probe", a=1)
        with pytest.raises(QueryError, match="unexpected \\['z'\\]"):
            queries.run(con, "probe", a=1, b=2, z=3)
        assert "SELECT 1::INT + 'x''y'::INT" in queries.load("probe").render({"a": 1, "b": "x'y"})
        with pytest.raises(QueryError, match="no query named"):
            queries.load("nope")
    finally:
        queries.load.cache_clear()
