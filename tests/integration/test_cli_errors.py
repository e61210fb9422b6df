"""The command line: bad input gives one clear line and a non-zero exit; the good paths work.

Error contract: exit code 1 (2 for click usage errors), exactly one line on stderr starting
with ``riverfs: ``, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from support import CLI, Volume, force_unmount, is_mounted, run_cli, wait_until


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, exactly one line on stderr, prefixed 'riverfs: ', containing every needle."""
    err = proc.stderr
    assert "Traceback" not in err, f"traceback on stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("riverfs: "), f"error line lacks the 'riverfs: ' prefix: {line!r}"
    # Words are looked for outside paths: test paths contain words like "format" or "busy".
    words = re.sub(r"/[^\s'\"()`]+", "", line).lower()
    for needle in needles:
        where = line.lower() if needle.startswith("/") else words
        assert needle.lower() in where, f"{needle!r} not in error line {line!r}"
    assert proc.returncode == 1, f"exit code {proc.returncode}, expected 1 ({line!r})"
    return line


def daemons_for(path: Path) -> list[psutil.Process]:
    """riverfs processes (other than us) whose command line names this path."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.pid != os.getpid() and "riverfs" in " ".join(cmd) and str(path) in cmd:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
    return found


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_nothing_mounted_or_running(path: Path) -> None:
    assert not is_mounted(path), f"{path} was left mounted"
    # A failed background daemon may still be exiting when the CLI returns; it must not linger.
    wait_until(lambda: not daemons_for(path), timeout=10)


@pytest.fixture(autouse=True)
def _no_leftover_mount(tmp_path):
    """Tests that expect a mount to fail use tmp_path/"mnt": if it mounted anyway, undo it."""
    yield
    mnt = tmp_path / "mnt"
    if is_mounted(mnt):
        run_cli("umount", str(mnt), check=False, timeout=60)
        force_unmount(mnt)
    for p in daemons_for(mnt):
        p.kill()


@pytest.fixture
def cleanup():
    """Unmount mountpoints and stop processes a test started by hand, also on failure."""
    mountpoints: list[Path] = []
    procs: list[subprocess.Popen] = []
    envs: dict[Path, dict] = {}

    class Registry:
        def mountpoint(self, path: Path, env: dict | None = None) -> Path:
            mountpoints.append(path)
            if env:
                envs[path] = env
            return path

        def process(self, proc: subprocess.Popen) -> subprocess.Popen:
            procs.append(proc)
            return proc

    try:
        yield Registry()
    finally:
        for path in mountpoints:
            if is_mounted(path):
                run_cli("umount", str(path), check=False, env=envs.get(path), timeout=60)
            force_unmount(path)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def unformatted_url(tmp_path: Path) -> str:
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return f"sqlite://{d}/meta.db"


# -- unknown and not-yet-supported URL schemes --------------------------------------------


def test_format_with_unknown_metadata_scheme_fails_with_one_line(tmp_path):
    proc = run_cli("format", "ftp://x", "--storage", f"file://{tmp_path}/s", check=False)
    assert_one_line_error(proc, "ftp")


def test_format_with_unknown_storage_scheme_fails_and_leaves_no_half_volume(tmp_path):
    meta = f"sqlite://{tmp_path}/meta.db"
    proc = run_cli("format", meta, "--storage", "ftp://host/bucket", check=False)
    assert_one_line_error(proc, "ftp")
    # Nothing was half-created: a correct format now succeeds without --force.
    run_cli("format", meta, "--storage", f"file://{tmp_path}/store")


def test_mount_with_unknown_metadata_scheme_fails_with_one_line(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = run_cli("mount", "ftp://x", str(mnt), "--background", check=False, timeout=60)
    assert_one_line_error(proc, "ftp")
    assert_nothing_mounted_or_running(mnt)


def test_status_with_unknown_metadata_scheme_fails_with_one_line():
    assert_one_line_error(run_cli("status", "ftp://x", check=False), "ftp")


@pytest.mark.parametrize(
    ("meta", "needle"),
    [
        ("postgresql://user@127.0.0.1:1/riverfs", "is PostgreSQL running"),
        ("redis://127.0.0.1:6379/1", "not supported yet"),
    ],
    ids=["postgresql-unreachable", "redis"],
)
@pytest.mark.parametrize("command", ["format", "mount", "status"])
def test_metadata_backends_unreachable_or_not_in_this_release_fail_in_one_line(
    tmp_path, command, meta, needle
):
    args = [command, meta]
    if command == "format":
        args += ["--storage", f"file://{tmp_path}/store"]
    if command == "mount":
        (tmp_path / "mnt").mkdir()
        args += [str(tmp_path / "mnt"), "--background"]
    proc = run_cli(*args, check=False, timeout=60)
    assert_one_line_error(proc, needle)
    if command == "mount":
        assert_nothing_mounted_or_running(tmp_path / "mnt")


# Object stores beyond file:// arrived while these tests were written (s3, gs, az). With no
# reachable service or credentials, format must still fail with one line naming the store.
OFFLINE_STORES = {
    "s3-closed-port": (
        "s3://bucket/prefix?endpoint=http://127.0.0.1:9",
        {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
        "bucket",
    ),
    "gs-no-credentials": ("gs://bucket/prefix", {}, "bucket"),
    "az-no-account": ("az://container/prefix", {}, "account"),
}


@pytest.mark.parametrize("case", sorted(OFFLINE_STORES))
def test_format_on_unusable_object_store_fails_with_one_line_and_no_half_volume(tmp_path, case):
    store, env, needle = OFFLINE_STORES[case]
    meta = f"sqlite://{tmp_path}/meta.db"
    proc = run_cli("format", meta, "--storage", store, check=False, env=env, timeout=120)
    assert_one_line_error(proc, needle)
    run_cli("format", meta, "--storage", f"file://{tmp_path}/store")


# -- mountpoint problems --------------------------------------------------------------------


@pytest.mark.parametrize("background", [True, False], ids=["background", "foreground"])
def test_mount_on_missing_mountpoint_fails_naming_it(volume: Volume, tmp_path, background):
    missing = tmp_path / "no" / "such" / "dir"
    args = [volume.meta_url, str(missing)] + (["--background"] if background else [])
    proc = run_cli("mount", *args, check=False, timeout=60)
    assert_one_line_error(proc, str(missing))
    assert not missing.exists()
    wait_until(lambda: not daemons_for(missing), timeout=10)


@pytest.mark.parametrize("background", [True, False], ids=["background", "foreground"])
def test_mount_on_regular_file_fails_saying_not_a_directory(volume: Volume, tmp_path, background):
    f = tmp_path / "file"
    f.write_text("x")
    args = [volume.meta_url, str(f)] + (["--background"] if background else [])
    proc = run_cli("mount", *args, check=False, timeout=60)
    assert_one_line_error(proc, "not a directory")
    assert f.read_text() == "x"
    assert_nothing_mounted_or_running(f)


def test_second_mount_at_same_mountpoint_fails_and_first_keeps_serving(volume: Volume):
    m = volume.mount()
    (m.path / "f").write_text("first")
    pid = m.daemon_pid()
    proc = run_cli(
        "mount",
        volume.meta_url,
        str(m.path),
        "--background",
        "--cache-dir",
        str(volume.cache_dir),
        check=False,
        timeout=60,
    )
    assert_one_line_error(proc, "already mounted")
    assert is_mounted(m.path)
    assert [p.pid for p in daemons_for(m.path)] == [pid], "a second daemon is running"
    assert (m.path / "f").read_text() == "first"
    with open("/proc/self/mountinfo") as mi:
        entries = [ln for ln in mi if ln.split()[4] == os.path.realpath(m.path)]
    assert len(entries) == 1, "the volume is stacked twice on the mountpoint"


def test_mount_of_unformatted_volume_fails_saying_format_it(tmp_path):
    url = unformatted_url(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = run_cli("mount", url, str(mnt), "--background", check=False, timeout=60)
    assert_one_line_error(proc, "format")
    assert_nothing_mounted_or_running(mnt)
    # The failed mount did not leave something that now blocks a format without --force.
    run_cli("format", url, "--storage", f"file://{tmp_path}/store")


def test_status_of_unformatted_volume_fails_saying_format_it(tmp_path):
    proc = run_cli("status", unformatted_url(tmp_path), check=False)
    assert_one_line_error(proc, "format")


def test_mount_with_cache_dir_that_is_a_file_fails_saying_cache_dir(volume: Volume, tmp_path):
    not_a_dir = tmp_path / "plainfile"
    not_a_dir.write_text("x")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [volume.meta_url, str(mnt), "--background", "--cache-dir", str(not_a_dir)]
    proc = run_cli("mount", *args, check=False, timeout=60)
    assert_one_line_error(proc, str(not_a_dir), "cache")
    assert_nothing_mounted_or_running(mnt)


def test_format_with_uncreatable_database_fails_and_leaves_store_reusable(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    store = f"file://{tmp_path}/store"
    proc = run_cli("format", f"sqlite://{afile}/meta.db", "--storage", store, check=False)
    assert_one_line_error(proc, str(afile))
    run_cli("format", f"sqlite://{tmp_path}/meta.db", "--storage", store)


# -- format over an existing volume ----------------------------------------------------------


def test_format_over_existing_volume_fails_without_force_and_keeps_data(volume: Volume):
    m = volume.mount()
    (m.path / "keep").write_bytes(b"precious")
    m.umount()
    proc = run_cli("format", volume.meta_url, "--storage", volume.storage_url, check=False)
    assert_one_line_error(proc, "--force")
    m = volume.mount(m.path)
    assert (m.path / "keep").read_bytes() == b"precious"


def test_format_with_force_replaces_existing_volume_with_empty_one(volume: Volume):
    m = volume.mount()
    (m.path / "old").write_bytes(b"old data")
    m.umount()
    run_cli("format", volume.meta_url, "--storage", volume.storage_url, "--force")
    m = volume.mount(m.path)
    assert os.listdir(m.path) == []
    (m.path / "new").write_bytes(b"new data")
    assert (m.path / "new").read_bytes() == b"new data"


def test_format_refuses_store_that_holds_another_volume_without_force(volume: Volume, tmp_path):
    other = f"sqlite://{tmp_path}/other.db"
    proc = run_cli("format", other, "--storage", volume.storage_url, check=False)
    assert_one_line_error(proc, "--force")
    m = volume.mount()  # the first volume still owns its store
    (m.path / "f").write_bytes(b"still mine")
    assert (m.path / "f").read_bytes() == b"still mine"


def test_mount_refuses_store_that_was_reformatted_for_another_volume(volume: Volume, tmp_path):
    other = f"sqlite://{tmp_path}/other.db"
    run_cli("format", other, "--storage", volume.storage_url, "--force")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [volume.meta_url, str(mnt), "--background", "--cache-dir", str(volume.cache_dir)]
    proc = run_cli("mount", *args, check=False, timeout=60)
    assert_one_line_error(proc, "belongs to")
    assert_nothing_mounted_or_running(mnt)


def test_format_force_never_rewrites_an_object_of_the_old_volume(volume: Volume):
    """DESIGN: objects are immutable, a key is never written twice. A re-formatted volume in
    the same store must not overwrite the old volume's objects with new content."""
    store = Path(volume.storage_url.removeprefix("file://"))

    def objects() -> dict[str, str]:
        return {
            str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in store.rglob("*")
            if p.is_file() and p.name != "riverfs.json"
        }

    m = volume.mount()
    (m.path / "old").write_bytes(os.urandom(5_000_000))
    m.umount()
    old = objects()
    assert old
    run_cli("format", volume.meta_url, "--storage", volume.storage_url, "--force")
    m = volume.mount(m.path)
    new_data = os.urandom(5_000_000)
    (m.path / "new").write_bytes(new_data)
    now = objects()
    rewritten = sorted(k for k in old if k in now and now[k] != old[k])
    assert not rewritten, f"object keys of the old volume written again: {rewritten}"
    assert (m.path / "new").read_bytes() == new_data


