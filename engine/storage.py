"""Where the lake's files live: a local folder (the default) or an S3-compatible bucket, behind one interface.

`EZ_LAKE_URL` names the lake: a path (`./data`, the data dir itself) or `s3://bucket/prefix`, with
`EZ_S3_ENDPOINT_URL` for S3-compatible servers (SeaweedFS, MinIO, ...) and credentials from the standard
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_REGION` variables. Keys are relative to the lake
root (`log_records/date=2026-01-15/part-....parquet`), the same on both backends.

Object storage has no rename, so nothing here renames: an object is written whole, once, under a name no
other writer uses (`put(..., if_absent=True)` is a conditional PUT, `If-None-Match: *`: of two racing
writers one wins), and which objects are live is the control store's business (`engine.manifest`).

DuckDB reads the bucket through s3fs registered on each connection (`attach`): DuckDB's own httpfs
extension cannot be installed offline. Replacing it with httpfs where extensions load is a change to
`S3Storage.attach` and `S3Storage.url` alone.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from engine.errors import ConfigurationError

if TYPE_CHECKING:
    import duckdb
    import pyarrow.fs

S3_SCHEME = "s3://"


class Storage(Protocol):
    """The lake's files: read, written whole, deleted; named by keys relative to the lake root."""

    @property
    def url(self) -> str:
        """The lake URL as configured (a path, or s3://bucket/prefix)."""
        ...

    @property
    def remote(self) -> bool:
        """Object storage: no rename, no flock; the manifest decides which files are live."""
        ...

    def path(self, key: str) -> str:
        """What DuckDB, pyarrow and Polars open for `key` (a local path, or an s3:// URL)."""
        ...

    def put(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        """Write `data` whole at `key`. With `if_absent`, only if nothing is there yet (returns False then)."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes at `key`. Raises FileNotFoundError."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Delete `keys`; a key already gone is not an error."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder-like prefix, without trailing slash), sorted."""
        ...

    def modified(self, prefix: str) -> dict[str, float]:
        """Every key under `prefix` with its last-modified time (POSIX seconds)."""
        ...

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let a DuckDB connection read `path(key)` URLs."""
        ...

    def arrow(self) -> pyarrow.fs.FileSystem:
        """A pyarrow file system over the same files (for footers and whole-file reads)."""
        ...

    def arrow_path(self, key: str) -> str:
        """The path of `key` for `arrow()`."""
        ...


@dataclass(frozen=True)
class LocalStorage:
    """The lake in a local folder: today's layout under the data dir."""

    root: Path
    url: str = ""
    remote: bool = False

    def path(self, key: str) -> str:
        """The absolute path of `key`."""
        return str(self.root / key)

    def put(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        """Write `key` through a temporary name and a rename, fsync-ed; `if_absent` by O_EXCL on the name."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if if_absent and target.exists():
            return False
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if if_absent:
            try:
                os.link(temp, target)  # fails if the name exists: the local conditional PUT
            except FileExistsError:
                return False
            finally:
                temp.unlink()
            return True
        os.replace(temp, target)
        return True

    def get(self, key: str) -> bytes:
        """The file's bytes."""
        return (self.root / key).read_bytes()

    def delete(self, keys: list[str]) -> None:
        """Unlink each file."""
        for key in keys:
            (self.root / key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        """Files under the folder `prefix`, relative to the root."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def modified(self, prefix: str) -> dict[str, float]:
        """Files under `prefix` with their mtimes."""
        return {key: (self.root / key).stat().st_mtime for key in self.list(prefix)}

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Nothing to do: DuckDB reads local files itself."""

    def arrow(self) -> pyarrow.fs.FileSystem:
        """The local file system."""
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    def arrow_path(self, key: str) -> str:
        """The absolute path."""
        return self.path(key)


@dataclass(frozen=True)
class S3Storage:
    """The lake in an S3 bucket under a prefix; `endpoint` for S3-compatible servers."""

    url: str
    bucket: str
    prefix: str
    endpoint: str | None = None
    remote: bool = True

    @cached_property
    def fs(self) -> Any:
        """The s3fs file system (credentials from the AWS_* environment); one per process and lake."""
        kwargs: dict[str, Any] = {"config_kwargs": {"retries": {"max_attempts": 5, "mode": "standard"}}}
        if self.endpoint:
            kwargs["endpoint_url"] = self.endpoint
        if os.environ.get("AWS_REGION"):
            kwargs.setdefault("client_kwargs", {})["region_name"] = os.environ["AWS_REGION"]
        # Listings must be fresh: another replica may have written a file a moment ago.
        return _lake_s3fs()(use_listings_cache=False, skip_instance_cache=True, **kwargs)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def path(self, key: str) -> str:
        """The s3:// URL of `key`."""
        return f"{S3_SCHEME}{self.bucket}/{self._object(key)}"

    def put(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        """One PUT of the whole object; `if_absent` sends `If-None-Match: *` (412: someone else won)."""
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.fs.call_s3("put_object", Bucket=self.bucket, Key=self._object(key), Body=data, **extra)
        except Exception as exc:  # botocore's ClientError, or s3fs's translation of it
            if if_absent and _precondition_failed(exc):
                return False
            raise
        return True

    def get(self, key: str) -> bytes:
        """The object's bytes."""
        data: bytes = self.fs.cat_file(self.path(key))
        return data

    def delete(self, keys: list[str]) -> None:
        """Delete the objects (batched by s3fs)."""
        if keys:
            self.fs.rm([self.path(k) for k in keys])

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix`."""
        base = f"{self.bucket}/{self._object(prefix)}"
        start = len(f"{self.bucket}/{self.prefix}/") if self.prefix else len(f"{self.bucket}/")
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        # A server may keep an empty "folder" entry for the prefix itself: only keys below it count.
        return sorted(p[start:] for p in found if p.startswith(base + "/"))

    def modified(self, prefix: str) -> dict[str, float]:
        """Keys under `prefix` with their LastModified times (one listing)."""
        base = f"{self.bucket}/{self._object(prefix)}"
        start = len(f"{self.bucket}/{self.prefix}/") if self.prefix else len(f"{self.bucket}/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {path[start:]: info["LastModified"].timestamp() for path, info in found.items()
                if path.startswith(base + "/") and "LastModified" in info}

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Register s3fs with DuckDB, so `read_parquet('s3://...')` reads through it."""
        con.register_filesystem(self.fs)

    def arrow(self) -> pyarrow.fs.FileSystem:
        """pyarrow's own S3 client on the same endpoint and credentials."""
        import pyarrow.fs

        kwargs: dict[str, Any] = {}
        if self.endpoint:
            scheme, _, host = self.endpoint.partition("://")
            kwargs.update(endpoint_override=host, scheme=scheme)
        if os.environ.get("AWS_REGION"):
            kwargs["region"] = os.environ["AWS_REGION"]
        return pyarrow.fs.S3FileSystem(**kwargs)

    def arrow_path(self, key: str) -> str:
        """`bucket/prefix/key`."""
        return f"{self.bucket}/{self._object(key)}"


@lru_cache(maxsize=1)
def _lake_s3fs() -> type:
    """s3fs, told what the manifest guarantees: a lake object's name is never reused and its bytes never change.

    DuckDB treats every path of a `read_parquet([...])` list as a glob and asks for each file's size: on plain
    s3fs that is a LIST or HEAD request per file per query. A path without glob characters names a live file
    the manifest listed, so it is its own glob, and its size, once known, is cached.
    """
    import s3fs

    class LakeS3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc]
        _sizes: ClassVar[dict[str, dict[str, Any]]] = {}  # shared: an object never changes, whoever reads it

        def glob(self, path: str, **kwargs: Any) -> Any:
            if not any(c in path for c in "*?[") and not kwargs.get("detail"):
                return [path]
            return super().glob(path, **kwargs)

        def info(self, path: str, **kwargs: Any) -> Any:
            key = self._strip_protocol(path)
            found = self._sizes.get(key)
            if found is None:
                found = super().info(path, **kwargs)
                if found.get("type") == "file":
                    if len(self._sizes) > 100_000:
                        self._sizes.clear()
                    self._sizes[key] = found
            return found

    return LakeS3FileSystem


def _precondition_failed(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or getattr(getattr(exc, "__cause__", None), "response", None)
    code = (response or {}).get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or "PreconditionFailed" in str(exc)


def open_storage(lake_url: str | None, data_dir: Path, endpoint: str | None) -> Storage:
    """The storage a lake URL names: unset or a path means the local folder (the data dir by default).

    Raises:
        ConfigurationError: an s3:// URL without a bucket, or another scheme.
    """
    if not lake_url:
        return LocalStorage(data_dir, str(data_dir))
    if lake_url.startswith(S3_SCHEME):
        bucket, _, prefix = lake_url[len(S3_SCHEME):].partition("/")
        if not bucket:
            raise ConfigurationError(f"EZ_LAKE_URL {lake_url!r} names no bucket (s3://bucket/prefix)")
        return S3Storage(lake_url, bucket, prefix.strip("/"), endpoint)
    if "://" in lake_url:
        raise ConfigurationError(f"EZ_LAKE_URL {lake_url!r}: use a local path or s3://bucket/prefix")
    return LocalStorage(Path(lake_url), lake_url)
