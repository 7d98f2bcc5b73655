"""The soak: a compressed gateway day at 100M records/day against a real `ezstats serve`, every job on.

One command: `python bench/soak.py [--minutes 10] [--workers 1] [--rate 1157] [--batch N]`.

For --minutes, 16 clients send NDJSON batches of mixed sizes (10 to 2,000 records, most around 100, 274 on
average; --batch N: N each) at
--rate records/s on average (100M/day = 1,157/s), shaped by the demo's diurnal curve compressed into the
run (quiet night, afternoon peak) with bursts of 10x (10 s every 90 s; the rate between bursts is scaled down
so that the average stays --rate). Records are demo records stamped
with the moment they are sent. A dashboard polls `/admin/stats` (today, and grouped by model), the hourly
series and `/admin/alerts` every 5 s. Halfway through, a scripted incident starts: every request of the
busiest key answers 500, which the alert detector must report as an `error_spike` of that key.

Every scheduled job runs (rollups, alert_detector, notifier and token_refresh at their defaults; the daily
ones and compaction, which would not come round in a compressed day, every 60-240 s: see SCHEDULES).

It reports, each with its target and verdict:
- the CPU share of the server's processes over the run (of all cores; target <= 50 %), and the load
  generator's, apart;
- ingest p50/p99 request latency;
- freshness: the time from an acknowledgement until `/admin/stats` counts that batch (probed every 3 s;
  target <= 2 s at p99);
- alert detection latency for the incident (target <= 90 s);
- job runs and durations;
- files in today's partition: most before a compaction, after it, at the end;
- errors: non-2xx answers, failed job runs (target 0).
and prints a README row. The data dir is a fresh temporary one (EZ_BENCH_TMP chooses where).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import itertools
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.ingest import free_port, quantile  # noqa: E402
from engine.demo import generate_day  # noqa: E402

RATE = 100_000_000 / 86_400         # records/s of 100M records/day
BURST, BURST_EVERY, BURST_SECONDS = 10.0, 90.0, 10.0
CLIENTS = 16
SIZES, SIZE_WEIGHTS = (10, 50, 100, 300, 1_000, 2_000), (0.25, 0.2, 0.25, 0.15, 0.1, 0.05)
DASHBOARD_SECONDS = 5.0
FRESHNESS_SECONDS = 3.0
#: Schedules for a compressed day: the daily jobs and compaction come round several times in a run.
SCHEDULES = {"EZ_SCHEDULE_COMPACTION": "120", "EZ_SCHEDULE_DAILY_STATS": "240", "EZ_SCHEDULE_LOG_CLEANER": "240",
             "EZ_SCHEDULE_QUOTA_RESET": "60"}
TARGETS = {"cpu": 0.50, "freshness_s": 2.0, "alert_s": 90.0, "sent": 0.95}


def diurnal(fraction: float) -> float:
    """The demo's traffic curve (engine/demo.py `_timestamps`, mean 1) at a fraction of the day."""
    hours = 24 * fraction
    return 1 + 0.62 * np.cos(2 * np.pi * (hours - 14.5) / 24) + 0.1 * np.cos(4 * np.pi * (hours - 10) / 24)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


