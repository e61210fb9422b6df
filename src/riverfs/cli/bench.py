"""`riverfs bench PATH`: the built-in benchmark (tools/bench.py) as a table or JSON."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from riverfs.cli.defaults import human_size, parse_size


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--big-file-size",
    default="1G",
    show_default=True,
    help="Size of each thread's big file (0: skip the big-file phases).",
)
@click.option("--small-file-size", default="128K", show_default=True, help="Size of a small file.")
@click.option(
    "--small-file-count",
    default=100,
    show_default=True,
    help="Small files in all, shared among the threads (0: skip the small-file phases).",
)
@click.option(
    "--threads", "-p", default=1, show_default=True, help="Threads working at once, as -p."
)
@click.option(
    "--block-size", default="1M", show_default=True, help="Size of a big file's read/write call."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    path: Path,
    big_file_size: str,
    small_file_size: str,
    small_file_count: int,
    threads: int,
    block_size: str,
    as_json: bool,
) -> None:
    """Benchmark the filesystem PATH is on (a riverfs mount or any other directory): big-file
    write and read, small-file write, read and stat, with throughput and per-operation
    latency. Works in PATH/riverfs-bench-PID and removes it at the end."""
    from riverfs.errors import RiverError
    from riverfs.tools.bench import run_bench

    if small_file_count < 0:
        raise RiverError(f"--small-file-count {small_file_count}: use 0 or more")
    status = Console(stderr=True).status("starting ...") if sys.stderr.isatty() else None
    with status or contextlib.nullcontext():
        result = run_bench(
            path,
            big_file_size=parse_size(big_file_size),
            small_file_size=parse_size(small_file_size),
            small_file_count=small_file_count,
            threads=threads,
            block_size=max(parse_size(block_size), 1),
            on_phase=lambda name: status and status.update(f"{name} ..."),
        )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    threads = f"{result.threads} thread{'s' if result.threads > 1 else ''}"
    table = Table(
        title=f"riverfs bench {result.path} ({result.filesystem}, {threads})",
        caption=f"big files: {human_size(result.big_file_size)} per thread in "
        f"{human_size(result.block_size)} calls; small files: {result.small_file_count} of "
        f"{human_size(result.small_file_size)}",
    )
    table.add_column("phase")
    table.add_column("throughput", justify="right")
    table.add_column("ops", justify="right")
    table.add_column("mean ms", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("notes")
    for p in result.phases:
        table.add_row(
            p.name,
            f"{p.throughput:,.1f} {p.unit}",
            f"{p.operations:,}",
            f"{p.mean_ms:.3f}",
            f"{p.p50_ms:.3f}",
            f"{p.p99_ms:.3f}",
            _note(p),
        )
    Console(width=max(Console().width, 120)).print(table)


def _note(p) -> str:
    if p.sync_ms is not None:
        return f"fsync+close {p.sync_ms:.1f} ms/file"
    if p.cached_fraction is None:
        reads = p.name.endswith("read")
        return "cache state unknown (no mmap): may be page-cache warm" if reads else ""
    if p.cached_fraction == 0:
        return "cold: page cache dropped"
    return f"page-cache warm: {100 * p.cached_fraction:.0f}% cached"
