"""Group commit: calls that arrive while a commit is running are committed together by the next one.

The fixed cost of a durable write (fsyncs, a ledger transaction, a file per partition) is paid once per
group instead of once per call. No call waits for company: the first caller commits alone at once, and
callers arriving meanwhile queue up; when a commit ends, the first of them commits everything queued
(up to a size), so groups grow exactly as fast as commits fall behind arrivals. Every caller gets its
own result or exception, only once its group's commit returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Slot(Generic[Item, Result]):
    item: Item
    size: int
    woken: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None


class GroupCommitter(Generic[Item, Result]):
    """Gathers concurrent `submit` calls into groups for one `commit` call each.

    Args:
        commit: stores a group; returns one result or exception per item, in order. An exception it
            raises is every item's.
        size: the weight of an item (e.g. its records); a group stops growing at `max_size` (it always
            takes at least one item).
        max_size: the most weight one group holds.
    """

    def __init__(self, commit: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
                 size: Callable[[Item], int], max_size: int) -> None:
        self._commit = commit
        self._size = size
        self._max_size = max_size
        self._lock = threading.Lock()
        self._queue: list[_Slot[Item, Result]] = []
        self._leading = False
        self.groups = 0  # groups committed by this process: what a test or a benchmark reads
        self.items = 0

    def submit(self, item: Item) -> Result:
        """Commit `item` with whatever else is waiting; returns its result once its group is committed."""
        slot: _Slot[Item, Result] = _Slot(item, self._size(item))
        with self._lock:
            self._queue.append(slot)
            if not self._leading:
                self._leading = slot.lead = True
        if not slot.lead:
            slot.woken.wait()
        if not slot.done:  # woken to lead the next group (its own item is in it)
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def waiting(self) -> int:
        """How many calls are queued for the next group."""
        with self._lock:
            return len(self._queue)

    def _lead(self) -> None:
        with self._lock:
            group: list[_Slot[Item, Result]] = []
            weight = 0
            while self._queue and (not group or weight + self._queue[0].size <= self._max_size):
                weight += self._queue[0].size
                group.append(self._queue.pop(0))
            self.groups += 1
            self.items += len(group)
        try:
            results = list(self._commit([slot.item for slot in group]))
            if len(results) != len(group):
                raise RuntimeError(f"group commit answered {len(results)} results for {len(group)} items")
        except BaseException as exc:  # every caller of the group learns it, and the next group still runs
            results = [exc] * len(group)
        for slot, result in zip(group, results, strict=True):
            slot.done = True
            if isinstance(result, BaseException):
                slot.error = result
            else:
                slot.result = result
        with self._lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].woken.set()
            else:
                self._leading = False
        for slot in group:
            slot.woken.set()
