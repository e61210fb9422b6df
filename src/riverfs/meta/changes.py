"""Change events: what one mount tells the others after a transaction commits.

A write transaction notes what it changed (`Changes`); the engine publishes the notes with the
commit (PostgreSQL: NOTIFY in the same transaction; SQLite: a changelog row), and every other
mount drops the kernel's cached entries and attributes for them (vfs/watcher.py).

Text form, small enough for a NOTIFY payload: `<session>|<event>;<event>...` where an event is
`e<parent>/<hex name>` (a directory entry appeared, vanished or changed), `a<inode>`
(attributes changed), `d<inode>` (contents changed), `s<inode>` (its slices were laid out anew
with the same contents, by compaction: a mount drops its chunk views, which name slices that
will be deleted, but keeps the kernel's pages), `u<inode>` (its last link went away:
a mount that still has it open must claim it) or `l<inode>` (a lock on it was released or
changed: a mount waiting for a lock there tries again). A reader skips kinds it does not
know, so older mounts ignore newer events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PAYLOAD = 7000  # PostgreSQL's NOTIFY limit is 8000 bytes


@dataclass(slots=True, frozen=True)
class Change:
    kind: str  # "e" entry, "a" attributes, "d" data, "s" slices, "u" unlinked, "l" lock released
    inode: int  # the inode (for "e": the parent directory)
    name: bytes = b""


@dataclass(slots=True)
class Changes:
    """The changes one transaction made (deduplicated, in order), and what to do locally
    once it committed (`after`: run right after COMMIT, before anything else can run)."""

    items: dict[Change, None] = field(default_factory=dict)
    after: list[Callable[[], None]] = field(default_factory=list)

    def entry(self, parent: int, name: bytes) -> None:
        self.items[Change("e", parent, name)] = None

    def attr(self, *inodes: int) -> None:
        for inode in inodes:
            self.items[Change("a", inode)] = None

    def data(self, inode: int) -> None:
        self.items[Change("d", inode)] = None

    def slices(self, inode: int) -> None:
        """The inode's chunks name other slices now, showing the same bytes (compaction)."""
        self.items[Change("s", inode)] = None

    def unlinked(self, inode: int) -> None:
        self.items[Change("u", inode)] = None

    def lock_released(self, inode: int) -> None:
        self.items[Change("l", inode)] = None

    def __bool__(self) -> bool:
        return bool(self.items)

    def payloads(self, session: int) -> list[str]:
        """The text form, split into payloads of at most MAX_PAYLOAD bytes."""
        out: list[str] = []
        head = f"{session}|"
        current: list[str] = []
        size = len(head)
        for c in self.items:
            text = f"e{c.inode}/{c.name.hex()}" if c.kind == "e" else f"{c.kind}{c.inode}"
            if current and size + len(text) + 1 > MAX_PAYLOAD:
                out.append(head + ";".join(current))
                current, size = [], len(head)
            current.append(text)
            size += len(text) + 1
        if current:
            out.append(head + ";".join(current))
        return out


def parse_payload(payload: str) -> tuple[int, list[Change]]:
    """(session, changes) from one payload; malformed events are skipped."""
    head, _, body = payload.partition("|")
    try:
        session = int(head)
    except ValueError:
        return 0, []
    changes = []
    for text in body.split(";"):
        try:
            if text.startswith("e"):
                parent, _, name = text[1:].partition("/")
                changes.append(Change("e", int(parent), bytes.fromhex(name)))
            elif text[:1] in ("a", "d", "s", "u", "l"):
                changes.append(Change(text[0], int(text[1:])))
        except ValueError:
            continue
    return session, changes
