"""Ingest throughput: HTTP NDJSON, file ingest (NDJSON, Parquet) vs the floor of writing Parquet directly.

One command: `python bench/ingest.py` (options: --records, --batch, --clients, --repeat; --curve only the
batch-size curve below, --paths only this table).
The floor is pyarrow writing the same records, already in memory, straight to one zstd Parquet file.
For NDJSON files a second floor, pyarrow read_json + write_table, prices the JSON parsing that the
first floor does not pay. Everything else includes decoding, validation, sorting, partitioning, fsync and the ledger.
Prints medians over --repeat runs and ratios to the floor measured in the same run; exits 1 if a
target is missed (HTTP >= 300,000 records/s, file ingest >= 70 % of its floor).

The batch-size curve: 16 clients (keep-alive HTTP/1.1 on loopback, one asyncio loop) POST NDJSON batches of
1, 10, 100, 1,000 and 50,000 records for --seconds each to a fresh `ezstats serve` (scheduler off). Each size
runs, alternately, against the baseline (EZ_INGEST_GROUP_RECORDS=1: every batch stored alone, as before group
commit), group commit, and group commit with `serve --workers 2`. It prints records/s, the ratio to the
baseline, p50/p99 request latency, Parquet files created per 100k records, and the mean batches per group of
the intake (joined validation) and of the lake commit, read from /metrics (medians of --repeat runs), and
the targets: 10-record batches >= 20k records/s, 100-record >= 100k/s, 1,000-record >= 250k/s.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import io
import math
import os
import re
import shutil
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


CURVE_SIZES = (1, 10, 100, 1_000, 50_000)
CURVE_TARGETS = {10: 20_000, 100: 100_000, 1_000: 250_000}
CURVE_MODES = {"baseline: each batch alone": ({"EZ_INGEST_GROUP_RECORDS": "1"}, 1),
               "group commit": ({}, 1),
               "group commit, --workers 2": ({}, 2)}


def start_server(data_dir: Path, env_extra: dict[str, str], workers: int = 1) -> tuple[subprocess.Popen[bytes], int]:
    """`ezstats serve` over `data_dir` on a free loopback port, once it answers /healthz; its stderr goes to
    `data_dir`.log (see `server_log`)."""
    port = free_port()
    env = {**os.environ, "EZ_DATA_DIR": str(data_dir), "EZ_LOG_LEVEL": "WARNING", "EZ_SCHEDULER_ENABLED": "false",
           "PYTHONPATH": str(ROOT), **env_extra}
    with open(data_dir.with_suffix(".log"), "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers",
                                   str(workers)], cwd=ROOT, env=env, stderr=log)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return server, port
        except httpx.TransportError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("ezstats serve did not start")


async def post_batches(port: int, lines: list[bytes], size: int, clients: int, seconds: float
                       ) -> tuple[int, list[float], int, float]:
    """Clients POST consecutive `size`-record NDJSON batches of `lines` for `seconds` (or until they run out).
    Returns (records acknowledged, request latencies, errors, elapsed seconds)."""
    cursor = 0
    latencies: list[float] = []
    stored = errors = 0

    def take() -> bytes | None:
        nonlocal cursor
        if cursor + size > len(lines):
            return None
        cursor += size
        return b"".join(lines[cursor - size:cursor])

    async def client(stop_at: float) -> None:
        nonlocal stored, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at and (body := take()) is not None:
                started = time.perf_counter()
                writer.write(b"POST /v1/logs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if status == 201:
                    stored += size
                else:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(start + seconds) for _ in range(clients)))
    return stored, latencies, errors, time.perf_counter() - start


def server_log(data_dir: Path, lines: int = 40) -> str:
    """The last lines of the stderr of the server `start_server` ran over `data_dir`."""
    path = data_dir.with_suffix(".log")
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def group_figures(port: int) -> dict[str, float]:
    """The server's `ezstats_ingest_groups_total` and `..._grouped_batches_total` by stage (one process's, under
    --workers 2: whichever answers)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {f"{kind}/{stage}": float(value) for kind, stage, value in re.findall(
        r'^ezstats_ingest_(groups|grouped_batches)_total\{stage="(\w+)"\} (\S+)$', text, re.M)}


