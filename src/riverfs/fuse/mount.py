"""Serving a volume at a mountpoint until it is unmounted or the daemon is told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from riverfs.chunk.cache import DiskCache
from riverfs.chunk.staging import Staging
from riverfs.chunk.store import BlockStore
from riverfs.errors import RiverError
from riverfs.fuse import session as fuse_session
from riverfs.fuse.operations import Operations
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
    return VFS(volume.meta, blocks, settings, options)


async def serve(
    volume: Volume,
    mountpoint: Path,
    options: MountOptions,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Mount, call `on_ready` once the kernel's INIT is answered, serve requests until
    unmounted (or SIGINT/SIGTERM); then flush everything and end the session."""
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
        raise
    settings = fuse_session.Settings(max_write=MAX_WRITE, writeback_cache=options.writeback_cache)
    session = fuse_session.Session(fd, Operations(vfs, options).handlers(), settings)
    session.start()
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
        await session.drain()
        session.close()
        await vfs.stop()
        log.info("volume %s unmounted from %s", volume.settings.uuid, mountpoint)
