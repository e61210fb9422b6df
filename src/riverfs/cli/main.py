"""`riverfs` commands: format, mount, umount, status.

Every user-facing failure is a RiverError (or an OSError we can explain): printed as one line
`riverfs: error: ...` on stderr with exit code 1. Tracebacks only with --debug.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

from riverfs import __version__
from riverfs.chunk.block import CHUNK_SIZE, COMPRESSIONS
from riverfs.cli import daemon
from riverfs.cli.bench import bench
from riverfs.cli.defaults import (
    default_cache_dir,
    default_meta_url,
    default_storage_url,
    human_size,
    parse_size,
)
from riverfs.cli.info import info
from riverfs.cli.obj import obj
from riverfs.cli.passphrase import ENV, passphrase_group, read_passphrase
from riverfs.cli.profile import profile
from riverfs.cli.stats import stats
from riverfs.cli.tools import dump, fsck, gc, load
from riverfs.cli.warmup import warmup
from riverfs.errors import RiverError
from riverfs.meta.inline import MAX_INLINE
from riverfs.objects.urls import redact_url
from riverfs.vfs.session import STALE_HEARTBEATS, pid_alive

DEFAULT_INLINE_LIMIT = "4K"  # the decision and its figures: docs/ARCHITECTURE.md, "Inline data"

log = logging.getLogger("riverfs")


def _setup_logging(debug: bool, level: int, tag: str = "") -> None:
    """Commands talk to the user in one line; only the mount daemon (and --debug) logs, each
    line tagged with its pid and mountpoint (`tag`) so mounts sharing a log stay readable."""
    tag = tag.replace("%", "%%")
    logging.basicConfig(
        format=f"%(asctime)s {tag}%(levelname)s %(name)s: %(message)s", force=bool(tag)
    )
    logging.getLogger().setLevel(logging.DEBUG if debug else level)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="riverfs")
def cli() -> None:
    """riverfs: a POSIX filesystem over object storage."""


# ---- format ---------------------------------------------------------------------------------


@cli.command("format")
@click.argument("meta_url", required=False)
@click.option(
    "--storage",
    "storage_url",
    help="Store URL: file:///abs/path or memory://. "
    "Default: an objects/ directory beside a SQLite database.",
)
@click.option("--block-size", default="4M", show_default=True, help="Size of stored blocks.")
@click.option(
    "--compress",
    type=click.Choice(list(COMPRESSIONS)),
    default="none",
    show_default=True,
    help="Block compression.",
)
@click.option("--capacity", default="1P", show_default=True, help="Size statfs reports.")
@click.option("--force", is_flag=True, help="Overwrite an existing volume.")
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt blocks (AES-256-GCM) with a key protected by a passphrase "
    "(RIVERFS_PASSPHRASE, --key-file, or a prompt).",
)
@click.option("--key-file", type=click.Path(path_type=Path), help="File with the passphrase.")
@click.option(
    "--inline-limit",
    default=DEFAULT_INLINE_LIMIT,
    show_default=True,
    help="Keep files (slices) up to this size in the metadata database instead of the "
    "object store: no PUT per small file; 0 turns it off. At most 64K.",
)
def format_cmd(
    meta_url, storage_url, block_size, compress, capacity, force, encrypt, key_file, inline_limit
) -> None:
    """Create a volume (default: the one in ~/.local/share/riverfs/default)."""
    from riverfs.meta import check_meta_url

    meta_url = meta_url or default_meta_url()
    check_meta_url(meta_url)
    storage_url = storage_url or default_storage_url(meta_url)
    bs = parse_size(block_size)
    if not 64 << 10 <= bs <= CHUNK_SIZE:
        raise RiverError(f"--block-size {block_size} is out of range: use 64K to 64M")
    if key_file is not None and not encrypt:
        raise RiverError("--key-file is for encrypted volumes: add --encrypt")
    inline = parse_size(inline_limit)
    if not 0 <= inline <= min(MAX_INLINE, bs):
        raise RiverError(f"--inline-limit {inline_limit} is out of range: use 0 to 64K")
    secret = read_passphrase(key_file, confirm=True) if encrypt else None
    db = None
    if urlsplit(meta_url).scheme == "sqlite":
        from riverfs.meta import sqlite_path

        db = sqlite_path(meta_url)
        if meta_url != default_meta_url() and not db.parent.is_dir():
            raise RiverError(
                f"directory {db.parent} does not exist: create it first (mkdir -p {db.parent})"
            )
    fresh_db = db is not None and not db.exists()
    try:
        settings = _format(meta_url, storage_url, bs, compress, capacity, force, secret, inline)
    except BaseException:
        if fresh_db:  # a failed format leaves nothing behind
            for leftover in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
                leftover.unlink(missing_ok=True)
        raise
    click.echo(
        f"formatted volume {settings.uuid}: metadata {redact_url(meta_url)}, "
        f"storage {redact_url(storage_url)}, "
        f"block size {human_size(bs)}, compression {compress}"
        + (", encrypted (AES-256-GCM)" if encrypt else "")
    )


def _format(meta_url, storage_url, bs, compress, capacity, force, secret, inline):
    from riverfs.vfs.volume import format_volume

    return asyncio.run(
        format_volume(
            meta_url,
            storage_url,
            block_size=bs,
            compression=compress,
            capacity=parse_size(capacity),
            force=force,
            passphrase=secret,
            inline_limit=inline,
        )
    )


# ---- mount ----------------------------------------------------------------------------------


def _ensure_default_volume() -> str:
    """The default volume's URL, formatting it on first use."""
    from riverfs.meta import open_meta
    from riverfs.vfs.volume import format_volume

    url = default_meta_url()

    async def formatted() -> bool:
        meta = await open_meta(url, create=True)
        try:
            return await meta.load_settings() is not None
        finally:
            await meta.close()

    if not asyncio.run(formatted()):
        settings = asyncio.run(format_volume(url, default_storage_url(url)))
        click.echo(f"formatted the default volume {settings.uuid} at {url}", err=True)
    return url


