"""Where batch work runs: in this process (`local`, the default) or as one task per item on a Dask cluster.

`EZ_EXECUTOR` (or `ezstats backfill --executor`) names it: `local`, or `dask://HOST:PORT` (a Dask scheduler).
An executor maps a task over items; each task must be idempotent, since a cluster may run one twice (a worker
that died mid-task) and a rerun of the whole range is how a failure is repaired. A task that fails, or whose
worker died, becomes `failed(item, error)` in the results: one bad item never stops the others. Another
runner (Spark, whose tasks do their own I/O through the storage layer) is one more class with `map`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from engine.errors import ConfigurationError

T = TypeVar("T")
R = TypeVar("R")

LOCAL = "local"
DASK_SCHEME = "dask://"


class Executor(Protocol):
    """Runs one task per item and returns the results in the items' order."""

    @property
    def name(self) -> str:
        """How settings and reports name it (`local`, `dask://host:port`)."""
        ...

    def map(self, task: Callable[[T], R], items: Sequence[T], failed: Callable[[T, BaseException], R],
            done: Callable[[R], None] | None = None) -> list[R]:
        """`task(item)` for every item; `failed(item, error)` where it raised or its worker died."""
        ...


@dataclass(frozen=True)
class LocalExecutor:
    """Every task in this process, one after the other."""

    name: str = LOCAL

    def map(self, task: Callable[[T], R], items: Sequence[T], failed: Callable[[T, BaseException], R],
            done: Callable[[R], None] | None = None) -> list[R]:
        """Run the tasks in order."""
        out = []
        for item in items:
            try:
                result = task(item)
            except Exception as exc:  # reported with the others, like a failed remote task
                result = failed(item, exc)
            out.append(result)
            if done:
                done(result)
        return out


@dataclass(frozen=True)
class DaskExecutor:
    """One task per item on the Dask cluster whose scheduler listens at `address` (tcp://host:port)."""

    name: str
    address: str

    def map(self, task: Callable[[T], R], items: Sequence[T], failed: Callable[[T, BaseException], R],
            done: Callable[[R], None] | None = None) -> list[R]:
        """Submit every task at once, then collect the results in order; a task whose worker died is retried
        once by Dask on another worker (it is idempotent), then reported failed."""
        from distributed import Client

        out: list[R] = []
        with Client(self.address, set_as_default=False, timeout=30) as client:
            futures = client.map(task, list(items), pure=False, retries=1)
            for item, future in zip(items, futures, strict=True):
                try:
                    result = future.result()
                except Exception as exc:  # the task's own error, or KilledWorker
                    result = failed(item, exc)
                out.append(result)
                if done:
                    done(result)
        return out


def open_executor(url: str) -> Executor:
    """The executor `url` names: `local`, or `dask://host:port`.

    Raises:
        ConfigurationError: anything else.
    """
    if url == LOCAL:
        return LocalExecutor()
    if url.startswith(DASK_SCHEME) and url[len(DASK_SCHEME):]:
        return DaskExecutor(url, "tcp://" + url[len(DASK_SCHEME):])
    raise ConfigurationError(f"executor {url!r}: use local or dask://HOST:PORT")
