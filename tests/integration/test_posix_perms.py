"""Permissions through a real riverfs mount, checked as an unprivileged user.

The mount runs as root with default_permissions and allow_other. Each check that needs
another user forks a child that changes into the test directory (so no ancestor of the
mount needs to be searchable by that user), drops to uid/gid 65534 and reports back
what it saw. Where Linux defines the outcome, the same scenario also runs on the local
disk and must agree. Set RIVERFS_POSIX_ON_LOCAL=1 to run the module locally instead.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from posix_support import ON_LOCAL, errno_of, fresh_dir

# extra `riverfs mount` options, e.g. "--attr-timeout 0 --entry-timeout 0" to bypass kernel caches
riverfs_only = pytest.mark.skipif(ON_LOCAL, reason="riverfs-specific expectation")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")

NOBODY = 65534
OTHER = 65533  # a second unprivileged user


@pytest.fixture
def d(fs_root: Path, request) -> Path:
    """A fresh directory of the shared mount for one test (mode 0755, owned by root)."""
    p = fresh_dir(fs_root, request)
    os.chmod(p, 0o755)
    return p


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """A directory on the local disk, to compare outcomes with."""
    p = tmp_path / "local"
    p.mkdir()
    os.chmod(p, 0o755)
    return p


def as_user(
    cwd: Path,
    fn: Callable[[], object],
    uid: int = NOBODY,
    gid: int = NOBODY,
    groups: tuple[int, ...] = (),
):
    """Run `fn()` in a forked child in directory `cwd` as uid/gid; return its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            try:
                os.chdir(cwd)
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                result = ("ok", fn())
            except BaseException:
                result = ("exc", traceback.format_exc())
            data = pickle.dumps(result)
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        chunks.append(f.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "exc":
        raise AssertionError(f"child as uid {uid} failed:\n{value}")
    return value


def same_outcome(scenario: Callable[[Path], object], d: Path, local: Path, expected) -> None:
    """Run `scenario(base)` on the local disk and on riverfs; both must give `expected`."""
    got_local = scenario(local)
    assert got_local == expected, f"test assumption wrong: local disk gave {got_local!r}"
    got = scenario(d)
    assert got == expected, f"riverfs gave {got!r}, Linux gives {expected!r}"


def write(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def slurp(path: Path | str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def mode_of(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def E(code: int) -> str:
    return errno.errorcode.get(code, "OK") if code else "OK"


# --- the mount itself ---------------------------------------------------------------------


@riverfs_only
def test_mount_uses_default_permissions_and_allow_other(fs_root: Path):
    target = os.path.realpath(fs_root)
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == target)
    super_opts = line.split(" - ")[1].split()[2].split(",")
    assert "default_permissions" in super_opts
    assert "allow_other" in super_opts


def test_other_user_can_use_the_mount(d: Path):
    write(d / "f", b"readable", 0o644)
    assert as_user(d, lambda: slurp("f")) == b"readable"
    assert as_user(d, lambda: sorted(os.listdir("."))) == ["f"]


def test_files_created_by_a_user_are_owned_by_that_user(d: Path):
    os.chmod(d, 0o777)

    def create():
        with open("mine", "wb") as f:
            f.write(b"x")
        os.mkdir("mydir")
        os.symlink("mine", "mylink")
        os.mkfifo("myfifo")
        return [
            (os.lstat(n).st_uid, os.lstat(n).st_gid) for n in ("mine", "mydir", "mylink", "myfifo")
        ]

    assert as_user(d, create) == [(NOBODY, NOBODY)] * 4
    for n in ("mine", "mydir", "mylink", "myfifo"):
        assert (os.lstat(d / n).st_uid, os.lstat(d / n).st_gid) == (NOBODY, NOBODY)


# --- read / write / search permission -----------------------------------------------------


def test_other_user_cannot_read_a_0600_file(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "secret", b"s", 0o600)
        return E(as_user(base, lambda: errno_of(os.open, "secret", os.O_RDONLY)))

    same_outcome(scenario, d, local, "EACCES")


def test_other_user_cannot_write_a_0644_file(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"s", 0o644)
        return (
            E(as_user(base, lambda: errno_of(os.open, "f", os.O_WRONLY))),
            E(as_user(base, lambda: errno_of(os.truncate, "f", 0))),
        )

    same_outcome(scenario, d, local, ("EACCES", "EACCES"))
    assert (d / "f").read_bytes() == b"s"


def test_group_member_gets_group_permissions(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"group data", 0o640, owner=(0, NOBODY))
        write(base / "g", b"", 0o604, owner=(0, NOBODY))  # others may read, group may not
        return (
            E(as_user(base, lambda: errno_of(os.open, "f", os.O_RDONLY))),
            E(as_user(base, lambda: errno_of(os.open, "f", os.O_WRONLY))),
            E(as_user(base, lambda: errno_of(os.open, "g", os.O_RDONLY))),
        )

    same_outcome(scenario, d, local, ("OK", "EACCES", "EACCES"))


def test_supplementary_group_grants_group_permissions(d: Path):
    write(d / "f", b"", 0o660, owner=(0, 4242))
    assert as_user(d, lambda: errno_of(os.open, "f", os.O_WRONLY), groups=(4242,)) == 0
    assert as_user(d, lambda: errno_of(os.open, "f", os.O_WRONLY)) == errno.EACCES


def test_create_and_unlink_in_directory_without_write_permission_fail_eacces(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "ro", 0o755)
        write(base / "ro" / "existing", b"")
        return (
            E(as_user(base, lambda: errno_of(os.open, "ro/new", os.O_CREAT | os.O_WRONLY))),
            E(as_user(base, lambda: errno_of(os.mkdir, "ro/newdir"))),
            E(as_user(base, lambda: errno_of(os.unlink, "ro/existing"))),
            E(as_user(base, lambda: errno_of(os.rename, "ro/existing", "ro/moved"))),
            E(as_user(base, lambda: errno_of(os.symlink, "x", "ro/sym"))),
        )

    same_outcome(scenario, d, local, ("EACCES",) * 5)
    assert os.listdir(d / "ro") == ["existing"]


def test_rename_needs_write_permission_on_both_directories(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "from", 0o777)
        os.mkdir(base / "to", 0o755)
        write(base / "from" / "f", b"", owner=(NOBODY, NOBODY))
        return E(as_user(base, lambda: errno_of(os.rename, "from/f", "to/f")))

    same_outcome(scenario, d, local, "EACCES")


def test_search_without_execute_permission_fails_eacces(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "noexec")
        write(base / "noexec" / "f", b"")
        os.chmod(base / "noexec", 0o766)
        return (
            E(as_user(base, lambda: errno_of(os.stat, "noexec/f"))),
            E(as_user(base, lambda: errno_of(os.open, "noexec/f", os.O_RDONLY))),
        )

    same_outcome(scenario, d, local, ("EACCES", "EACCES"))


def test_listing_without_read_permission_fails_but_lookup_works(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "hidden")
        write(base / "hidden" / "known", b"k")
        os.chmod(base / "hidden", 0o711)
        return (
            E(as_user(base, lambda: errno_of(os.listdir, "hidden"))),
            as_user(base, lambda: slurp("hidden/known")),
        )

    same_outcome(scenario, d, local, ("EACCES", b"k"))


def test_root_bypasses_permission_bits(d: Path):
    write(d / "f", b"locked", 0o000)
    with open(d / "f", "r+b") as f:
        assert f.read() == b"locked"
        f.write(b"!")
    os.mkdir(d / "closed", 0o000)
    write(d / "closed" / "inside", b"")
    assert os.listdir(d / "closed") == ["inside"]


def test_access_reports_the_calling_users_permissions(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"", 0o604)
        write(base / "x", b"", 0o755)
        return as_user(
            base,
            lambda: (
                os.access("f", os.R_OK),
                os.access("f", os.W_OK),
                os.access("x", os.X_OK),
                os.access("f", os.X_OK),
            ),
        )

    same_outcome(scenario, d, local, (True, False, True, False))


# --- ownership and mode changes -----------------------------------------------------------


def test_chmod_by_non_owner_fails_eperm(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"", 0o666)
        return E(as_user(base, lambda: errno_of(os.chmod, "f", 0o777)))

    same_outcome(scenario, d, local, "EPERM")
    assert mode_of(d / "f") == 0o666


def test_owner_can_chmod_own_file(d: Path):
    write(d / "f", b"", 0o644, owner=(NOBODY, NOBODY))
    assert as_user(d, lambda: errno_of(os.chmod, "f", 0o600)) == 0
    assert mode_of(d / "f") == 0o600


def test_chown_by_non_root_fails_eperm(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "mine", b"", 0o644, owner=(NOBODY, NOBODY))
        write(base / "theirs", b"", 0o666)
        return (
            E(as_user(base, lambda: errno_of(os.chown, "mine", 0, -1))),
            E(as_user(base, lambda: errno_of(os.chown, "mine", -1, 0))),  # not a member of 0
            E(as_user(base, lambda: errno_of(os.chown, "theirs", NOBODY, NOBODY))),
            E(as_user(base, lambda: errno_of(os.chown, "mine", -1, 4242), groups=(4242,))),
        )

    same_outcome(scenario, d, local, ("EPERM", "EPERM", "EPERM", "OK"))
    assert os.stat(d / "mine").st_gid == 4242


def test_chmod_setgid_by_owner_outside_the_group_is_silently_dropped(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"", 0o644, owner=(NOBODY, 0))
        err = as_user(base, lambda: errno_of(os.chmod, "f", 0o2755))
        return E(err), oct(mode_of(base / "f"))

    same_outcome(scenario, d, local, ("OK", oct(0o755)))


def test_utime_rules_for_non_owners(d: Path, local: Path):
    """Setting explicit times needs ownership (EPERM); "now" needs write access (EACCES)."""

    def scenario(base: Path):
        write(base / "rw", b"", 0o666)
        write(base / "ro", b"", 0o644)
        write(base / "own", b"", 0o444, owner=(NOBODY, NOBODY))
        return (
            E(as_user(base, lambda: errno_of(os.utime, "rw", ns=(10**18, 10**18)))),
            E(as_user(base, lambda: errno_of(os.utime, "rw"))),
            E(as_user(base, lambda: errno_of(os.utime, "ro"))),
            E(as_user(base, lambda: errno_of(os.utime, "own", ns=(10**18, 10**18)))),
        )

    same_outcome(scenario, d, local, ("EPERM", "OK", "EACCES", "OK"))
    assert os.stat(d / "own").st_mtime_ns == 10**18


def test_user_xattr_needs_write_permission(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "ro", b"", 0o644)
        write(base / "rw", b"", 0o666)
        os.setxattr(base / "ro", "user.k", b"v")
        return (
            E(as_user(base, lambda: errno_of(os.setxattr, "ro", "user.k", b"w"))),
            as_user(base, lambda: os.getxattr("ro", "user.k")),
            E(as_user(base, lambda: errno_of(os.setxattr, "rw", "user.k", b"w"))),
            E(as_user(base, lambda: errno_of(os.setxattr, "rw", "trusted.k", b"w"))),
        )

    same_outcome(scenario, d, local, ("EACCES", b"v", "OK", "EPERM"))


# --- sticky directories -------------------------------------------------------------------


def test_sticky_directory_protects_other_users_files(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "tmp")
        os.chmod(base / "tmp", 0o1777)
        write(base / "tmp" / "roots", b"", 0o666)
        write(base / "tmp" / "others", b"", 0o666, owner=(OTHER, OTHER))
        os.mkdir(base / "tmp" / "otherdir")
        os.chown(base / "tmp" / "otherdir", OTHER, OTHER)

        def attempt():
            with open("tmp/mine", "wb"):
                pass
            return (
                E(errno_of(os.unlink, "tmp/roots")),
                E(errno_of(os.unlink, "tmp/others")),
                E(errno_of(os.rename, "tmp/others", "tmp/stolen")),
                E(errno_of(os.rename, "tmp/mine", "tmp/others")),  # replace: also refused
                E(errno_of(os.rmdir, "tmp/otherdir")),
                E(errno_of(os.unlink, "tmp/mine")),  # own file: allowed
            )

        return as_user(base, attempt)

    same_outcome(scenario, d, local, ("EPERM",) * 5 + ("OK",))
    assert sorted(os.listdir(d / "tmp")) == ["otherdir", "others", "roots"]


def test_sticky_directory_owner_may_delete_any_entry(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "owned")
        os.chown(base / "owned", NOBODY, NOBODY)
        os.chmod(base / "owned", 0o1777)
        write(base / "owned" / "others", b"", 0o666, owner=(OTHER, OTHER))
        return E(as_user(base, lambda: errno_of(os.unlink, "owned/others")))

    same_outcome(scenario, d, local, "OK")


# --- setuid / setgid bits -----------------------------------------------------------------


def test_write_by_non_root_clears_setuid_and_setgid(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"original", 0o6777)

        def attempt():
            with open("f", "r+b") as f:
                f.write(b"O")

        as_user(base, attempt)
        return oct(mode_of(base / "f"))

    same_outcome(scenario, d, local, oct(0o777))
    assert (d / "f").read_bytes() == b"Original"


def test_write_by_group_member_keeps_setgid_without_group_execute(d: Path, local: Path):
    """setgid without g+x is not a setgid executable: a write by a group member keeps it."""

    def scenario(base: Path):
        write(base / "f", b"data", 0o6766, owner=(0, NOBODY))

        def attempt():
            with open("f", "ab") as f:
                f.write(b"!")

        as_user(base, attempt)
        return oct(mode_of(base / "f"))

    same_outcome(scenario, d, local, oct(0o2766))


def test_write_by_non_member_clears_setgid_even_without_group_execute(d: Path, local: Path):
    """Linux (setattr_should_drop_sgid): a writer outside the file's group loses S_ISGID."""

    def scenario(base: Path):
        write(base / "f", b"data", 0o2766, owner=(0, 0))

        def attempt():
            with open("f", "ab") as f:
                f.write(b"!")

        as_user(base, attempt)
        return oct(mode_of(base / "f"))

    same_outcome(scenario, d, local, oct(0o766))


def test_truncate_by_non_root_clears_setuid(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"data", 0o4777)
        as_user(base, lambda: os.truncate("f", 1))
        return oct(mode_of(base / "f")), os.stat(base / "f").st_size

    same_outcome(scenario, d, local, (oct(0o777), 1))


def test_write_by_root_keeps_setuid_and_setgid(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"data", 0o6755)
        with open(base / "f", "ab") as f:
            f.write(b"more")
        return oct(mode_of(base / "f"))

    same_outcome(scenario, d, local, oct(0o6755))


def test_chown_clears_setuid_and_setgid_of_executable_files(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "f", b"", 0o6755)
        os.chown(base / "f", 1000, 1000)  # by root
        by_root = oct(mode_of(base / "f"))
        write(base / "g", b"", 0o6755, owner=(NOBODY, NOBODY))
        as_user(base, lambda: os.chown("g", -1, 4242), groups=(4242,))  # chgrp by owner
        by_owner = oct(mode_of(base / "g"))
        return by_root, by_owner

    same_outcome(scenario, d, local, (oct(0o755), oct(0o755)))


def test_chown_keeps_setgid_of_directories(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "sub")
        os.chmod(base / "sub", 0o2775)
        os.chown(base / "sub", 1000, 1000)
        return oct(mode_of(base / "sub"))

    same_outcome(scenario, d, local, oct(0o2775))


def test_setgid_directory_passes_its_group_and_setgid_bit_to_new_entries(d: Path, local: Path):
    def scenario(base: Path):
        os.mkdir(base / "shared")
        os.chown(base / "shared", 0, 4242)
        os.chmod(base / "shared", 0o2777)
        with open(base / "shared" / "by_root", "wb"):
            pass
        os.mkdir(base / "shared" / "subdir_by_root")
        os.symlink("by_root", base / "shared" / "symlink_by_root")
        os.mkfifo(base / "shared" / "fifo_by_root")

        def as_nobody():
            with open("shared/by_nobody", "wb"):
                pass
            os.mkdir("shared/subdir_by_nobody", 0o755)
            return None

        as_user(base, as_nobody)
        out = []
        names = (
            "by_root",
            "subdir_by_root",
            "symlink_by_root",
            "fifo_by_root",
            "by_nobody",
            "subdir_by_nobody",
        )
        for n in names:
            st = os.lstat(base / "shared" / n)
            out.append((n, st.st_uid, st.st_gid, bool(st.st_mode & stat.S_ISGID)))
        return out

    same_outcome(
        scenario,
        d,
        local,
        [
            ("by_root", 0, 4242, False),
            ("subdir_by_root", 0, 4242, True),
            ("symlink_by_root", 0, 4242, False),
            ("fifo_by_root", 0, 4242, False),
            ("by_nobody", NOBODY, 4242, False),
            ("subdir_by_nobody", NOBODY, 4242, True),
        ],
    )


def test_non_root_cannot_create_device_nodes(d: Path, local: Path):
    def scenario(base: Path):
        os.chmod(base, 0o777)
        try:
            return (
                E(as_user(base, lambda: errno_of(os.mknod, "c", 0o600 | stat.S_IFCHR, 0x103))),
                E(as_user(base, lambda: errno_of(os.mkfifo, "fifo"))),
            )
        finally:
            os.chmod(base, 0o755)

    same_outcome(scenario, d, local, ("EPERM", "OK"))


def test_file_created_in_setgid_directory_by_non_member_loses_requested_setgid(
    d: Path, local: Path
):
    def scenario(base: Path):
        os.mkdir(base / "shared")
        os.chown(base / "shared", 0, 4242)
        os.chmod(base / "shared", 0o2777)

        def create():
            os.close(os.open("shared/f", os.O_CREAT | os.O_WRONLY, 0o2755))
            st = os.stat("shared/f")
            return st.st_gid, oct(stat.S_IMODE(st.st_mode))

        return as_user(base, create)

    same_outcome(scenario, d, local, (4242, oct(0o755)))


def test_truncate_by_non_member_clears_setgid_even_without_group_execute(d: Path, local: Path):
    def scenario(base: Path):
        write(base / "path", b"data", 0o2766, owner=(0, 0))
        write(base / "fd", b"data", 0o2766, owner=(0, 0))

        def attempt():
            os.truncate("path", 1)
            fd = os.open("fd", os.O_WRONLY)
            try:
                os.ftruncate(fd, 2)
            finally:
                os.close(fd)

        as_user(base, attempt)
        return oct(mode_of(base / "path")), oct(mode_of(base / "fd"))

    same_outcome(scenario, d, local, (oct(0o766), oct(0o766)))


def test_chgrp_by_owner_outside_the_old_group_clears_setgid_without_group_execute(
    d: Path, local: Path
):
    def scenario(base: Path):
        write(base / "f", b"", 0o2764, owner=(NOBODY, 0))
        as_user(base, lambda: os.chown("f", -1, 4242), groups=(4242,))
        st = os.stat(base / "f")
        return st.st_gid, oct(stat.S_IMODE(st.st_mode))

    same_outcome(scenario, d, local, (4242, oct(0o764)))


def test_trusted_xattrs_are_invisible_to_unprivileged_users(d: Path, local: Path):
    def scenario(base: Path):
        f = write(base / "f", b"", 0o666)
        os.setxattr(f, "user.visible", b"u")
        os.setxattr(f, "trusted.hidden", b"t")
        return as_user(
            base,
            lambda: (
                sorted(os.listxattr("f")),
                E(errno_of(os.getxattr, "f", "trusted.hidden")),
                E(errno_of(os.setxattr, "f", "trusted.hidden", b"x")),
                E(errno_of(os.removexattr, "f", "trusted.hidden")),
            ),
        )

    same_outcome(scenario, d, local, (["user.visible"], "ENODATA", "EPERM", "EPERM"))
    assert os.getxattr(d / "f", "trusted.hidden") == b"t"