@cli.command()
@click.argument("args", nargs=-1, required=True, metavar="[META_URL] MOUNTPOINT")
@click.option(
    "--background", "-d", is_flag=True, help="Return once mounted; serve in the background."
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Block cache directory (default ~/.cache/riverfs).",
)
@click.option(
    "--cache-size",
    default="auto",
    show_default=True,
    help="Disk cache limit, e.g. 10G (0: off; auto: 10G, off for a file:// store).",
)
@click.option("--buffer-size", default="128M", show_default=True, help="Write buffer memory.")
@click.option("--attr-timeout", default=1.0, show_default=True, help="Kernel attribute cache (s).")
@click.option("--entry-timeout", default=1.0, show_default=True, help="Kernel entry cache (s).")
@click.option("--read-only", is_flag=True, help="Mount read-only.")
@click.option(
    "--writeback",
    is_flag=True,
    help="Stage written blocks durably in the cache dir and upload them in the background: "
    "close/fsync return at local-disk speed.",
)
@click.option(
    "--writeback-cache",
    is_flag=True,
    help="Let the kernel cache writes in its page cache (faster small writes; weakens "
    "close-to-open across mounts, see docs/SEMANTICS.md).",
)
@click.option("--debug", is_flag=True, help="Log every detail.")
@click.option(
    "--heartbeat",
    default=10.0,
    show_default=True,
    help="Seconds between session heartbeats (a mount silent for 5 is cleaned up).",
)
@click.option(
    "--unmount-wait",
    default=30.0,
    show_default=True,
    help="At unmount, seconds to wait for an unreachable store before leaving the blocks not "
    "uploaded yet in the staging directory (the next mount from this cache dir uploads them).",
)
@click.option(
    "--compact-slices",
    default=16,
    show_default=True,
    help="Rewrite a chunk in the background once that merges this many of its slices (or "
    "once it stores 2x what it shows); 0: no compaction while mounted.",
)
@click.option(
    "--compact-rate",
    default="32M",
    show_default=True,
    help="Bytes per second compaction may rewrite (0: unlimited).",
)
@click.option(
    "--compact-delay",
    default=10.0,
    show_default=True,
    help="Seconds the slices a compaction replaced are kept for reads in flight.",
)
@click.option(
    "--key-file", type=click.Path(path_type=Path), help="Passphrase file (encrypted volumes)."
)
@click.option(
    "-o",
    "mount_opts",
    multiple=True,
    metavar="OPTS",
    help="Standard mount options, comma-separated: ro, rw, noatime, relatime, strictatime, "
    "nodiratime, dev, nodev, suid, nosuid, fsname=NAME, subtype=riverfs (as mount(8) and "
    "fstab pass them).",
)
@click.option(
    "--atime",
    type=click.Choice(["relatime", "strictatime", "noatime"]),
    help="When a read updates atime (default relatime).",
)
@click.option("--nodiratime", is_flag=True, help="Reading a directory never updates its atime.")
@click.option("--fsname", help="Device name shown in /proc/mounts (default riverfs).")
@click.option("--dev", is_flag=True, help="Device nodes usable (root only; default nodev).")
@click.option(
    "--suid", is_flag=True, help="setuid/setgid honoured on exec (root only; default nosuid)."
)
@click.option(
    "--trace",
    is_flag=True,
    envvar="RIVERFS_TRACE",
    help="Log a summary by operation every 10 s and a line for every operation slower than "
    "--slow-ms, with where its time went (also RIVERFS_TRACE=1).",
)
@click.option(
    "--slow-ms", default=50.0, show_default=True, help="What --trace calls slow (milliseconds)."
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (names: docs/METRICS.md).",
)
@click.option("--ready-fd", type=int, hidden=True)
@click.option("--secrets-fd", type=int, hidden=True)
def mount(args, mount_opts, **options) -> None:
    """Mount a volume (default: the default volume) at MOUNTPOINT."""
    from riverfs.fuse.mount import mount_path

    if len(args) > 2:
        raise click.UsageError("expected [META_URL] MOUNTPOINT")
    meta_url = args[0] if len(args) == 2 else None
    mountpoint = Path(mount_path(Path(args[-1])))
    _apply_mount_opts(mount_opts, options)
    try:
        secrets = daemon.read_secrets(options.pop("secrets_fd"))  # a background daemon's
        if meta_url == daemon.META_URL_FROM_SECRETS:
            meta_url = secrets.get("meta_url")
        _mount(meta_url, mountpoint, passphrase=secrets.get("passphrase"), **options)
    except RiverError as e:
        daemon.report_error(options["ready_fd"], str(e))  # the parent waiting for us says it
        raise


