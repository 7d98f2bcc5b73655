"""Advisory file locks (flock): held by a process until it releases them or dies, never left stale."""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def flock(path: Path, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (created if missing) for the block.

    With `wait=False` the block runs at once and is given False when another holder has the lock.
    The kernel drops the lock when the process dies, so a crash never leaves a stale lock.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """Take the lock on `path` without waiting and keep it: the open descriptor (close it to release),
    or None when another holder has it or the file's folder is gone."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


_COUNT = struct.Struct("<q")


@contextmanager
def counted_flock(path: Path) -> Iterator[int]:
    """`flock` that counts its holds in the locked file: yields the (even) count before this hold, and the file
    reads count + 1 (odd) while it is held and count + 2 after (see `holds`).

    A process that read an even count before some work and reads the same count after knows that no hold was
    under way, began or ended meanwhile. A hold its process died in leaves the count odd; the next one counts
    it ended. The count is not fsync-ed: it coordinates live processes, whose memory a machine crash takes
    with it.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        count = _read_count(fd)
        count += count % 2
        os.pwrite(fd, _COUNT.pack(count + 1), 0)
        try:
            yield count
        finally:
            os.pwrite(fd, _COUNT.pack(count + 2), 0)
    finally:
        os.close(fd)


def holds(path: Path) -> int:
    """The hold count of a `counted_flock` file now, without taking the lock (0 before its first hold)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        return _read_count(fd)
    finally:
        os.close(fd)


def _read_count(fd: int) -> int:
    data = os.pread(fd, _COUNT.size, 0)
    return _COUNT.unpack(data)[0] if len(data) == _COUNT.size else 0
