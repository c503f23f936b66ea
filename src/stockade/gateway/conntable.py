"""`ConnectionTable`: the server-wide count of open connections per client address.

The supervisor creates it before it starts workers: a sealed memfd (it cannot shrink or
grow, so no worker can make another fault on it) that every worker maps, read by each from
a socket only once it is confined and not dumpable (`worker.received_table`). Layout: a
header (cells, columns, the hash key), `cells` 16-byte address keys, then one column of
`cells` 32-bit counters per worker. A worker writes only its own column; an address's
count is the sum over the columns. Its cell is found by a keyed hash (BLAKE2b with a key
drawn per server, so a client cannot pick addresses that collide) and at most `PROBE`
cells of linear probing. A key is written only under a lock (a POSIX lock on the memfd,
never waited on for more than about a millisecond: a process that holds it, such as one
of the same user that opened a worker's descriptor, must not stall the event loops; a
new address is then refused, `BUSY`)
and only into a cell every column counts 0 for; a worker's own count rises from 0 only
under that lock, so a free cell stays free while the lock is held. Counting up from 1 or
down needs no lock. Two workers admitting one address at once can each see the other's
count late: the cap is then passed by at most one connection per other worker.

When a worker dies the supervisor zeroes its column (`clear`): its connections died
with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import time
from functools import lru_cache

__all__ = ["ConnectionTable", "PROBE", "CELLS", "AT_LIMIT", "FULL", "BUSY", "cells_for"]

PROBE = 8  # cells an address may be found in
CELLS = 65536
AT_LIMIT = -1  # `acquire`: the address holds the limit already
FULL = -2  # `acquire`: a new address, and no free cell for it
BUSY = -3  # `acquire`: a new address, and the lock held elsewhere past LOCK_TRIES
LOCK_TRIES = 20  # attempts to take the lock, LOCK_PAUSE seconds apart
LOCK_PAUSE = 50e-6

_MAGIC = b"STKCONN1"
_HEADER = struct.Struct("<8sII16s")
_HEADER_SIZE = 64
_KEY = 16


def _size(cells: int, columns: int) -> int:
    return _HEADER_SIZE + cells * _KEY + columns * cells * 4


def cells_for(addresses: int) -> int:
    """Cells for a table meant to hold `addresses`: twice as many. An address finds a
    cell among PROBE, and at two thirds full a new one began to find none (with 64 cells,
    the first refusal came at the 41st address)."""
    return 2 * addresses


class ConnectionTable:
    """A mapped table (see the module docstring). `create` in the supervisor; in a worker,
    the table of the descriptor it inherited; `column` is the worker's writer."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        try:
            size = os.fstat(fd).st_size
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError as exc:
            raise ValueError(f"connection table: descriptor {fd}: {exc.strerror}") from None
        needed = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
        if seals & needed != needed or size < _HEADER_SIZE:
            raise ValueError(f"connection table: descriptor {fd} is not a sealed table")
        self._map = mmap.mmap(fd, size)
        magic, cells, columns, key = _HEADER.unpack_from(self._map)
        if magic != _MAGIC or cells < PROBE or columns < 1 or size != _size(cells, columns):
            self._map.close()
            raise ValueError(f"connection table: descriptor {fd} is not a sealed table")
        self.cells, self.columns, self._key = int(cells), int(columns), bytes(key)
        self._keys = memoryview(self._map)[_HEADER_SIZE:_HEADER_SIZE + cells * _KEY]
        self._counts = memoryview(self._map)[_HEADER_SIZE + cells * _KEY:].cast("I")
        self.start = lru_cache(maxsize=4096)(self._start)

    @classmethod
    def create(cls, columns: int, cells: int = CELLS) -> ConnectionTable:
        """A new table of `cells` addresses for `columns` workers (zeroed)."""
        if cells < PROBE or columns < 1:
            raise ValueError(f"connection table: {cells} cells, {columns} columns")
        fd = os.memfd_create("stockade-connections", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, _size(cells, columns))
        with mmap.mmap(fd, _HEADER_SIZE) as header:
            _HEADER.pack_into(header, 0, _MAGIC, cells, columns, os.urandom(16))
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        return cls(fd)

    def _start(self, key: bytes) -> int:
        digest = hashlib.blake2b(key, digest_size=8, key=self._key).digest()
        return int.from_bytes(digest, "little") % (self.cells - PROBE + 1)

    def total(self, cell: int) -> int:
        """Connections counted at `cell`, over every column."""
        return int(sum(self._counts[cell::self.cells]))

    def held(self, key: bytes) -> int:
        """Connections counted for the address `key` (16 bytes), over every column."""
        start = self.start(key)
        for cell in range(start, start + PROBE):
            if self._keys[cell * _KEY:(cell + 1) * _KEY] == key:
                return self.total(cell)
        return 0

    def addresses(self) -> int:
        """Cells some column counts connections in."""
        return sum(1 for cell in range(self.cells) if self.total(cell))

    def claim(self, key: bytes) -> int:
        """The cell of `key`, written into a free one of its cells when it has none;
        FULL when all are taken. Called with the lock held."""
        start = self.start(key)
        free = FULL
        for cell in range(start, start + PROBE):
            if self._keys[cell * _KEY:(cell + 1) * _KEY] == key:
                return cell
            if free == FULL and not self.total(cell):
                free = cell
        if free != FULL:
            self._keys[free * _KEY:(free + 1) * _KEY] = key
        return free

    def clear(self, column: int) -> None:
        """Zero `column` (its worker is gone)."""
        self._counts[column * self.cells:(column + 1) * self.cells] = \
            memoryview(bytes(self.cells * 4)).cast("I")

    def column(self, index: int) -> Column:
        """The writer of column `index`."""
        if not 0 <= index < self.columns:
            raise ValueError(f"connection table: no column {index} of {self.columns}")
        return Column(self, index)

    def counts(self) -> memoryview:
        """Every column's counters, column after column."""
        return self._counts

    def lock(self, on: bool) -> bool:
        """Take the table's lock (False when it stayed held elsewhere for LOCK_TRIES
        attempts), or give it back."""
        if not on:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
            return True
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:  # EAGAIN or EACCES: held by another process
                if attempt + 1 < LOCK_TRIES:
                    time.sleep(LOCK_PAUSE)
        return False

    def close(self) -> None:
        """Unmap and close the descriptor. Safe twice."""
        if self.fd < 0:
            return
        self._keys.release()
        self._counts.release()
        self.start.cache_clear()
        self._map.close()
        os.close(self.fd)
        self.fd = -1


