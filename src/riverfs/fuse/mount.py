"""Serving a volume at a mountpoint until it is unmounted or the daemon is told to stop."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import pyfuse3.asyncio

from riverfs.chunk.cache import DiskCache
from riverfs.chunk.staging import Staging
from riverfs.chunk.store import BlockStore
from riverfs.errors import RiverError
from riverfs.fuse.invalidate import KernelInvalidator
from riverfs.fuse.operations import Operations
from riverfs.vfs.fs import VFS
from riverfs.vfs.options import MountOptions
from riverfs.vfs.volume import Volume

log = logging.getLogger(__name__)

pyfuse3.asyncio.enable()

DEFAULT_CACHE_SIZE = 10 << 30
LOCAL_SCHEMES = ("file:", "memory:")


def fuse_device() -> str:
    return os.environ.get("RIVERFS_FUSE_DEVICE", "/dev/fuse")


def mount_path(mountpoint: Path) -> str:
    """The path mountinfo shows for `mountpoint`, without touching the mountpoint itself
    (a hung mount would block us): only its parent is resolved."""
    path = Path(os.path.abspath(mountpoint))
    return os.path.join(os.path.realpath(path.parent), path.name)


def is_mounted(path: Path) -> bool:
    target = mount_path(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def check_mountpoint(path: Path) -> None:
    """Refuse early, with a clear message, what the kernel would refuse obscurely."""
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


def fuse_options(options: MountOptions, volume: Volume) -> set[str]:
    opts = {"fsname=riverfs", "subtype=riverfs", "default_permissions"}
    if os.getuid() == 0:
        opts.add("allow_other")
    if options.read_only:
        opts.add("ro")
    return opts


async def serve(
    volume: Volume,
    mountpoint: Path,
    options: MountOptions,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Mount, call `on_ready`, serve requests; on exit flush everything and unmount."""
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
    staging = None
    staging_dir = options.cache_dir / settings.uuid / "staging"
    if options.writeback or (staging_dir.is_dir() and any(staging_dir.iterdir())):
        staging = Staging(staging_dir, volume.store, options.upload_concurrency)
        left = staging.resume()
        if left:
            log.info("%d blocks staged by an earlier mount: uploading them", left)
        staging.start()
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
    target = mount_path(mountpoint)
    vfs = VFS(volume.meta, blocks, settings, options)
    await vfs.start(str(mountpoint))
    ops = Operations(vfs, options)
    try:
        pyfuse3.init(ops, str(mountpoint), fuse_options(options, volume))
    except RuntimeError as e:
        await vfs.stop()
        raise RiverError(f"cannot mount at {mountpoint}: {e}") from e
    invalidator = KernelInvalidator()
    invalidator.start()
    vfs.watcher.kernel = invalidator
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, pyfuse3.terminate)
    # The kernel sets read-ahead from our INIT reply, sent once the loop below runs: after it.
    loop.call_later(0.5, _raise_readahead, target, options.readahead_kb)
    log.info("volume %s mounted at %s", settings.uuid, mountpoint)
    on_ready()
    try:
        await pyfuse3.main()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await invalidator.stop()
        try:
            pyfuse3.close(unmount=True)
        except OSError as e:
            if e.errno != errno.EINVAL:
                log.warning("unmount: %s", e)
        await vfs.stop()
        log.info("volume %s unmounted from %s", settings.uuid, mountpoint)
