"""The filesystems fs_bench.py measures: each one mounted by `__enter__` and unmounted again by
`__exit__`, also after an error or Ctrl-C, plus the system helpers they share.

  riverfs, riverfs-enc, riverfs-wb   a fresh riverfs volume (plain; encrypted + zstd;
                                     mounted --writeback), remounted for every cold phase
  rclone                             `rclone mount` over a local directory, with a full VFS
                                     cache (only when rclone is on PATH), remounted likewise
  tmpfs, disk                        the kernel's in-memory filesystem; a plain directory on
                                     the --tmp disk (no FUSE at all)
  memfs, memfs_pyfuse3               benchmarks/memfs.py (riverfs.fuse) and memfs_pyfuse3.py
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
TIMEOUT = 1.0  # attr/entry timeout of riverfs (default), memfs and rclone (its default)
PYFUSE3_VENV = HERE / ".venv-pyfuse3"
PYFUSE3_PACKAGES = ["pyfuse3>=3.4", "trio"]  # pyfuse3 imports trio even in asyncio mode
ENCRYPTED_FORMAT = ["--encrypt", "--compress", "zstd"]  # riverfs-enc: zstd + AES-256-GCM
PASSPHRASE = "benchmark passphrase"  # riverfs-enc's, given as RIVERFS_PASSPHRASE
# Report order; `rclone` is in the default list only when installed.
TARGETS = (
    "riverfs",
    "riverfs-enc",
    "riverfs-wb",
    "rclone",
    "tmpfs",
    "disk",
    "memfs",
    "memfs_pyfuse3",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- system helpers


def real(path: Path) -> str:
    """The real path of `path` without touching `path` itself: realpath() would lstat it,
    and a mountpoint whose daemon does not answer hangs whoever stats it."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def is_mounted(path: Path) -> bool:
    target = real(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def answers(path: Path, timeout: float = 10) -> bool:
    """Whether the filesystem mounted at `path` answers a stat within `timeout` seconds
    (asked from a child process, which is killed if it hangs)."""
    try:
        return run(["stat", "-t", str(path)], timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def mounts_under(root: Path) -> list[str]:
    prefix = real(root) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


_drop_warned = False


def drop_kernel_caches() -> None:
    global _drop_warned
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        if not _drop_warned:
            log(f"warning: cannot drop the kernel caches ({e}); 'cold' reads may be warm")
            _drop_warned = True


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def force_unmount(path: Path) -> None:
    if is_mounted(path):
        run(["fusermount3", "-uz", str(path)])
    if is_mounted(path):
        run(["umount", "-l", str(path)])


# ---------------------------------------------------------------- filesystems under test


class Target:
    """A filesystem under test: mounted by `__enter__`, always unmounted by `__exit__`."""

    name = ""
    # whether what it stores keeps changing after the writes (compaction, uploads): the
    # rewrite run then watches its store for a minute
    store_settles = False

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.mnt = workdir / "mnt"

    def __enter__(self) -> Target:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(exist_ok=True)
        try:
            self.mount()
        except BaseException:
            self.unmount()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.unmount()

    def mount(self) -> None:
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    def make_cold(self) -> None:
        """Forget every cached byte of file data (kernel and filesystem caches)."""
        drop_kernel_caches()

    def make_cold_metadata(self) -> None:
        """Make the next stat of every file reach the filesystem: what make_cold does for
        the targets that are remounted (and for the kernel's own filesystems)."""
        self.make_cold()

    def daemon_pid(self) -> int | None:
        return None

    def store_dir(self) -> Path | None:
        """The directory that holds what the filesystem stores (its object store), if any."""
        return None


class Disk(Target):
    """A plain directory on the disk of --tmp: the reference for writing the cache disk directly."""

    name = "disk"

    def mount(self) -> None:
        pass

    def unmount(self) -> None:
        pass

    def store_dir(self) -> Path | None:
        return self.mnt


class Tmpfs(Target):
    name = "tmpfs"

    def __init__(self, workdir: Path, size: int):
        super().__init__(workdir)
        self.size = size

    def mount(self) -> None:
        p = run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "bench-tmpfs", str(self.mnt)])
        if p.returncode != 0:
            raise RuntimeError(f"mount -t tmpfs failed (are you root?): {p.stderr.strip()}")

    def unmount(self) -> None:
        if is_mounted(self.mnt):
            run(["umount", str(self.mnt)])
        force_unmount(self.mnt)


