"""`riverfs stats PATH`: what a mount is doing, from its `.riverfs/stats`, as a live view
refreshed every interval (rich), one plain-text snapshot (`--once`) or JSON (`--json`).

The numbers come from tools/stats.py; this module only lays them out. Each section is built
once as rows of text, then shown as rich tables (live) or aligned plain columns (--once: exact
numbers, for scripts).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from riverfs.cli.defaults import human_size
from riverfs.tools.stats import Figures, Flow, Timed, figures, mount_root, snapshot

WIDE = 110  # terminal columns from which the live view shows its tables side by side


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]


def _size(n: float, human: bool) -> str:
    return human_size(n) if human else f"{n:.0f}"


def _rate(n: float) -> str:
    return f"{n:.1f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def _timed_rows(
    table: dict[str, Timed], top: int | None, errors: bool, full: bool
) -> list[list[str]]:
    rows = []
    for name, t in list(table.items())[:top]:
        row = [name, _rate(t.rate), _ms(t.mean)] + [_ms(t.mean_all)] * full + [f"{t.count:.0f}"]
        if errors:
            row += [_rate(t.error_rate), f"{t.errors:.0f}"]
        rows.append(row)
    return rows


def _flow_row(name: str, flow: Flow, human: bool, size: bool) -> list[str]:
    if size:
        rate = human_size(flow.rate) + "/s" if human else f"{flow.rate:.0f}"
        return [name, rate, _size(flow.total, human)]
    return [name, _rate(flow.rate), f"{flow.total:.0f}"]


def sections(fig: Figures, top: int | None, human: bool) -> list[Section]:
    """The view's sections: every figure of `fig`; sizes readable and the lifetime means left
    out (`human`, the live view) or exact with them (--once)."""
    g = fig.gauges
    full = not human
    timed_cols = ["per s", "mean ms"] + ["mean ms (all)"] * full + ["total"]
    out = [
        Section(
            "FUSE operations",
            ["op", *timed_cols, "errors/s", "errors"],
            _timed_rows(fig.fuse, top, True, full),
        ),
        Section(
            "data",
            ["", "per s", "total"],
            [
                _flow_row("read bytes", fig.read_bytes, human, size=True),
                _flow_row("written bytes", fig.written_bytes, human, size=True),
            ],
        ),
    ]
    cache_rows = [_flow_row(f"reads from {s}", f, human, False) for s, f in fig.block_reads.items()]
    done = fig.cache_hits.total + fig.cache_misses.total
    ratio = f"{fig.cache_hits.total / done * 100:.1f}%" if done else "-"
    cache_rows += [
        _flow_row("hits", fig.cache_hits, human, False),
        _flow_row("misses", fig.cache_misses, human, False),
        ["hit ratio (all)", "", ratio],
        ["disk cache", "", _size(g["disk_cache_bytes"], human)],
        ["blocks in memory", "", _size(g["block_memory_bytes"], human)],
    ]
    out.append(Section("block cache", ["", "per s", "total"], cache_rows))
    out.append(
        Section(
            "object store" + (" (UNREACHABLE)" if g["store_down"] else ""),
            ["request", *timed_cols, "errors/s", "errors"],
            _timed_rows(fig.store, None, True, full),
        )
    )
    out.append(
        Section(
            "uploads",
            ["", "now"],
            [
                ["blocks waiting", f"{g['uploads_waiting']:.0f}"],
                ["bytes waiting", _size(g["uploads_waiting_bytes"], human)],
            ],
        )
    )
    meta_rows = _timed_rows(fig.meta, None, False, full)
    retries = fig.meta_retries
    meta_rows.append(["retries", _rate(retries.rate), "", *[""] * full, f"{retries.total:.0f}"])
    out.append(Section("metadata transactions", ["kind", *timed_cols], meta_rows))
    out.append(
        Section(
            "compaction",
            ["", "per s", "total"],
            [
                _flow_row("chunks rewritten", fig.compacted_chunks, human, False),
                _flow_row("bytes rewritten", fig.compacted_bytes, human, True),
            ],
        )
    )
    out.append(
        Section(
            "memory",
            ["", "now"],
            [
                ["resident (RSS)", _size(g["process_resident_bytes"], human)],
                ["write buffers", _size(g["write_buffer_bytes"], human)],
                ["decoded blocks", _size(g["block_memory_bytes"], human)],
            ],
        )
    )
    if fig.accesslog_dropped.total:
        out.append(
            Section(
                "access log",
                ["", "per s", "total"],
                [_flow_row("lines dropped", fig.accesslog_dropped, human, False)],
            )
        )
    return out


def plain(root: Path, fig: Figures) -> str:
    """The --once text: a header, then each section as aligned columns."""
    lines = [f"riverfs stats {root} (rates over {fig.interval:.2f} s)"]
    for s in sections(fig, None, human=False):
        lines.append("")
        head = [s.title, *s.columns[1:]]
        widths = [max(len(r[i]) for r in [head, *s.rows]) for i in range(len(head))]
        for row in [head, *([["  " + r[0], *r[1:]] for r in s.rows] or [["  (none)"]])]:
            cells = [row[0].ljust(widths[0] + 2)] + [
                c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=False)
            ]
            lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _view(root: Path, fig: Figures, top: int, width: int):
    """The live view: the tables in two columns when the terminal is wide enough (`width`),
    else one above the other."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    tables = []
    for s in sections(fig, top, human=True):
        t = Table(title=s.title, title_justify="left", box=box.SIMPLE_HEAD, expand=False)
        for i, col in enumerate(s.columns):
            t.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
        for row in s.rows:
            t.add_row(*row)
        tables.append(t)
    if width < WIDE:
        grid = Group(*tables)
    else:
        grid = Table.grid(padding=(0, 2))
        grid.add_column()
        grid.add_column()
        grid.add_row(tables[0], Group(*tables[1:3]))
        rest = tables[3:]
        for i in range(0, len(rest), 2):
            grid.add_row(*rest[i : i + 2])
    header = Text(
        f"riverfs stats {root}: rates over the last {fig.interval:.1f} s (Ctrl-C ends)",
        style="bold",
    )
    return Group(header, grid)


@click.command("stats")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    help="Seconds between snapshots: the live view's refresh, and the span --once and "
    "--json measure rates over.",
)
@click.option("--once", is_flag=True, help="Print one plain-text snapshot and exit.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one snapshot as JSON (figures and samples)."
)
@click.option("--top", default=12, show_default=True, help="FUSE operations the live view shows.")
def stats(path: Path, interval: float, once: bool, as_json: bool, top: int) -> None:
    """What the mount PATH lies in is doing: FUSE operations, data, block cache, object
    store, uploads, metadata, compaction, memory (from its .riverfs/stats)."""
    root = mount_root(path)
    interval = max(interval, 0.05)
    first = snapshot(root)
    if once or as_json:
        time.sleep(interval)
        last = snapshot(root)
        fig = figures(first, last)
        if as_json:
            out = {
                "mountpoint": str(root),
                "figures": asdict(fig),
                "samples": last.as_json(),
            }
            click.echo(json.dumps(out, indent=2, sort_keys=True))
        else:
            click.echo(plain(root, fig))
        return
    _live(root, first, interval, top)


def _live(root: Path, first, interval: float, top: int) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    before = first
    try:
        view = _view(root, figures(None, first), top, console.width)
        with Live(view, console=console, auto_refresh=False) as live:
            while True:
                time.sleep(max(0.0, before.at + interval - time.monotonic()))
                after = snapshot(root)
                live.update(_view(root, figures(before, after), top, console.width), refresh=True)
                before = after
    except KeyboardInterrupt:
        pass
