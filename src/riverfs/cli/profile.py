"""`riverfs profile PATH`: the access log of a mount aggregated live (top operations, slowest
paths, processes), refreshed every second; `--duration S` collects for S seconds and prints a
summary (plain text, or `--json`).

The tallies come from tools/profile.py; this module only lays them out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from riverfs.errors import RiverError
from riverfs.tools.profile import AccessLog, Profile, Tally
from riverfs.tools.stats import mount_root

REFRESH = 1.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _cells(t: Tally, elapsed: float) -> list[str]:
    rate = t.count / elapsed if elapsed > 0 else 0.0
    return [
        f"{t.count}",
        f"{rate:.1f}",
        f"{t.seconds:.3f}",
        _ms(t.mean),
        _ms(t.slowest),
        f"{t.errors}",
    ]


COLUMNS = ["count", "per s", "total s", "mean ms", "max ms", "errors"]


def tables(profile: Profile, top: int, elapsed: float) -> list[tuple[str, list[str], list]]:
    """(title, columns, rows) of the three tables: operations, paths, processes."""
    ops = [[op, *_cells(t, elapsed)] for op, t in profile.top_ops(top)]
    paths = [[path, *_cells(t, elapsed)] for path, t in profile.top_paths(top)]
    procs = [
        [str(pid), profile.names.get(pid) or "?", *_cells(t, elapsed)]
        for pid, t in profile.top_processes(top)
    ]
    return [
        ("operations (by total time)", ["op", *COLUMNS], ops),
        ("slowest paths (by total time)", ["path", *COLUMNS], paths),
        ("processes", ["pid", "name", *COLUMNS], procs),
    ]


def _header(root: Path, profile: Profile, elapsed: float) -> str:
    dropped = f", {profile.dropped} dropped (this reader fell behind)" * bool(profile.dropped)
    return f"riverfs profile {root}: {profile.events} operations in {elapsed:.1f} s{dropped}"


def plain(root: Path, profile: Profile, top: int, elapsed: float) -> str:
    lines = [_header(root, profile, elapsed)]
    for title, columns, rows in tables(profile, top, elapsed):
        lines += ["", title]
        all_rows = [columns, *rows]
        widths = [max(len(r[i]) for r in all_rows) for i in range(len(columns))]
        first_text = len(columns) - len(COLUMNS)  # left-aligned leading columns
        for row in all_rows:
            cells = [
                c.ljust(w) if i < first_text else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  " + "  ".join(cells).rstrip())
        if not rows:
            lines.append("  (none)")
    return "\n".join(lines)


def _view(root: Path, profile: Profile, top: int, elapsed: float):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = [Text(_header(root, profile, elapsed) + " (Ctrl-C ends)", style="bold")]
    for title, columns, rows in tables(profile, top, elapsed):
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        first_text = len(columns) - len(COLUMNS)
        for i, col in enumerate(columns):
            t.add_column(
                col,
                justify="left" if i < first_text else "right",
                no_wrap=i >= first_text,
                overflow="fold",
            )
        for row in rows:
            t.add_row(*row)
        parts.append(t)
    return Group(*parts)


@click.command("profile")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--duration",
    type=float,
    help="Collect for this many seconds, print a summary and exit (default: a live view "
    "until Ctrl-C).",
)
@click.option("--json", "as_json", is_flag=True, help="With --duration: the summary as JSON.")
@click.option("--top", default=10, show_default=True, help="Rows of each table.")
def profile(path: Path, duration: float | None, as_json: bool, top: int) -> None:
    """Aggregate the access log of the mount PATH lies in: top operations by count and
    time, slowest paths, processes (root only: the log shows every path)."""
    if as_json and duration is None:
        raise RiverError("--json prints a summary: give --duration S too")
    root = mount_root(path)
    log = AccessLog(root)
    tally = Profile()
    start = time.monotonic()
    if duration is not None:
        deadline = start + max(duration, 0.0)
        while not log.ended and (left := deadline - time.monotonic()) > 0:
            tally.feed(log.take(left))
        elapsed = time.monotonic() - start
        if as_json:
            summary = {"mountpoint": str(root), **tally.summary(top, elapsed)}
            click.echo(json.dumps(summary, indent=2))
        else:
            click.echo(plain(root, tally, top, elapsed))
        return
    _live(root, log, tally, top, start)


def _live(root: Path, log: AccessLog, tally: Profile, top: int, start: float) -> None:
    from rich.live import Live

    try:
        with Live(_view(root, tally, top, 0.0), auto_refresh=False) as live:
            shown = start
            while not log.ended:
                tally.feed(log.take(max(0.0, shown + REFRESH - time.monotonic())))
                now = time.monotonic()
                if now >= shown + REFRESH:
                    live.update(_view(root, tally, top, now - start), refresh=True)
                    shown = now
            live.update(_view(root, tally, top, time.monotonic() - start), refresh=True)
    except KeyboardInterrupt:
        pass
