"""Group commit: calls that arrive while a commit is running are committed together by the next one.

The fixed cost of a durable write (fsyncs, a ledger transaction, a file per partition) is paid once per
group instead of once per call. No call waits for company: the first caller commits alone at once, and
callers arriving meanwhile queue up; when a commit ends, the first of them commits everything queued
(up to a size), so groups grow exactly as fast as commits fall behind arrivals. Every caller gets its
own result or exception, only once its group's commit returned.

With `wait`, a commit that finds fewer callers queued than were in flight at the end of the previous one (its
group and those queued behind it) waits a little, at most `wait` and half the previous commit's time, for the
others to come back. Without it, a steady stream from a fixed set of clients split into two groups taking turns
(1 + 15, or 8 + 8, of 16 clients waiting for their answers), each paying a whole commit.

`submit_later` is the same without a waiting thread (an event loop's request): its result goes to a callback,
and a thread of the committer's own leads the groups that no waiting caller leads. At hundreds of small
requests a second, a thread parked per request cost more than the requests' own work (hops, wake-ups, the
GIL changing hands).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Slot(Generic[Item, Result]):
    item: Item
    size: int
    woken: threading.Event | None = None  # a `submit` caller's, set when its group is done or it is to lead
    lead: bool = False
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None
    notify: Callable[[Result | BaseException], None] | None = None  # a `submit_later` call's callback


class GroupCommitter(Generic[Item, Result]):
    """Gathers concurrent `submit` calls into groups for one `commit` call each.

    Args:
        commit: stores a group; returns one result or exception per item, in order. An exception it
            raises is every item's.
        size: the weight of an item (e.g. its records); a group stops growing at `max_size` (it always
            takes at least one item).
        max_size: the most weight one group holds.
        wait: the most seconds a commit waits for the callers of the previous round to queue again (0: never).
    """

    def __init__(self, commit: Callable[[Sequence[Item]], Sequence[Result | BaseException]],
                 size: Callable[[Item], int], max_size: int, wait: float = 0.0) -> None:
        self._commit = commit
        self._size = size
        self._max_size = max_size
        self._wait = wait
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._last = (0, 0.0)  # after the previous commit: the items in flight (its group, those queued), its seconds
        self._queue: list[_Slot[Item, Result]] = []
        self._leading = False
        self.groups = 0  # groups committed by this process: what a test or a benchmark reads
        self.items = 0
        self._leader = ThreadPoolExecutor(1, thread_name_prefix="ezstats-group")  # leads for `submit_later` calls

    def submit(self, item: Item) -> Result:
        """Commit `item` with whatever else is waiting; returns its result once its group is committed."""
        woken = threading.Event()
        slot: _Slot[Item, Result] = _Slot(item, self._size(item), woken)
        with self._lock:
            self._queue.append(slot)
            self._arrived.notify()
            if not self._leading:
                self._leading = slot.lead = True
        if not slot.lead:
            woken.wait()
        if not slot.done and self._lead():  # woken to lead the next group (its own item is in it)
            self._leader.submit(self._lead_all)  # the one after is a `submit_later` call's: not this caller's work
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def submit_later(self, item: Item, notify: Callable[[Result | BaseException], None]) -> None:
        """Queue `item` and return at once: `notify` gets its result or exception, on a committing thread, once its
        group is committed. It must not block (e.g. hand the result to an event loop)."""
        slot: _Slot[Item, Result] = _Slot(item, self._size(item), notify=notify)
        with self._lock:
            self._queue.append(slot)
            self._arrived.notify()
            if self._leading:
                return
            self._leading = slot.lead = True
        self._leader.submit(self._lead_all)

    def _lead_all(self) -> None:
        while self._lead():
            pass

    def waiting(self) -> int:
        """How many calls are queued for the next group."""
        with self._lock:
            return len(self._queue)

    def _lead(self) -> bool:
        """Commit the queued items (up to the size); True when the next group is this thread's to lead as well."""
        with self._lock:
            items, seconds = self._last
            if self._wait and len(self._queue) < items:
                deadline = time.monotonic() + min(self._wait, seconds / 2)
                while (len(self._queue) < items and sum(slot.size for slot in self._queue) < self._max_size
                       and (left := deadline - time.monotonic()) > 0):
                    self._arrived.wait(left)
            group: list[_Slot[Item, Result]] = []
            weight = 0
            while self._queue and (not group or weight + self._queue[0].size <= self._max_size):
                weight += self._queue[0].size
                group.append(self._queue.pop(0))
            self.groups += 1
            self.items += len(group)
        started = time.monotonic()
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
        again = False
        with self._lock:
            self._last = (len(group) + len(self._queue), time.monotonic() - started)
            if not self._queue:
                self._leading = False
            elif (woken := self._queue[0].woken) is not None:  # a waiting caller: it leads on its own thread
                self._queue[0].lead = True
                woken.set()
            else:
                again = True
        for slot, result in zip(group, results, strict=True):
            if slot.notify is None:
                assert slot.woken is not None  # a `submit` caller's slot
                slot.woken.set()
                continue
            try:
                slot.notify(result)
            except Exception:  # one caller's broken callback must not leave the others unanswered
                log.exception("a group commit callback failed")
        return again