def pyfuse3_python() -> str:
    """The python of benchmarks/.venv-pyfuse3, created and filled with pyfuse3 if needed."""
    python = PYFUSE3_VENV / "bin" / "python"
    check = [str(python), "-c", "import pyfuse3, pyfuse3.asyncio, trio"]
    if python.exists() and run(check).returncode == 0:
        return str(python)
    log(f"installing {' '.join(PYFUSE3_PACKAGES)} into {PYFUSE3_VENV} (once)")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(PYFUSE3_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *PYFUSE3_PACKAGES],
    ]  # fmt: skip
    for i, cmd in enumerate(steps):
        p = run(cmd, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(cmd)} failed ({p.returncode}); building pyfuse3 needs libfuse3-dev, "
                f"pkg-config and gcc (apt-get install libfuse3-dev pkg-config gcc):\n"
                + (p.stderr or p.stdout).strip()[-2000:]
            )
        if i == 0:  # keep the venv out of git status (what Python 3.13's venv does itself)
            (PYFUSE3_VENV / ".gitignore").write_text("*\n")
    if run(check).returncode != 0:
        raise RuntimeError(f"pyfuse3 installed into {PYFUSE3_VENV} but does not import")
    return str(python)


class Daemon(Target):
    """A filesystem served by one foreground process that we start and wait for."""

    ready_timeout = 15.0
    exit_timeout = 15.0

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.proc: subprocess.Popen | None = None
        self.logfile = workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def mount(self) -> None:
        cmd = self.command()
        with open(self.logfile, "ab") as logf:
            logf.write(f"\n$ {shlex.join(cmd)}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we unmount it
            )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}"
                )
            return is_mounted(self.mnt)

        wait_for(ready, self.ready_timeout, f"{self.name} to mount")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")[-2000:].strip()
        return ""

    def unmount(self) -> None:
        if is_mounted(self.mnt):
            run(["fusermount3", "-u", str(self.mnt)])
        force_unmount(self.mnt)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.exit_timeout)
            except subprocess.TimeoutExpired:
                log(f"warning: {self.name} still running after unmount; killing it")
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.proc else None


class Memfs(Daemon):
    """benchmarks/memfs.py, on riverfs.fuse (MemfsPyfuse3: the pyfuse3 one, run by `python`)."""

    name = "memfs"
    script = "memfs.py"

    def __init__(self, workdir: Path, python: str | None = None):
        super().__init__(workdir)
        self.python = python or sys.executable

    def command(self) -> list[str]:
        return [self.python, str(HERE / self.script), str(self.mnt), "--timeout", str(TIMEOUT)]

    def make_cold_metadata(self) -> None:
        # memfs keeps its files in its memory only: it cannot be remounted. Waiting out the
        # kernel's entry/attr timeout makes every stat a request to it all the same.
        time.sleep(TIMEOUT + 0.2)


class MemfsPyfuse3(Memfs):
    name = "memfs_pyfuse3"
    script = "memfs_pyfuse3.py"


