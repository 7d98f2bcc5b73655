"""Jobs on the big lake: quota usage, cleaner/compaction planning, and compaction vs its floor.

One command: `python bench/jobs.py` (options: --lake, --repeat, --compact-rows, --files).
Reads the shared lake (default /work/bench-data/lake-30x5m) without writing to it:
- quota usage of every key with traffic, periods spanning the whole lake (monthly-like), through the
  engine's `quota_usage` query, vs the floor `SELECT sum(quota_cost)` over the same partitions;
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
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings, catalog, queries  # noqa: E402
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


def bench_quota_usage(lake: Path, repeat: int) -> None:
    settings = Settings(data_dir=lake)
    con = catalog.connect(settings.data_dir)
    [(first, last)] = con.execute("SELECT min(date), max(date) FROM log_records").fetchall()
    keys = [k for (k,) in con.execute("SELECT DISTINCT key_id FROM log_records WHERE date = $d ORDER BY 1",
                                      {"d": last}).fetchall()]
    start = dt.datetime.combine(first, dt.time(), dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC)
    rows = con.execute("SELECT count(*) FROM log_records").fetchall()[0][0]

    def usage() -> None:
        queries.run(con, "quota_usage", key_ids=keys, starts=[start] * len(keys), since=start, end=end)

    def floor() -> None:
        con.execute("SELECT sum(quota_cost) FROM log_records WHERE date >= $a AND date <= $b AND "
                    "created_at >= $s AND created_at < $e", {"a": first, "b": last, "s": start, "e": end}).fetchall()

    t_usage, t_floor = median_seconds(repeat, usage), median_seconds(repeat, floor)
    print(f"quota usage, {len(keys):,} keys over {rows:,} records ({first}..{last}): "
          f"{t_usage:.2f} s median; floor sum(quota_cost) {t_floor:.2f} s; ratio {t_usage / t_floor:.2f}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, default=Path("/work/bench-data/lake-30x5m"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compact-rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    bench_quota_usage(args.lake, args.repeat)
    bench_compaction(args.lake, args.compact_rows, args.files, args.repeat)


if __name__ == "__main__":
    main()
