"""Refresh events the gateway pushes to a Redis list, consumed reliably.

The gateway `LPUSH`es an event (`{"provider_key_id": 31}` or just `31`) to `EZ_REDIS_REFRESH_QUEUE`. A
consumer moves one event at a time to `<queue>:processing` (`LMOVE`, atomic), hands it to the durable
refresh queue in the control store, and only then removes it from the processing list (the ack). A
consumer that dies in between leaves the event in the processing list, and the next consumer handles it
first: an event is never lost, at worst handled twice (the refresh queue coalesces such a repeat). One
consumer per data dir drains at a time (an flock; a lease across replicas on a shared control store), so
what sits in the processing list when a drain starts belongs to a consumer that died. Events that are
not readable go to `<queue>:dead`, kept for a person to look at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

log = logging.getLogger(__name__)


def redis_client(url: str) -> Any:
    """A client of the Redis at `url` (imported here: only deployments with Redis need the module loaded)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def parse_event(raw: bytes | str) -> int | None:
    """The provider key id of an event: `{"provider_key_id": N}` (other fields ignored) or `N`; None if neither."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if isinstance(data, dict):
        data = data.get("provider_key_id")
    if isinstance(data, str) and data.isdigit():
        data = int(data)
    return data if isinstance(data, int) and not isinstance(data, bool) and data > 0 else None


class RedisEvents:
    """The consumer of one Redis list of refresh events."""

    def __init__(self, url: str, queue: str, lock: Callable[[], AbstractContextManager[bool]]) -> None:
        self.url = url
        self.queue = queue
        self.processing = f"{queue}:processing"
        self.dead = f"{queue}:dead"
        self.lock = lock

    def drain(self, handle: Callable[[int], object], limit: int = 1000) -> int:
        """Hand every waiting event (first those a dead consumer left) to `handle(provider_key_id)`, acking each
        after `handle` returns; returns how many were taken. 0 at once when another consumer is draining."""
        with self.lock() as locked:
            if not locked:
                return 0
            client = redis_client(self.url)
            try:
                taken = 0
                # Left by a consumer that died between taking and acking: oldest (rightmost) first.
                while taken < limit and (raw := client.lindex(self.processing, -1)) is not None:
                    self._handle(client, raw, handle)
                    taken += 1
                while taken < limit and (raw := client.lmove(self.queue, self.processing, "RIGHT", "LEFT")) is not None:
                    self._handle(client, raw, handle)
                    taken += 1
                return taken
            finally:
                client.close()

    def _handle(self, client: Any, raw: bytes, handle: Callable[[int], object]) -> None:
        provider_key_id = parse_event(raw)
        if provider_key_id is None:
            log.warning("unreadable refresh event moved to %s (%d bytes)", self.dead, len(raw))
            client.lpush(self.dead, raw)
        else:
            handle(provider_key_id)
        client.lrem(self.processing, -1, raw)
