"""Alert detection: one evaluation of every rule on a 1-day and a 30-day lake vs the raw DuckDB floor.

One command: `python bench/alerts.py` (options: --lake, --at, --repeat).
The lake is the shared 30 days x 5,000,000 records/day one (`bench/lake.py`). The 1-day lake is a
data dir whose only partition is a symlink to the big lake's last day: the very same files, so the
two differ only in how much lake there is around the evaluated day.
Measured, each a median over --repeat runs, alternating so that machine load hits all alike:
- engine: `engine.alerts.run_once(at)`: every window query through the views, the rules, and the
  lifecycle transaction in SQLite (the alerts it opens are updated by the following runs);
- floor: hand-written DuckDB queries computing the same figures straight from `read_parquet` of
  exactly that day's files, with literal bounds, no views, no rules, no SQLite.
Targets (exit 1 when missed): engine <= 1.5x the floor; the 30-day engine time <= 1.2x the 1-day one.
The lakes have no key quotas, so quota_exceeded checks nothing in those runs; the cost of the quota
usage it reads (`engine.quotas.usage`, summed from raw records by the quotas module, which the detector
reuses for EZ_ALERT_QUOTA_REFRESH_SECONDS) is printed apart for the demo quotas (--quota-usage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402
from engine.alerts.thresholds import Thresholds  # noqa: E402

FLOOR_TARGET = 1.5
SCALE_TARGET = 1.2


def floor_queries(files: str, at: dt.datetime, t: Thresholds) -> list[str]:
    """The figures every rule needs, written by hand for one day's files."""
    def window(minutes: int) -> str:
        start = at - dt.timedelta(minutes=minutes)
        return f"created_at >= TIMESTAMPTZ '{start.isoformat()}' AND created_at < TIMESTAMPTZ '{at.isoformat()}'"

    src = f"read_parquet('{files}')"
    midnight = dt.datetime.combine(at.date(), dt.time(), dt.UTC)
    surge_start = at - dt.timedelta(minutes=t.traffic_spike.surge_window_minutes)
    base_start = surge_start - dt.timedelta(minutes=t.traffic_spike.surge_baseline_minutes)
    return [
        f"SELECT master_id, count(*), count(*) FILTER (WHERE status_code = 429) FROM {src} "
        f"WHERE {window(t.rate_limit.window_minutes)} GROUP BY 1",
        f"SELECT key_id, max(master_id), count(*), count(*) FILTER (WHERE status_code >= 400 AND status_code <> 429) "
        f"FROM {src} WHERE {window(t.error_spike.window_minutes)} GROUP BY 1",
        f"SELECT provider_key_id, count(*), count(*) FILTER (WHERE status_code >= 500) FROM {src} "
        f"WHERE {window(t.provider_down.window_minutes)} AND provider_key_id IS NOT NULL GROUP BY 1",
        f"SELECT master_id, count(*), sum(prompt_tokens + completion_tokens) FROM {src} "
        f"WHERE {window(t.traffic_spike.window_minutes)} GROUP BY 1",
        f"WITH r AS (SELECT master_id, created_at >= TIMESTAMPTZ '{surge_start.isoformat()}' AS w, "
        f"(epoch_us(created_at) - epoch_us(TIMESTAMPTZ '{base_start.isoformat()}')) // 60000000 AS m FROM {src} "
        f"WHERE created_at >= TIMESTAMPTZ '{base_start.isoformat()}' AND created_at < TIMESTAMPTZ '{at.isoformat()}'), "
        f"p AS (SELECT master_id, count(*) FILTER (WHERE w) AS a, count(*) FILTER (WHERE NOT w) AS b, "
        f"bitstring_agg(m, 0, {t.traffic_spike.surge_baseline_minutes - 1}) FILTER (WHERE NOT w) AS bits "
        f"FROM r GROUP BY 1) SELECT master_id, a, b, bit_count(bit_or(bits) OVER ()) FROM p",
        f"SELECT master_id, count(*), sum(prompt_tokens + completion_tokens) FROM {src} "
        f"WHERE created_at >= TIMESTAMPTZ '{midnight.isoformat()}' AND created_at < TIMESTAMPTZ '{at.isoformat()}' "
        f"GROUP BY 1",
    ]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_day_lake(big: Path, day: dt.date, into: Path) -> Path:
    """A data dir whose log_records hold only `day`: a symlink to the big lake's partition."""
    partition = f"date={day.isoformat()}"
    (into / "log_records").mkdir(parents=True)
    (into / "log_records" / partition).symlink_to(big / "log_records" / partition, target_is_directory=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path("/work/bench-data/lake-30x5m"))
    parser.add_argument("--at", default="2026-01-30T14:10:00+00:00", help="The evaluated instant (in the last day).")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--quota-usage", action="store_true", help="Also time the demo quotas' usage (slow).")
    args = parser.parse_args()
    if not (args.lake / "READY").exists():
        print(f"{args.lake} is not ready: run bench/lake.py first", file=sys.stderr)
        return 2
    at = dt.datetime.fromisoformat(args.at)
    days = sorted(p.name for p in (args.lake / "log_records").glob("date=*"))
    print(f"lake: {args.lake} ({len(days)} days: {(args.lake / 'READY').read_text().strip()}); evaluation at {at}")

    with tempfile.TemporaryDirectory(prefix="ezstats-bench-alerts-") as scratch:
        scratch_dir = Path(scratch)
        lakes = {
            "1 day": one_day_lake(args.lake, at.date(), scratch_dir / "one-day"),
            f"{len(days)} days": scratch_dir / "all-days",
        }
        # The big lake's own control store is left alone: the 30-day data dir links every partition.
        (lakes[f"{len(days)} days"] / "log_records").mkdir(parents=True)
        for name in days:
            (lakes[f"{len(days)} days"] / "log_records" / name).symlink_to(args.lake / "log_records" / name)
        engines = {label: Engine(Settings(data_dir=path), clock=lambda: at) for label, path in lakes.items()}
        thresholds = Thresholds()
        files = str(args.lake / "log_records" / f"date={at.date().isoformat()}" / "*.parquet")
        floor_con = duckdb.connect()
        floor_con.execute("SET TimeZone = 'UTC'")
        floor_sql = floor_queries(files, at, thresholds)

        def floor() -> None:
            for q in floor_sql:
                floor_con.sql(q).fetchall()

        results: dict[str, list[float]] = {"floor": [], **{label: [] for label in engines}}
        for engine in engines.values():   # warm-up: file cache, thresholds row, the kept connection
            engine.alerts.run_once(at)
        floor()
        for _ in range(args.repeat):
            results["floor"].append(timed(floor))
            for label, engine in engines.items():
                results[label].append(timed(lambda engine=engine: engine.alerts.run_once(at)))
        first = engines["1 day"].alerts.run_once(at)
        print(f"one evaluation: {first.observations} observations, "
              f"{len(engines['1 day'].alerts.list_alerts().alerts)} alerts stored")
        if args.quota_usage:
            from engine.demo import DEMO_QUOTAS

            for label, engine in engines.items():
                engine.quotas.seed(DEMO_QUOTAS)
                took = timed(lambda engine=engine: engine.quotas.usage(at))
                print(f"quota usage of the {len(DEMO_QUOTAS)} demo quotas, {label}: {took * 1000:.0f} ms")

    medians = {k: statistics.median(v) for k, v in results.items()}
    floor_s = medians["floor"]
    one, many = medians["1 day"], medians[f"{len(days)} days"]
    print(f"\n{'path':<22}{'median ms':>10}{'vs floor':>10}")
    print(f"{'floor (raw DuckDB)':<22}{floor_s * 1000:>10.1f}{1.0:>10.2f}")
    for label in engines:
        print(f"{'engine, ' + label:<22}{medians[label] * 1000:>10.1f}{medians[label] / floor_s:>10.2f}")
    print(f"\n{len(days)}-day / 1-day: {many / one:.2f} (target <= {SCALE_TARGET}); "
          f"engine / floor: {one / floor_s:.2f} and {many / floor_s:.2f} (target <= {FLOOR_TARGET})")
    ok = many / one <= SCALE_TARGET and max(one, many) / floor_s <= FLOOR_TARGET
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
