"""tools/stats.py and tools/profile.py without a mount: the stats text parsed, rates between
two snapshots, the mount a path lies in (from a mountinfo text), the access log aggregated."""

from __future__ import annotations

import os

import pytest

from riverfs import metrics
from riverfs.tools.profile import Profile, parse_line, process_name
from riverfs.tools.stats import containing_mount, figures, parse

STATS_1 = """\
riverfs_fuse_op_seconds_bucket{op="create",le="8.192e-06"} 0
riverfs_fuse_op_seconds_bucket{op="create",le="+Inf"} 10
riverfs_fuse_op_seconds_sum{op="create"} 0.02
riverfs_fuse_op_seconds_count{op="create"} 10
riverfs_fuse_op_seconds_sum{op="lookup"} 0.5
riverfs_fuse_op_seconds_count{op="lookup"} 100
riverfs_fuse_op_errors_total{op="lookup"} 40
riverfs_fuse_written_bytes_total 1000
riverfs_block_reads_total{source="memory"} 6
riverfs_block_reads_total{source="store"} 2
riverfs_store_request_seconds_sum{op="get"} 0.2
riverfs_store_request_seconds_count{op="get"} 2
riverfs_meta_txn_seconds_sum{kind="write"} 0.01
riverfs_meta_txn_seconds_count{kind="write"} 10
riverfs_meta_txn_retries_total 1
riverfs_uploads_waiting 3
riverfs_process_resident_bytes 52428800
"""

# two seconds later: 20 more creates taking 0.06 s, no lookups, 4000 bytes written
STATS_2 = (
    STATS_1.replace('create"} 0.02', 'create"} 0.08')
    .replace('seconds_count{op="create"} 10', 'seconds_count{op="create"} 30')
    .replace("written_bytes_total 1000", "written_bytes_total 5000")
    .replace('source="memory"} 6', 'source="memory"} 16')
    .replace("riverfs_uploads_waiting 3", "riverfs_uploads_waiting 0")
)


def test_the_stats_text_parses_into_samples_with_their_labels():
    snap = parse(STATS_1 + "# a comment\ngarbage line\nriverfs_x notanumber\n\n", at=5.0)
    assert snap.at == 5.0
    assert snap.value("riverfs_fuse_op_seconds_count", op="create") == 10
    assert snap.value("riverfs_fuse_op_seconds_bucket", op="create", le="+Inf") == 10
    assert snap.value("riverfs_fuse_written_bytes_total") == 1000
    assert snap.value("riverfs_absent_total") == 0
    assert snap.by("riverfs_block_reads_total", "source") == {"memory": 6, "store": 2}
    assert "riverfs_x" not in {name for name, _ in snap.samples}
    assert snap.as_json()['riverfs_fuse_op_errors_total{op="lookup"}'] == 40


def test_what_metrics_writes_parses_back():
    """The stats file's own line format (metrics.sample_line) round-trips through parse."""
    samples = [
        ("riverfs_a_total", (), 7),
        ("riverfs_b_seconds_bucket", (("op", "read"), ("le", "0.001024")), 3),
        ("riverfs_c", (), 0.25),
    ]
    snap = parse("\n".join(metrics.sample_line(s) for s in samples))
    assert snap.samples == {(name, labels): float(v) for name, labels, v in samples}


def test_rates_and_means_are_over_the_interval_totals_since_the_start():
    before, after = parse(STATS_1, at=10.0), parse(STATS_2, at=12.0)
    fig = figures(before, after)
    assert fig.interval == 2.0
    create = fig.fuse["create"]
    assert (create.count, create.rate) == (30, 10.0)
    assert create.mean == pytest.approx(0.06 / 20)
    assert create.mean_all == pytest.approx(0.08 / 30)
    lookup = fig.fuse["lookup"]
    assert lookup.rate == 0 and lookup.mean is None and lookup.mean_all == pytest.approx(0.005)
    assert (lookup.errors, lookup.error_rate) == (40, 0.0)
    assert list(fig.fuse) == ["create", "lookup"]  # busiest in the interval first
    assert (fig.written_bytes.total, fig.written_bytes.rate) == (5000, 2000.0)
    assert (fig.cache_hits.total, fig.cache_hits.rate) == (16, 5.0)
    assert (fig.cache_misses.total, fig.cache_misses.rate) == (2, 0.0)
    assert fig.store["get"].mean_all == pytest.approx(0.1)
    assert fig.meta["write"].count == 10 and fig.meta_retries.total == 1
    assert fig.gauges["uploads_waiting"] == 0
    assert fig.gauges["process_resident_bytes"] == 50 << 20


def test_one_snapshot_gives_totals_and_no_rates():
    fig = figures(None, parse(STATS_2, at=3.0))
    assert fig.interval == 0
    assert fig.fuse["create"].count == 30 and fig.fuse["create"].rate == 0
    assert fig.fuse["create"].mean is None
    assert fig.written_bytes == type(fig.written_bytes)(5000, 0.0)


