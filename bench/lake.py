"""Make (once) the shared benchmark lake: N days x M demo records/day, through the real ingest path.

One command: `python bench/lake.py [--days 30] [--rows-per-day 5000000] [--out /work/bench-data/lake-30x5m]`.
Kept outside the repository; a READY file marks a complete lake, so a rerun of a finished lake is
instant and an interrupted one resumes (each day is an idempotent batch).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Engine, Settings  # noqa: E402

END_DAY = dt.date(2026, 1, 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("/work/bench-data/lake-30x5m"))
    args = parser.parse_args()
    ready = args.out / "READY"
    if ready.exists():
        print(f"{args.out} is ready: {ready.read_text().strip()}")
        return 0
    engine = Engine(Settings(data_dir=args.out))
    started = time.perf_counter()

    def progress(day: dt.date, receipt: object) -> None:
        print(f"{day}: {time.perf_counter() - started:7.1f}s", file=sys.stderr, flush=True)

    engine.generate_demo(args.days, args.rows_per_day, args.seed, END_DAY, progress=progress)
    ready.write_text(f"{args.days} days x {args.rows_per_day} rows/day, seed {args.seed}, "
                     f"ending {END_DAY}\n")
    print(f"made {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
