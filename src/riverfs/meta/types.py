"""Plain records the metadata engine hands out."""

from __future__ import annotations

import json
import stat
from dataclasses import asdict, dataclass, field

ROOT_INODE = 1
FORMAT_VERSION = 1
MAX_NAME = 255


@dataclass(slots=True, frozen=True)
class Attr:
    """An inode's attributes; times in nanoseconds since the epoch."""

    inode: int
    mode: int  # full st_mode: file type bits | permission bits
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    stored: int  # bytes of data actually stored (an upper bound); st_blocks derive from it
    atime: int
    mtime: int
    ctime: int
    parent: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


@dataclass(slots=True, frozen=True)
class Entry:
    """One directory entry as readdir returns it: `cookie` orders entries stably."""

    cookie: int
    name: bytes
    attr: Attr


@dataclass(slots=True)
class AttrChange:
    """The attributes a setattr changes; None means unchanged."""

    mode: int | None = None  # permission bits only
    uid: int | None = None
    gid: int | None = None
    atime: int | None = None
    mtime: int | None = None
    ctime: int | None = None


@dataclass(slots=True, frozen=True)
class VolumeSettings:
    """What `riverfs format` decides once for the life of a volume."""

    uuid: str
    storage: str
    block_size: int = 4 << 20
    compression: str = "none"
    capacity: int = 1 << 50
    format_version: int = FORMAT_VERSION
    created: int = 0
    extra: dict = field(default_factory=dict)
    # Empty, or the wrapped master key and how to unwrap it (chunk/crypto.py).
    encryption: dict = field(default_factory=dict)
    # Slices of at most this many bytes, committed whole by one flush, are stored in the
    # metadata database instead of the object store (meta/inline.py); 0: never.
    inline_limit: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VolumeSettings:
        return cls(**json.loads(text))


@dataclass(slots=True, frozen=True)
class SessionInfo:
    id: int
    host: str
    pid: int
    mountpoint: str
    version: str
    started: int
    heartbeat: int
    beat_every: float = 10.0  # seconds between its heartbeats
    staged: int = 0  # bytes waiting to upload (write-back), as of its last heartbeat
    metrics: str = ""  # its Prometheus endpoint, HOST:PORT ("" if it serves none)

    def stale(self, now: int, beats: int) -> bool:
        """True if the session missed `beats` heartbeats by `now` (ns): its mount is gone."""
        return now - self.heartbeat > beats * self.beat_every * 1e9


@dataclass(slots=True, frozen=True)
class Usage:
    used_bytes: int
    inodes: int
