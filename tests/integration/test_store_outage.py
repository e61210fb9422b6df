"""Nothing lost when the store is down: a synchronous mount spills to staging what the store
refuses, keeps buffered what it cannot make durable anywhere, and a volume mounts degraded
from its local settings copy while the store is unreachable (the fault proxy cuts it off)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from objects_support import S3_ENV
from support import Volume, run_cli, wait_until

pytest_plugins = ["objects_fixtures"]  # the moto server and the fault proxy

FOREVER = 1_000_000  # requests: the store refuses them until the rule is cleared
OUTAGE = 8.0  # seconds the store is cut off while the writer and the reader run


@pytest.fixture
def outage(tmp_path: Path, fault_proxy, moto_server, monkeypatch) -> tuple[Volume, object]:
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "vol"
    root.mkdir()
    bucket = moto_server.new_bucket()
    vol = Volume(root, f"sqlite://{root}/meta.db", fault_proxy.url(bucket, "v"), root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url)
    try:
        yield vol, fault_proxy
    finally:
        fault_proxy.clear()  # or the cleanup's unmount would wait for uploads that cannot succeed
        vol.cleanup()


def staged(vol: Volume) -> list[Path]:
    return [p for p in vol.cache_dir.glob("*/staging/*") if p.is_file()]


def mount_log(vol: Volume) -> str:
    return (vol.cache_dir / "mount.log").read_text()


def cut_off(proxy) -> None:
    """Every request to the store fails (retryable: the store is unreachable, not refusing)."""
    proxy.add("503", FOREVER)


def fsck_clean(vol: Volume) -> None:
    out = run_cli("fsck", vol.meta_url, "--check-data").stdout
    assert out.strip().endswith("clean"), out


def test_sync_mount_loses_no_fsynced_byte_while_the_store_is_cut_off(outage):
    vol, proxy = outage
    m = vol.mount(None, "--heartbeat", "0.5")
    written: dict[str, bytes] = {}  # fsync returned 0
    refused: dict[str, int] = {}  # fsync failed: name -> errno
    during: list[str] = []  # fsynced while the store was cut off
    down = threading.Event()
    stop = threading.Event()
    read_errors: list[str] = []
    reads = 0

    def writer() -> None:
        i = 0
        while not stop.is_set():
            name, data = f"f{i}", os.urandom(200_000 + 4099 * i)
            with open(m.path / name, "wb") as f:
                f.write(data)
                f.flush()
                try:
                    os.fsync(f.fileno())
                except OSError as e:
                    refused[name] = e.errno
                else:
                    written[name] = data
                    if down.is_set():
                        during.append(name)
            i += 1

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for name, data in list(written.items()):
                got = (m.path / name).read_bytes()
                reads += 1
                if got != data:
                    read_errors.append(f"{name}: {len(got)} bytes, wanted {len(data)}")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(written) >= 3, 30)
        cut_off(proxy)
        down.set()
        cut = time.monotonic()
        wait_until(lambda: time.monotonic() - cut >= OUTAGE and len(during) >= 3, 60)
        assert staged(vol), "blocks the store refused are staged"
        down.clear()
        proxy.clear()  # the store is back
        back = len(written)
        wait_until(lambda: len(written) >= back + 3, 30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not refused, f"staging had room: no fsync should fail, got {refused}"
    assert not read_errors, read_errors[:5]
    assert reads > 0
    assert "store unreachable" in mount_log(vol)
    wait_until(lambda: not staged(vol), 60)  # uploaded once the store answered again
    assert "store reachable again" in mount_log(vol)
    m.umount()
    m = vol.mount(None, "--cache-size", "0")  # from the store only
    for name, data in written.items():
        assert (m.path / name).read_bytes() == data, name
    m.umount()
    fsck_clean(vol)


def test_fsync_eio_keeps_the_data_for_a_retry_and_close_reports_what_is_lost(outage):
    """The cache dir on a 6 MiB tmpfs that a filler file fills: staging has no room."""
    vol, proxy = outage
    vol.cache_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(vol.cache_dir)], check=True
    )
    filler = vol.cache_dir / "filler"

    def fill() -> None:
        usage = os.statvfs(vol.cache_dir)
        free = usage.f_bavail * usage.f_frsize
        filler.write_bytes(b"\0" * max(free - (600 << 10), 0))

    try:
        m = vol.mount(None, "--cache-size", "0")
        proxy.add("503", FOREVER, method="PUT", path="/chunks/")
        fill()
        kept = os.urandom(1 << 20)
        with open(m.path / "kept", "wb") as f:
            f.write(kept)
            f.flush()
            with pytest.raises(OSError) as exc:
                os.fsync(f.fileno())
            assert exc.value.errno == errno.EIO
            with pytest.raises(OSError):  # and again: staging is still full
                os.fsync(f.fileno())
            filler.unlink()  # room again in staging
            os.fsync(f.fileno())  # the buffered data was kept: durable now
        assert staged(vol)

        fill()
        lost = os.urandom(1 << 20)
        with pytest.raises(OSError) as exc, open(m.path / "lost", "wb") as g:
            g.write(lost)
            g.flush()  # the close (FUSE flush) fails: not durable anywhere
        assert exc.value.errno == errno.EIO
        wait_until(lambda: "data lost" in mount_log(vol), 30)
        line = next(x for x in mount_log(vol).splitlines() if "data lost" in x)
        assert f"bytes [0, {1 << 20})" in line, line

        filler.unlink()
        proxy.clear()
        m.umount()  # waits until the staged blocks of "kept" are uploaded
        assert not staged(vol)
        m = vol.mount(None, "--cache-size", "0")
        assert (m.path / "kept").read_bytes() == kept
        assert (m.path / "lost").stat().st_size == 0  # what the log said was lost
        m.umount()
        fsck_clean(vol)
    finally:
        proxy.clear()
        vol.cleanup()
        subprocess.run(["umount", str(vol.cache_dir)], check=False)


def test_writeback_volume_mounts_with_the_store_down_and_uploads_when_it_is_back(outage):
    vol, proxy = outage
    m = vol.mount(None, "--writeback")
    before = os.urandom(700_000)
    (m.path / "before").write_bytes(before)
    m.umount()
    copies = list(vol.cache_dir.glob("*.riverfs.json"))
    assert len(copies) == 1, "a mount keeps the verified settings record"
    assert copies[0].stat().st_mode & 0o777 == 0o600

    proxy.clear()  # forget the requests so far: count what passes from now on
    cut_off(proxy)
    m = vol.mount(None, "--writeback", "--heartbeat", "0.5")  # from the local copy
    assert "mounted degraded" in mount_log(vol)
    assert (m.path / "before").read_bytes() == before  # from the disk cache
    after = os.urandom(900_000)
    with open(m.path / "after", "wb") as f:
        f.write(after)
        f.flush()
        os.fsync(f.fileno())
    assert (m.path / "after").read_bytes() == after
    assert staged(vol)
    out = run_cli("status", vol.meta_url).stdout
    assert "UNREACHABLE" in out and "waiting to upload" in out, out
    assert proxy.count(action="pass") == 0, "the store was unreachable throughout"

    proxy.clear()  # the store is back
    wait_until(lambda: "store reachable again" in mount_log(vol), 60)
    wait_until(lambda: not staged(vol), 60)
    assert "UNREACHABLE" not in run_cli("status", vol.meta_url).stdout
    m.umount()
    m = vol.mount(None, "--cache-size", "0")  # from the store only
    assert (m.path / "before").read_bytes() == before
    assert (m.path / "after").read_bytes() == after
    m.umount()
    fsck_clean(vol)


def test_a_store_that_refuses_is_still_an_error_at_mount(outage, tmp_path):
    """Only an unreachable store mounts degraded; one that denies access does not."""
    vol, proxy = outage
    vol.mount().umount()
    proxy.add("403", FOREVER)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [vol.meta_url, str(mnt), "--background", "--cache-dir", str(vol.cache_dir)]
    proc = run_cli("mount", *args, check=False, timeout=60)
    assert proc.returncode != 0
    assert "cannot use storage" in proc.stderr


def test_unmount_with_the_store_down_leaves_staged_blocks_for_the_next_mount(outage):
    """umount does not hang on a dead store: after --unmount-wait it says what it left in
    staging, and the next mount from that cache dir uploads it; nothing is lost."""
    vol, proxy = outage
    m = vol.mount(None, "--writeback", "--unmount-wait", "2")
    cut_off(proxy)
    data = os.urandom(1_500_000)
    with open(m.path / "f", "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    assert staged(vol)
    out = run_cli("umount", str(m.path), timeout=120).stdout
    assert "were not uploaded and stay in" in out, out
    assert "riverfs umount" not in out and out.count("\n") == 1, "one line"
    assert staged(vol), "the blocks stay, durable"
    assert "were not uploaded" in mount_log(vol)

    proxy.clear()  # the store is back: the next mount uploads what was left
    m = vol.mount(None, "--writeback")
    wait_until(lambda: not staged(vol), 60)
    m.umount()
    m = vol.mount(None, "--cache-size", "0")  # from the store only
    assert (m.path / "f").read_bytes() == data
    m.umount()
    fsck_clean(vol)