# What mount(8), mount.fuse3 and fstab pass that is theirs, not the filesystem's.
IGNORED_MOUNT_OPTS = frozenset(
    {"defaults", "auto", "noauto", "user", "nouser", "users", "nofail", "_netdev", "exec"}
    | {"allow_other", "default_permissions", "async"}
)


def _apply_mount_opts(groups: tuple[str, ...], options: dict) -> None:
    """Fold `-o` option strings into the command's options; RiverError naming an unknown one."""
    for opt in (o.strip() for group in groups for o in group.split(",")):
        name, eq, value = opt.partition("=")
        if not opt or name in IGNORED_MOUNT_OPTS or name.startswith(("x-", "comment")):
            continue
        if opt in ("ro", "rw"):
            options["read_only"] = opt == "ro"
        elif opt in ("noatime", "relatime", "strictatime"):
            options["atime"] = opt
        elif opt == "nodiratime":
            options["nodiratime"] = True
        elif opt in ("dev", "nodev"):
            options["dev"] = opt == "dev"
        elif opt in ("suid", "nosuid"):
            options["suid"] = opt == "suid"
        elif name == "fsname" and eq and value:
            options["fsname"] = value
        elif name == "subtype" and eq:
            if value != "riverfs":
                raise RiverError(f"mount option subtype={value}: riverfs mounts are fuse.riverfs")
        else:
            raise RiverError(
                f"unknown mount option {opt!r}: use ro, rw, noatime, relatime, strictatime, "
                "nodiratime, dev, nodev, suid, nosuid, fsname=NAME, subtype=riverfs"
            )


