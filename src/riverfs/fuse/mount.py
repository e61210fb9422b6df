"""Serving a volume at a mountpoint until it is unmounted or the daemon is told to stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from riverfs import metrics
from riverfs.chunk.cache import DiskCache
from riverfs.chunk.staging import Staging
from riverfs.chunk.store import BlockStore
from riverfs.errors import RiverError
from riverfs.fuse import session as fuse_session
from riverfs.fuse.operations import Operations
from riverfs.fuse.trace import Observer
from riverfs.fuse.virtual import VirtualFiles
from riverfs.objects.urls import redact_url
from riverfs.vfs.fs import VFS
from riverfs.vfs.options import MountOptions
from riverfs.vfs.volume import SETTINGS_KEY, Volume

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 10 << 30
LOCAL_SCHEMES = ("file:", "memory:")


def fuse_device() -> str:
    return os.environ.get("RIVERFS_FUSE_DEVICE", "/dev/fuse")


def mount_path(mountpoint: Path) -> str:
    """The path mountinfo shows for `mountpoint`: absolute, normalized (a trailing `/` or `/.`
    changes nothing), every symlink resolved, without asking the mountpoint itself (a hung
    mount would block us): the parent is resolved with realpath, and the last component is
    followed with readlink only, which a mounted directory answers (EINVAL) from the kernel."""
    path = os.path.normpath(os.path.abspath(mountpoint))
    for _ in range(40):  # the kernel's own limit on nested symlinks
        parent, name = os.path.split(path)
        path = os.path.join(os.path.realpath(parent), name)
        try:
            link = os.readlink(path)
        except OSError:
            return path
        path = os.path.normpath(os.path.join(os.path.dirname(path), link))
    raise RiverError(f"{mountpoint}: too many levels of symbolic links")


def is_mounted(path: Path) -> bool:
    target = mount_path(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def check_mountpoint(path: Path, warn: bool = True) -> None:
    """Refuse early, with a clear message, what the kernel would refuse obscurely; with
    `warn`, say on stderr that a non-empty directory's files are hidden while mounted."""
    device = fuse_device()
    if not os.path.exists(device):
        raise RiverError(
            f"FUSE device {device} not found: install fuse3 and load the fuse "
            "module (modprobe fuse), or run where /dev/fuse is available"
        )
    if is_mounted(path):
        raise RiverError(f"{path} is already mounted: unmount it first (riverfs umount {path})")
    if not path.exists():
        raise RiverError(f"mountpoint {path} does not exist: create it with mkdir -p {path}")
    if not path.is_dir():
        raise RiverError(f"mountpoint {path} is not a directory")
    try:
        with os.scandir(path) as entries:
            hidden = next(entries, None) is not None
    except OSError:
        hidden = False
    if hidden and warn:
        print(
            f"riverfs: warning: {path} is not empty: the files in it are hidden until unmount",
            file=sys.stderr,
        )


def _raise_readahead(target: str, kb: int) -> None:
    """Let the kernel read ahead `kb` KiB: it then sends larger (up to 1 MiB) reads.

    `target` is the mountpoint's real path, resolved before mounting: any stat of the mounted
    path here would ask this very daemon, which is not serving requests yet.
    Needs write access to /sys/class/bdi (root); otherwise the kernel default (128 KiB) stays.
    """
    try:
        with open("/proc/self/mountinfo") as f:
            devices = [line.split()[2] for line in f if line.split()[4] == target]
        if devices:
            Path(f"/sys/class/bdi/{devices[-1]}/read_ahead_kb").write_text(f"{kb}\n")
    except OSError as e:
        log.info("kernel read-ahead left at its default (%s)", e.strerror or e)


MAX_WRITE = 1 << 20


def fuse_options() -> list[str]:
    """Mount options besides the fd and root mode (which mount() adds)."""
    opts = ["default_permissions", f"max_read={MAX_WRITE}"]
    if os.getuid() == 0:
        opts.append("allow_other")
    else:
        opts.append("subtype=riverfs")  # fusermount3 builds the type from it
    return opts


def build_vfs(volume: Volume, options: MountOptions) -> VFS:
    """Assemble a mount's parts over an opened volume: disk cache, staging, block store, VFS
    (with its session, deleter, watcher and locks). The one place they are put together."""
    settings = volume.settings
    if volume.encrypted and volume.keys is None:
        raise RiverError("the volume is encrypted: unlock it with its passphrase first")
    keys = volume.keys
    cache = None
    cache_size = options.cache_size
    if cache_size is None:  # a local store is its own cache: caching it only doubles writes
        cache_size = 0 if settings.storage.startswith(LOCAL_SCHEMES) else DEFAULT_CACHE_SIZE
    if cache_size > 0:
        cache = DiskCache(
            options.cache_dir / settings.uuid,
            cache_size,
            options.cache_min_free,
            name_of=keys.cache_name if keys is not None else None,
        )
    # Every mount stages: write-back always, a synchronous mount what the store refuses.
    staging = Staging(
        options.cache_dir / settings.uuid / "staging", volume.store, options.upload_concurrency
    )
    left = staging.resume()
    if left:
        log.info("%d blocks staged by an earlier mount: uploading them", left)
    if volume.degraded:
        log.warning(
            "store %s unreachable: mounted degraded from the local settings copy; reads come "
            "from the cache and staging, writes are staged until it is back",
            redact_url(settings.storage),
        )
    staging.start(probe_key=SETTINGS_KEY if volume.degraded else None)
    blocks = BlockStore(
        volume.store,
        settings.block_size,
        settings.compression,
        cache,
        memory_limit=options.read_cache_size,
        max_prefetch=options.max_prefetch,
        cipher=keys.blocks if keys is not None else None,
        staging=staging,
        writeback=options.writeback,
    )
    vfs = VFS(volume.meta, blocks, settings, options)
    _watch(vfs, blocks, staging, cache)
    return vfs


