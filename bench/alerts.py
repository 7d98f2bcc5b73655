"""Alert detection: one evaluation of every rule on a 1-day and a 30-day lake vs the raw DuckDB floor; the
threshold backtest (preview) of 31 days x 5M records.

One command: `python bench/alerts.py` (options: --lake, --at, --repeat, --work, --parts).
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
usage it reads at every evaluation (`engine.quotas.usage`) is printed apart for the demo quotas
(--quota-usage; raw records only here, as these data dirs have no rollups: see bench/jobs.py).

Preview (part `preview`): a data dir linking the lake's 30 days plus a 31st demo day of 5M records
(generated once into --work), previewed whole with the default thresholds through the job path
(submitted, run by the worker thread, polled) in a child process whose peak RSS is read from the
kernel; a second, 7-day preview is submitted with it, to show that queued runs wait rather than add
up in memory. Baselines of the same run: the preview's "minute by minute `alerts detect`" equivalent
(the median of sampled `run_once` evaluations on the same lake x the minutes replayed), and the floor
of reading the same records (alert_minutes over the 31 days, counted, nothing else). Targets: the
31-day preview <= 90 s, peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings, queries  # noqa: E402
from engine.alerts.thresholds import Thresholds  # noqa: E402

FLOOR_TARGET = 1.5
SCALE_TARGET = 1.2
PREVIEW_SECONDS_TARGET = 90.0
PREVIEW_RSS_TARGET_MB = 1024.0
PREVIEW_FIRST = dt.date(2026, 1, 1)
PREVIEW_DAYS = 31


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
    parser.add_argument("--work", type=Path, default=Path("/work/bench-data/alerts-bench"),
                        help="Where the 31st day and the preview's data dir are kept.")
    parser.add_argument("--parts", default="eval,preview", help="eval, preview or both (comma-separated).")
    parser.add_argument("--preview-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.preview_child:
        return preview_child(args.preview_child)
    if not (args.lake / "READY").exists():
        print(f"{args.lake} is not ready: run bench/lake.py first", file=sys.stderr)
        return 2
    ok = True
    if "eval" in args.parts:
        ok &= bench_evaluation(args)
    if "preview" in args.parts:
        ok &= bench_preview(args.lake, args.work)
    return 0 if ok else 1


def bench_evaluation(args: argparse.Namespace) -> bool:
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
    return ok


def preview_lake(lake: Path, work: Path) -> Path:
    """A data dir of the lake's days (links) plus a 31st demo day of 5M records, made once."""
    extra = work / "day31"
    day = PREVIEW_FIRST + dt.timedelta(days=PREVIEW_DAYS - 1)
    if not (extra / "READY").exists():
        print(f"generating the demo day {day} (once) ...", file=sys.stderr, flush=True)
        Engine(Settings(data_dir=extra, scheduler_enabled=False)).generate_demo(1, 5_000_000, 7, day)
        (extra / "READY").write_text(f"{day}\n")
    data = work / "preview"
    shutil.rmtree(data, ignore_errors=True)
    (data / "log_records").mkdir(parents=True)
    for folder in [*sorted((lake / "log_records").glob("date=*")), extra / "log_records" / f"date={day}"]:
        (data / "log_records" / folder.name).symlink_to(folder, target_is_directory=True)
    return data


