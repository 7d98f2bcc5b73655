"""The lake on S3 against local disk: stats and alert reads, and backfill on Dask (1 and 2 workers) against local.

One command: `python bench/scale.py [--days 30] [--rows-per-day 20000] [--runs 3]`. It starts SeaweedFS (a real
S3 server, `weed mini`) on loopback, writes the same demo lake twice (local folder, S3 bucket; control store
SQLite for both), then prints medians and ratios against the local baseline measured in the same run:

- S3 read cost: `stats today-like` (a custom period by model, rollups + raw), the same read raw only, and one
  alert detection, S3 over local;
- backfill throughput (days/s and records/s) of the whole range: local executor on the local lake (baseline),
  local executor on S3, Dask LocalCluster with 1 and 2 worker processes on S3.

- ingest through two replicas against one (PostgreSQL control store), and against one replica on the SQLite
  default: `bench/replicas.py`, run last (`--batches` sets its size).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replicas import main as replicas_main  # noqa: E402
from engine import Engine, Settings  # noqa: E402
from engine.executors import Executor, LocalExecutor, open_executor  # noqa: E402
from tests.seaweedfs import seaweedfs  # noqa: E402

END_DAY = dt.date(2026, 1, 30)
NOW = dt.datetime.combine(END_DAY, dt.time(18), dt.UTC)


def median_seconds(run: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls after one warm-up call."""
    run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=("reads", "backfill", "replicas"),
                        help="Measure one part (all by default).")
    parser.add_argument("--batches", type=int, default=100, help="Batches of 2,000 records for the replicas part.")
    args = parser.parse_args()
    first = END_DAY - dt.timedelta(days=args.days - 1)
    if args.only == "replicas":
        return replicas_main(["--batches", str(args.batches)])
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp)) as s3:
        lakes: dict[str, Engine] = {}
        for name, url in (("local", None), ("s3", f"s3://{s3.bucket}/bench")):
            started = time.perf_counter()
            engine = Engine(Settings(data_dir=Path(tmp) / name, lake_url=url, s3_endpoint_url=s3.endpoint,
                                     scheduler_enabled=False), clock=lambda: NOW)
            engine.generate_demo(args.days, args.rows_per_day, 7, END_DAY)
            engine.stats.refresh_rollups(NOW)
            lakes[name] = engine
            print(f"{name} lake: {args.days} days x {args.rows_per_day:,} records in "
                  f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
        rows = args.days * args.rows_per_day

        if args.only != "backfill":
            print_reads(lakes, first, args)
        if args.only != "reads":
            print_backfill(lakes, first, rows, args)
    if args.only is None:
        print()
        return replicas_main(["--batches", str(args.batches)])
    return 0


def print_reads(lakes: dict[str, Engine], first: dt.date, args: argparse.Namespace) -> None:
    """The stats and alert reads on both lakes: medians, and S3 over local."""
    print(f"\nS3 read cost ({args.days} days x {args.rows_per_day:,} records; medians of {args.runs})\n")
    print("| query | local s | S3 s | S3 / local |\n| --- | ---: | ---: | ---: |")
    reads: dict[str, Callable[[Engine], object]] = {
        "stats: 30 days by model, repeated (rollups + raw)": lambda e: e.stats.read("custom", first, END_DAY,
                                                                           group_by="model"),
        "stats: 30 days by model, raw records only": lambda e: e.stats.read("custom", first, END_DAY,
                                                                             group_by="model", source="raw"),
        "stats: today by key": lambda e: e.stats.read("custom", END_DAY, END_DAY, group_by="key"),
        "alert detection (every rule, once)": lambda e: e.alerts.run_once(NOW),
    }
    for label, read in reads.items():
        local = median_seconds(lambda r=read: r(lakes["local"]), args.runs)
        remote = median_seconds(lambda r=read: r(lakes["s3"]), args.runs)
        print(f"| {label} | {local:.3f} | {remote:.3f} | {remote / local:.2f}x |")


def print_backfill(lakes: dict[str, Engine], first: dt.date, rows: int, args: argparse.Namespace) -> None:
    """The whole range's backfill by each executor on each lake, against the local executor on local disk."""
    print(f"\nBackfill of {args.days} days ({rows:,} records), one task per day\n")
    print("| executor | lake | s | days/s | records/s | vs local executor on local disk |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    baseline: list[float] = []

    def measure(label: str, lake: str, executor: Executor) -> None:
        engine = lakes["local" if lake == "local disk" else "s3"]
        s = median_seconds(lambda: engine.stats.backfill(first, END_DAY, force=True, executor=executor), 1)
        baseline.append(baseline[0] if baseline else s)
        print(f"| {label} | {lake} | {s:.1f} | {args.days / s:.2f} | {rows / s:,.0f} | {baseline[0] / s:.2f}x |",
              flush=True)

    measure("local", "local disk", LocalExecutor())
    measure("local", "S3", LocalExecutor())
    from distributed import LocalCluster

    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster:
            executor = open_executor("dask://" + cluster.scheduler_address.removeprefix("tcp://"))
            measure(f"dask, {workers} worker(s)", "local disk", executor)
            measure(f"dask, {workers} worker(s)", "S3", executor)


if __name__ == "__main__":
    raise SystemExit(main())
