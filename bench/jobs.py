"""Jobs on the big lake: quota usage, cleaner/compaction planning, and compaction vs its floor.

One command: `python bench/jobs.py` (options: --lake, --work, --repeat, --compact-rows, --files).
Reads the shared lake (default /work/bench-data/lake-30x5m) without writing to it:
- quota usage of every key with traffic on the last day, periods spanning the whole lake (30 days, a
  `never` quota's), at NOW of bench/stats.py (mid-afternoon of the last day), in the data dir of
  bench/stats.py (--work: the lake's records hard-linked, with rollups; built on first use). The engine
  (`Stats.quota_cost`: rollups for the hours they hold, raw records for the open hour), warm (nothing
  changed since the last call) and live (a 1,000-record batch lands in the open hour before each
  call), against today's baseline: the same sums from the raw records (RAW_USAGE, the query quota
  usage ran before), and against `SELECT sum(quota_cost)` over the same records; target: engine <= 2 %
  of the baseline, and the same sums;
- listing partitions with row counts from the Parquet footers (what the cleaner and compaction plan on);
- compaction of --compact-rows records of one day split into --files small files (hard-linked copies in
  a temporary data dir on the same file system) vs the floor of reading, sorting and writing the same
  rows with the lake's writer, nothing else.
Prints medians over --repeat runs and ratios to the floors measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402
from engine.lake import write_parquet  # noqa: E402
from engine.partitions import list_partitions  # noqa: E402
from engine.schema import LOG_RECORD_SCHEMA  # noqa: E402


def median_seconds(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# Today's baseline: each key's usage summed from the raw records (the query quota usage ran before rollups).
RAW_USAGE = """
WITH periods AS (
    SELECT unnest(CAST($key_ids AS BIGINT[])) AS key_id, unnest(CAST($starts AS TIMESTAMPTZ[])) AS period_start
),
recent AS (
    SELECT key_id, created_at, quota_cost
    FROM log_records
    WHERE date >= CAST(CAST($since AS TIMESTAMPTZ) AS DATE) AND date <= CAST(CAST($end AS TIMESTAMPTZ) AS DATE)
      AND created_at >= $since AND created_at < $end
)
SELECT p.key_id, CAST(coalesce(sum(r.quota_cost), 0) AS BIGINT) AS used
FROM periods AS p
LEFT JOIN recent AS r ON r.key_id = p.key_id AND r.created_at >= p.period_start
GROUP BY p.key_id
ORDER BY p.key_id
"""
QUOTA_TARGET = 0.02


def bench_quota_usage(lake: Path, work: Path, repeat: int) -> bool:
    from bench import stats as stats_bench

    engine = stats_bench.setup(lake, work)
    if not (work / "ROLLUPS_READY").exists():
        stats_bench.part_backfill(engine, rebuild=True)
    now = stats_bench.NOW
    con = engine.connect()
    [(first, last)] = con.execute("SELECT min(date), max(date) FROM log_records").fetchall()
    keys = [k for (k,) in con.execute("SELECT DISTINCT key_id FROM log_records WHERE date = $d ORDER BY 1",
                                      {"d": last}).fetchall()]
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    rows = con.execute("SELECT count(*) FROM log_records WHERE created_at < $e", {"e": now}).fetchall()[0][0]
    starts = dict.fromkeys(keys, start)

    def raw() -> dict[int, int]:
        table = con.sql(RAW_USAGE, params={"key_ids": keys, "starts": [start] * len(keys), "since": start,
                                           "end": now}).to_arrow_table()
        return dict(zip(table["key_id"].to_pylist(), table["used"].to_pylist(), strict=True))

    def floor() -> None:
        con.execute("SELECT sum(quota_cost) FROM log_records WHERE date >= $a AND date <= $b AND "
                    "created_at >= $s AND created_at < $e", {"a": first, "b": last, "s": start, "e": now}).fetchall()

    # Alternating, so that the machine's load hits all alike. "live": a batch of LIVE_BATCH records lands
    # in the open hour before each call, as on a gateway (the call is timed, not the ingest).
    batches = iter(stats_bench.live_batches(lake / "log_records"))
    times: dict[str, list[float]] = {"warm": [], "live": [], "raw": [], "floor": []}
    engine.stats.quota_cost(starts, now)   # the first call reads and keeps the closed days' part
    for _ in range(repeat):
        times["warm"].append(median_seconds(1, lambda: engine.stats.quota_cost(starts, now)))
        engine.ingest_table(next(batches), batch_id=uuid.uuid4().hex)
        times["live"].append(median_seconds(1, lambda: engine.stats.quota_cost(starts, now)))
        times["raw"].append(median_seconds(1, raw))
        times["floor"].append(median_seconds(1, floor))
    exact = engine.stats.quota_cost(starts, now) == raw()
    t_warm, t_live, t_raw, t_floor = (statistics.median(times[k]) for k in ("warm", "live", "raw", "floor"))
    ratios = {"warm": t_warm / t_raw, "live": t_live / t_raw}
    print(f"quota usage, {len(keys):,} keys over {rows:,} records ({first} .. {now:%Y-%m-%d %H:%M}), "
          f"medians of {repeat}:")
    for mode, took in (("warm", t_warm), ("live", t_live)):
        print(f"   engine, {mode} (rollups + raw)  {took * 1000:9.1f} ms   engine/baseline = {ratios[mode]:.2%} "
              f"(target <= {QUOTA_TARGET:.0%}: {'met' if ratios[mode] <= QUOTA_TARGET else 'MISSED'})")
    print(f"   baseline (raw records)       {t_raw * 1000:9.1f} ms")
    print(f"   floor sum(quota_cost)        {t_floor * 1000:9.1f} ms   engine live/floor = {t_live / t_floor:.2%}")
    print(f"   same sums as the raw records: {'yes' if exact else 'NO'}")
    con.close()
    return exact and max(ratios.values()) <= QUOTA_TARGET


def bench_listing(lake: Path, repeat: int) -> None:
    settings = Settings(data_dir=lake)
    t_list = median_seconds(repeat, lambda: list_partitions(settings.data_dir / "log_records"))
    files = sum(len(p.files) for p in list_partitions(settings.data_dir / "log_records"))
    print(f"list partitions with footer row counts ({files} files): {t_list * 1000:.0f} ms median")


def bench_compaction(lake: Path, rows: int, files: int, repeat: int) -> None:
    day = list_partitions(lake / "log_records")[0]
    source = [pq.ParquetFile(day.path / name) for name in sorted(day.files)]
    table = pa.concat_tables(f.read() for f in source).slice(0, rows)
    compaction_times, floor_times = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            engine = Engine(Settings(data_dir=Path(tmp), scheduler_enabled=False))
            folder = Path(tmp) / "log_records" / f"date={day.day}"
            folder.mkdir(parents=True)
            step = -(-rows // files)
            for i in range(files):
                write_parquet(table.slice(i * step, step), folder / f"part-{i:05d}.parquet", 131_072)
            paths = sorted(folder.iterdir())

            def floor(paths: list[Path] = paths, out: Path = Path(tmp) / "floor.parquet") -> None:
                merged = pa.concat_tables(pq.ParquetFile(p).read() for p in paths)
                merged = merged.select(LOG_RECORD_SCHEMA.names).cast(LOG_RECORD_SCHEMA)
                write_parquet(merged.take(pc.sort_indices(merged.column("created_at"))), out, 131_072)

            floor_times.append(median_seconds(1, floor))  # also warms the page cache for both
            start = time.perf_counter()
            outcome = engine.compactor.run(engine.clock())
            compaction_times.append(time.perf_counter() - start)
            assert outcome.rows == rows, outcome
    t_c, t_f = statistics.median(compaction_times), statistics.median(floor_times)
    print(f"compaction of {rows:,} records in {files} files: {t_c:.2f} s median ({rows / t_c:,.0f} records/s); "
          f"floor read+sort+write {t_f:.2f} s; ratio {t_c / t_f:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path("/work/bench-data/lake-30x5m"))
    parser.add_argument("--work", type=Path, default=Path("/work/bench-data/stats-bench"),
                        help="bench/stats.py's data dir (its rollups are built there on first use).")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compact-rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--only-quota", action="store_true", help="Only the quota usage part.")
    args = parser.parse_args()
    ok = bench_quota_usage(args.lake, args.work, args.repeat)
    if not args.only_quota:
        bench_listing(args.lake, args.repeat)
        bench_compaction(args.lake, args.compact_rows, args.files, args.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
