"""Top-N of grouped answers: which groups an answer lists (sorted by any metric, the first `limit`), and
the `other` row that sums the rest.

The rest is summed exactly, not approximated from the listed figures: every group that is not kept is
relabelled `OTHER` in the answer's merged figures (engine/stats/merging.py `Tally.fold`), whose
distinct counts come from the (group, id) pairs and whose percentiles from the groups' histograms added
up, so the other row's distinct counts and latency percentiles are those of its records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import InvalidParameter

#: The label of the folded groups, and of a NULL group in keep lists (SQL: chr(0) || 'other' / 'null').
OTHER = "\x00other"
NULL = "\x00null"


@dataclass(frozen=True)
class TopN:
    """Which groups to list: `sort` is a metric (ascending) or `-metric` (descending), `limit` how many
    (None: all), `other` whether the rest is summed into one row."""

    limit: int | None = None
    sort: str | None = None
    other: bool = False

    def check(self, metrics: Iterable[str]) -> None:
        """Raises InvalidParameter for a limit below 1 or a sort on an unknown metric."""
        if self.limit is not None and self.limit < 1:
            raise InvalidParameter(f"limit must be at least 1, got {self.limit}")
        if self.sort is not None:
            allowed = ("group", *metrics)
            if self.sort.removeprefix("-") not in allowed:
                raise InvalidParameter(f"unknown sort {self.sort!r}; use a metric, '-' before it for descending: "
                                       f"{', '.join(allowed)}")

    def order(self, rows: list[dict[str, Any]], value: Callable[[dict[str, Any], str], Any], time_groups: bool
              ) -> list[dict[str, Any]]:
        """Rows (with their `group`) in the answer's order: by `sort`, ties by group; without a sort, time
        groups in time order and other groups by requests, most first. Missing values sort last."""
        sort = self.sort or ("group" if time_groups else "-requests")
        metric, descending = sort.removeprefix("-"), sort.startswith("-")

        def by_group(row: dict[str, Any]) -> tuple[bool, Any]:
            group = row["group"]
            return group is None, group if isinstance(group, int) else _text(group)

        out = sorted(rows, key=by_group)
        if metric != "group":
            present = [r for r in out if value(r, metric) is not None]
            missing = [r for r in out if value(r, metric) is None]
            out = sorted(present, key=lambda r: value(r, metric), reverse=descending) + missing
        elif descending:
            out.reverse()
        return out

    def split(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rows listed and the rows left over (ordered rows in)."""
        if self.limit is None:
            return rows, []
        return rows[: self.limit], rows[self.limit:]


@dataclass(frozen=True)
class Fold:
    """Relabel every value of a group column (`g1` or `g2`) that is not kept as OTHER."""

    column: str
    keep: frozenset[str]   # group texts as SQL gives them; NULL for the null group

    @classmethod
    def of(cls, column: str, groups: Iterable[Any]) -> Fold:
        """The fold that keeps these group values (ids, names, or None)."""
        return cls(column, frozenset(NULL if g is None else _text(g) for g in groups))

    def table(self, table: pa.Table) -> pa.Table:
        """A part with the column folded."""
        if table.num_rows == 0:
            return table
        column = table[self.column]
        keyed = pc.fill_null(column, NULL)
        kept = pc.is_in(keyed, value_set=pa.array(sorted(self.keep), pa.string()))
        folded = pc.if_else(kept, column, pa.scalar(OTHER, pa.string()))
        return table.set_column(table.schema.get_field_index(self.column), self.column, folded)

    def params(self) -> dict[str, list[str] | None]:
        """As the keep lists of stats_exact ($keep_g1, $keep_g2)."""
        keep = sorted(self.keep)
        return {"keep_g1": keep if self.column == "g1" else None, "keep_g2": keep if self.column == "g2" else None}


def _text(value: Any) -> str:
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
