"""Observability through real mounts (issue 12): the counters of `.riverfs/stats`, the access
log, the trace's slow-op lines, the Prometheus endpoint, `.riverfs/config`, and the virtual
files being invisible and untouchable."""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
from objects_support import S3_ENV
from prometheus_client.parser import text_string_to_metric_families
from support import Volume, run_cli, wait_until

pytest_plugins = ["objects_fixtures"]  # the moto server and the fault proxy


def stats(mnt: Path) -> dict[str, float]:
    """`.riverfs/stats` as {sample name with labels: value}."""
    out = {}
    for line in (mnt / ".riverfs" / "stats").read_text().splitlines():
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def op_count(sample: dict[str, float], op: str) -> float:
    return sample.get(f'riverfs_fuse_op_seconds_count{{op="{op}"}}', 0.0)


class LogReader:
    """`cat .riverfs/accesslog` in the background, its output collected in a file."""

    def __init__(self, mnt: Path, tmp: Path, name: str = "access") -> None:
        self.out = tmp / f"{name}.log"
        self._file = open(self.out, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["cat", str(mnt / ".riverfs" / "accesslog")], stdout=self._file
        )

    def text(self) -> str:
        return self.out.read_text()

    def stop(self) -> None:
        self.proc.kill()  # its blocked read is interrupted (EINTR)
        self.proc.wait(timeout=10)
        self._file.close()


@pytest.fixture
def reader_of(tmp_path):
    readers: list[LogReader] = []

    def start(mnt: Path, name: str = "access") -> LogReader:
        r = LogReader(mnt, tmp_path, name)
        readers.append(r)
        return r

    yield start
    for r in readers:
        r.stop()


def test_n_creates_move_the_create_counter_by_exactly_n(mnt):
    before = stats(mnt)
    for i in range(37):
        (mnt / f"f{i}").write_bytes(b"x" * i)
    after = stats(mnt)
    assert op_count(after, "create") - op_count(before, "create") == 37
    assert op_count(after, "write") - op_count(before, "write") == 36  # f0 writes nothing
    written = "riverfs_fuse_written_bytes_total"
    assert after[written] - before.get(written, 0) == sum(range(37))
    assert after["riverfs_process_resident_bytes"] > 10 << 20


def listening(mnt: Path, *readers: LogReader) -> None:
    """Return once every reader is registered (its open answered): probes until all see one."""
    probes = iter(range(10**6))

    def heard() -> bool:
        (mnt / f"probe{next(probes)}").touch()
        return all("path=/probe" in r.text() for r in readers)

    wait_until(heard, timeout=10)


def test_the_access_log_shows_an_operation_with_its_pid_and_path(mnt, reader_of):
    reader = reader_of(mnt)
    other = reader_of(mnt, "second")  # several readers each get the whole stream
    listening(mnt, reader, other)
    (mnt / "d").mkdir()
    with open(mnt / "d" / "named file", "wb") as f:
        f.write(b"hello")
    pid = os.getpid()

    def logged(r: LogReader) -> bool:
        text = r.text()
        return bool(
            re.search(rf"pid={pid} uid=0 op=create inode=\d+ path=/d/named%20file result=OK", text)
            and re.search(
                rf"pid={pid} uid=0 op=write .*path=/d/named%20file offset=0 size=5 ", text
            )
        )

    wait_until(lambda: logged(reader) and logged(other), timeout=10)
    line = next(x for x in reader.text().splitlines() if "op=create" in x and "named" in x)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ", line), line
    assert re.search(r" duration=\d+\.\d{6}$", line), line
    # a failure shows its errno; the readers' own reads are not logged (they would feed it)
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "d" / "missing")
    wait_until(lambda: "path=/d/missing result=ENOENT" in reader.text(), timeout=10)
    assert "inode=18446744073709551" not in reader.text()


def test_virtual_files_are_invisible_reachable_and_cannot_be_changed(mnt):
    v = mnt / ".riverfs"
    assert ".riverfs" not in os.listdir(mnt)
    out = subprocess.run(["ls", "-a", str(mnt)], capture_output=True, text=True, check=True)
    assert ".riverfs" not in out.stdout
    assert sorted(os.listdir(v)) == ["accesslog", "config", "stats"]
    assert oct(os.stat(v / "stats").st_mode) == "0o100444"
    assert oct(os.stat(v / "accesslog").st_mode) == "0o100400"
    assert os.stat(v / "stats").st_uid == 0
    refused = [
        lambda: os.mkdir(v),
        lambda: os.open(v / "new", os.O_CREAT | os.O_WRONLY),
        lambda: os.open(v / "stats", os.O_WRONLY),
        lambda: os.open(v / "stats", os.O_RDWR),
        lambda: os.open(v / "config", os.O_RDONLY | os.O_TRUNC),
        lambda: os.unlink(v / "stats"),
        lambda: os.rename(v / "stats", mnt / "stolen"),
        lambda: os.rename(v, mnt / "elsewhere"),
        lambda: os.rmdir(v),
        lambda: os.truncate(v / "config", 0),
        lambda: os.chmod(v / "stats", 0o666),
        lambda: os.symlink("x", v / "link"),
    ]
    (mnt / "plain").write_bytes(b"p")
    refused += [
        lambda: os.rename(mnt / "plain", v / "stats"),
        lambda: os.link(mnt / "plain", v / "hard"),
        lambda: os.link(v / "stats", mnt / "hard"),
    ]
    for i, attempt in enumerate(refused):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EPERM, errno.EEXIST, errno.EISDIR), (i, e.value)
    assert (mnt / "plain").read_bytes() == b"p"
    with pytest.raises(OSError) as e:
        os.setxattr(v / "stats", "user.x", b"1")
    assert e.value.errno == errno.EPERM
    assert os.listxattr(v / "stats") == []
    assert (v / "stats").read_text().startswith("riverfs_")  # still served, unchanged


