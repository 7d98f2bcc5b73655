"""Ingest through two `ezstats serve` replicas against one, on one lake and one PostgreSQL control store.

One command: `python bench/replicas.py` (options: --batches, --records, --clients, --repeat). It starts a
PostgreSQL server in a temp dir (Debian's postgresql package; fsync on), then for each setup a fresh lake and control
store and real `ezstats serve` processes, and posts the same NDJSON batches (each with an Idempotency-Key)
from --clients threads spread over the replicas. Setups, measured in the same run:

- 1 replica, SQLite control store (the embedded default): the baseline;
- 1 replica, PostgreSQL control store;
- 2 replicas, PostgreSQL control store.

Prints median records/s over --repeat runs and the ratios. `main(argv)` is what bench/scale.py calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.secretbox import new_key  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.replicas import replicas  # noqa: E402


def batches(count: int, size: int) -> list[bytes]:
    """`count` NDJSON bodies of `size` valid records each, every request id distinct, within the last hour."""
    now = dt.datetime.now(dt.UTC)
    out = []
    for b in range(count):
        lines = []
        for k in range(size):
            i = b * size + k
            lines.append(orjson.dumps({
                "request_id": f"bench-{b}-{k}",
                "created_at": (now - dt.timedelta(seconds=i % 3600)).isoformat().replace("+00:00", "Z"),
                "master_id": 1 + i % 7, "key_id": 10 + i % 50, "group": "default", "model": f"m-{i % 5}",
                "provider_id": 1 + i % 3, "provider_type": "openai", "provider_key_id": 100 + i % 9,
                "status_code": 200 if i % 20 else 500, "latency_ms": 100 + i % 900, "ttft_ms": 20 + i % 50,
                "prompt_tokens": 10 + i % 100, "completion_tokens": 5 + i % 50, "quota_cost": 3,
                "is_stream": bool(i % 2), "client_ip": "10.0.0.1",
            }))
        out.append(b"\n".join(lines) + b"\n")
    return out


def run(count: int, control: str | None, bodies: list[bytes], clients: int, work: Path) -> float:
    """Records/s of posting `bodies` through `count` fresh replicas (each batch once, spread evenly)."""
    data = Path(tempfile.mkdtemp(prefix="lake-", dir=work))
    env = {"EZ_DATA_DIR": str(data), "EZ_SCHEDULER_ENABLED": "false", "EZ_SECRET_KEY": new_key()}
    if control:
        env["EZ_CONTROL_URL"] = control
    records = sum(body.count(b"\n") for body in bodies)
    with replicas(count, env, data / "_logs") as started, httpx.Client(timeout=120) as http:
        def post(i: int) -> None:
            r = http.post(f"{started[i % count].url}/v1/logs", content=bodies[i],
                          headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": f"b{i}"})
            r.raise_for_status()

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(post, range(len(bodies))))
        elapsed = time.perf_counter() - start
    return records / elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="Batches posted per run.")
    parser.add_argument("--records", type=int, default=2000, help="Records per batch.")
    parser.add_argument("--clients", type=int, default=8, help="Client threads posting at once.")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    bodies = batches(args.batches, args.records)
    server = PostgresServer(durable=True)  # fsync on, as SQLite's synchronous=FULL: a fair comparison
    try:
        with tempfile.TemporaryDirectory(prefix="ezstats-bench-replicas-") as tmp:
            work = Path(tmp)
            rates: dict[str, list[float]] = {"1 replica, SQLite": [], "1 replica, PostgreSQL": [],
                                             "2 replicas, PostgreSQL": []}
            for _ in range(args.repeat):  # interleaved, so that a noisy neighbour hits every setup alike
                rates["1 replica, SQLite"].append(run(1, None, bodies, args.clients, work))
                rates["1 replica, PostgreSQL"].append(run(1, server.database(), bodies, args.clients, work))
                rates["2 replicas, PostgreSQL"].append(run(2, server.database(), bodies, args.clients, work))
    finally:
        server.stop()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    base = medians["1 replica, SQLite"]
    print(f"ingest through replicas: {args.batches} batches x {args.records} records, {args.clients} clients, "
          f"median of {args.repeat}")
    for name, rate in medians.items():
        print(f"  {name:<24} {rate:>12,.0f} records/s  {rate / base:5.2f}x the SQLite baseline")
    two, one = medians["2 replicas, PostgreSQL"], medians["1 replica, PostgreSQL"]
    print(f"  2 replicas / 1 replica (PostgreSQL): {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