def test_mount_of_volume_whose_store_was_wiped_fails_with_one_line(volume: Volume, tmp_path):
    m = volume.mount()
    (m.path / "f").write_bytes(b"x")
    m.umount()
    shutil.rmtree(volume.storage_url.removeprefix("file://"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [volume.meta_url, str(mnt), "--background", "--cache-dir", str(volume.cache_dir)]
    proc = run_cli("mount", *args, check=False, timeout=60)
    assert_one_line_error(proc, "riverfs.json")
    assert_nothing_mounted_or_running(mnt)


# -- fuse device missing -------------------------------------------------------------------


@pytest.mark.parametrize("background", [True, False], ids=["background", "foreground"])
def test_mount_without_fuse_device_fails_naming_the_device(volume: Volume, tmp_path, background):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [volume.meta_url, str(mnt)] + (["--background"] if background else [])
    proc = run_cli(
        "mount", *args, check=False, timeout=60, env={"RIVERFS_FUSE_DEVICE": "/nonexistent/fuse"}
    )
    assert_one_line_error(proc, "/nonexistent/fuse")
    assert_nothing_mounted_or_running(mnt)


# -- umount of something that is not a riverfs mount -----------------------------------------


def test_umount_of_plain_directory_fails_naming_it(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "f").write_text("x")
    proc = run_cli("umount", str(d), check=False)
    assert_one_line_error(proc, str(d))
    assert (d / "f").read_text() == "x"


def test_umount_of_missing_path_fails_naming_it(tmp_path):
    missing = tmp_path / "missing"
    assert_one_line_error(run_cli("umount", str(missing), check=False), str(missing))


def test_umount_of_busy_mount_fails_saying_busy_and_keeps_serving(volume: Volume):
    m = volume.mount()
    fd = os.open(m.path / "open", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"busy")
        proc = run_cli("umount", str(m.path), check=False, timeout=60)
        assert_one_line_error(proc, "busy")
        assert is_mounted(m.path)
        assert os.pread(fd, 4, 0) == b"busy"
    finally:
        os.close(fd)
    m.umount()
    m = volume.mount(m.path)
    assert (m.path / "open").read_bytes() == b"busy"


# -- usage errors ----------------------------------------------------------------------------


def test_mount_without_arguments_is_a_usage_error_with_exit_2():
    proc = run_cli("mount", check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Usage" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["format", "--block-size", "banana"],
        ["format", "--block-size", "0"],
        ["mount", "--cache-size", "lots"],
        ["mount", "--attr-timeout", "soon"],
    ],
    ids=["block-size-word", "block-size-zero", "cache-size-word", "attr-timeout-word"],
)
def test_bad_option_values_fail_cleanly_without_traceback(volume: Volume, tmp_path, cleanup, args):
    mnt = cleanup.mountpoint(tmp_path / "mnt")
    mnt.mkdir()
    if args[0] == "format":
        meta = f"sqlite://{tmp_path}/other.db"
        args = [args[0], meta, *args[1:], "--storage", f"file://{tmp_path}/other"]
    else:
        args = [args[0], volume.meta_url, str(mnt), "--background", *args[1:]]
    proc = run_cli(*args, check=False, timeout=60)
    assert proc.returncode in (1, 2), f"accepted a bad value: {args}"
    assert "Traceback" not in proc.stderr
    if proc.returncode == 1:
        assert_one_line_error(proc)
    assert not is_mounted(mnt)


# -- the good paths ----------------------------------------------------------------------------


def test_format_creates_database_and_settings_copy_in_store(tmp_path):
    meta = tmp_path / "meta.db"
    store = tmp_path / "store"
    proc = run_cli("format", f"sqlite://{meta}", "--storage", f"file://{store}")
    assert "Traceback" not in proc.stderr
    assert meta.exists()
    assert (store / "riverfs.json").exists(), sorted(p.name for p in store.rglob("*"))


def block_size_shown(out: str, size_mib: int) -> bool:
    n = size_mib
    pattern = rf"(?<![\d.]){n}(\.0+)?\s*(M|MB|MiB)\b|(?<!\d){n * 1024 * 1024}(?!\d)"
    return re.search(pattern, out) is not None


def test_status_shows_block_size_usage_and_active_session(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(root, f"sqlite://{root}/meta.db", f"file://{root}/store", root / "cache")
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--block-size", "1M")
    try:
        out = run_cli("status", vol.meta_url).stdout
        assert block_size_shown(out, 1), f"block size 1M not in status:\n{out}"
        assert "inode" in out.lower(), f"no inode usage in status:\n{out}"
        m = vol.mount()
        (m.path / "data").write_bytes(b"x" * 3_000_000)
        out = run_cli("status", vol.meta_url).stdout
        assert str(m.path) in out, f"the active mount is not listed:\n{out}"
        m.umount()
        out = run_cli("status", vol.meta_url).stdout
        assert str(m.path) not in out, f"a finished session is still listed:\n{out}"
    finally:
        vol.cleanup()


def test_status_exits_0_on_every_run(volume: Volume):
    """status is read-only and must not crash at interpreter exit (seen: SIGABRT, exit 134)."""
    codes = [run_cli("status", volume.meta_url, check=False).returncode for _ in range(10)]
    assert codes == [0] * 10


def test_mount_background_returns_only_when_mount_serves_requests(volume: Volume, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    parent_dev = os.stat(tmp_path).st_dev
    m = volume.mount(mnt)  # runs `mount --background`; no waiting after it returns
    assert is_mounted(mnt)
    assert os.stat(mnt).st_dev != parent_dev
    assert os.listdir(mnt) == []
    (mnt / "f").write_bytes(b"ready")
    assert (mnt / "f").read_bytes() == b"ready"
    m.umount()


def test_mount_and_umount_accept_relative_paths_with_trailing_slash(volume: Volume, tmp_path):
    """`make run` mounts ./mnt: relative mountpoints work and are recorded absolute."""
    (tmp_path / "mnt").mkdir()

    def cli_in_tmp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    proc = cli_in_tmp(
        "mount", volume.meta_url, "./mnt/", "--background", "--cache-dir", str(volume.cache_dir)
    )
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(tmp_path / "mnt")
    out = run_cli("status", volume.meta_url).stdout
    assert str(tmp_path / "mnt") in out, f"the session's mountpoint is not absolute:\n{out}"
    proc = cli_in_tmp("umount", "mnt/")
    assert proc.returncode == 0, proc.stderr
    assert not is_mounted(tmp_path / "mnt")


def test_umount_returns_after_daemon_exited_and_flushed(volume: Volume):
    m = volume.mount()
    with open(m.path / "f", "wb") as f:
        f.write(b"y" * 5_000_000)
    pid = m.daemon_pid()
    run_cli("umount", str(m.path))
    assert not is_mounted(m.path)
    assert pid_gone(pid), "umount returned while the daemon was still running"
    m = volume.mount(m.path)
    assert (m.path / "f").read_bytes() == b"y" * 5_000_000


def start_foreground(volume: Volume, mnt: Path, cleanup, tmp_path: Path) -> subprocess.Popen:
    log = open(tmp_path / "foreground.log", "w+")  # noqa: SIM115 (closed by the caller)
    proc = subprocess.Popen(
        [*CLI, "mount", volume.meta_url, str(mnt), "--cache-dir", str(volume.cache_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    cleanup.process(proc)
    cleanup.mountpoint(mnt)
    proc.log = log  # type: ignore[attr-defined]
    wait_until(lambda: is_mounted(mnt) or proc.poll() is not None, timeout=30)
    assert proc.poll() is None, f"foreground mount exited early:\n{read_log(proc)}"
    return proc


def read_log(proc) -> str:
    proc.log.seek(0)
    return proc.log.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_foreground_mount_unmounts_cleanly_and_exits_0_on_signal(
    volume: Volume, tmp_path, cleanup, sig
):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = start_foreground(volume, mnt, cleanup, tmp_path)
    with open(mnt / "f", "wb") as f:
        f.write(b"z" * 3_000_000)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 0, read_log(proc)
    assert not is_mounted(mnt)
    assert "Traceback" not in read_log(proc)
    m = volume.mount(mnt)
    assert (m.path / "f").read_bytes() == b"z" * 3_000_000


def test_sigterm_flushes_data_of_a_file_still_open_then_exits_0(volume: Volume, tmp_path, cleanup):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = start_foreground(volume, mnt, cleanup, tmp_path)
    payload = os.urandom(3_000_000)
    fd = os.open(mnt / "open", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, payload)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, read_log(proc)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN: the filesystem is gone
    assert not is_mounted(mnt)
    m = volume.mount(mnt)
    assert (m.path / "open").read_bytes() == payload


def test_background_daemon_unmounts_cleanly_on_sigterm(volume: Volume):
    m = volume.mount()
    (m.path / "f").write_bytes(b"before sigterm")
    pid = m.daemon_pid()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: pid_gone(pid), timeout=30)
    assert not is_mounted(m.path), "the daemon exited without unmounting"
    m = volume.mount(m.path)
    assert (m.path / "f").read_bytes() == b"before sigterm"


def test_foreground_mount_returns_0_when_unmounted_with_riverfs_umount(
    volume: Volume, tmp_path, cleanup
):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = start_foreground(volume, mnt, cleanup, tmp_path)
    (mnt / "f").write_text("hello")
    run_cli("umount", str(mnt))
    assert not is_mounted(mnt)
    # umount waits for the daemon: the foreground process is done (or exiting) right now.
    assert proc.wait(timeout=10) == 0, read_log(proc)
    assert "Traceback" not in read_log(proc)


def test_mount_with_cache_and_timeout_options_works(volume: Volume):
    m = volume.mount(
        None,
        "--cache-size",
        "100M",
        "--attr-timeout",
        "0",
        "--entry-timeout",
        "0.5",
    )
    (m.path / "f").write_bytes(b"opts")
    assert (m.path / "f").read_bytes() == b"opts"


def test_read_only_mount_serves_reads_and_refuses_writes_with_erofs(volume: Volume):
    m = volume.mount()
    (m.path / "f").write_bytes(b"data")
    (m.path / "d").mkdir()
    m.umount()
    m = volume.mount(m.path, "--read-only")
    assert (m.path / "f").read_bytes() == b"data"
    for attempt in (
        lambda: os.open(m.path / "f", os.O_RDWR),
        lambda: os.open(m.path / "new", os.O_CREAT | os.O_WRONLY),
        lambda: os.mkdir(m.path / "d2"),
        lambda: os.unlink(m.path / "f"),
        lambda: os.chmod(m.path / "f", 0o600),
        lambda: os.setxattr(m.path / "f", "user.x", b"1"),
    ):
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno == 30, exc.value  # EROFS


# -- the default volume (no META_URL) ------------------------------------------------------


@pytest.fixture
def xdg_env(tmp_path):
    env = {
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "HOME": str(tmp_path / "home"),  # never touch the real user's default volume
    }
    for v in env.values():
        Path(v).mkdir()
    return env


def test_mount_without_url_formats_default_volume_on_first_use(tmp_path, xdg_env, cleanup):
    mnt = cleanup.mountpoint(tmp_path / "mnt", env=xdg_env)
    mnt.mkdir()
    run_cli("mount", str(mnt), "--background", env=xdg_env, timeout=60)
    assert is_mounted(mnt)
    default = Path(xdg_env["XDG_DATA_HOME"]) / "riverfs" / "default"
    assert default.is_dir(), "default volume not under $XDG_DATA_HOME/riverfs/default"
    (mnt / "f").write_bytes(b"default volume")
    out = run_cli("status", env=xdg_env).stdout
    assert str(mnt) in out, f"status of the default volume lacks the session:\n{out}"
    run_cli("umount", str(mnt), env=xdg_env)
    assert not is_mounted(mnt)
    # Second use: the same volume, not formatted again.
    run_cli("mount", str(mnt), "--background", env=xdg_env, timeout=60)
    assert (mnt / "f").read_bytes() == b"default volume"
    run_cli("umount", str(mnt), env=xdg_env)
    assert (Path(xdg_env["XDG_CACHE_HOME"]) / "riverfs").is_dir(), "cache not in XDG_CACHE_HOME"
    assert list(Path(xdg_env["HOME"]).iterdir()) == [], "wrote under $HOME instead of XDG dirs"


def test_format_without_url_creates_default_volume_and_refuses_a_second_time(xdg_env):
    run_cli("format", env=xdg_env)
    assert (Path(xdg_env["XDG_DATA_HOME"]) / "riverfs" / "default").is_dir()
    assert_one_line_error(run_cli("format", env=xdg_env, check=False), "--force")
    run_cli("format", "--force", env=xdg_env)