class Http:
    """A keep-alive HTTP/1.1 connection on loopback, as light as a load generator needs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", content_type: str = "") -> tuple[int, bytes]:
        """One request; on a connection the server closed meanwhile (idle keep-alive), again on a new one."""
        try:
            return await self._request(method, path, body, content_type)
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            self.reader = self.writer = None
            return await self._request(method, path, body, content_type)

    async def _request(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return status, await self.reader.readexactly(length)


class Soak:
    def __init__(self, port: int, seconds: float, rate: float, pool: pa.Table, incident_key: int,
                 batch: int | None = None) -> None:
        self.port, self.seconds, self.rate, self.pool = port, seconds, rate, pool
        self.batch = batch  # every batch this many records; None: the mix of SIZES
        self.incident_key = incident_key
        self.incident_at: float | None = None
        self.alert_at: float | None = None
        self.start = time.monotonic()
        self.cursor = 0
        self.serial = 0
        self.sent = self.acked = self.batches = 0
        self.owed = 0.0  # records the curve asked for: what a run that keeps up sends
        self.ingest_latency: list[float] = []
        self.freshness: list[float] = []
        self.slow_probes: list[tuple[float, float]] = []  # (wall clock of the ack, freshness) of each probe
        self.errors: list[str] = []
        self.ack_log: list[tuple[float, int]] = []  # (monotonic time, records acked so far)
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        self.baseline_requests = 0
        self.rng = random.Random(7)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def rate_now(self) -> float:
        """Records/s due now: the curve, 10x in a burst, scaled so that the run's average is --rate."""
        t = self.elapsed()
        burst = BURST if t % BURST_EVERY < BURST_SECONDS else 1.0
        bursts = 1 + (BURST - 1) * BURST_SECONDS / BURST_EVERY  # what the bursts add on average
        return self.rate / bursts * diurnal(t / self.seconds) * burst

    def body(self, size: int) -> bytes:
        """The next `size` pool records, stamped now with fresh request ids (the incident's key failing)."""
        if self.cursor + size > self.pool.num_rows:
            self.cursor = 0
        batch = self.pool.slice(self.cursor, size)
        self.cursor += size
        now = dt.datetime.now(dt.UTC)
        ids = pa.array([f"soak-{self.serial + i}" for i in range(size)])
        self.serial += size
        batch = batch.set_column(batch.schema.get_field_index("request_id"), "request_id", ids)
        batch = batch.set_column(batch.schema.get_field_index("created_at"), "created_at",
                                 pa.array([now] * size, pa.timestamp("us", "UTC")))
        if self.incident_at is not None:
            failing = pc.equal(batch.column("key_id"), self.incident_key)
            status = pc.if_else(failing, pa.scalar(500, pa.int16()), batch.column("status_code"))
            batch = batch.set_column(batch.schema.get_field_index("status_code"), "status_code", status)
        sink = io.BytesIO()
        pl.from_arrow(batch).write_ndjson(sink)  # type: ignore[union-attr]
        return sink.getvalue()

    async def produce(self) -> None:
        """Batches due at the current rate, into the clients' queue."""
        owed = 0.0
        last = self.elapsed()
        # The next batch's size is drawn first and sent once that many records are due. (Capping each batch at
        # what was owed, as this did before, sent ~12-record batches every 10 ms, not the mix of SIZES.)
        size = self.next_size()
        while (now := self.elapsed()) < self.seconds:
            if self.incident_at is None and now >= self.seconds / 2:
                self.incident_at = time.monotonic()
            due = self.rate_now() * (now - last)
            owed += due
            self.owed += due
            last = now
            while owed >= size:
                owed -= size
                self.sent += size
                self.batches += 1
                await self.queue.put(self.body(size))
                size = self.next_size()
            await asyncio.sleep(0.01)
        for _ in range(CLIENTS):
            await self.queue.put(None)

    def next_size(self) -> int:
        return self.batch or self.rng.choices(SIZES, SIZE_WEIGHTS)[0]

    async def client(self) -> None:
        http = Http(self.port)
        while (body := await self.queue.get()) is not None:
            started = time.monotonic()
            try:
                status, answer = await http.request("POST", "/v1/logs", body, "application/x-ndjson")
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.errors.append(f"ingest: {exc!r}")
                http = Http(self.port)
                continue
            self.ingest_latency.append(time.monotonic() - started)
            if status != 201:
                self.errors.append(f"ingest {status}: {answer[:200]!r}")
                continue
            self.acked += json.loads(answer)["records"]
            self.ack_log.append((time.monotonic(), self.acked))

    async def get(self, http: Http, path: str) -> dict | list | None:
        try:
            status, answer = await http.request("GET", path)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors.append(f"GET {path}: {exc!r}")
            return None
        if status != 200:
            self.errors.append(f"GET {path} {status}: {answer[:200]!r}")
            return None
        return json.loads(answer)

    async def dashboard(self) -> None:
        http = Http(self.port)
        paths = ["/admin/stats?period=today", "/admin/stats?period=today&group_by=model",
                 "/admin/stats/series?period=today&interval=hour&metric=requests", "/admin/alerts?status=open"]
        while self.elapsed() < self.seconds:
            for path in paths:
                await self.get(http, path)
            await asyncio.sleep(DASHBOARD_SECONDS)

    async def watch_alert(self) -> None:
        """Poll the alerts for the incident's error_spike on its key, from the incident's start."""
        http = Http(self.port)
        while self.elapsed() < self.seconds + 120 and self.alert_at is None:
            if self.incident_at is not None:
                page = await self.get(http, "/admin/alerts?type=error_spike")
                alerts = page["alerts"] if isinstance(page, dict) else []
                if any(a.get("key_id") == self.incident_key for a in alerts):
                    self.alert_at = time.monotonic()
            await asyncio.sleep(1.0)

    async def probe_freshness(self) -> None:
        """After an ack, how long until /admin/stats (today) counts it: poll until its total reaches it.

        The ack probed is the first one after the probe wakes, not the latest one before: when batches are
        seconds apart (large batches at night) the latest may be seconds old, and its age is no delay of stats.
        """
        http = Http(self.port)
        while self.elapsed() < self.seconds:
            await asyncio.sleep(FRESHNESS_SECONDS)
            seen = len(self.ack_log)
            while len(self.ack_log) == seen and self.elapsed() < self.seconds:
                await asyncio.sleep(0.005)
            if len(self.ack_log) == seen:
                break
            acked_at, acked = self.ack_log[seen]
            while True:
                body = await self.get(http, "/admin/stats?period=today")
                if not isinstance(body, dict):
                    break
                if body["totals"]["requests"] - self.baseline_requests >= acked:
                    waited = time.monotonic() - acked_at
                    self.freshness.append(waited)
                    self.slow_probes.append((time.time() - waited, waited))
                    break
                if time.monotonic() - acked_at > 60:
                    self.errors.append("freshness: a batch not counted after 60 s")
                    break
                await asyncio.sleep(0.05)

    async def run(self) -> None:
        first = await self.get(Http(self.port), "/admin/stats?period=today")
        self.baseline_requests = first["totals"]["requests"] if isinstance(first, dict) else 0
        self.start = time.monotonic()
        await asyncio.gather(self.produce(), *(self.client() for _ in range(CLIENTS)), self.dashboard(),
                             self.probe_freshness(), self.watch_alert())


