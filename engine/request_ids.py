"""Request ids as 128-bit hashes: how the lake recognises a record it already holds.

SPEC: a record sent twice counts once. Comparing request_id strings against a day of millions would cost
a scan per batch, so each id is reduced to two independent 64-bit hashes, computed column-wide with
numpy (tens of ms per million ids), kept sorted beside the lake (`engine.request_index`) and looked up
by binary search. Two different ids match only if both halves collide: about 1e-25 for a day of 5
million records. The hash is ezstats' own (a multiply-rotate pass over 8-byte words with murmur3's
finalizer), not a library's, so the files on disk mean the same in every version.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_MAGIC = b"EZRID002"
#: Sets smaller than this are sorted by numpy on the caller's thread.
_POLARS_SORT_FROM = 50_000


def hashes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The hashes of a string (or binary) column without nulls: an `(n, 2)` uint64 array in row order."""
    first, second = hash_halves(column)
    return np.column_stack([first, second])


def hash_halves(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit halves of each id's hash, as two arrays in row order (see the module docstring)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    if not pa.types.is_binary(column.type):
        column = column.cast(pa.binary())
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32)[column.offset: column.offset + len(column) + 1].astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    padded = np.zeros(len(data) + 16, np.uint8)
    padded[: len(data)] = data
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    shortest, longest = int(lengths.min()), int(lengths.max())
    if shortest == longest and longest > 0:
        # Ids of one length (UUIDs, say) sit at a fixed stride: each word is a strided view, no gather.
        def word_at(k: int) -> np.ndarray:
            return np.ndarray((len(starts),), "<u8", padded, int(starts[0]) + k, (longest,)).copy()
    else:
        # Every byte offset viewed as the start of a little-endian 8-byte word (unaligned reads).
        words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))

        def word_at(k: int) -> np.ndarray:
            return words[np.minimum(starts + k, len(words) - 1)]

    with np.errstate(over="ignore"):
        size = lengths.astype(np.uint64)
        h1 = size * _P3 ^ _P1
        h2 = size * _P1 + _P2
        for k in range(0, longest, 8):
            word = word_at(k)
            if k + 8 > shortest:  # some ids end inside (or before) this word: keep only their own bytes
                left = np.clip(lengths - k, 0, 8).astype(np.uint64)
                word &= np.where(left == 8, _ONES, (np.uint64(1) << (left * np.uint64(8))) - np.uint64(1))
            n1 = h1 ^ word
            n1 *= _P1
            n1 = (n1 << np.uint64(31)) | (n1 >> np.uint64(33))
            n2 = h2 + word
            n2 *= _P2
            n2 ^= n2 >> np.uint64(29)
            if k >= shortest:  # an id that has ended keeps its value, so it hashes alike in any batch
                live = lengths > k
                n1 = np.where(live, n1, h1)
                n2 = np.where(live, n2, h2)
            h1, h2 = n1, n2
        return _finish(h1), _finish(h2 ^ (h1 >> np.uint64(7)))


