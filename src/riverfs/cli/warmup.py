"""`riverfs warmup PATH...`: fetch files or whole trees into their mount's local cache before
they are read (or, with --evict, drop them from it again).

The command walks the trees itself and asks the mount for each regular file through a
virtual extended attribute (`riverfs.warmup`, `riverfs.evict`: vfs/introspect.py and
vfs/warmup.py), from a pool of --threads threads, so at most that many files are in the
daemon at once (it bounds the block fetches of all of them to its read-ahead limit). A file
reached twice (hard links, overlapping PATHs) is asked once. The progress bar counts the
files' bytes and the files done, against those found (the walk goes on meanwhile); the
summary says where the blocks went, and every file that failed is listed by path, with exit
status 1.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from riverfs.cli import vxattr
from riverfs.cli.defaults import human_size
from riverfs.tools.stats import mount_root

WARMUP, EVICT = "riverfs.warmup", "riverfs.evict"
QUEUED_PER_THREAD = 4  # files the walk may queue ahead of each thread
REPLY_MAX = 4096  # bytes of buffer for the daemon's answer (a few dozen are used)


@dataclass
class Tally:
    """What the daemon answered, summed over the files done so far (updated by the pool)."""

    done: int = 0  # files answered, failed ones included
    files: int = 0  # files warmed (or evicted)
    size: int = 0  # their bytes (st_size)
    fetched: int = 0
    cached: int = 0
    missed: int = 0
    evicted: int = 0
    cache: str = ""
    capacity: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, size: int, reply: dict) -> None:
        with self.lock:
            self.files += 1
            self.size += size
            self.fetched += reply.get("fetched", 0)
            self.cached += reply.get("cached", 0)
            self.missed += reply.get("missed", 0)
            self.evicted += reply.get("evicted", 0)
            self.cache = reply.get("cache", self.cache)
            self.capacity = reply.get("capacity", self.capacity)

    def fail(self, path: str, why: str) -> None:
        with self.lock:
            self.failed.append((path, why))


def _files(paths: list[Path], tally: Tally):
    """(path, size) of every regular file under `paths`, each inode once; a PATH that is a
    symlink is followed, symlinks inside trees are not. Unreadable directories go to
    `tally.failed`."""
    seen: set[tuple[int, int]] = set()

    def once(st: os.stat_result) -> bool:
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            return False
        seen.add(ident)
        return True

    for top in paths:
        st = os.stat(top)
        if not stat.S_ISDIR(st.st_mode):
            if stat.S_ISREG(st.st_mode) and once(st):
                yield str(top), st.st_size
            continue
        stack = [str(top)]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            if once(st):
                                yield entry.path, st.st_size
            except OSError as e:
                tally.fail(directory, e.strerror or str(e))


def _ask(path: str, name: str) -> dict:
    """The daemon's JSON answer to getxattr `name` of `path`: exactly one FUSE request, and
    so one warmup."""
    return json.loads(vxattr.ask(path, name, REPLY_MAX, follow=False))


def _run(paths: list[Path], name: str, threads: int, verb: str) -> tuple[Tally, float]:
    tally = Tally()
    slots = threading.BoundedSemaphore(threads * QUEUED_PER_THREAD)
    console = Console(stderr=True)
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[done]:,}/{task.fields[found]:,} files"),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    ]
    start = time.monotonic()
    with (
        Progress(*columns, console=console, disable=not console.is_terminal) as bar,
        ThreadPoolExecutor(threads, thread_name_prefix="warmup") as pool,
    ):
        # No total while walking (it would count as finished whenever the files done catch
        # up with those found): the bar pulses until the walk is over.
        task = bar.add_task(f"{verb} (walking)", total=None, done=0, found=0)

        def finished(path: str, size: int, future: Future) -> None:
            slots.release()
            try:
                reply = future.result()
            except OSError as e:
                tally.fail(path, e.strerror or str(e))
            except ValueError as e:  # not JSON: not a riverfs daemon's answer
                tally.fail(path, f"unexpected answer: {e}")
            else:
                tally.add(size, reply)
            with tally.lock:
                tally.done += 1
            bar.update(task, advance=size, done=tally.done)

        total = 0
        try:
            for found, (path, size) in enumerate(_files(paths, tally), 1):
                total += size
                bar.update(task, found=found)
                slots.acquire()
                future = pool.submit(_ask, path, name)
                future.add_done_callback(lambda f, p=path, n=size: finished(p, n, f))
        except KeyboardInterrupt:  # only the files in the daemon now are waited for
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        bar.update(task, total=total, description=verb)
    return tally, time.monotonic() - start


@click.command("warmup")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--threads",
    "-p",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Files asked for at once.",
)
@click.option("--evict", is_flag=True, help="Drop the files from the cache instead.")
def warmup(paths: tuple[Path, ...], threads: int, evict: bool) -> None:
    """Fetch the files, and every file under the directories, of PATH... into their mount's
    local cache (the disk cache, or memory when the mount has none), so that reads are
    served without the object store; --evict drops them from it again."""
    for path in paths:
        mount_root(path)  # a one-line error when it is not in a riverfs mount
    name, verb = (EVICT, "evicting") if evict else (WARMUP, "warming up")
    tally, seconds = _run(list(paths), name, threads, verb)
    rate = f"{human_size(tally.size / seconds)}/s" if seconds > 0 else "-"
    files = f"{tally.files:,} file{'s' if tally.files != 1 else ''}"
    if evict:
        click.echo(
            f"evicted {files} ({human_size(tally.size)}) in {seconds:.1f}s: "
            f"{human_size(tally.evicted)} dropped from the mount's caches"
        )
    else:
        where = f"the {tally.cache} cache" if tally.cache else "the cache"
        if tally.capacity:
            where += f" (capacity {human_size(tally.capacity)})"
        click.echo(
            f"warmed up {files} ({human_size(tally.size)}) in {seconds:.1f}s, {rate}: "
            f"{human_size(tally.fetched)} fetched from the store, "
            f"{human_size(tally.cached)} already local, into {where}"
        )
        if tally.missed:
            click.echo(f"not kept: {human_size(tally.missed)} (the cache is full)")
        wanted = tally.fetched + tally.cached + tally.missed
        if tally.capacity and wanted > tally.capacity:
            click.echo(
                f"warning: {human_size(wanted)} is more than {where} holds: the blocks "
                "warmed first were pushed out again"
            )
    if tally.failed:
        n = len(tally.failed)
        click.echo(f"failed: {n:,} path{'s' if n != 1 else ''}", err=True)
        for path, why in sorted(tally.failed):
            click.echo(f"  {path}: {why}", err=True)
        sys.exit(1)
