"""File locks as plain range algebra: which lock conflicts, and what one owner holds after a
set or an unlock. No I/O; the engine (meta/engine.py) keeps the result in the `locks` table.

POSIX record locks (fcntl) cover byte ranges [start, end], both inclusive; `end` OFFSET_MAX
(2**63 - 1) means "to the end of the file, however far it grows", exactly as FUSE sends them
(struct fuse_file_lock: start, end, type, pid). One owner's ranges never overlap and
adjacent or overlapping ranges of one type are merged, as Linux keeps them between processes:
setting a type over part of a range of the other type replaces that part, unlocking the
middle of a range splits it.

flock locks are whole-file ([0, OFFSET_MAX]), shared (F_RDLCK) or exclusive (F_WRLCK), and
kept apart from POSIX locks: on Linux a flock lock and a fcntl lock never conflict.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

F_RDLCK = 0  # the Linux values (fcntl.F_RDLCK ...), as FUSE carries them
F_WRLCK = 1
F_UNLCK = 2
OFFSET_MAX = 2**63 - 1  # "to EOF"

POSIX = "p"  # the `kind` of a lock: fcntl record lock
FLOCK = "f"  # flock(2) whole-file lock


@dataclass(slots=True, frozen=True)
class Range:
    """One range one owner holds locked."""

    type: int  # F_RDLCK or F_WRLCK
    start: int
    end: int  # inclusive
    pid: int  # the process that set it (reported by F_GETLK)


@dataclass(slots=True, frozen=True)
class Held:
    """A range and who holds it (`owner`: anything comparable, the engine uses
    (session, lock_owner))."""

    owner: Hashable
    range: Range


def conflicts(a: int, b: int) -> bool:
    """True if lock types `a` and `b` exclude each other (a write lock excludes every lock)."""
    return F_WRLCK in (a, b) and F_UNLCK not in (a, b)


def overlaps(r: Range, start: int, end: int) -> bool:
    return r.start <= end and start <= r.end


def first_conflict(
    held: Iterable[Held], owner: Hashable, type: int, start: int, end: int
) -> Held | None:
    """The lock of another owner (lowest start first) that keeps `owner` from locking
    [start, end] with `type`; None if nothing does. An owner never conflicts with itself."""
    found = [
        h
        for h in held
        if h.owner != owner and overlaps(h.range, start, end) and conflicts(h.range.type, type)
    ]
    return min(found, key=lambda h: (h.range.start, h.range.end), default=None)


def apply(held: Sequence[Range], type: int, start: int, end: int, pid: int) -> list[Range]:
    """What one owner holds after locking [start, end] with `type` (F_UNLCK: unlocking it),
    given what it held (`held`: its ranges, none overlapping). Sorted by start.

    As Linux's posix_lock_inode: the request's range replaces whatever the owner held there;
    what it held on either side stays (split where the request cut a range); the new range
    merges with ranges of the same type it overlaps or touches (the merged range carries the
    request's pid).
    """
    out: list[Range] = []
    for r in held:
        if not overlaps(r, start, end):
            out.append(r)
            continue
        if r.start < start:  # the part left of the request
            out.append(Range(r.type, r.start, start - 1, r.pid))
        if r.end > end:  # the part right of it
            out.append(Range(r.type, end + 1, r.end, r.pid))
    if type != F_UNLCK:
        lo, hi = start, end
        kept = []
        for r in out:
            if r.type == type and (r.end == start - 1 or r.start == end + 1):
                lo, hi = min(lo, r.start), max(hi, r.end)
            else:
                kept.append(r)
        out = [*kept, Range(type, lo, hi, pid)]
    out.sort(key=lambda r: r.start)
    return out


def gave_up(before: Iterable[Range], after: Sequence[Range]) -> bool:
    """True if some byte held before is no longer held with the same type: a lock was
    released or changed, and a waiter elsewhere may now succeed."""
    return any(
        not any(a.type == b.type and a.start <= b.start and b.end <= a.end for a in after)
        for b in before
    )


@dataclass(slots=True, frozen=True)
class Holder:
    """A conflicting lock as F_GETLK reports it, and where its holder mounts the volume."""

    type: int
    start: int
    end: int
    pid: int  # on the holder's host
    session: int
    host: str  # "" if its session is gone