def _mount(
    meta_url,
    mountpoint,
    *,
    background,
    cache_dir,
    cache_size,
    buffer_size,
    attr_timeout,
    entry_timeout,
    read_only,
    writeback,
    writeback_cache,
    debug,
    heartbeat,
    unmount_wait,
    compact_slices,
    compact_rate,
    compact_delay,
    key_file,
    atime,
    nodiratime,
    fsname,
    dev,
    suid,
    trace,
    slow_ms,
    metrics,
    ready_fd,
    passphrase,
) -> None:
    from riverfs.fuse.mount import check_mountpoint, serve
    from riverfs.vfs.options import MountOptions
    from riverfs.vfs.volume import open_volume

    if (dev or suid) and os.getuid() != 0:
        raise RiverError("--dev and --suid need root: fusermount3 mounts nodev,nosuid for a user")
    if fsname is not None and (not fsname or any(c in fsname for c in ", \t\n")):
        raise RiverError(f"fsname {fsname!r}: use a name without commas or spaces")
    check_mountpoint(mountpoint, warn=not ready_fd)
    meta_url = meta_url or _ensure_default_volume()
    cache_dir = Path(os.path.abspath(cache_dir)) if cache_dir else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RiverError(
            f"cannot use cache directory {cache_dir}: {e.strerror}; choose another --cache-dir"
        ) from e
    options = MountOptions(
        cache_dir=cache_dir,
        cache_size=None if cache_size == "auto" else parse_size(cache_size),
        buffer_size=max(parse_size(buffer_size), 16 << 20),
        attr_timeout=attr_timeout,
        entry_timeout=entry_timeout,
        read_only=read_only,
        writeback=writeback,
        writeback_cache=writeback_cache,
        heartbeat=max(heartbeat, 0.1),
        unmount_wait=max(unmount_wait, 0.0),
        compact_slices=max(compact_slices, 0),
        compact_rate=parse_size(compact_rate),
        compact_delay=max(compact_delay, 0.0),
        atime=atime or "relatime",
        nodiratime=nodiratime,
        fsname=fsname or "riverfs",
        dev=dev,
        suid=suid,
        trace=trace,
        slow_ms=max(slow_ms, 0.0),
        metrics=metrics,
    )
    if metrics is not None:
        from riverfs.metrics import parse_address

        parse_address(metrics)  # a bad address fails here, before anything is mounted
    if background:
        argv = [
            daemon.META_URL_FROM_SECRETS,
            str(mountpoint),
            "--cache-dir",
            str(cache_dir),
            "--cache-size",
            cache_size,
            "--buffer-size",
            buffer_size,
            "--attr-timeout",
            str(attr_timeout),
            "--entry-timeout",
            str(entry_timeout),
            "--heartbeat",
            str(heartbeat),
            "--unmount-wait",
            str(unmount_wait),
            "--compact-slices",
            str(compact_slices),
            "--compact-rate",
            compact_rate,
            "--compact-delay",
            str(compact_delay),
        ]
        argv += ["--read-only"] * read_only + ["--debug"] * debug + ["--writeback"] * writeback
        argv += ["--writeback-cache"] * writeback_cache
        argv += ["--atime", options.atime, "--fsname", options.fsname]
        argv += ["--nodiratime"] * nodiratime + ["--dev"] * dev + ["--suid"] * suid
        argv += ["--trace"] * trace + ["--slow-ms", str(slow_ms)]
        argv += ["--metrics", metrics] if metrics is not None else []
        secrets = {"meta_url": daemon.with_meta_password(meta_url)}
        if key_file is not None:
            argv += ["--key-file", os.path.abspath(key_file)]
        elif asyncio.run(_is_encrypted(meta_url, cache_dir)):  # ask here: the daemon has no tty
            secrets["passphrase"] = read_passphrase(None)
        log_path = cache_dir / "mount.log"
        pid = daemon.spawn_background(argv, log_path, secrets)
        click.echo(
            f"mounted {redact_url(meta_url)} at {mountpoint} (daemon pid {pid}, log {log_path}); "
            f"unmount with: riverfs umount {mountpoint}"
        )
        return

    _setup_logging(debug, logging.INFO, f"[{os.getpid()} {mountpoint}] ")

    async def run() -> None:
        volume = await open_volume(meta_url, cache_dir)
        try:
            volume.unlock(lambda: passphrase or read_passphrase(key_file))
            os.environ.pop(ENV, None)  # no longer needed: keep it from child processes
        except BaseException:
            await volume.meta.close()
            raise
        pid_path = None

        def ready() -> None:
            nonlocal pid_path
            pid_path = daemon.write_pid(mountpoint)
            daemon.report_ready(ready_fd)

        try:
            note = await serve(volume, mountpoint, options, ready)
            if note is not None and pid_path is not None:
                daemon.leave_note(mountpoint, note)  # `riverfs umount` prints it
        finally:
            if pid_path is not None and daemon.read_pid(mountpoint) == os.getpid():
                pid_path.unlink(missing_ok=True)

    asyncio.run(run())


async def _is_encrypted(meta_url: str, cache_dir: Path | None = None) -> bool:
    from riverfs.vfs.volume import open_volume

    volume = await open_volume(meta_url, cache_dir)
    try:
        return volume.encrypted
    finally:
        await volume.meta.close()


# ---- umount ---------------------------------------------------------------------------------


@cli.command()
@click.argument("mountpoint", type=click.Path(path_type=Path))
@click.option(
    "--timeout",
    default=3600.0,
    show_default=True,
    help="Seconds to wait for the daemon to finish writing.",
)
def umount(mountpoint: Path, timeout: float) -> None:
    """Flush and unmount MOUNTPOINT; return once the daemon has exited."""
    from riverfs.fuse.mount import mount_path

    click.echo(daemon.unmount(Path(mount_path(mountpoint)), timeout))


# ---- status ---------------------------------------------------------------------------------