def test_a_counter_that_went_backwards_is_no_negative_rate():
    """A remount restarts the counters: the next interval shows 0/s, not a negative rate."""
    fig = figures(parse(STATS_2, at=0.0), parse(STATS_1, at=1.0))
    assert fig.written_bytes.rate == 0 and fig.fuse["create"].rate == 0


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /tmp rw shared:2 - tmpfs tmpfs rw
51 40 0:50 / /tmp/with\\040space/mnt rw,nosuid,nodev - fuse.riverfs riverfs rw,user_id=0
52 51 0:51 / /tmp/with\\040space/mnt/inner rw - tmpfs tmpfs rw
53 40 0:52 / /tmp/stacked rw - tmpfs tmpfs rw
54 40 0:53 / /tmp/stacked rw - fuse.riverfs riverfs rw
"""


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/tmp/with space/mnt", ("/tmp/with space/mnt", "fuse.riverfs")),
        ("/tmp/with space/mnt/a/b", ("/tmp/with space/mnt", "fuse.riverfs")),
        ("/tmp/with space/mnt/inner/x", ("/tmp/with space/mnt/inner", "tmpfs")),
        ("/tmp/with space/mntx", ("/tmp", "tmpfs")),  # a prefix of the name is not inside
        ("/tmp/stacked/f", ("/tmp/stacked", "fuse.riverfs")),  # the mount on top
        ("/home", ("/", "ext4")),
    ],
)
def test_the_mount_a_path_lies_in(path, expected):
    assert containing_mount(path, MOUNTINFO) == expected


LOG = [
    "2026-12-04T20:00:00.000001Z pid=10 uid=0 op=create inode=5 path=/d/a%20b result=OK "
    "duration=0.002000",
    "2026-12-04T20:00:00.000002Z pid=10 uid=0 op=write inode=5 path=/d/a%20b offset=0 "
    "size=4096 result=OK duration=0.001000",
    "2026-12-04T20:00:00.000003Z pid=11 uid=1000 op=lookup inode=1 path=/missing "
    "result=ENOENT duration=0.000500",
    "2026-12-04T20:00:00.000004Z pid=0 uid=0 op=release inode=9 result=OK duration=0.000100",
    "# 7 events dropped: this reader fell behind",
    "2026-12-04T20:00:00.000005Z pid=10 uid=0 op=write inode=5 path=/d/a%20b offset=4096 "
    "size=100 result=OK duration=0.004000",
]


def test_an_access_log_line_parses_into_its_event():
    e = parse_line(LOG[1])
    assert (e.pid, e.uid, e.op, e.inode, e.path) == (10, 0, "write", 5, "/d/a b")
    assert (e.offset, e.size, e.result, e.duration) == (0, 4096, "OK", 0.001)
    e = parse_line(LOG[3])
    assert e.path is None and e.where == "<inode 9>" and e.size is None
    assert parse_line(LOG[4]) is None
    assert parse_line("2026-12-04T20:00:00Z pid=1 op=x") is None  # torn or foreign
    assert parse_line("2026-12-04T20:00:00Z pid=x uid=0 op=a inode=1 result=OK duration=1") is None


def test_the_profile_tallies_ops_paths_and_processes_from_pieces_of_the_stream():
    names = {10: "writer", 11: None}
    prof = Profile(name_of=names.get)
    data = ("\n".join(LOG) + "\n").encode()
    for i in range(0, len(data), 37):  # reads end anywhere, mid-line too
        prof.feed(data[i : i + 37])
    assert prof.events == 5 and prof.dropped == 7 and prof.unparsed == 0
    write = prof.ops["write"]
    assert (write.count, write.bytes, write.slowest) == (2, 4196, 0.004)
    assert write.seconds == pytest.approx(0.005)
    assert prof.ops["lookup"].errors == 1
    assert [op for op, _ in prof.top_ops(2)] == ["write", "create"]  # by total time
    assert [op for op, _ in prof.top_ops(10, by="count")][0] == "write"
    [(path, t)] = prof.top_paths(1)
    assert path == "/d/a b" and t.count == 3 and t.seconds == pytest.approx(0.007)
    assert [pid for pid, _ in prof.top_processes(3)] == [10, 11, 0]
    assert prof.names[10] == "writer" and prof.names[11] is None
    summary = prof.summary(2, elapsed=1.5)
    assert summary["events"] == 5 and len(summary["paths"]) == 2 and len(summary["ops"]) == 4
    assert summary["processes"][0] == {
        "pid": 10,
        "name": "writer",
        "count": 3,
        "errors": 0,
        "seconds": pytest.approx(0.007),
        "mean": pytest.approx(0.007 / 3),
        "slowest": 0.004,
        "bytes": 4196,
    }


def test_a_half_line_waits_for_its_end():
    prof = Profile(name_of=lambda pid: None)
    prof.feed(LOG[0][:30].encode())
    assert prof.events == 0
    prof.feed(LOG[0][30:].encode() + b"\n")
    assert prof.events == 1 and prof.paths["/d/a b"].count == 1


def test_process_names_come_from_proc_while_the_process_lives():
    with open("/proc/self/comm") as f:
        assert process_name(os.getpid()) == f.read().strip()
    assert process_name(0) == "(kernel)"
    assert process_name(2**22 + 12345) is None  # above pid_max: no such process


def test_profile_paths_are_bounded(monkeypatch):
    from riverfs.tools import profile

    monkeypatch.setattr(profile, "MAX_PATHS", 3)
    prof = profile.Profile(name_of=lambda pid: None)
    for i in range(10):
        prof.add_line(
            f'2026-12-04T10:00:00.000000Z pid=7 uid=0 op=lookup inode=1 path="/f{i}" '
            "result=OK duration=0.001000"
        )
    assert len(prof.paths) == 4  # three paths and the bucket of the rest
    assert prof.paths[profile.OTHER_PATHS].count == 7
    assert prof.events == 10