def shown(mean: float) -> str:
    return f"{mean:>5.1f}" if not math.isnan(mean) else "    -"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def curve(lines: list[bytes], clients: int, seconds: float, repeat: int, workdir: Path,
          sizes: tuple[int, ...] = CURVE_SIZES) -> bool:
    """Run and print the batch-size curve; False if a target is missed."""
    rows: dict[tuple[int, str], list[tuple[float, ...]]] = {}
    for r in range(repeat):
        for size in sizes:
            for mode, (env_extra, workers) in CURVE_MODES.items():  # alternating: the machine is shared
                data = workdir / f"curve-{r}-{size}-{workers}-{len(env_extra)}"
                server, port = start_server(data, env_extra, workers)
                warm = size * max(2, min(clients * 2, 100_000 // size))  # records of the warm-up
                try:
                    asyncio.run(post_batches(port, lines[:warm], size, clients, 1.0))
                    before = group_figures(port)
                    stored, lat, errors, elapsed = asyncio.run(post_batches(port, lines[warm:], size, clients, seconds))
                    after = group_figures(port)
                except Exception:
                    print(f"\n{size}-record batches, {mode}: the run failed; the server's log ends with:\n"
                          + server_log(data), file=sys.stderr)
                    raise
                finally:
                    server.terminate()
                    server.wait(timeout=60)
                files = sum(1 for _ in (data / "log_records").glob("**/*.parquet"))
                per_group = [(after[k] - before[k]) / (after[g] - before[g]) if after[g] > before[g] else math.nan
                         for k, g in (("grouped_batches/validate", "groups/validate"),
                                      ("grouped_batches/commit", "groups/commit"))]
                rows.setdefault((size, mode), []).append(
                    (stored / elapsed, quantile(lat, 0.5), quantile(lat, 0.99), files * 100_000 / max(stored, 1),
                     errors, *per_group))
                shutil.rmtree(data, ignore_errors=True)
    print(f"\nbatch-size curve: {clients} clients, HTTP NDJSON, {seconds:g} s per point, median of {repeat} runs, "
          f"cores: {os.cpu_count()}\n")
    print(f"| {'batch':>6} | {'mode':<27} | {'records/s':>10} | {'vs base':>7} | {'p50 ms':>7} | {'p99 ms':>7} "
          f"| files/100k | batches/group | errors | target |")
    print(f"|{'-' * 8}|{'-' * 29}|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 9}|------------|---------------|--------|"
          "--------|")
    ok = True
    for size in sizes:
        base = statistics.median(x[0] for x in rows[(size, next(iter(CURVE_MODES)))])
        for mode in CURVE_MODES:
            runs = rows[(size, mode)]
            rate, p50, p99, per_100k, _, validated, committed = (statistics.median(x[i] for x in runs)
                                                                 for i in range(7))
            errors = int(sum(x[4] for x in runs))
            spread = f"{min(x[0] for x in runs):,.0f}-{max(x[0] for x in runs):,.0f}"
            target = "-"
            if size in CURVE_TARGETS and mode == "group commit":
                met = rate >= CURVE_TARGETS[size] and errors == 0
                ok &= met
                target = f">= {CURVE_TARGETS[size] // 1000}k/s {'ok' if met else 'MISS'}"
            print(f"| {size:>6,} | {mode:<27} | {rate:>10,.0f} | {rate / base:>6.2f}x | {p50 * 1000:>7.1f} "
                  f"| {p99 * 1000:>7.1f} | {per_100k:>10,.1f} | {shown(validated)} / {shown(committed)} | {errors:>6} "
                  f"| {target} ({spread}) |")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000, help="records per HTTP request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP requests")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per point of the batch-size curve")
    parser.add_argument("--curve", action="store_true", help="only the batch-size curve")
    parser.add_argument("--sizes", type=lambda text: tuple(int(n) for n in text.split(",")), default=CURVE_SIZES,
                        help="batch sizes of the curve, comma-separated (default: 1,10,100,1000,50000)")
    parser.add_argument("--paths", action="store_true", help="only the table of ingest paths")
    args = parser.parse_args()
    curve_ok = True
    if not args.paths:
        pool = generate_day(dt.date(2026, 1, 15), 2_000_000, seed=2)
        lines = to_ndjson(pool).splitlines(keepends=True)
        del pool
        # Two million lines out of the collector's sight: its full passes over them stalled the clients' loop (the
        # client, not the server, set the pace of small batches).
        gc.freeze()
        with tempfile.TemporaryDirectory(dir=os.environ.get("EZ_BENCH_TMP")) as tmp:
            curve_ok = curve(lines, 16, args.seconds, args.repeat, Path(tmp), args.sizes)
        del lines
        if args.curve:
            return 0 if curve_ok else 1

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
    return 1 if failed or not curve_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