@cli.command()
@click.argument("meta_url", required=False)
@click.option(
    "--list-store",
    is_flag=True,
    help="Count the objects of a remote store too (one listing of the whole store); a "
    "file:// or memory:// store is always counted.",
)
def status(meta_url, list_store) -> None:
    """Show a volume's settings, usage (logical, and what the store really holds) and
    active mounts."""
    from riverfs.fuse.mount import LOCAL_SCHEMES
    from riverfs.vfs.volume import open_volume

    async def run():
        volume = await open_volume(meta_url or default_meta_url(), unreachable_ok=True)
        try:
            usage, sessions = await volume.meta.usage(), await volume.meta.sessions()
            footprint = None
            local = volume.settings.storage.startswith(LOCAL_SCHEMES)
            if (local or list_store) and not volume.degraded:
                count = size = 0
                async for info in volume.store.list():
                    count, size = count + 1, size + info.size
                footprint = count, size
            return volume.settings, usage, sessions, volume.degraded, footprint
        finally:
            await volume.meta.close()

    settings, usage, sessions, degraded, footprint = asyncio.run(run())
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(settings.created / 1e9))
    click.echo(f"volume:      {settings.uuid}")
    down = " (UNREACHABLE: mounts are degraded, writes staged until it is back)" * degraded
    click.echo(f"storage:     {redact_url(settings.storage)}{down}")
    click.echo(f"block size:  {human_size(settings.block_size)}")
    click.echo(f"compression: {settings.compression}")
    inline = settings.inline_limit
    click.echo(f"inline data: {f'up to {human_size(inline)} per slice' if inline else 'off'}")
    encryption = "AES-256-GCM, key wrapped by a passphrase" if settings.encryption else "none"
    click.echo(f"encryption:  {encryption}")
    click.echo(f"created:     {created}")
    click.echo(f"capacity:    {human_size(settings.capacity)}")
    click.echo(f"used:        {human_size(usage.used_bytes)} in {usage.inodes} inodes")
    if footprint is not None:
        click.echo(f"in store:    {human_size(footprint[1])} in {footprint[0]:,} objects")
    else:
        click.echo("in store:    not listed (remote store: riverfs status --list-store)")
    click.echo(f"sessions:    {len(sessions)}")
    now = time.time_ns()
    host = socket.gethostname()
    for s in sessions:
        age = (now - s.heartbeat) / 1e9
        dead = ""
        if s.host == host and not pid_alive(s.pid):
            dead = " DEAD (cleaned up by the next mount)"
        elif s.stale(now, STALE_HEARTBEATS):
            dead = " STALE (no heartbeat; cleaned up by another mount)"
        staged = f", {human_size(s.staged)} waiting to upload" if s.staged else ""
        served = f", metrics at {s.metrics}" if s.metrics else ""
        click.echo(
            f"  #{s.id} {s.host} pid {s.pid} at {s.mountpoint} "
            f"(version {s.version}, heartbeat {age:.0f}s ago{staged}{served}){dead}"
        )


# ---- entry point ----------------------------------------------------------------------------


cli.add_command(obj)
cli.add_command(passphrase_group)
cli.add_command(gc)
cli.add_command(fsck)
cli.add_command(dump)
cli.add_command(load)
cli.add_command(info)
cli.add_command(bench)
cli.add_command(stats)
cli.add_command(profile)
cli.add_command(warmup)


def main() -> None:
    code = _run()
    # Leave without interpreter finalization: obstore's tokio worker threads can race it and
    # abort the process after all work is done (pyo3-async-runtimes issue 40). Everything
    # the commands own is closed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _helper_form(args: list[str]) -> list[str]:
    """`riverfs SOURCE MOUNTPOINT [-o OPTS]`, as mount.fuse3 runs the program of a
    `fuse.riverfs` mount (mount -t fuse.riverfs, fstab), is `riverfs mount --background
    SOURCE MOUNTPOINT [-o OPTS]`: mount.fuse3 waits for the program to return once mounted."""
    if len(args) >= 2 and args[0] not in cli.commands and not args[0].startswith("-"):
        return ["mount", "--background", *args]
    return args


def _run() -> int:
    """Run the command line; return the exit code."""
    debug = "--debug" in sys.argv
    _setup_logging(debug, logging.CRITICAL)
    args = _helper_form(sys.argv[1:])
    try:
        code = cli.main(
            args=args, standalone_mode=False
        )  # an Exit(n) raised by a command returns n
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort:
        click.echo("riverfs: aborted", err=True)
        return 1
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except RiverError as e:
        click.echo(f"riverfs: error: {e}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        if debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"riverfs: error: {e.strerror or e}{where}", err=True)
        return 1
    except Exception as e:
        if debug:
            raise
        click.echo(
            f"riverfs: unexpected error: {type(e).__name__}: {e} (run with --debug for details)",
            err=True,
        )
        return 1
