"""The open-file table: file handles, and how many are open per inode."""

from __future__ import annotations

import errno
import itertools
from collections import Counter
from dataclasses import dataclass, field

from riverfs.errors import FSError
from riverfs.vfs.reader import ReadState


@dataclass(slots=True, frozen=True)
class Caller:
    """Who opened a handle (the FUSE request context of open/create)."""

    uid: int = 0
    gid: int = 0
    pid: int = 0


@dataclass(slots=True)
class Handle:
    fh: int
    inode: int
    flags: int
    caller: Caller = field(default_factory=Caller)
    read_state: ReadState = field(default_factory=ReadState)
    atime_checked: bool = False
    wrote: bool = False


class HandleTable:
    def __init__(self, limit: int = 1 << 20) -> None:
        self._handles: dict[int, Handle] = {}
        self._per_inode: Counter[int] = Counter()
        self._next = itertools.count(1)
        self.limit = limit

    def open(self, inode: int, flags: int, caller: Caller) -> Handle:
        if len(self._handles) >= self.limit:
            raise FSError(errno.ENFILE, "too many open files on this mount")
        h = Handle(next(self._next), inode, flags, caller)
        self._handles[h.fh] = h
        self._per_inode[inode] += 1
        return h

    def get(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FSError(errno.EBADF, f"file handle {fh}") from None

    def close(self, fh: int) -> tuple[Handle, bool]:
        """Drop a handle; also say whether it was the inode's last."""
        h = self._handles.pop(fh)
        self._per_inode[h.inode] -= 1
        last = self._per_inode[h.inode] <= 0
        if last:
            del self._per_inode[h.inode]
        return h, last

    def is_open(self, inode: int) -> bool:
        return self._per_inode.get(inode, 0) > 0

    def __len__(self) -> int:
        return len(self._handles)