def test_access_log_is_for_root_only_and_stats_for_everyone(volume):
    # a mountpoint every user can reach (pytest's tmp dirs are root-only)
    where = Path(tempfile.mkdtemp(prefix="riverfs-obs-", dir="/tmp"))
    os.chmod(where, 0o755)
    try:
        m = volume.mount(where / "mnt")
        os.chmod(m.path, 0o755)

        def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["runuser", "-u", "nobody", "--", *cmd], capture_output=True, text=True, timeout=30
            )

        got = as_nobody("cat", str(m.path / ".riverfs" / "stats"))
        assert got.returncode == 0 and "riverfs_fuse_op_seconds" in got.stdout, got.stderr
        got = as_nobody("cat", str(m.path / ".riverfs" / "accesslog"))
        assert got.returncode != 0 and "Permission denied" in got.stderr, got
        m.umount()
    finally:
        for p in (where / "mnt", where):
            try:
                p.rmdir()
            except OSError:
                pass


def test_config_shows_the_effective_options_without_secrets(volume):
    m = volume.mount(None, "--compact-slices", "7", "--attr-timeout", "2.5")
    config = (m.path / ".riverfs" / "config").read_text()
    lines = dict(line.split(" = ", 1) for line in config.splitlines())
    assert lines["mount.compact_slices"] == "7"
    assert lines["mount.attr_timeout"] == "2.5"
    assert lines["mountpoint"] == str(m.path)
    assert lines["volume.storage"] == volume.storage_url
    assert lines["pid"] == str(m.daemon_pid())
    assert "meta.db" not in config  # the metadata URL (and its password, if any) stays out


def test_the_daemon_log_is_for_its_owner_only(volume):
    """With --trace the log names paths, which only root may read from .riverfs/accesslog."""
    log = volume.cache_dir / "mount.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch(mode=0o644)  # as an older riverfs left it
    log.chmod(0o644)
    m = volume.mount(None, "--trace")
    assert log.stat().st_mode & 0o777 == 0o600
    m.umount()


def test_prometheus_endpoint_parses_and_agrees_with_the_stats_file(volume):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    m = volume.mount(None, "--metrics", f"127.0.0.1:{port}")
    for i in range(5):
        os.mkdir(m.path / f"dir{i}")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    scraped = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            scraped[(s.name, tuple(sorted(s.labels.items())))] = s.value
    mine = stats(m.path)
    key = ("riverfs_fuse_op_seconds_count", (("op", "mkdir"),))
    assert scraped[key] == op_count(mine, "mkdir") == 5
    assert scraped[("riverfs_meta_txn_seconds_count", (("kind", "write"),))] > 0
    assert ("riverfs_process_resident_bytes", ()) in scraped
    # the same names, so a dashboard built on one reads the other
    names = {name.split("{")[0] for name in mine}
    assert names <= {n for n, _ in scraped}, names - {n for n, _ in scraped}


def test_a_bad_or_busy_metrics_address_is_one_clear_line(volume, tmp_path):
    (tmp_path / "m").mkdir()
    bad = run_cli(
        "mount", volume.meta_url, str(tmp_path / "m"), "--metrics", "nowhere", check=False
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "HOST:PORT" in bad.stderr, bad.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        got = run_cli(
            "mount",
            volume.meta_url,
            str(tmp_path / "m"),
            "--background",
            "--cache-dir",
            str(tmp_path / "c"),
            "--metrics",
            f"127.0.0.1:{port}",
            check=False,
        )
    assert got.returncode != 0
    assert f"cannot serve metrics at 127.0.0.1:{port}" in got.stderr, got.stderr


def test_trace_names_the_store_when_a_slow_store_makes_a_read_slow(
    tmp_path, fault_proxy, moto_server, monkeypatch
):
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(
        root, f"sqlite://{root}/meta.db", fault_proxy.url(moto_server.new_bucket(), "v"), root / "c"
    )
    run_cli("format", vol.meta_url, "--storage", vol.storage_url)
    try:
        m = vol.mount(None, "--cache-size", "0")
        data = os.urandom(300_000)
        (m.path / "cold").write_bytes(data)
        m.umount()
        m = vol.mount(None, "--cache-size", "0", "--trace", "--slow-ms", "200")
        fault_proxy.add("delay:0.4", 20, method="GET")
        assert (m.path / "cold").read_bytes() == data
        log_path = vol.cache_dir / "mount.log"
        pattern = re.compile(
            r"\[(\d+) (\S+)\] WARNING riverfs\.fuse\.trace: slow read inode=\d+ path=/cold "
            r"took (\d+\.\d) ms \(OK\): store (\d+\.\d) ms"
        )
        wait_until(lambda: pattern.search(log_path.read_text()), timeout=10)
        found = pattern.search(log_path.read_text())
        assert int(found.group(1)) == m.daemon_pid() and found.group(2) == str(m.path)
        assert float(found.group(4)) >= 350 and float(found.group(3)) >= float(found.group(4))
        # the summary by operation, each interval
        wait_until(lambda: "trace, last 10 s: " in log_path.read_text(), timeout=20)
        assert re.search(r"trace, last 10 s: .*read \d+ \(0 failed\)", log_path.read_text())
    finally:
        fault_proxy.clear()
        vol.cleanup()
