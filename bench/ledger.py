"""Ledger size: a round of small batches committed over a long ingest ledger, against the same round over an empty one.

One command: `python bench/ledger.py [--rows 1000000] [--rounds 40]`.
The ingest ledger keeps one row per batch for ever (idempotency): at the soak's 100M records a day, in batches of
~274 records, that is ~365,000 rows a day. Each ledger size gets a fresh data dir whose ledger is filled with that
many committed batches (written straight into the ledger table, as the lake writes its rows; 1M take ~15 s), then
each round sends 16 NDJSON bodies of 10 records at once through `Engine.ingest_body` from 16 threads, which the
engine commits as a group (what one round of 16 small-batch clients costs it, without HTTP). Rounds alternate
between the sizes, so a machine that drifts slows them alike. Prints the median round per ledger size and its
ratio to the empty ledger's; exits 1 if the longest ledger's ratio is over TARGET.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402
from engine.demo import generate_day  # noqa: E402

TARGET = 1.5  # a round over the longest ledger / a round over an empty one
CLIENTS = 16
BATCH = 10


def fill_ledger(engine: Engine, rows: int) -> None:
    """`rows` committed batches in the ledger, each naming one file as the lake's rows do."""
    now = dt.datetime.now(dt.UTC).isoformat()
    with engine.infra.store.connect() as con:
        con.executemany(
            "INSERT INTO ingest_batches (batch_id, state, records, files, staging, hours, created_at, committed_at,"
            " fingerprint) VALUES (?, 'committed', ?, ?, ?, ?, ?, ?, ?)",
            ((f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}", BATCH,
              json.dumps([["part-0.parquet", f"log_records/date=2026-01-01/part-{uuid.uuid4().hex}.parquet", BATCH]]),
              uuid.uuid4().hex, json.dumps(["2026-01-01T00:00:00+00:00"]), now, now, uuid.uuid4().hex)
             for _ in range(rows)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows of the longest ledger")
    parser.add_argument("--rounds", type=int, default=40, help="rounds of 16 x 10-record batches per ledger size")
    args = parser.parse_args()
    sizes = sorted({0, args.rows // 10, args.rows})
    records = generate_day(dt.date(2026, 1, 15), CLIENTS * BATCH * args.rounds * len(sizes), seed=7)
    lines = [json.dumps(r, default=str).encode() for r in records.to_pylist()]
    bodies = iter(b"\n".join(lines[i:i + BATCH]) for i in range(0, len(lines), BATCH))
    times: dict[int, list[float]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory(prefix="ezstats-ledger-") as work, ThreadPoolExecutor(CLIENTS) as pool:
        engines = {}
        for size in sizes:
            started = time.perf_counter()
            engines[size] = Engine(Settings(data_dir=Path(work) / str(size), scheduler_enabled=False))
            fill_ledger(engines[size], size)
            print(f"ledger of {size:,} rows filled in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for r in range(args.rounds):
            for size, engine in engines.items():
                batch = [next(bodies) for _ in range(CLIENTS)]
                started = time.perf_counter()
                receipts = list(pool.map(lambda body, e=engine: e.ingest_body(body, "application/x-ndjson"), batch))
                times[size].append(time.perf_counter() - started)
                if any(receipt.records != BATCH for receipt in receipts):  # a round storing nothing would time nothing
                    raise SystemExit(f"a round stored {[x.records for x in receipts]} records, not {BATCH} a batch")
            if (r + 1) % 10 == 0:
                print(f"  {r + 1} of {args.rounds} rounds", file=sys.stderr, flush=True)
    base = statistics.median(times[0])
    print(f"\nA round of {CLIENTS} x {BATCH}-record batches (Engine.ingest_body from {CLIENTS} threads), median of "
          f"{args.rounds}:\n")
    print("| ledger rows | round ms | vs empty ledger | target |")
    print("| ---: | ---: | ---: | --- |")
    ok = True
    for size in sizes:
        ratio = statistics.median(times[size]) / base
        target = "-"
        if size == sizes[-1]:
            ok = ratio <= TARGET
            target = f"<= {TARGET}x {'met' if ok else 'MISS'}"
        print(f"| {size:,} | {statistics.median(times[size]) * 1000:.1f} | {ratio:.2f}x | {target} |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