def _watch(vfs: VFS, blocks: BlockStore, staging: Staging, cache: DiskCache | None) -> None:
    """Point the gauges (read when sampled) at this mount's parts."""
    gauges = {
        "write_buffer_bytes": ("Memory held by write buffers.", lambda: vfs.budget.used),
        "block_memory_bytes": ("Decoded blocks, pages in memory.", lambda: blocks.memory_used),
        "disk_cache_bytes": ("Bytes in the disk cache.", lambda: cache.used if cache else 0),
        "uploads_waiting": ("Blocks staged, not uploaded yet.", lambda: staging.waiting),
        "uploads_waiting_bytes": ("Bytes staged, not uploaded yet.", lambda: staging.waiting_bytes),
        "store_down": ("1 while the store is unreachable (degraded).", lambda: staging.store_down),
        "compacted_chunks": ("Chunks this mount compacted.", lambda: vfs.compactor.compacted),
        "compacted_bytes": ("Bytes compaction rewrote.", lambda: vfs.compactor.bytes_written),
    }
    for name, (help, read) in gauges.items():
        metrics.gauge(name, help).read = read


async def serve(
    volume: Volume,
    mountpoint: Path,
    options: MountOptions,
    on_ready: Callable[[], None] = lambda: None,
) -> str | None:
    """Mount, call `on_ready` once the kernel's INIT is answered, serve requests until
    unmounted (or SIGINT/SIGTERM); then flush everything and end the session. Returns what
    the user must be told about data left behind (VFS.stop), None if nothing."""
    exporter = metrics.serve_prometheus(options.metrics) if options.metrics else None
    vfs = build_vfs(volume, options)
    target = mount_path(mountpoint)
    await vfs.start(str(mountpoint))
    try:
        fd = fuse_session.mount(
            fuse_device(),
            target,
            fuse_options(),
            options.read_only,
            source=options.fsname,
            dev=options.dev,
            suid=options.suid,
        )
    except RiverError:
        await vfs.stop()
        if exporter is not None:
            exporter.shutdown()
        raise
    settings = fuse_session.Settings(
        max_write=MAX_WRITE, writeback_cache=options.writeback_cache, posix_acl=True
    )
    ops = Operations(vfs, options)
    handlers = ops.handlers()
    session = fuse_session.Session(fd, handlers, settings)
    session.on_init = ops.initialized
    observer = Observer(session, trace=options.trace, slow_ms=options.slow_ms)
    ops.virtual = VirtualFiles(
        ops.entry, ops.attr_out, observer, lambda: config_text(volume, options, mountpoint)
    )
    session.route_special(*ops.virtual.routes(handlers[fuse_session.p.Op.STATFS]))
    session.start()
    observer.start()
    vfs.watcher.kernel = session.notifier
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, session.stop)
    try:
        assert session.initialized is not None
        done = asyncio.ensure_future(session.wait_closed())
        await asyncio.wait([session.initialized, done], return_when=asyncio.FIRST_COMPLETED)
        if session.initialized.done():
            # The kernel set read-ahead from our INIT reply: raise it now.
            _raise_readahead(target, options.readahead_kb)
            log.info("volume %s mounted at %s", volume.settings.uuid, mountpoint)
            on_ready()
        await done
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        session.stop()
        fuse_session.unmount(target)  # a no-op after `riverfs umount`
        ops.virtual.close()
        observer.close()
        await session.drain()
        session.close()
        note = await vfs.stop()
        if exporter is not None:
            exporter.shutdown()
        log.info("volume %s unmounted from %s", volume.settings.uuid, mountpoint)
    return note


def config_text(volume: Volume, options: MountOptions, mountpoint: Path) -> bytes:
    """The contents of `.riverfs/config`: `name = value` lines of the effective mount options
    and the volume's settings; URLs without their credentials, no keys."""
    s = volume.settings
    lines = {
        "mountpoint": str(mountpoint),
        "pid": os.getpid(),
        "volume.uuid": s.uuid,
        "volume.storage": redact_url(s.storage),
        "volume.block_size": s.block_size,
        "volume.compression": s.compression,
        "volume.capacity": s.capacity,
        "volume.encrypted": volume.encrypted,
        "volume.inline_limit": s.inline_limit,
        "volume.format_version": s.format_version,
        "volume.degraded": volume.degraded,
    }
    for name, value in sorted(dataclasses.asdict(options).items()):
        lines[f"mount.{name}"] = value
    return "".join(f"{k} = {v}\n" for k, v in lines.items()).encode()
