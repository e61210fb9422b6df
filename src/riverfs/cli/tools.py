"""`riverfs gc`, `fsck`, `dump`, `load`: maintenance, safe by default, with progress and a
summary."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from riverfs.cli.defaults import human_size
from riverfs.cli.passphrase import read_passphrase
from riverfs.objects.urls import redact_url


def _run_tool(meta_url: str, what: str, tool, *, unlock: bool, key_file: Path | None):
    """Open the volume (and unlock it if asked), run `tool(volume, progress)` under a progress
    bar counting objects as `what`, close it; return what the tool returned."""
    from riverfs.vfs.volume import open_volume

    async def run():
        volume = await open_volume(meta_url)
        try:
            if unlock:
                volume.unlock(lambda: read_passphrase(key_file))
            with Progress(
                SpinnerColumn(),
                TextColumn(f"{what}: {{task.completed:,}} objects"),
                TimeElapsedColumn(),
                transient=True,
                disable=not sys.stderr.isatty(),
            ) as bar:
                task = bar.add_task(what)
                return await tool(volume, lambda n: bar.advance(task, n))
        finally:
            await volume.meta.close()

    return asyncio.run(run())


@click.command()
@click.argument("meta_url")
@click.option("--delete", is_flag=True, help="Delete what is found (default: only report).")
@click.option("--key-file", type=click.Path(path_type=Path), help="Passphrase file.")
@click.option(
    "--min-age",
    default=3600.0,
    show_default=True,
    help="Seconds an unreferenced object must be old to count (uploads in flight are younger).",
)
def gc(meta_url: str, delete: bool, key_file: Path | None, min_age: float) -> None:
    """Find objects no file references (leaked by crashes); with --delete remove them, run
    the queued deletes and compact fragmented chunks (an encrypted volume needs its
    passphrase for that)."""
    from riverfs.tools.gc import collect_garbage

    r = _run_tool(
        meta_url,
        "listing the store",
        lambda volume, progress: collect_garbage(
            volume, delete=delete, min_age=min_age, progress=progress
        ),
        unlock=delete,  # compaction reads (and decrypts) data
        key_file=key_file,
    )
    click.echo(f"objects in the store: {r.objects:,}")
    click.echo(f"unreferenced:         {r.leaked:,} ({human_size(r.leaked_bytes)})")
    if r.young:
        click.echo(f"too young to judge:   {r.young:,} (younger than {min_age:.0f}s)")
    for key in r.sample:
        click.echo(f"  {key}")
    if delete:
        click.echo(f"compacted: {r.compacted:,} fragmented chunks")
        click.echo(f"deleted: {r.deleted:,} unreferenced, {r.pending_deleted:,} queued deletes")
    elif r.leaked:
        click.echo("nothing deleted; run again with --delete to remove them")


@click.command()
@click.argument("meta_url")
@click.option("--repair", is_flag=True, help="Fix what can be fixed (default: only report).")
@click.option("--check-data", is_flag=True, help="Also fetch and verify every block.")
@click.option("--key-file", type=click.Path(path_type=Path), help="Passphrase file.")
def fsck(meta_url: str, repair: bool, check_data: bool, key_file: Path | None) -> None:
    """Check that every referenced object exists and the metadata is consistent.

    Exit status: 0 clean (or everything repaired), 1 damage or problems remain.
    """
    from riverfs.tools.fsck import check_volume

    r = _run_tool(
        meta_url,
        "checking objects",
        lambda volume, progress: check_volume(
            volume, repair=repair, check_data=check_data, progress=progress
        ),
        unlock=check_data or key_file is not None,  # a given key is always checked
        key_file=key_file,
    )
    click.echo(f"checked {r.inodes:,} inodes and {r.objects:,} block objects")
    if r.mounted:
        click.echo(
            f"note: {r.mounted} mount(s) live; blocks a --writeback mount has not uploaded yet "
            "show as missing"
        )
    for inode, problem in sorted(r.damaged.items()):
        click.echo(f"DAMAGED {r.paths[inode]}: {problem}")
    for problem in r.problems:
        click.echo(f"problem: {problem}")
    for fix in r.repaired:
        click.echo(f"repaired: {fix}")
    unrepaired = r.problems and not repair
    if r.damaged or unrepaired:
        click.echo(
            f"{len(r.damaged)} damaged file(s), {len(r.problems)} metadata problem(s)"
            + ("" if repair else "; --repair fixes the metadata problems")
        )
        raise click.exceptions.Exit(1)
    click.echo("clean" if r.clean else "all metadata problems repaired")


@click.command()
@click.argument("meta_url")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--with-keys",
    is_flag=True,
    help="Include the wrapped master key of an encrypted volume (needed to read it again).",
)
def dump(meta_url: str, file: Path, with_keys: bool) -> None:
    """Back up the volume's metadata to FILE (JSON lines; - for standard output)."""
    from riverfs.meta import dump as dumping
    from riverfs.meta import open_meta

    async def run() -> int:
        meta = await open_meta(meta_url)
        try:
            with click.open_file(str(file), "w") as out:
                return await dumping.dump(meta, out, with_keys=with_keys, progress=lambda n: None)
        finally:
            await meta.close()

    rows = asyncio.run(run())
    if str(file) != "-":
        click.echo(f"dumped {rows:,} rows to {file}" + (" (with keys)" if with_keys else ""))


@click.command()
@click.argument("meta_url")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
def load(meta_url: str, file: Path) -> None:
    """Restore a metadata dump into an empty database; the store goes over to it.

    The restored volume gets a new identity and takes the store over (its riverfs.json): the
    database the dump came from no longer opens it, so the two never write the same store.
    """
    from riverfs.meta import dump as dumping
    from riverfs.meta import open_meta
    from riverfs.vfs.volume import take_over_store

    async def run():
        meta = await open_meta(meta_url, create=True)
        try:
            with click.open_file(str(file), "r") as inp:
                settings, rows = await dumping.load(
                    meta, inp, uuid=str(uuid.uuid4()), progress=lambda n: None
                )
            await take_over_store(settings)
            return settings, rows
        finally:
            await meta.close()

    settings, rows = asyncio.run(run())
    click.echo(
        f"loaded {rows:,} rows into {redact_url(meta_url)} as volume {settings.uuid}, "
        f"which now owns {redact_url(settings.storage)}"
    )
