"""A reader process for test_crash: counts rows through a plain glob until told to stop.

Run as `python -m tests.crash_counter DATA_DIR ACK_LOG OUT STOP`; writes one JSON line per count:
acked rows before, rows seen, distinct request ids seen, acked rows after, or the error it hit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb

from tests.crash_writer import read_acks


def main() -> None:
    data_dir, ack_log, out, stop = map(Path, sys.argv[1:5])
    pattern = str(data_dir / "log_records" / "**" / "*.parquet")
    con = duckdb.connect()
    with out.open("w") as sink:
        while not stop.exists():
            before = sum(read_acks(ack_log).values())
            try:
                if not any((data_dir / "log_records").glob("**/*.parquet")):
                    seen = distinct = 0
                else:
                    seen, distinct = con.execute(
                        f"SELECT count(*), count(DISTINCT request_id) FROM read_parquet('{pattern}')"
                    ).fetchone()
                error = None
            except duckdb.Error as exc:
                seen = distinct = -1
                error = str(exc)
            after = sum(read_acks(ack_log).values())
            sink.write(json.dumps({"before": before, "seen": seen, "distinct": distinct, "after": after,
                                   "error": error}) + "\n")
            sink.flush()


if __name__ == "__main__":
    main()
