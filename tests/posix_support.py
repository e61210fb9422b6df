"""Shared by the POSIX test modules: one mount per module, fresh directories, errno checks.

RIVERFS_POSIX_ON_LOCAL=1 runs the same tests on a local directory (to check what Linux does);
RIVERFS_POSIX_MOUNT_ARGS passes extra `riverfs mount` options (e.g. "--attr-timeout 0").
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from support import Volume, force_unmount, run_cli

ON_LOCAL = bool(os.environ.get("RIVERFS_POSIX_ON_LOCAL"))
MOUNT_ARGS = os.environ.get("RIVERFS_POSIX_MOUNT_ARGS", "").split()


@contextmanager
def shared_mount(
    tmp_path_factory, name: str, meta_url: str | None = None
) -> Iterator[tuple[Volume | None, Path]]:
    """One riverfs mount (SQLite, or `meta_url`, + file:// store) for a module:
    (volume, mountpoint).

    With RIVERFS_POSIX_ON_LOCAL the "mount" is a plain local directory and the volume None.
    """
    root = tmp_path_factory.mktemp(name)
    if ON_LOCAL:
        yield None, root
        return
    vol = Volume(
        root=root,
        meta_url=meta_url or f"sqlite://{root}/meta.db",
        storage_url=f"file://{root}/store",
        cache_dir=root / "cache",
    )
    try:
        run_cli("format", vol.meta_url, "--storage", vol.storage_url)
        yield vol, vol.mount(root / "mnt", *MOUNT_ARGS).path
    finally:
        vol.cleanup()
        force_unmount(root / "mnt")


def fresh_dir(root: Path, request) -> Path:
    """A new directory under `root` named after the running test."""
    p = root / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:200]
    p.mkdir()
    return p


def errno_of(fn: Callable, *args, **kwargs) -> int:
    """The errno `fn` fails with, or 0 when it succeeds."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    return 0


def same_errno(scenario: Callable[[Path], object], d: Path, local: Path, expected: int) -> None:
    """Run `scenario(base)` on riverfs and on the local disk; both must fail with `expected`."""
    got_local = errno_of(scenario, local)
    got = errno_of(scenario, d)
    assert got_local == expected, f"test assumption wrong: local disk gave {got_local}"
    assert got == expected, (
        f"riverfs gave {errno.errorcode.get(got, got)}, Linux gives {errno.errorcode[expected]}"
    )
