"""POSIX ACLs through real mounts: enforced by the kernel, stored and inherited by riverfs.

Access is checked as uid 65534 (`runuser`, started in the test's directory so no ancestor of
the mount needs to be searchable by it). Modes and ACLs riverfs gives are compared with what
the same steps give on the local disk (ext4 under the pytest tmp dir), where Linux itself
decides. ACLs are set with `setfacl` when the `acl` package is installed, else with setxattr
of the kernel's binary format (meta/acl.py), and read back through getxattr either way.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import Volume, run_cli, wait_until

from riverfs.meta import acl
from riverfs.meta.acl import GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Entry

ENGINES = ("sqlite", "postgresql")  # the shared mount of the module, on each engine
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

NOBODY = 65534
SETFACL = shutil.which("setfacl")
GETFACL = shutil.which("getfacl")
TAGS = {USER_OBJ: "u", USER: "u", GROUP_OBJ: "g", acl.GROUP: "g", MASK: "m", OTHER: "o"}


def _text(entries: list[Entry]) -> str:
    """`u::rw-,u:65534:r--,...`: entries as setfacl --set takes them."""
    out = []
    for e in entries:
        who = "" if e.id == acl.UNDEFINED_ID else str(e.id)
        rwx = "".join(c if e.perm & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
        out.append(f"{TAGS[e.tag]}:{who}:{rwx}")
    return ",".join(out)


def set_acl(path: Path, entries: list[Entry], default: bool = False) -> None:
    """Replace the access (or default) ACL of `path` by `entries` (a mask, if any, given)."""
    if SETFACL:
        cmd = [SETFACL, *(["-d"] if default else []), "--set", _text(entries), str(path)]
        subprocess.run(cmd, check=True, capture_output=True)
    else:
        os.setxattr(path, acl.DEFAULT if default else acl.ACCESS, acl.encode(entries))


def get_acl(path: Path, default: bool = False) -> list[Entry] | None:
    """The stored ACL of `path`, None when there is none."""
    try:
        return acl.parse(os.getxattr(path, acl.DEFAULT if default else acl.ACCESS))
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def as_nobody(path: Path, call: str) -> int:
    """The errno uid/gid 65534 gets from the Python expression `call` about `name` (path's
    name), run in path's directory (0: it succeeded)."""
    code = f"import os\nname = {path.name!r}\ntry:\n {call}\n print(0)\n" \
        "except OSError as e:\n print(e.errno)"  # fmt: skip
    out = subprocess.run(
        ["runuser", "-u", "nobody", "--", "python3", "-c", code],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def nobody_opens(path: Path, flags: int = os.O_RDONLY) -> int:
    """The errno uid/gid 65534 gets opening `path` (0: it may)."""
    return as_nobody(path, f"os.close(os.open(name, {flags}))")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def d(d: Path) -> Path:
    os.chmod(d, 0o755)  # nobody may enter (its own checks start inside)
    return d


NAMED_READ = [Entry(USER_OBJ, 6), Entry(USER, 4, NOBODY), Entry(GROUP_OBJ, 0), Entry(MASK, 4),
              Entry(OTHER, 0)]  # fmt: skip
DEFAULT = [Entry(USER_OBJ, 7), Entry(USER, 7, NOBODY), Entry(GROUP_OBJ, 5), Entry(MASK, 5),
           Entry(OTHER, 5)]  # fmt: skip


# ---- enforcement -------------------------------------------------------------------------


def test_a_named_user_entry_grants_what_the_mode_denies_and_removing_it_revokes(d):
    f = d / "f"
    f.write_bytes(b"secret")
    os.chmod(f, 0o600)
    assert nobody_opens(f) == errno.EACCES
    set_acl(f, NAMED_READ)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640  # group bits show the mask, as on ext4
    assert get_acl(f) == NAMED_READ
    assert nobody_opens(f) == 0
    assert nobody_opens(f, os.O_WRONLY) == errno.EACCES  # r-- only
    set_acl(f, [e for e in NAMED_READ if e.tag != USER])
    assert nobody_opens(f) == errno.EACCES
    set_acl(f, NAMED_READ)
    assert nobody_opens(f) == 0
    os.removexattr(f, acl.ACCESS)
    assert nobody_opens(f) == errno.EACCES


def test_the_mask_limits_named_entries_and_chmod_rewrites_it(d, local):
    for base in (d, local):
        f = base / "f"
        f.write_bytes(b"x")
        set_acl(f, [Entry(USER_OBJ, 6), Entry(USER, 6, NOBODY), Entry(GROUP_OBJ, 4),
                    Entry(MASK, 6), Entry(OTHER, 0)])  # fmt: skip
        os.chmod(f, 0o640)  # the group bits are the mask's: now r--
    assert get_acl(d / "f") == get_acl(local / "f")
    assert Entry(MASK, 4) in get_acl(d / "f")
    assert nobody_opens(d / "f") == 0
    assert nobody_opens(d / "f", os.O_WRONLY) == errno.EACCES  # rw- masked to r--
    os.chmod(d / "f", 0o600)
    assert nobody_opens(d / "f") == errno.EACCES  # mask ---
    if GETFACL:
        shown = subprocess.run([GETFACL, "-n", str(d / "f")], capture_output=True, text=True)
        assert "mask::---" in shown.stdout
        assert re.search(r"user:65534:rw-\s+#effective:---", shown.stdout), shown.stdout


def test_a_minimal_acl_sets_the_mode_and_is_not_stored(d, local):
    for base in (d, local):
        f = base / "f"
        f.write_bytes(b"x")
        os.chmod(f, 0o644)
        set_acl(f, acl.from_mode(0o750))
    assert stat.S_IMODE((d / "f").stat().st_mode) == 0o750
    assert stat.S_IMODE((local / "f").stat().st_mode) == 0o750
    assert acl.ACCESS.decode() not in os.listxattr(d / "f")
    assert acl.ACCESS.decode() not in os.listxattr(local / "f")


def test_an_owner_outside_the_group_loses_setgid_by_setting_an_acl(d, local):
    got = {}
    for base in (d, local):
        f = base / "sg"
        f.write_bytes(b"")
        os.chown(f, NOBODY, 0)
        os.chmod(f, 0o2750)
        value = acl.encode(NAMED_READ)
        assert as_nobody(f, f"os.setxattr(name, {acl.ACCESS!r}, {value!r})") == 0
        g = base / "kept"
        g.write_bytes(b"")
        os.chmod(g, 0o2750)
        os.setxattr(g, acl.ACCESS, value)  # root may keep it
        got[base] = (stat.S_IMODE(f.stat().st_mode), stat.S_IMODE(g.stat().st_mode))
    assert got[d] == got[local] == (0o640, 0o2640)


def test_a_default_acl_is_refused_on_a_file_and_listed_on_a_directory(d):
    (d / "f").write_bytes(b"")
    with pytest.raises(OSError) as e:
        os.setxattr(d / "f", acl.DEFAULT, acl.encode(DEFAULT))
    assert e.value.errno == errno.EACCES  # as ext4: the kernel refuses it
    os.mkdir(d / "s")
    set_acl(d / "s", DEFAULT, default=True)
    assert acl.DEFAULT.decode() in os.listxattr(d / "s")
    assert get_acl(d / "s", default=True) == DEFAULT
    assert get_acl(d / "s") is None  # a default ACL is not an access ACL


# ---- inheritance -------------------------------------------------------------------------


def _create_all(base: Path) -> dict[str, tuple]:
    """Make a file, a directory, a fifo and a symlink under `base`; what each got."""
    os.close(os.open(base / "file", os.O_CREAT | os.O_WRONLY, 0o666))
    os.mkdir(base / "dir", 0o777)
    os.mkfifo(base / "fifo", 0o640)
    os.symlink("file", base / "link")
    out = {}
    for name in ("file", "dir", "fifo"):
        p = base / name
        out[name] = (stat.S_IMODE(p.stat().st_mode), get_acl(p), get_acl(p, default=True))
    out["link"] = os.listxattr(base / "link", follow_symlinks=False)
    return out


def test_a_default_acl_is_inherited_with_the_masked_mode_and_no_umask(d, local):
    got = {}
    for base in (d, local):
        os.mkdir(base / "p")
        set_acl(base / "p", DEFAULT, default=True)
        with umask(0o077):  # ignored under a default ACL
            got[base] = _create_all(base / "p")
    assert got[d] == got[local]
    mode, access, default = got[d]["file"]
    assert mode == 0o644  # u rw- (of rw- asked), mask r-x & rw- = r--, o r-x & rw- = r--
    assert access[1] == Entry(USER, 7, NOBODY) and access[3] == Entry(MASK, 4)
    assert default is None  # only directories inherit the default itself
    mode, access, default = got[d]["dir"]
    assert mode == 0o755 and default == DEFAULT and access[3] == Entry(MASK, 5)
    assert got[d]["fifo"][0] == 0o640
    assert got[d]["link"] == []  # symlinks have no ACLs
    # a subdirectory passes the default on
    os.mkdir(d / "p" / "dir" / "deeper")
    assert get_acl(d / "p" / "dir" / "deeper", default=True) == DEFAULT
    # inherited entries are enforced: nobody reads through the named entry (mask r--)
    (d / "p" / "file").write_bytes(b"inherited")
    assert nobody_opens(d / "p" / "file") == 0


def test_without_a_default_acl_the_umask_applies(d, local):
    got = {}
    for base in (d, local):
        with umask(0o027):
            got[base] = _create_all(base)
    assert got[d] == got[local]
    assert got[d]["file"] == (0o640, None, None)
    assert got[d]["dir"] == (0o750, None, None)
    assert got[d]["fifo"] == (0o640, None, None)


# ---- across remounts, mounts and dump/load -----------------------------------------------


def _acl_tree(root: Path) -> None:
    os.mkdir(root / "p")
    set_acl(root / "p", DEFAULT, default=True)
    (root / "p" / "f").write_bytes(b"x")
    os.chmod(root / "p", 0o755)


def _check_acl_tree(root: Path) -> None:
    assert get_acl(root / "p", default=True) == DEFAULT
    assert get_acl(root / "p" / "f")[1] == Entry(USER, 7, NOBODY)
    assert stat.S_IMODE((root / "p" / "f").stat().st_mode) == 0o644
    assert nobody_opens(root / "p" / "f") == 0


def test_acls_survive_a_remount_and_a_dump_and_load(volume, tmp_path):
    m = volume.mount()
    _acl_tree(m.path)
    m.umount()
    m = volume.mount()
    _check_acl_tree(m.path)
    m.umount()
    dump = tmp_path / "meta.jsonl"
    run_cli("dump", volume.meta_url, str(dump))
    url = f"sqlite://{tmp_path}/restored/meta.db"
    run_cli("load", url, str(dump))
    restored = Volume(tmp_path / "restored", url, volume.storage_url, tmp_path / "rcache")
    try:
        _check_acl_tree(restored.mount().path)
    finally:
        restored.cleanup()


def test_a_read_only_mount_enforces_and_shows_acls_and_refuses_changes(volume):
    m = volume.mount()
    _acl_tree(m.path)
    m.umount()
    m = volume.mount(None, "--read-only")
    _check_acl_tree(m.path)
    with pytest.raises(OSError) as e:
        os.setxattr(m.path / "p" / "f", acl.ACCESS, acl.encode(acl.from_mode(0o600)))
    assert e.value.errno == errno.EROFS


@pytest.fixture
def two_mounts(tmp_path, postgres) -> Iterator[tuple[Path, Path]]:
    """One PostgreSQL volume mounted twice, kernel caches 30 s (only invalidation helps)."""
    root = tmp_path / "vol"
    root.mkdir()
    url = postgres.create_database(f"acl_{uuid.uuid4().hex[:8]}")
    vol = Volume(root, url, f"file://{root}/store", root / "cache")
    run_cli("format", url, "--storage", vol.storage_url)
    args = ("--attr-timeout", "30", "--entry-timeout", "30")
    try:
        a = vol.mount(root / "a", *args).path
        b = vol.mount(root / "b", *args, "--cache-dir", str(root / "cache_b")).path
        os.chmod(a, 0o755)
        yield a, b
    finally:
        vol.cleanup()


def test_an_acl_set_on_one_mount_is_enforced_on_the_other(two_mounts):
    a, b = two_mounts
    (a / "f").write_bytes(b"shared")
    os.chmod(a / "f", 0o600)
    set_acl(a / "f", NAMED_READ)
    wait_until(lambda: (b / "f").exists(), 5)
    wait_until(lambda: nobody_opens(b / "f") == 0, 5)  # b's kernel now caches the ACL
    # the same mode (mask r--), no named entry: only dropping the cached ACL denies it
    set_acl(a / "f", [Entry(USER_OBJ, 6), Entry(GROUP_OBJ, 0), Entry(MASK, 4), Entry(OTHER, 0)])
    wait_until(lambda: nobody_opens(b / "f") == errno.EACCES, 5)
    assert stat.S_IMODE((b / "f").stat().st_mode) == 0o640
    set_acl(a / "f", NAMED_READ)
    wait_until(lambda: nobody_opens(b / "f") == 0, 5)
    assert get_acl(b / "f") == NAMED_READ
    os.chmod(a / "f", 0o600)  # the mask goes to ---: revoked everywhere
    wait_until(lambda: nobody_opens(b / "f") == errno.EACCES, 5)
    # a default ACL set on b is inherited by what a creates
    os.mkdir(b / "p")
    set_acl(b / "p", DEFAULT, default=True)
    wait_until(lambda: get_acl(a / "p", default=True) == DEFAULT, 5)
    with umask(0o077):
        (a / "p" / "g").write_bytes(b"x")
    assert stat.S_IMODE((a / "p" / "g").stat().st_mode) == 0o644
