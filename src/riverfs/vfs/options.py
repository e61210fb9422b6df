"""Mount options: parsed once by the CLI, passed down to the VFS and the FUSE layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ATIME_MODES = ("relatime", "strictatime", "noatime")


@dataclass(slots=True, frozen=True)
class MountOptions:
    cache_dir: Path
    cache_size: int | None = None  # disk cache limit in bytes; 0 off; None: auto (see serve)
    cache_min_free: float = 0.1  # keep at least this ratio of the cache disk free
    buffer_size: int = 128 << 20  # memory for write buffers (back-pressure beyond)
    read_cache_size: int = 64 << 20  # memory for decoded blocks
    upload_concurrency: int = 8
    max_prefetch: int = 8  # blocks fetched ahead concurrently
    readahead_kb: int = 1024  # kernel read-ahead for the mount (larger FUSE reads)
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    read_only: bool = False
    heartbeat: float = 10.0  # seconds between session heartbeats
    # at unmount, seconds an unreachable store gets before staged blocks are left for the
    # next mount (they are durable in staging; nothing is lost)
    unmount_wait: float = 30.0
    writeback: bool = False  # stage blocks on local disk, upload in the background
    writeback_cache: bool = False  # the kernel's page cache holds writes (FUSE_WRITEBACK_CACHE)
    doom_grace: float = 3.0  # seconds other mounts have to claim a file deleted elsewhere
    # Online compaction (vfs/compactor.py): a chunk is rewritten once that merges this many of
    # its slices (0: never while mounted), or once it stores compact_overlap times what it shows
    compact_slices: int = 16
    compact_overlap: float = 2.0
    compact_rate: int = 32 << 20  # bytes per second of rewritten data (0: unlimited)
    compact_delay: float = 10.0  # seconds the replaced slices stay for reads in flight
    # atime: "relatime" (updated when older than mtime/ctime or a day old), "strictatime"
    # (every read), "noatime" (never by a read or exec); nodiratime: never for a directory
    atime: str = "relatime"
    nodiratime: bool = False
    fsname: str = "riverfs"  # the device name /proc/mounts shows
    dev: bool = False  # device nodes usable (root only; default nodev)
    suid: bool = False  # setuid/setgid honoured on exec (root only; default nosuid)
    # Observability (fuse/trace.py, metrics.py): the trace's interval summary and slow-op
    # lines; the Prometheus endpoint's "host:port" (None: not served)
    trace: bool = False
    slow_ms: float = 50.0
    metrics: str | None = None