class Riverfs(Target):
    name = "riverfs"
    store_settles = True

    def __init__(
        self,
        workdir: Path,
        extra_mount_args: list[str],
        format_args: list[str] | None = None,
        name: str = "riverfs",
    ):
        super().__init__(workdir)
        self.name = name
        self.format_args = format_args or []
        self.meta_url = f"sqlite://{workdir}/meta.db"
        self.store_url = f"file://{workdir}/store"
        self.cache_dir = workdir / "cache"
        self.extra = extra_mount_args
        self.logfile = workdir / "riverfs.log"
        self.pids: set[int] = set()

    def cli(self, *args: str, timeout: float = 300) -> None:
        cmd = [sys.executable, "-m", "riverfs", *args]
        # Output to a file, not a pipe: a daemon that keeps the pipe open would hang us.
        with open(self.logfile, "ab") as logf:
            logf.write(f"\n$ riverfs {' '.join(args)}\n".encode())
            logf.flush()
            p = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
                env={**os.environ, "RIVERFS_PASSPHRASE": PASSPHRASE},
            )
        if p.returncode != 0:
            raise RuntimeError(f"riverfs {args[0]} failed ({p.returncode}):\n{self.log_tail()}")

    def log_tail(self) -> str:
        out = []
        for f in (self.logfile, self.cache_dir / "mount.log"):
            with contextlib.suppress(OSError):
                out.append(f"--- {f}\n" + f.read_text(errors="replace")[-2000:].strip())
        return "\n".join(out)

    def __enter__(self) -> Target:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(exist_ok=True)
        self.cli("format", self.meta_url, "--storage", self.store_url, *self.format_args)
        return super().__enter__()

    def mount(self) -> None:
        self.cli(
            "mount",
            self.meta_url,
            str(self.mnt),
            "--background",
            "--cache-dir",
            str(self.cache_dir),
            *self.extra,
            timeout=120,
        )
        if not is_mounted(self.mnt):
            raise RuntimeError(f"riverfs mount returned but {self.mnt} is not mounted")
        pid = self.daemon_pid()
        if pid:
            self.pids.add(pid)

    def unmount(self) -> None:
        pid = self.daemon_pid() if is_mounted(self.mnt) else None
        if pid:
            self.pids.add(pid)
        if is_mounted(self.mnt):
            if answers(self.mnt):
                try:
                    self.cli("umount", str(self.mnt), timeout=600)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    log(f"warning: riverfs umount failed, forcing: {e}")
            else:
                # Killing the daemon aborts the FUSE connection: every waiting request fails.
                log(f"warning: {self.mnt} does not answer (daemon dead or hung); forcing")
                for p in self.pids:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        psutil.Process(p).kill()
        force_unmount(self.mnt)
        # Wait for the daemons we started to finish (they flush on unmount).
        for p in list(self.pids | ({pid} if pid else set())):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(p)
                try:
                    proc.wait(timeout=60)
                except psutil.TimeoutExpired:
                    log(f"warning: riverfs daemon {p} still running after unmount; killing it")
                    proc.kill()
            self.pids.discard(p)

    def make_cold(self) -> None:
        self.unmount()
        for entry in self.cache_dir.iterdir():
            if entry.suffix == ".log":  # the daemon's log (mount.log), not cached data
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        drop_kernel_caches()
        self.mount()

    def store_dir(self) -> Path | None:
        return self.workdir / "store"

    def daemon_pid(self) -> int | None:
        me = os.getpid()
        out = run(["pgrep", "-f", f"riverfs mount .*{self.mnt}"]).stdout.split()
        pids = [int(p) for p in out if int(p) != me]
        if not pids:  # daemons that rewrite their command line: look for the mountpoint
            for proc in psutil.process_iter(["pid", "cmdline"]):
                cmdline = proc.info["cmdline"] or []
                if (
                    proc.info["pid"] != me
                    and str(self.mnt) in cmdline
                    and "riverfs" in " ".join(cmdline)
                ):
                    pids.append(proc.info["pid"])
        return min(pids) if pids else None


