"""One volume (PostgreSQL metadata, S3 data) mounted three times at once, as on three hosts.

Every mount is its own daemon process with its own cache directory, and the kernel caches
attributes and entries for 30 s: a change made through one mount can only show up on the
others within a second because of active invalidation (PostgreSQL NOTIFY).
"""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from objects_support import S3_ENV
from support import Volume, run_cli, wait_until

pytest_plugins = ["objects_fixtures"]  # the moto S3 server

MOUNTS = 3
SEEN_WITHIN = 1.0  # seconds: the promise of active invalidation
MOUNT_ARGS = ("--attr-timeout", "30", "--entry-timeout", "30", "--heartbeat", "1")


class Shared:
    def __init__(self, volume: Volume, db_url: str, server) -> None:
        self.volume = volume
        self.db_url = db_url
        self.server = server
        self.roots: list[Path] = []

    def mount(self, index: int) -> Path:
        m = self.volume.mount(
            self.volume.root / f"host{index}",
            *MOUNT_ARGS,
            "--cache-dir",
            str(self.volume.root / f"cache{index}"),
        )
        return m.path

    def sql(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, postgres, moto_server):
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)  # the mount daemons inherit the S3 keys from the environment
    root = tmp_path_factory.mktemp("shared")
    db = f"shared_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(db)
    volume = Volume(
        root=root,
        meta_url=url,
        storage_url=moto_server.url(moto_server.new_bucket(), "vol"),
        cache_dir=root / "cache",
    )
    s = Shared(volume, url, postgres)
    try:
        run_cli("format", url, "--storage", volume.storage_url)
        s.roots = [s.mount(i) for i in range(MOUNTS)]
        yield s
    finally:
        volume.cleanup()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def dirs(shared, request) -> list[Path]:
    """A fresh directory, as seen through each of the mounts."""
    name = f"{request.node.name[:80]}-{uuid.uuid4().hex[:6]}"
    (shared.roots[0] / name).mkdir()
    paths = [r / name for r in shared.roots]
    for p in paths[1:]:
        wait_until(p.is_dir, timeout=SEEN_WITHIN)
    return paths


def test_data_written_and_closed_on_one_mount_is_read_on_the_others(dirs):
    a, b, c = dirs
    first = os.urandom(3 << 20)
    (a / "f").write_bytes(first)
    assert (b / "f").read_bytes() == first
    assert (c / "f").read_bytes() == first
    # Both readers now hold the file in their page cache; a rewrite elsewhere must win at open.
    second = os.urandom(1 << 20) + b"tail"
    with open(b / "f", "r+b") as f:
        f.truncate(0)
        f.write(second)
    assert (a / "f").read_bytes() == second
    assert (c / "f").read_bytes() == second


def test_namespace_and_attribute_changes_reach_the_other_kernels_within_a_second(dirs):
    a, b, c = dirs
    (a / "old").write_bytes(b"x" * 10)
    (a / "victim").write_bytes(b"v")
    others = (b, c)
    for d in others:  # cache entries and attributes in the other kernels (30 s timeouts)
        wait_until(lambda d=d: (d / "old").exists() and (d / "victim").exists(), SEEN_WITHIN)
        assert (d / "old").stat().st_size == 10
        assert stat.S_IMODE((d / "old").stat().st_mode) == 0o644

    os.chmod(a / "old", 0o600)
    for d in others:
        wait_until(lambda d=d: stat.S_IMODE((d / "old").stat().st_mode) == 0o600, SEEN_WITHIN)

    with open(a / "old", "ab") as f:
        f.write(b"y" * 5)
    for d in others:
        wait_until(lambda d=d: (d / "old").stat().st_size == 15, SEEN_WITHIN)

    os.rename(a / "old", a / "new")
    for d in others:
        wait_until(lambda d=d: not (d / "old").exists() and (d / "new").exists(), SEEN_WITHIN)

    os.unlink(a / "victim")
    for d in others:
        wait_until(lambda d=d: not (d / "victim").exists(), SEEN_WITHIN)

    (a / "born").write_bytes(b"new")
    for d in others:
        wait_until(lambda d=d: "born" in os.listdir(d), SEEN_WITHIN)
        assert (d / "born").read_bytes() == b"new"
    assert sorted(os.listdir(b)) == sorted(os.listdir(c)) == ["born", "new"]


def test_a_file_open_on_one_mount_survives_its_deletion_on_another(shared, dirs):
    a, b, _ = dirs
    data = os.urandom(2 << 20)
    (a / "kept").write_bytes(data)
    inode = (a / "kept").stat().st_ino
    with open(b / "kept", "rb") as f:
        assert f.read(4096) == data[:4096]
        os.unlink(a / "kept")
        # The deleting mount dooms the inode; the leader frees doomed inodes after a grace
        # period unless a mount that has them open claims them first: wait for that claim.
        wait_until(lambda: not shared.sql("SELECT 1 FROM doomed WHERE inode = %s", inode), 15)
        assert shared.sql("SELECT nlink FROM nodes WHERE inode = %s", inode) == [(0,)]
        assert shared.sql("SELECT 1 FROM sustained WHERE inode = %s", inode)
        f.seek(0)
        assert f.read() == data
    # Closed: freed by the mount that kept it.
    wait_until(lambda: not shared.sql("SELECT 1 FROM nodes WHERE inode = %s", inode), 10)
    assert not (b / "kept").exists()