def files_of_today(data: Path) -> int:
    return sum(1 for _ in (data / "log_records" / f"date={dt.datetime.now(dt.UTC).date()}").glob("*.parquet"))


async def sample_files(data: Path, until: float, samples: list[tuple[float, int]]) -> None:
    while time.monotonic() < until:
        samples.append((time.monotonic(), files_of_today(data)))
        await asyncio.sleep(1.0)


def job_windows(db: Path, since: str) -> list[tuple[str, float, float]]:
    """(job, start, end) of each run, wall-clock seconds, to say which jobs a slow probe overlapped."""
    con = sqlite3.connect(db)
    out = []
    for job, started, ms in con.execute(
            "SELECT job, started_at, duration_ms FROM job_runs WHERE started_at >= ? AND duration_ms > 100",
            (since,)):
        start = dt.datetime.fromisoformat(started).timestamp()
        out.append((job, start, start + ms / 1000))
    return out


def slow_probe_report(probes: list[tuple[float, float]], windows: list[tuple[str, float, float]]) -> list[str]:
    """The slowest 3 % of freshness probes (at least 3), each with the jobs that ran while it waited."""
    worst = sorted(probes, key=lambda p: -p[1])[:max(3, len(probes) * 3 // 100)]
    lines = []
    for at, waited in worst:
        jobs = sorted({job for job, start, end in windows if start < at + waited and end > at})
        lines.append(f"{waited:5.2f} s at {dt.datetime.fromtimestamp(at, dt.UTC):%H:%M:%S}: "
                     f"{', '.join(jobs) or 'no job running'}")
    alone = [waited for at, waited in probes
             if not any(start < at + waited and end > at for _, start, end in windows)]
    lines.append(f"p99 of the probes during which no job ran: {quantile(alone, 0.99):.2f} s ({len(alone)} probes)"
                 if alone else "every probe overlapped a job")
    return lines


def job_report(db: Path, since: str) -> tuple[dict[str, list[float]], list[str]]:
    con = sqlite3.connect(db)
    durations: dict[str, list[float]] = {}
    failed = []
    for job, outcome, ms, error in con.execute(
            "SELECT job, outcome, duration_ms, error FROM job_runs WHERE started_at >= ? ORDER BY run_id", (since,)):
        if outcome == "failed":
            failed.append(f"job {job} failed: {(error or '')[:200]}")
        if ms is not None:
            durations.setdefault(job, []).append(ms / 1000)
    return durations, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=RATE, help="records/s on average (100M/day: 1,157)")
    parser.add_argument("--workers", type=int, default=1, help="`ezstats serve --workers`")
    parser.add_argument("--batch", type=int, default=None,
                        help="records in every batch (default: the mix of 10 to 2,000, 274 on average); e.g. 12 for "
                             "the stream of small batches earlier versions of this bench sent")
    args = parser.parse_args()
    seconds = args.minutes * 60
    pool = generate_day(dt.datetime.now(dt.UTC).date(), 400_000, seed=11)
    keys, counts = np.unique(pool.column("key_id").to_numpy(), return_counts=True)
    incident_key = int(keys[np.argmax(counts)])
    with tempfile.TemporaryDirectory(dir=os.environ.get("EZ_BENCH_TMP")) as tmp:
        data, port = Path(tmp) / "data", free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EZ_DATA_DIR": str(data), "EZ_LOG_LEVEL": "WARNING",
               **SCHEDULES}
        server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers",
                                   str(args.workers)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            import httpx
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            started_iso = dt.datetime.now(dt.UTC).isoformat()
            soak = Soak(port, seconds, args.rate, pool, incident_key, args.batch)
            samples: list[tuple[float, int]] = []
            cpu0, own0, wall0 = cpu_seconds(server.pid), time.process_time(), time.monotonic()

            async def everything() -> None:
                await asyncio.gather(soak.run(), sample_files(data, time.monotonic() + seconds + 5, samples))

            asyncio.run(everything())
            wall = time.monotonic() - wall0
            cpu = (cpu_seconds(server.pid) - cpu0) / wall / (os.cpu_count() or 1)
            own = (time.process_time() - own0) / wall / (os.cpu_count() or 1)
        finally:
            server.terminate()
            server.wait(timeout=120)
        durations, failed = job_report(data / "ezstats.db", started_iso)
        slow = slow_probe_report(soak.slow_probes, job_windows(data / "ezstats.db", started_iso))
        end_files = files_of_today(data)
    soak.errors += failed
    before = after = 0
    peak = 0
    for (_, a), (_, b) in itertools.pairwise(samples):
        peak = max(peak, a)
        if b < a:  # a compaction swapped the partition
            before, after = max(before, peak), b
            peak = b
    fresh_p99 = quantile(soak.freshness, 0.99)
    alert_s = None if soak.alert_at is None or soak.incident_at is None else soak.alert_at - soak.incident_at
    rate = soak.acked / seconds
    print(f"\nsoak: {args.minutes:g} min, {args.workers} worker(s), target {args.rate:,.0f} records/s on average "
          f"(100M/day = {RATE:,.0f}/s), {CLIENTS} clients, cores: {os.cpu_count()}\n")
    rows = [
        # The clients send only as fast as they are answered: a run whose batches queue up sends less than the curve
        # owed, and is no soak at the rate it names.
        ("records acknowledged", f"{soak.acked:,} ({rate:,.0f}/s; sent {soak.sent:,} in {soak.batches:,} batches, "
                                 f"{soak.sent / max(soak.batches, 1):,.0f} records each on average; the curve owed "
                                 f"{soak.owed:,.0f})", f">= {TARGETS['sent']:.0%} of owed",
         soak.acked >= TARGETS["sent"] * soak.owed),
        ("server CPU share of all cores", f"{cpu:.1%} (load generator apart: {own:.1%})",
         f"<= {TARGETS['cpu']:.0%}", cpu <= TARGETS["cpu"]),
        ("ingest latency p50 / p99", f"{quantile(soak.ingest_latency, 0.5) * 1000:.0f} / "
         f"{quantile(soak.ingest_latency, 0.99) * 1000:.0f} ms", "-", True),
        ("freshness: ack -> counted by /admin/stats, p50 / p99",
         f"{quantile(soak.freshness, 0.5):.2f} / {fresh_p99:.2f} s ({len(soak.freshness)} probes)",
         f"<= {TARGETS['freshness_s']:g} s", fresh_p99 <= TARGETS["freshness_s"]),
        ("alert detection latency (error_spike of the busiest key)",
         "not detected" if alert_s is None else f"{alert_s:.0f} s", f"<= {TARGETS['alert_s']:g} s",
         alert_s is not None and alert_s <= TARGETS["alert_s"]),
        ("files in today's partition: most before a compaction / after / at the end",
         f"{before} / {after} / {end_files}", "-", True),
        ("errors (non-2xx, failed jobs)", f"{len(soak.errors)}", "0", not soak.errors),
    ]
    for job, times in sorted(durations.items()):
        rows.append((f"job {job}: runs, median / max duration",
                     f"{len(times)}, {statistics.median(times):.2f} / {max(times):.2f} s", "-", True))
    ok = True
    print(f"| {'what':<72} | {'result':<48} | target |")
    print(f"|{'-' * 74}|{'-' * 50}|--------|")
    for what, result, target, met in rows:
        ok &= met
        verdict = "" if target == "-" else (" met" if met else " MISSED")
        print(f"| {what:<72} | {result:<48} | {target}{verdict} |")
    for error in soak.errors[:10]:
        print("error:", error)
    print("\nslowest freshness probes and the jobs that ran meanwhile:")
    for line in slow:
        print("  " + line)
    print("\nREADME row:")
    print(f"| {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} | {args.minutes:g} min, {args.workers} worker(s) "
          f"| {rate:,.0f}/s | {cpu:.0%} | {quantile(soak.ingest_latency, 0.99) * 1000:.0f} ms | {fresh_p99:.2f} s | "
          f"{'-' if alert_s is None else f'{alert_s:.0f} s'} | {before} / {after} / {end_files} | {len(soak.errors)} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
