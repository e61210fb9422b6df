"""`mount --writeback` against an S3 server whose uploads fail on demand (the fault proxy)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from objects_support import S3_ENV
from support import Volume, run_cli, wait_until

pytest_plugins = ["objects_fixtures"]  # the moto server and the fault proxy

FOREVER = 1_000_000  # requests: the store refuses uploads until the rule is cleared


@pytest.fixture
def wb(tmp_path: Path, fault_proxy, moto_server, monkeypatch) -> tuple[Volume, object]:
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
        fault_proxy.clear()
        vol.cleanup()


def staged(vol: Volume) -> list[Path]:
    return [p for p in vol.cache_dir.glob("*/staging/*") if p.is_file()]


def fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def test_fsynced_data_survives_a_crash_while_uploads_fail_and_is_uploaded_later(wb):
    vol, proxy = wb
    proxy.add("503", FOREVER, method="PUT", path="/chunks/")
    m = vol.mount(None, "--writeback", "--heartbeat", "0.5")
    data = {f"f{i}": os.urandom(300_000 + i) for i in range(5)}
    for name, content in data.items():
        fsync_write(m.path / name, content)  # returns: durable in staging, committed
    assert len(staged(vol)) == 5
    wait_until(lambda: proxy.count("PUT", "503") >= 5, 10)  # uploads tried and failed
    wait_until(lambda: "waiting to upload" in run_cli("status", vol.meta_url).stdout, 10)
    m.kill9()  # a crash: nothing was uploaded
    proxy.clear()  # the store works again
    m = vol.mount(None, "--heartbeat", "0.5")  # even without --writeback, leftovers go up
    for name, content in data.items():
        assert (m.path / name).read_bytes() == content
    wait_until(lambda: not staged(vol), 30)
    m.umount()
    m = vol.mount(None, "--cache-size", "0")  # now from the store only
    for name, content in data.items():
        assert (m.path / name).read_bytes() == content


def test_umount_waits_until_every_staged_block_is_uploaded(wb):
    vol, proxy = wb
    proxy.add("503", 6, method="PUT", path="/chunks/")  # a few failures, then recovery
    m = vol.mount(None, "--writeback")
    content = os.urandom(9 << 20)
    (m.path / "big").write_bytes(content)
    assert staged(vol)
    m.umount()  # returns only after the retried uploads succeeded
    assert not staged(vol)
    assert proxy.count("PUT", "503") == 6
    m = vol.mount(None, "--cache-size", "0")
    assert (m.path / "big").read_bytes() == content


def test_a_full_staging_disk_gives_enospc_and_loses_nothing_already_written(wb):
    """The cache directory on a 6 MiB tmpfs, and a store that refuses uploads for now."""
    vol, proxy = wb
    vol.cache_dir.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(vol.cache_dir)], check=True
    )
    try:
        proxy.add("503", FOREVER, method="PUT", path="/chunks/")
        m = vol.mount(None, "--writeback", "--cache-size", "0")
        kept = os.urandom(1 << 20)
        fsync_write(m.path / "kept", kept)
        with pytest.raises(OSError) as exc, open(m.path / "too-big", "wb") as f:
            for _ in range(16):
                f.write(os.urandom(1 << 20))
            os.fsync(f.fileno())
        assert exc.value.errno == errno.ENOSPC
        assert (m.path / "kept").read_bytes() == kept
        os.unlink(m.path / "too-big")
        proxy.clear()  # the store is back: the staged blocks of "kept" go up
        m.umount()
        m = vol.mount(None, "--cache-size", "0")
        assert (m.path / "kept").read_bytes() == kept
        m.umount()
    finally:
        proxy.clear()  # or the cleanup's unmount would wait for uploads that cannot succeed
        vol.cleanup()
        subprocess.run(["umount", str(vol.cache_dir)], check=False)
