"""`riverfs info PATH`: what the mount knows about a file or a directory.

The mount answers, not this process: the daemon serves the `riverfs.info` virtual xattr of
PATH (vfs/introspect.py) as JSON, in pages of blocks for a long file. A directory's figures
come from its counters, at once for any size of tree; `--recursive` also walks the tree (a
progress bar counting what it saw) and prints the walked totals beside them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from riverfs.cli import vxattr
from riverfs.cli.defaults import human_size
from riverfs.errors import RiverError

XATTR = "riverfs.info"


def ask(path: Path) -> dict:
    """The mount's `riverfs.info` of `path`, every page of blocks gathered."""
    info = _page(path, XATTR)
    while info.get("next_block") is not None:
        more = _page(path, f"{XATTR}:{info['next_block']}")
        info["blocks"].extend(more["blocks"])
        info["next_block"] = more["next_block"]
    info.pop("next_block", None)
    info.pop("first_block", None)
    return info


def _page(path: Path, name: str) -> dict:
    try:
        return json.loads(vxattr.ask(path, name))  # one request: computed once
    except FileNotFoundError:
        raise RiverError(f"{path}: no such file or directory") from None
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA):
            raise RiverError(f"{path} is not in a riverfs mount") from None
        raise RiverError(f"{path}: {e.strerror}") from None


def walk(root: Path) -> dict:
    """What a walk of the tree below `root` finds, counted as the directory counters count:
    every name is an entry; non-directories add their st_size (a hard link each time)."""
    totals = {"directories": 1, "entries": 0, "bytes": 0}
    with Progress(
        SpinnerColumn(),
        TextColumn("walking: {task.completed:,} entries"),
        TimeElapsedColumn(),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("walk")
        stack = [root]
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    totals["entries"] += 1
                    if stat.S_ISDIR(st.st_mode):
                        totals["directories"] += 1
                        stack.append(Path(entry.path))
                    else:
                        totals["bytes"] += st.st_size
                    bar.advance(task)
    return totals


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.option(
    "--recursive", "-r", is_flag=True, help="Also walk a directory's tree and print its totals."
)
def info(path: Path, as_json: bool, recursive: bool) -> None:
    """Show a file's inode, size, chunks, slices (fragmentation), objects and where each
    block is cached; or a directory's entries and total size, from its counters."""
    data = {"path": str(path), **ask(path)}
    if recursive and data["type"] == "directory":
        data["walk"] = walk(path)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in _text(data):
        click.echo(line)


def _n(value: int) -> str:
    return f"{value:,}"


def _bytes(value: int) -> str:
    return f"{human_size(value)} ({value:,} bytes)" if value >= 1024 else f"{value} bytes"


def _text(d: dict) -> list[str]:
    lines = [
        f"{d['path']}: {d['type']}, inode {d['inode']}, {d['nlink']} link(s), "
        f"size {_bytes(d['size'])}"
    ]
    if d["type"] == "directory":
        tree = d["tree"]
        lines += [
            f"  entries:      {_n(d['entries'])} ({_bytes(d['bytes'])} in its files)",
            f"  tree:         {_n(tree['entries'])} entries in {_n(tree['directories'])} "
            f"directories, {_bytes(tree['bytes'])}",
        ]
        walked = d.get("walk")
        if walked is not None:
            same = all(walked[k] == tree[k] for k in ("entries", "bytes", "directories"))
            lines.append(
                f"  walked:       {_n(walked['entries'])} entries in "
                f"{_n(walked['directories'])} directories, {_bytes(walked['bytes'])}"
                + (" (as counted)" if same else " (differs from the counters: riverfs fsck)")
            )
        return lines
    if d["type"] != "file":
        return lines
    per_chunk = d["slices"] / d["chunks"] if d["chunks"] else 0
    lines += [
        f"  chunks:       {_n(d['chunks'])}",
        f"  slices:       {_n(d['slices'])} ({per_chunk:.1f} per chunk, at most "
        f"{_n(d['max_slices_per_chunk'])} in one; {_n(d['distinct_slices'])} distinct; "
        f"{_n(d['holes'])} holes)",
        f"  stored:       {_bytes(d['slice_bytes'])} in its slices, "
        f"{_bytes(d['visible_bytes'])} of it visible",
        f"  objects:      {_n(d['objects'])} ({_bytes(d['object_bytes'])})"
        + (
            f", {_n(d['inline_slices'])} slice(s) inline in the database"
            if d["inline_slices"]
            else ""
        ),
        "  blocks:",
    ]
    for b in d["blocks"]:
        where = ", ".join(b["in"]) if b["in"] != ["store"] else "only in the store"
        name = b["key"] or f"slice {b['slice']} (inline)"
        lines.append(f"    {name}  {human_size(b['size'])}  {where}")
    return lines
