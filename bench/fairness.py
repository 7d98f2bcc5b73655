"""Fairness: p95 of a light stats request while 4 heavy ones run, against the same request on an idle server.

One command: `python bench/fairness.py [--days 8] [--rows-per-day 300000] [--requests 40]`.
A demo lake (made once under --work) is served by a real `ezstats serve` on loopback. The light request is
`/admin/stats?period=today` (rollups plus the open hour); the heavy one `/admin/stats?period=last7d&source=raw
&group_by=key` (every raw record of a week, exact percentiles per key). Four client threads send heavy
requests back to back while a fifth times light ones. Run twice in one go: with the default gate
(EZ_STATS_HEAVY_CONCURRENCY=1: heavy requests queue, one at a time on one DuckDB thread) and with the gate
opened to 64 (heavy requests all run at once, each still on one thread). Prints p50/p95 and the ratio to
the idle p95; exits 1 if the gated ratio is over the target (TARGET).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402

LIGHT = {"period": "today"}
HEAVY = {"period": "last7d", "source": "raw", "group_by": "key"}
TARGET = 3.0  # light p95 under load / light p95 idle, with the gate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_lake(work: Path, days: int, rows: int) -> Path:
    data = work / f"lake-{days}x{rows}"
    if not (data / "READY").exists():
        started = time.perf_counter()
        engine = Engine(Settings(data_dir=data, scheduler_enabled=False))
        engine.generate_demo(days, rows, seed=3)
        engine.stats.refresh_rollups(engine.clock())
        engine.stats.run_daily(engine.clock())
        (data / "READY").write_text(f"{dt.date.today()}\n")
        print(f"made {data} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return data


def timed_get(client: httpx.Client, params: dict[str, str]) -> float:
    start = time.perf_counter()
    r = client.get("/admin/stats", params=params)
    r.raise_for_status()
    return time.perf_counter() - start


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def run(data: Path, gate: int, requests: int) -> tuple[list[float], list[float], int]:
    """Light request times idle and under load, and how many heavy requests completed meanwhile."""
    port = free_port()
    env = {**os.environ, "EZ_DATA_DIR": str(data), "EZ_SCHEDULER_ENABLED": "false", "EZ_LOG_LEVEL": "WARNING",
           "EZ_STATS_HEAVY_CONCURRENCY": str(gate), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for _ in range(300):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            for _ in range(3):  # warm: caches, connections, the heavy query's files
                timed_get(client, LIGHT)
            timed_get(client, HEAVY)
            idle = [timed_get(client, LIGHT) for _ in range(requests)]
            stop = threading.Event()
            heavy_done = [0]

            def hammer() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as own:
                    while not stop.is_set():
                        timed_get(own, HEAVY)
                        heavy_done[0] += 1

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(1.0)  # all four in flight
            loaded = []
            for _ in range(requests):
                loaded.append(timed_get(client, LIGHT))
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join()
        return idle, loaded, heavy_done[0]
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--rows-per-day", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--work", type=Path, default=Path("/work/bench-data/fairness"))
    args = parser.parse_args()
    data = make_lake(args.work, args.days, args.rows_per_day)
    print(f"\n{args.days} days x {args.rows_per_day:,} records; {args.requests} light requests per phase; "
          f"cores: {os.cpu_count()}\n")
    print("| gate | light p50 idle | light p95 idle | light p50 loaded | light p95 loaded | p95 ratio | heavy done |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for gate in (1, 64):
        idle, loaded, heavy = run(data, gate, args.requests)
        ratio = p95(loaded) / p95(idle)
        ratios[gate] = ratio
        print(f"| {gate} | {statistics.median(idle) * 1000:.0f} ms | {p95(idle) * 1000:.0f} ms | "
              f"{statistics.median(loaded) * 1000:.0f} ms | {p95(loaded) * 1000:.0f} ms | {ratio:.2f}x | {heavy} |")
    ok = ratios[1] <= TARGET
    print(f"\ntarget: with the gate (1), light p95 under 4 heavy requests <= {TARGET}x idle: "
          f"{'met' if ok else 'MISSED'} ({ratios[1]:.2f}x; gate opened: {ratios[64]:.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
