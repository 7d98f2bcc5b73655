"""Compaction: merge a partition's small files into well-sized ones without a reader ever seeing a mix.

The merged files are written into a new folder outside the table (`<data>/_compaction/`); under the
lake's publish lock the files that arrived meanwhile and the big files are hard-linked into it, and the
new folder is swapped with the partition in one atomic step (see `engine.partitions` for what a
concurrent glob reader sees). The old folder is kept, whole, until `EZ_LAKE_GRACE_SECONDS` have passed.

A run merges the small files batches wrote since the last one; files a run wrote are merged again only
four of a size at a time (`Compactor.small_files`), so a run's work follows what arrived, not the day's
size. The job runs at a lower priority (`engine.scheduler`) and reads on one thread.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.errors import LakeDamaged
from engine.infra import Infra
from engine.lake import write_parquet
from engine.partitions import Partition, exchange, fsync_dir, list_partitions, purge, retire
from engine.schedules import JobOutcome
from engine.schema import LOG_RECORD_SCHEMA
from engine.tables import LOG_RECORDS

log = logging.getLogger(__name__)

FAN_IN = 4  # merged files of one size tier (rows within a factor of 4) that are merged together
_MERGED = re.compile(r"-c\d+\.parquet$")  # the names compaction gives (here and in ObjectLake.replace)


@dataclass(frozen=True)
class PartitionCompaction:
    """What compacting one partition did (or would do)."""

    day: dt.date
    files_in: int
    files_out: int
    rows: int
    skipped: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        return {"day": self.day.isoformat(), "files_in": self.files_in, "files_out": self.files_out,
                "rows": self.rows, "skipped": self.skipped}


class Compactor:
    """Merges small `log_records` files, partition by partition."""

    def __init__(self, infra: Infra) -> None:
        self.infra = infra
        self.table_dir = LOG_RECORDS.root(infra.data_dir)
        self.work = infra.data_dir / "_compaction"
        self.retired = infra.data_dir / "_retired" / LOG_RECORDS.folder
        self.target = infra.settings.compaction_target_rows

    def small_files(self, part: Partition) -> list[str]:
        """The files worth merging now, when there are at least two of them: every small file (under half
        the target size) a batch wrote, and the small files earlier runs wrote once `FAN_IN` of them are of
        one size tier.

        Merged files are merged again only in groups of similar size (size-tiered), not at every run: a run
        then rewrites the records that arrived since the last one rather than the whole growing partition,
        and readers that keep what they read of each file (`engine.stats.live`, the rollups' folds) see
        fewer files change identity.
        """
        small = {name: rows for name, rows in part.files.items() if rows < self.target // 2}
        tiers: dict[int, list[str]] = {}
        for name, rows in small.items():
            if _MERGED.search(name):
                tiers.setdefault(int(math.log(max(rows, 1), FAN_IN)), []).append(name)
        chosen = [n for n in small if not _MERGED.search(n)]
        chosen += [n for names in tiers.values() if len(names) >= FAN_IN for n in names]
        return sorted(chosen) if len(chosen) >= 2 else []

    def dry_run(self, now: dt.datetime) -> JobOutcome:
        """Which partitions `run` would compact, changing nothing."""
        plans = [PartitionCompaction(p.day, len(s), -(-sum(p.files[n] for n in s) // self.target),
                                     sum(p.files[n] for n in s))
                 for p in self._partitions() if (s := self.small_files(p))]
        return _outcome(plans, done=False)

    def run(self, now: dt.datetime) -> JobOutcome:
        """Compact every partition that has small files; purge folders retired past the grace period."""
        grace = self.infra.settings.lake_grace_seconds
        purge(self.work, now, max(grace, 3600))  # build folders left by a crashed run
        results = [self.compact(p, now) for p in self._partitions() if self.small_files(p)]
        purge(self.retired, now, grace)
        if self.infra.lake.objects is not None:
            self.infra.lake.objects.purge(now, grace, LOG_RECORDS.folder,
                                          self.infra.settings.lake_orphan_seconds)
        return _outcome(results, done=True)

    def _partitions(self) -> list[Partition]:
        objects = self.infra.lake.objects
        return objects.partitions(LOG_RECORDS.folder) if objects is not None else list_partitions(self.table_dir)

    def compact(self, part: Partition, now: dt.datetime) -> PartitionCompaction:
        """Merge `part`'s small files (sorted by created_at, `target` rows per file) and swap the folder."""
        small = self.small_files(part)
        rows = sum(part.files[n] for n in small)
        if self.infra.lake.objects is not None:
            return self._compact_objects(part, small, rows, now)
        self.work.mkdir(exist_ok=True)
        build = self.work / f"{part.path.name}.{int(now.timestamp() * 1000)}.{uuid.uuid4().hex[:8]}"
        build.mkdir()
        swapped = False
        try:
            try:
                written = self._merge(part.path, small, part.files, build)
            except FileNotFoundError:  # dropped by the cleaner while we read it
                return PartitionCompaction(part.day, len(small), 0, 0, "partition changed meanwhile")
            except LakeDamaged as exc:  # merging it would spread the damage into the partition's good rows
                log.error("not compacting %s: %s", part.day, exc)
                return PartitionCompaction(part.day, len(small), 0, 0, str(exc))
            with self.infra.lake.publish_lock():
                present = set(os.listdir(part.path)) if part.path.is_dir() else set()
                if not set(small) <= present:
                    return PartitionCompaction(part.day, len(small), 0, 0, "partition changed meanwhile")
                for name in sorted(present - set(small)):
                    os.link(part.path / name, build / name)  # arrivals and big files, same inodes
                fsync_dir(build)
                exchange(build, part.path)
                swapped = True
                fsync_dir(part.path.parent)
                retire(build, self.retired, now)  # `build` now names the old folder
        finally:
            if not swapped:  # after the swap `build` names the old folder, which must outlive the grace period
                shutil.rmtree(build, ignore_errors=True)
        merged = self.infra.lake.request_ids.compact(part.day)
        log.info("compacted %s: %d files (%d rows) into %d; %d request id index files merged", part.day, len(small),
                 rows, written, merged)
        return PartitionCompaction(part.day, len(small), written, rows)

    def _compact_objects(self, part: Partition, small: list[str], rows: int, now: dt.datetime
                         ) -> PartitionCompaction:
        """On object storage: merge into new objects, then one manifest swap (`ObjectLake.replace`)."""
        objects = self.infra.lake.objects
        assert objects is not None
        try:
            tables = [_read_whole(io.BytesIO(objects.storage.get(f"{part.path}/{name}")), f"{part.path}/{name}")
                      for name in small]
        except FileNotFoundError:
            return PartitionCompaction(part.day, len(small), 0, 0, "partition changed meanwhile")
        except LakeDamaged as exc:
            log.error("not compacting %s: %s", part.day, exc)
            return PartitionCompaction(part.day, len(small), 0, 0, str(exc))
        merged = pa.concat_tables(tables)
        merged = merged.take(pc.sort_indices(merged.column("created_at")))
        pieces = [merged.slice(start, self.target) for start in range(0, merged.num_rows, self.target)]
        with self.infra.lake.publish_lock():  # the request index below is merged under the same lock locally
            if not objects.replace(part, small, pieces, self.infra.settings.row_group_rows, now):
                return PartitionCompaction(part.day, len(small), 0, 0, "partition changed meanwhile")
        merged_ids = self.infra.lake.request_ids.compact(part.day)
        log.info("compacted %s: %d objects (%d rows) into %d; %d request id index files merged", part.day,
                 len(small), rows, len(pieces), merged_ids)
        return PartitionCompaction(part.day, len(small), len(pieces), rows)

    def _merge(self, folder: Path, names: list[str], rows: dict[str, int], build: Path) -> int:
        """Write the rows of `names` (`rows`: their row counts) into `build`, grouped into files of about
        `target` rows; returns files."""
        token = uuid.uuid4().hex[:16]
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        groups: list[list[str]] = [[]]
        count = 0
        for name in names:
            if count >= self.target:
                groups.append([])
                count = 0
            groups[-1].append(name)
            count += rows[name]
        for written, group in enumerate(groups):
            table = _read_group(folder, group)
            table = table.take(pc.sort_indices(table.column("created_at")))
            write_parquet(table, build / f"part-{stamp}-{token}-c{written}.parquet",
                          self.infra.settings.row_group_rows)
        return len(groups)


def _read_group(folder: Path, names: list[str]) -> pa.Table:
    """The rows of some files of a folder, checked as a reader would need them (see `_read_whole`).

    One DuckDB scan on one thread reads hundreds of small files several times faster than opening each
    with pyarrow (per-file overhead dominates files of 10 to 2,000 rows), and it refuses what a reader
    would (unreadable files, invalid UTF-8). On any refusal the files are read one by one, which names
    the damaged file (LakeDamaged) or the one that vanished (FileNotFoundError).
    """
    con = duckdb.connect(config={"threads": 1})
    try:
        table = con.read_parquet([str(folder / n) for n in names], hive_partitioning=False).to_arrow_table()
        return table.select(LOG_RECORD_SCHEMA.names).cast(LOG_RECORD_SCHEMA)
    except (duckdb.Error, pa.ArrowException, KeyError, ValueError):
        # ParquetFile, not read_table: no hive `date` column inferred from the folder name.
        return pa.concat_tables([_read_whole(folder / n) for n in names])
    finally:
        con.close()


def _read_whole(path: Path | io.BytesIO, name: str | None = None) -> pa.Table:
    """A log record file (or an object's bytes, `name` its key), checked as a reader would need it (readable,
    valid UTF-8).

    Raises:
        LakeDamaged: it is not; `ezstats lake check --repair` quarantines it.
    """
    try:
        table = pq.ParquetFile(path).read().select(LOG_RECORD_SCHEMA.names).cast(LOG_RECORD_SCHEMA)
        table.validate(full=True)  # pyarrow reads invalid UTF-8 that DuckDB then refuses
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise LakeDamaged(name or str(path), str(exc).strip().splitlines()[0][:300]) from exc
    return table


def _outcome(results: list[PartitionCompaction], done: bool) -> JobOutcome:
    merged = [r for r in results if r.skipped is None]
    verb = "compacted" if done else "would compact"
    message = (f"{verb} {len(merged)} partition(s): {sum(r.files_in for r in merged)} files into "
               f"{sum(r.files_out for r in merged)}")
    return JobOutcome(rows=sum(r.rows for r in merged), message=message,
                      details={"dry_run": not done, "partitions": [r.to_dict() for r in results]})