def preview_child(data: Path) -> int:
    """Run the 31-day preview and a 7-day one through the job path; print JSON (times, minutes, alerts)."""
    now = dt.datetime.combine(PREVIEW_FIRST + dt.timedelta(days=PREVIEW_DAYS), dt.time(), dt.UTC)
    engine = Engine(Settings(data_dir=data, scheduler_enabled=False), clock=lambda: now)
    last = PREVIEW_FIRST + dt.timedelta(days=PREVIEW_DAYS - 1)
    started = time.perf_counter()
    runs = [engine.alerts.submit_preview(None, PREVIEW_FIRST, last),
            engine.alerts.submit_preview(None, last - dt.timedelta(days=6), last)]
    finished: dict[int, float] = {}
    while len(finished) < len(runs):
        for run in runs:
            if run.id not in finished and engine.alerts.preview_run(run.id).status not in ("queued", "running"):
                finished[run.id] = time.perf_counter() - started
        time.sleep(0.1)
    out = []
    before = 0.0   # the runs go one after the other: each one's time is from the end of the one before
    for run in runs:
        done = engine.alerts.preview_run(run.id)
        assert done.result is not None, done.error
        out.append({"id": run.id, "status": done.status, "days": (done.end - done.start).days,
                    "seconds": finished[run.id] - before, "finished_after": finished[run.id],
                    "evaluations": done.result.evaluations, "alerts": done.result.opened,
                    "by_type": done.result.by_type})
        before = finished[run.id]
    print(json.dumps({"runs": out, "peak_rss_mb": peak_rss_mb()}))
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident set since it started (VmHWM: not what a fork inherited before exec,
    which getrusage's maxrss would count)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def bench_preview(lake: Path, work: Path) -> bool:
    data = preview_lake(lake, work)
    # The preview, in a process of its own, so that its peak RSS is its own.
    child = subprocess.run([sys.executable, __file__, "--preview-child", str(data)], capture_output=True, text=True,
                           check=False)
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        return False
    report = json.loads(child.stdout.strip().splitlines()[-1])
    month, week = report["runs"]
    rss_mb = report["peak_rss_mb"]
    # Baselines: minute-by-minute `alerts detect` (sampled evaluations), and reading the same records.
    engine = Engine(Settings(data_dir=data, scheduler_enabled=False))
    first = dt.datetime.combine(PREVIEW_FIRST, dt.time(), dt.UTC)
    samples = [first + dt.timedelta(days=d, hours=(7 * d) % 24, minutes=13) for d in range(0, PREVIEW_DAYS, 3)]
    detect = statistics.median(timed(lambda at=at: engine.alerts.run_once(at)) for at in samples)
    con = engine.connect()
    end = first + dt.timedelta(days=PREVIEW_DAYS)
    floor = timed(lambda: con.sql(
        "SELECT count(*), sum(tokens), count(*) FILTER (WHERE error) FROM (" + queries.load("alert_minutes").text + ")",
        params={"start": first, "end": end, "start_day": first.date(), "end_day": end.date()}).fetchall())
    con.close()
    records = sum(pq.ParquetFile(f).metadata.num_rows for f in data.glob("log_records/date=*/*.parquet"))
    seconds = month["seconds"]
    minute_by_minute = detect * month["evaluations"]
    ok_time, ok_rss = seconds <= PREVIEW_SECONDS_TARGET, rss_mb <= PREVIEW_RSS_TARGET_MB
    print(f"\npreview of {month['days']} days ({records:,} records, {month['evaluations']:,} minutes, default "
          f"thresholds): {month['alerts']} alerts {month['by_type']}")
    print(f"   preview (job: queued, worker thread)  {seconds:8.1f} s   (target <= {PREVIEW_SECONDS_TARGET:.0f} s: "
          f"{'met' if ok_time else 'MISSED'})")
    print(f"   peak RSS of the process               {rss_mb:8.0f} MB  (target <= {PREVIEW_RSS_TARGET_MB:.0f} MB: "
          f"{'met' if ok_rss else 'MISSED'}); a 7-day preview queued with it ran after it "
          f"({week['seconds']:.1f} s, done {week['finished_after']:.1f} s after the submits)")
    print(f"   minute-by-minute `alerts detect`      {minute_by_minute:8.0f} s   (median evaluation "
          f"{detect * 1000:.0f} ms x {month['evaluations']:,}): preview is {minute_by_minute / seconds:.0f}x faster")
    print(f"   floor: reading the same records once  {floor:8.1f} s   preview/floor = {seconds / floor:.2f}")
    return ok_time and ok_rss


if __name__ == "__main__":
    raise SystemExit(main())
