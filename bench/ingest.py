"""Ingest throughput: HTTP NDJSON, file ingest (NDJSON, Parquet) vs the floor of writing Parquet directly.

One command: `python bench/ingest.py` (options: --records, --batch, --clients, --repeat).
The floor is pyarrow writing the same records, already in memory, straight to one zstd Parquet file.
For NDJSON files a second floor, pyarrow read_json + write_table, prices the JSON parsing that the
first floor does not pay. Everything else includes decoding, validation, sorting, partitioning, fsync and the ledger.
Prints medians over --repeat runs and ratios to the floor measured in the same run; exits 1 if a
target is missed (HTTP >= 300,000 records/s, file ingest >= 70 % of its floor).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
import pyarrow as pa
import pyarrow.json as pjson
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402
from engine.demo import generate_day  # noqa: E402

HTTP_TARGET = 300_000
FILE_TARGET = 0.70


def median_rate(rows: int, repeat: int, run: Callable[[int], float]) -> float:
    """Median records/s over `repeat` runs; `run(i)` returns its elapsed seconds."""
    return statistics.median(rows / run(i) for i in range(repeat))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def to_ndjson(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pl.from_arrow(table).write_ndjson(sink)  # type: ignore[union-attr]
    return sink.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def to_arrow_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def bench_http(batches: list[bytes], content_type: str, clients: int, repeat: int, workdir: Path) -> list[float]:
    """Seconds per repeat to POST every batch to a real `ezstats serve` on loopback."""
    port = free_port()
    env = {**os.environ, "EZ_DATA_DIR": str(workdir / f"http-{port}"), "EZ_LOG_LEVEL": "WARNING",
           "EZ_SCHEDULER_ENABLED": "false",
           "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)],
                              cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        times = []
        with httpx.Client(base_url=url, timeout=120) as client:
            for r in range(repeat):
                def post(i: int, r: int = r) -> None:
                    resp = client.post("/v1/logs", content=batches[i], headers={
                        "content-type": content_type, "Idempotency-Key": f"bench-{r}-{i}"})
                    resp.raise_for_status()

                with ThreadPoolExecutor(clients) as pool:
                    times.append(timed(lambda: list(pool.map(post, range(len(batches))))))
        return times
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000, help="records per HTTP request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP requests")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    table = generate_day(dt.date(2026, 1, 15), args.records, seed=1)
    n = table.num_rows
    with tempfile.TemporaryDirectory(dir=os.environ.get("EZ_BENCH_TMP")) as tmp:
        work = Path(tmp)
        ndjson_path, parquet_path = work / "in.ndjson", work / "in.parquet"
        ndjson_path.write_bytes(to_ndjson(table))
        pq.write_table(table, parquet_path, compression="zstd")
        batches = [to_ndjson(table.slice(i, args.batch)) for i in range(0, n, args.batch)]

        def floor(i: int) -> float:
            return timed(lambda: pq.write_table(table, work / f"floor-{i}.parquet", compression="zstd",
                                                row_group_size=131_072))

        def file_ingest(path: Path, label: str) -> Callable[[int], float]:
            def run(i: int) -> float:
                engine = Engine(Settings(data_dir=work / f"{label}-{i}"))
                return timed(lambda: engine.ingest_file(path))
            return run

        def json_floor(i: int) -> float:
            def run() -> None:
                parsed = pjson.read_json(ndjson_path)
                pq.write_table(parsed, work / f"jfloor-{i}.parquet", compression="zstd", row_group_size=131_072)
            return timed(run)

        results = {
            "floor: pyarrow write_table, one file": median_rate(n, args.repeat, floor),
            "floor: pyarrow read_json + write_table": median_rate(n, args.repeat, json_floor),
            "file ingest, NDJSON": median_rate(n, args.repeat, file_ingest(ndjson_path, "nd")),
            "file ingest, Parquet": median_rate(n, args.repeat, file_ingest(parquet_path, "pq")),
        }
        http = bench_http(batches, "application/x-ndjson", args.clients, args.repeat, work)
        results[f"HTTP NDJSON, {args.batch:,}-record batches, {args.clients} clients"] = n / statistics.median(http)
        arrow = [to_arrow_stream(table.slice(i, args.batch)) for i in range(0, n, args.batch)]
        http = bench_http(arrow, "application/vnd.apache.arrow.stream", args.clients, args.repeat, work)
        results[f"HTTP Arrow IPC, {args.batch:,}-record batches, {args.clients} clients"] = n / statistics.median(http)

    base = results["floor: pyarrow write_table, one file"]
    print(f"\n{n:,} records, median of {args.repeat} runs, cores: {os.cpu_count()}\n")
    print(f"| {'path':<52} | {'records/s':>12} | {'vs floor':>8} | target |")
    print(f"|{'-' * 54}|{'-' * 14}|{'-' * 10}|--------|")
    failed = False
    for name, rate in results.items():
        if name == "file ingest, NDJSON":
            ratio = rate / results["floor: pyarrow read_json + write_table"]
            ok, target = ratio >= FILE_TARGET, f">= {FILE_TARGET:.0%} of JSON floor ({ratio:.0%})"
        elif name.startswith("file"):
            ok, target = rate / base >= FILE_TARGET, f">= {FILE_TARGET:.0%}"
        elif name.startswith("HTTP NDJSON"):
            ok, target = rate >= HTTP_TARGET, f">= {HTTP_TARGET // 1000}k/s"
        else:
            ok, target = True, "-"
        failed |= not ok
        mark = "" if target == "-" else (" ok" if ok else " MISS")
        print(f"| {name:<52} | {rate:>12,.0f} | {rate / base:>7.0%} | {target}{mark} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