class Column:
    """One worker's writer: counts its connections in its own column."""

    def __init__(self, table: ConnectionTable, index: int) -> None:
        self.table = table
        self._base = index * table.cells
        self._counts = table.counts()
        self._mine: dict[bytes, int] = {}  # address -> cell this column counts it in
        self._keys: dict[int, bytes] = {}

    def acquire(self, key: bytes, limit: int) -> int:
        """Count one more connection of the address `key`: its cell, or AT_LIMIT when it
        holds `limit` already (server-wide), or FULL (counted nowhere)."""
        cell = self._mine.get(key)
        if cell is not None:
            return self._add(cell, limit)
        table = self.table
        if not table.lock(True):
            return BUSY
        try:
            cell = table.claim(key)
            if cell == FULL:
                return FULL
            cell = self._add(cell, limit)
        finally:
            table.lock(False)
        if cell >= 0:
            self._mine[key] = cell
            self._keys[cell] = key
        return cell

    def _add(self, cell: int, limit: int) -> int:
        own = self._base + cell
        self._counts[own] += 1
        if self.table.total(cell) > limit:
            self._counts[own] -= 1
            return AT_LIMIT
        return cell

    def release(self, cell: int) -> None:
        """One connection counted at `cell` by `acquire` has ended."""
        own = self._base + cell
        left = self._counts[own] - 1
        self._counts[own] = left
        if left == 0:
            del self._mine[self._keys.pop(cell)]