class Rclone(Daemon):
    """`rclone mount :local:DIR MNT --vfs-cache-mode full --vfs-write-back 0s`.

    rclone's VFS keeps every written file in its cache directory and uploads it to DIR right
    after the last close (in the background: close does not wait). A cold phase waits until
    every upload has reached DIR, then unmounts, removes the cache directory and mounts again.
    """

    name = "rclone"
    store_settles = True
    ready_timeout = 30.0
    exit_timeout = 60.0
    upload_timeout = 900.0  # 1 GiB at rclone's ~100 MiB/s upload rate here, many times over

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.dir = workdir / "dir"  # the "object store"
        self.cache_dir = workdir / "cache"
        self.config = workdir / "rclone.conf"  # empty: the remote is the `:local:` string

    def command(self) -> list[str]:
        self.dir.mkdir(exist_ok=True)
        self.config.touch()
        return [
            "rclone", "mount", f":local:{real(self.dir)}", str(self.mnt),
            "--config", str(self.config),
            "--cache-dir", str(self.cache_dir),
            "--vfs-cache-mode", "full",
            "--vfs-write-back", "0s",
        ]  # fmt: skip

    def store_dir(self) -> Path | None:
        return self.dir

    def make_cold(self) -> None:
        self.wait_uploaded()
        self.unmount()
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        drop_kernel_caches()
        self.mount()

    def cached_files(self) -> list[tuple[Path, Path, Path]]:
        """(cached data, its metadata, the file in DIR) for every file in rclone's cache."""
        data_root = self.cache_dir / "vfs"
        dir_parts = Path(real(self.dir)).parts[1:]
        out = []
        for top, _, files in os.walk(data_root):
            for f in files:
                rel = (Path(top) / f).relative_to(data_root)
                # rel: REMOTE / DIR's path (without its leading "/") / the file's path in DIR
                if rel.parts[1 : 1 + len(dir_parts)] != dir_parts:
                    raise RuntimeError(f"rclone: unexpected cache layout: {rel}")
                in_dir = self.dir.joinpath(*rel.parts[1 + len(dir_parts) :])
                out.append((data_root / rel, self.cache_dir / "vfsMeta" / rel, in_dir))
        return out

    def pending_uploads(self) -> list[Path]:
        """Files whose upload has not reached DIR: rclone's metadata for the cached file is
        missing or says dirty, or the file in DIR is missing or has another size."""
        pending = []
        for _, meta, in_dir in self.cached_files():
            try:
                item = json.loads(meta.read_text())
                if not item.get("Dirty") and in_dir.stat().st_size == item["Size"]:
                    continue
            except (OSError, ValueError, KeyError):  # not written yet, or being written
                pass
            pending.append(in_dir)
        return pending

    def wait_uploaded(self) -> None:
        """Wait until every file rclone has cached reached DIR with the cached file's size,
        then check the bytes of every wholly cached one (all written files are)."""
        t0 = time.monotonic()
        pending = self.pending_uploads()
        while pending:
            if time.monotonic() - t0 > self.upload_timeout:
                raise RuntimeError(
                    f"rclone: {len(pending)} uploads not in {self.dir} after "
                    f"{self.upload_timeout:.0f}s, e.g. {pending[0]}:\n{self.log_tail()}"
                )
            time.sleep(0.2)
            pending = self.pending_uploads()
        for data, meta, in_dir in self.cached_files():
            item = json.loads(meta.read_text())
            ranges = [(r["Pos"], r["Size"]) for r in item.get("Rs") or []]
            if ranges == [(0, item["Size"])] and not filecmp.cmp(data, in_dir, shallow=False):
                raise RuntimeError(f"rclone: {in_dir} differs from the file rclone cached")
        if time.monotonic() - t0 > 1:
            log(f"rclone: waited {time.monotonic() - t0:.1f}s for its uploads to reach {self.dir}")


def make_target(name: str, workdir: Path, riverfs_args: list[str], tmpfs_size: int) -> Target:
    """The target called `name` (one of TARGETS), not mounted yet."""
    if name == "riverfs":
        return Riverfs(workdir, riverfs_args)
    if name == "riverfs-enc":
        return Riverfs(workdir, riverfs_args, ENCRYPTED_FORMAT, name=name)
    if name == "riverfs-wb":
        return Riverfs(workdir, ["--writeback", *riverfs_args], name=name)
    if name == "rclone":
        return Rclone(workdir)
    if name == "tmpfs":
        return Tmpfs(workdir, tmpfs_size)
    if name == "disk":
        return Disk(workdir)
    if name == "memfs":
        return Memfs(workdir)
    if name == "memfs_pyfuse3":  # its venv first (not timed)
        return MemfsPyfuse3(workdir, pyfuse3_python())
    raise ValueError(f"unknown target {name!r}")