def test_concurrent_creates_renames_and_writes_from_all_mounts_lose_nothing(dirs):
    per_mount = 40
    errors: list[BaseException] = []

    def work(index: int, d: Path) -> None:
        try:
            for i in range(per_mount):
                name = f"m{index}-{i}"
                (d / name).write_bytes(f"{name}\n".encode() * (i + 1))
                if i % 3 == 0:
                    os.rename(d / name, d / f"{name}-renamed")
                if i % 10 == 0:
                    (d / f"sub-{index}-{i}").mkdir()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, d)) for i, d in enumerate(dirs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    expected_files = {
        (f"m{m}-{i}-renamed" if i % 3 == 0 else f"m{m}-{i}"): f"m{m}-{i}\n".encode() * (i + 1)
        for m in range(MOUNTS)
        for i in range(per_mount)
    }
    expected_dirs = {f"sub-{m}-{i}" for m in range(MOUNTS) for i in range(0, per_mount, 10)}
    for d in dirs:
        wait_until(lambda d=d: set(os.listdir(d)) == set(expected_files) | expected_dirs, 5)
        assert len(os.listdir(d)) == len(expected_files) + len(expected_dirs)  # no duplicates
        assert d.stat().st_nlink == 2 + len(expected_dirs)
        for name, content in expected_files.items():
            st = (d / name).stat()
            assert st.st_nlink == 1
            assert (d / name).read_bytes() == content


def test_killed_mount_is_cleaned_up_by_another_and_loses_nothing_of_the_others(shared, dirs):
    a = dirs[0]
    (a / "safe").write_bytes(b"written by host0")
    extra = shared.mount(9)
    victim = shared.volume.mounts[-1]
    d = extra / a.name
    wait_until(d.is_dir, SEEN_WITHIN)
    (d / "doomed").write_bytes(b"z" * 100_000)
    inode = (d / "doomed").stat().st_ino
    f = open(d / "doomed", "rb")  # noqa: SIM115 - held open while the daemon is killed
    try:
        os.unlink(d / "doomed")  # deleted while open: sustained by the extra mount's session
        pid = victim.daemon_pid()
        sessions = shared.sql("SELECT id FROM sessions WHERE pid = %s", pid)
        assert len(sessions) == 1
        assert shared.sql("SELECT 1 FROM sustained WHERE inode = %s", inode)
        victim.kill9()
    finally:
        try:
            f.close()
        except OSError:
            pass  # the mount is gone
    # The leader (another mount) notices the dead session and frees what it kept open.
    wait_until(lambda: not shared.sql("SELECT 1 FROM sessions WHERE pid = %s", pid), 15)
    wait_until(lambda: not shared.sql("SELECT 1 FROM nodes WHERE inode = %s", inode), 10)
    status = run_cli("status", shared.db_url).stdout
    assert f"pid {pid}" not in status
    assert status.count(" pid ") == MOUNTS
    for r in dirs:
        assert (r / "safe").read_bytes() == b"written by host0"


def test_mounts_recover_without_remount_when_postgresql_restarts(shared, dirs):
    a, b, c = dirs
    (a / "before").write_bytes(b"before")
    shared.server.restart()
    # Each mount's next operations wait for the database and then work.
    for i, d in enumerate(dirs):
        (d / f"after-{i}").write_bytes(f"after {i}".encode())
    for d in dirs:
        assert sorted(os.listdir(d)) == ["after-0", "after-1", "after-2", "before"]
        assert (d / "after-1").read_bytes() == b"after 1"
    # The change listeners reconnected too: invalidation works again.
    for d in (b, c):
        assert stat.S_IMODE((d / "before").stat().st_mode) == 0o644
    deadline = time.monotonic() + 15
    while True:  # the listeners reconnect with backoff: retry the change until it is seen
        os.chmod(a / "before", 0o640)
        os.chmod(a / "before", 0o600)
        try:
            for d in (b, c):
                wait_until(
                    lambda d=d: stat.S_IMODE((d / "before").stat().st_mode) == 0o600, SEEN_WITHIN
                )
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_two_mounts_of_one_sqlite_volume_on_a_host_see_changes_within_a_second(volume):
    a = volume.mount(volume.root / "one", *MOUNT_ARGS).path
    b = volume.mount(volume.root / "two", *MOUNT_ARGS, "--cache-dir", str(volume.root / "c2")).path
    (a / "f").write_bytes(b"0123456789")
    wait_until(lambda: (b / "f").exists(), SEEN_WITHIN)
    assert (b / "f").stat().st_size == 10  # cached by b's kernel for 30 s from here on
    os.chmod(a / "f", 0o600)
    wait_until(lambda: stat.S_IMODE((b / "f").stat().st_mode) == 0o600, SEEN_WITHIN)
    os.rename(a / "f", a / "g")
    wait_until(lambda: not (b / "f").exists() and (b / "g").exists(), SEEN_WITHIN)
    assert (b / "g").read_bytes() == b"0123456789"
    os.unlink(b / "g")
    wait_until(lambda: not (a / "g").exists(), SEEN_WITHIN)