def _finish(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finalizer: every input bit reaches every output bit."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h *= _M1
        h ^= h >> np.uint64(33)
        h *= _M2
        h ^= h >> np.uint64(33)
    return h


@dataclass(frozen=True)
class HashSet:
    """Hashes of request ids sorted by their first half, with `rows`: where each came from in its batch."""

    firsts: np.ndarray
    seconds: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, pairs: np.ndarray) -> HashSet:
        """Sort the `(n, 2)` hashes of a batch."""
        return cls.of_halves(np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1]))

    @classmethod
    def of_halves(cls, first: np.ndarray, second: np.ndarray) -> HashSet:
        """Sort a batch's hashes given as their two halves in row order (`hash_halves`)."""
        if not len(first):
            return cls.empty()
        if len(first) < _POLARS_SORT_FROM:  # a Polars call costs a few hundred microseconds before it sorts
            rows = np.argsort(first).astype(np.int64)
        else:  # Polars sorts on every core (about twice numpy's speed on two); ties need no order (see duplicates)
            rows = pl.Series(values=first, dtype=pl.UInt64).arg_sort().to_numpy().astype(np.int64)
        return cls(first[rows], second[rows], rows)

    @classmethod
    def of_column(cls, column: pa.Array | pa.ChunkedArray) -> HashSet:
        """The sorted hashes of a column of request_ids (no nulls)."""
        return cls.of_halves(*hash_halves(column))

    @classmethod
    def empty(cls) -> HashSet:
        """No hashes."""
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.firsts)

    def duplicates(self) -> list[tuple[int, int]]:
        """Rows whose hash an earlier row has: `(earlier row, later row)`, ordered by the later row."""
        if len(self) < 2:
            return []
        found = []
        # Only rows whose first halves tie can be duplicates: few, so they are compared one by one.
        start = 0
        for tie in np.flatnonzero(self.firsts[1:] == self.firsts[:-1]):
            i = int(tie)
            if i < start:
                continue
            end = i + 1
            while end < len(self) and self.firsts[end] == self.firsts[i]:
                end += 1
            seen: dict[int, int] = {}
            for j in sorted(range(i, end), key=lambda j: int(self.rows[j])):  # in row order: earliest first
                second, row = int(self.seconds[j]), int(self.rows[j])
                if second in seen:
                    found.append((seen[second], row))
                else:
                    seen[second] = row
            start = end
        return sorted(found, key=lambda pair: pair[1])

    def contains(self, other: HashSet) -> np.ndarray:
        """Which hashes of `other` this set holds: a mask in `other`'s (sorted) order."""
        if not len(self) or not len(other):
            return np.zeros(len(other), bool)
        # `other` is sorted too, so the binary searches walk memory forwards.
        at = np.minimum(np.searchsorted(self.firsts, other.firsts, "left"), len(self) - 1)
        hit = self.firsts[at] == other.firsts
        found = hit & (self.seconds[at] == other.seconds)
        for i in np.flatnonzero(hit & ~found):  # equal first halves, other second: look along the run (rare)
            end = int(np.searchsorted(self.firsts, other.firsts[i], "right"))
            found[i] = bool((self.seconds[at[i]:end] == other.seconds[i]).any())
        return found

    def select(self, mask: np.ndarray) -> HashSet:
        """The hashes where `mask` (in this set's order) is true."""
        return HashSet(self.firsts[mask], self.seconds[mask], self.rows[mask])

    def merge(self, other: HashSet) -> HashSet:
        """Both sets as one (rows are not kept: a merged set is an index, not a batch)."""
        if not len(other):
            return self
        if not len(self):
            return other
        firsts = np.concatenate([self.firsts, other.firsts])
        perm = np.argsort(firsts, kind="stable")  # two sorted runs: a linear merge
        seconds = np.concatenate([self.seconds, other.seconds])
        return HashSet(firsts[perm], seconds[perm], np.zeros(0, np.int64))

    def save(self, path: Path) -> None:
        """Write the set to `path`: a header (magic, count, CRC-32 of the body), then the two halves.

        Not fsync-ed: an index file is derived data. One a crash left empty, short or garbled fails its
        length or checksum when read (`load`), and its day is indexed again from the Parquet files.
        """
        halves = [np.ascontiguousarray(h, "<u8").data for h in (self.firsts, self.seconds)]
        crc = zlib.crc32(halves[1], zlib.crc32(halves[0]))
        with open(path, "wb") as f:
            f.write(_MAGIC + np.uint64(len(self)).tobytes() + np.uint64(crc).tobytes())
            f.write(halves[0])
            f.write(halves[1])

    @classmethod
    def load(cls, path: Path) -> HashSet:
        """Read a set written by `save`.

        Raises:
            ValueError: the file is not one (damaged, truncated, a failed checksum).
        """
        data = path.read_bytes()
        if data[:8] != _MAGIC or len(data) < 24:
            raise ValueError(f"{path} is not a request id index file")
        n = int(np.frombuffer(data, "<u8", 1, 8)[0])
        if len(data) != 24 + 16 * n:
            raise ValueError(f"{path} is truncated")
        if zlib.crc32(memoryview(data)[24:]) != int(np.frombuffer(data, "<u8", 1, 16)[0]):
            raise ValueError(f"{path} fails its checksum")
        firsts = np.frombuffer(data, "<u8", n, 24).astype(np.uint64)
        seconds = np.frombuffer(data, "<u8", n, 24 + 8 * n).astype(np.uint64)
        return cls(firsts, seconds, np.zeros(0, np.int64))
