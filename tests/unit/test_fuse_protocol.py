"""The FUSE transport without a mount: the kernel ABI of fuse/protocol.py checked against the
kernel header, and fuse/session.py's dispatch fed raw requests over a socket pair.

The layouts are compared with /usr/include/linux/fuse.h through a small C program compiled at
test time (sizeof and offsetof of every field, the values of opcodes and flags); the header
may be older than the protocol module (which targets 7.41), so names the header does not have
yet are skipped, and the one layout that changed meaning (fuse_init_out's unused[7], whose
first word became max_stack_depth in 7.40) is compared with what the header calls it.

The session tests stand a SOCK_SEQPACKET socket pair in for /dev/fuse: one message per request
and per reply, as the device gives them.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import re
import shutil
import socket
import struct
import subprocess
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
from unit_helpers import async_test

from riverfs.errors import FSError
from riverfs.fuse import protocol as p
from riverfs.fuse import session as session_module
from riverfs.fuse.operations import Operations
from riverfs.fuse.session import ACL_WANTED, WANTED, Session, Settings
from riverfs.meta import Attr

HEADER = Path("/usr/include/linux/fuse.h")

# ---- the kernel ABI -----------------------------------------------------------------------


def _names(spec: str) -> list[str]:
    return spec.split()


ATTR_FIELDS = _names(
    "ino size blocks atime mtime ctime atimensec mtimensec ctimensec mode nlink uid gid rdev "
    "blksize flags"
)


def _attr(prefix: str) -> list[str]:
    return [f"{prefix}.{f}" for f in ATTR_FIELDS]


def _header_minor() -> int:
    m = re.search(r"#define\s+FUSE_KERNEL_MINOR_VERSION\s+(\d+)", HEADER.read_text())
    return int(m.group(1)) if m else 0


def _minor_at_least(minor: int) -> bool:
    return HEADER.exists() and _header_minor() >= minor


def _init_out_tail() -> list[str]:
    # 7.40 named the first word of unused[7] max_stack_depth (same size, same offsets);
    # 7.43 put request_timeout where the padding of protocol.py starts
    if _minor_at_least(43):
        return ["max_stack_depth", "request_timeout"]
    if _minor_at_least(40):
        return ["max_stack_depth", "unused"]
    return ["unused[0]", "unused[1]"]


def _lk(prefix: str) -> list[str]:
    return [f"{prefix}.{f}" for f in ("start", "end", "type", "pid")]


# (name in protocol.py, C struct, C member per Python item, where the Python struct starts in
# the C one, where it ends: None for the end of the C struct)
LAYOUTS: list[tuple[str, str, list[str], str, str | None]] = [
    ("IN_HEADER", "fuse_in_header",
     _names("len opcode unique nodeid uid gid pid total_extlen padding"), "0", None),
    ("OUT_HEADER", "fuse_out_header", _names("len error unique"), "0", None),
    ("ATTR", "fuse_attr", ATTR_FIELDS, "0", None),
    ("ENTRY_OUT", "fuse_entry_out",
     _names("nodeid generation entry_valid attr_valid entry_valid_nsec attr_valid_nsec")
     + _attr("attr"), "0", None),
    ("ATTR_OUT", "fuse_attr_out",
     _names("attr_valid attr_valid_nsec dummy") + _attr("attr"), "0", None),
    ("FORGET_IN", "fuse_forget_in", _names("nlookup"), "0", None),
    ("BATCH_FORGET_IN", "fuse_batch_forget_in", _names("count dummy"), "0", None),
    ("FORGET_ONE", "fuse_forget_one", _names("nodeid nlookup"), "0", None),
    ("GETATTR_IN", "fuse_getattr_in", _names("getattr_flags dummy fh"), "0", None),
    ("SETATTR_IN", "fuse_setattr_in",
     _names("valid padding fh size lock_owner atime mtime ctime atimensec mtimensec ctimensec "
            "mode unused4 uid gid unused5"), "0", None),
    ("MKNOD_IN", "fuse_mknod_in", _names("mode rdev umask padding"), "0", None),
    ("MKDIR_IN", "fuse_mkdir_in", _names("mode umask"), "0", None),
    ("RENAME_IN", "fuse_rename_in", _names("newdir"), "0", None),
    ("RENAME2_IN", "fuse_rename2_in", _names("newdir flags padding"), "0", None),
    ("LINK_IN", "fuse_link_in", _names("oldnodeid"), "0", None),
    ("OPEN_IN", "fuse_open_in", _names("flags open_flags"), "0", None),
    ("CREATE_IN", "fuse_create_in", _names("flags mode umask open_flags"), "0", None),
    # the last word is `padding` up to 7.39, `backing_id` since 7.40: same place
    ("OPEN_OUT", "fuse_open_out",
     ["fh", "open_flags", "backing_id" if _minor_at_least(40) else "padding"], "0", None),
    ("RELEASE_IN", "fuse_release_in", _names("fh flags release_flags lock_owner"), "0", None),
    ("FLUSH_IN", "fuse_flush_in", _names("fh unused padding lock_owner"), "0", None),
    ("READ_IN", "fuse_read_in",
     _names("fh offset size read_flags lock_owner flags padding"), "0", None),
    ("WRITE_IN", "fuse_write_in",
     _names("fh offset size write_flags lock_owner flags padding"), "0", None),
    ("WRITE_OUT", "fuse_write_out", _names("size padding"), "0", None),
    ("STATFS_OUT", "fuse_statfs_out",
     [f"st.{f}" for f in
      _names("blocks bfree bavail files ffree bsize namelen frsize padding spare")], "0", None),
    ("FSYNC_IN", "fuse_fsync_in", _names("fh fsync_flags padding"), "0", None),
    # the compat layout (no SETXATTR_EXT): it ends where setxattr_flags begins
    ("SETXATTR_IN", "fuse_setxattr_in", _names("size flags"), "0",
     "offsetof(struct fuse_setxattr_in, setxattr_flags)"),
    ("SETXATTR_IN_EXT", "fuse_setxattr_in", _names("size flags setxattr_flags padding"), "0",
     None),
    ("GETXATTR_IN", "fuse_getxattr_in", _names("size padding"), "0", None),
    ("GETXATTR_OUT", "fuse_getxattr_out", _names("size padding"), "0", None),
    ("FILE_LOCK", "fuse_file_lock", _names("start end type pid"), "0", None),
    ("LK_IN", "fuse_lk_in", ["fh", "owner", *_lk("lk"), "lk_flags", "padding"], "0", None),
    ("LK_OUT", "fuse_lk_out", _lk("lk"), "0", None),
    ("ACCESS_IN", "fuse_access_in", _names("mask padding"), "0", None),
    # fuse_init_in in two parts: the 16 bytes every kernel sends, then what 7.36+ adds
    ("INIT_IN", "fuse_init_in", _names("major minor max_readahead flags"), "0",
     "offsetof(struct fuse_init_in, flags2)"),
    ("INIT_IN_EXT", "fuse_init_in", _names("flags2 unused"),
     "offsetof(struct fuse_init_in, flags2)", None),
    ("INIT_OUT", "fuse_init_out",
     _names("major minor max_readahead flags max_background congestion_threshold max_write "
            "time_gran max_pages map_alignment flags2") + _init_out_tail(), "0", None),
    ("INTERRUPT_IN", "fuse_interrupt_in", _names("unique"), "0", None),
    ("FALLOCATE_IN", "fuse_fallocate_in", _names("fh offset length mode padding"), "0", None),
    ("LSEEK_IN", "fuse_lseek_in", _names("fh offset whence padding"), "0", None),
    ("LSEEK_OUT", "fuse_lseek_out", _names("offset"), "0", None),
    ("COPY_FILE_RANGE_IN", "fuse_copy_file_range_in",
     _names("fh_in off_in nodeid_out fh_out off_out len flags"), "0", None),
    ("DIRENT", "fuse_dirent", _names("ino off namelen type"), "0",
     "offsetof(struct fuse_dirent, name)"),
    ("NOTIFY_INVAL_INODE_OUT", "fuse_notify_inval_inode_out", _names("ino off len"), "0",
     None),
    ("NOTIFY_INVAL_ENTRY_OUT", "fuse_notify_inval_entry_out", _names("parent namelen flags"),
     "0", None),
    ("NOTIFY_DELETE_OUT", "fuse_notify_delete_out", _names("parent child namelen padding"),
     "0", None),
]  # fmt: skip
LAYOUT_NAMES = [name for name, *_ in LAYOUTS]

# protocol.py constants named differently from the header
RENAMED = {
    "KERNEL_VERSION": "FUSE_KERNEL_VERSION",
    "COMPAT_INIT_OUT_SIZE": "FUSE_COMPAT_22_INIT_OUT_SIZE",
    "COMPAT_SETXATTR_IN_SIZE": "FUSE_COMPAT_SETXATTR_IN_SIZE",
    "COMPAT_WRITE_IN_SIZE": "FUSE_COMPAT_WRITE_IN_SIZE",
}


def _items(st: struct.Struct) -> list[tuple[int, int, bool]]:
    """(offset, size, is_padding) of each item of a native-endian, unaligned format."""
    fmt = st.format
    assert fmt[0] == "=", fmt
    out, pos = [], 1
    for m in re.finditer(r"(\d*)([xcbB?hHiIlLqQnNefdspP])", fmt[1:]):
        count = int(m.group(1) or 1)
        code = m.group(2)
        prefix = fmt[: pos + m.start()]
        if code in "xs":
            out.append((struct.calcsize(prefix), struct.calcsize(prefix + m.group(0)) -
                        struct.calcsize(prefix), code == "x"))  # fmt: skip
            continue
        for i in range(count):
            sub = prefix + f"{i}{code}" if i else prefix
            out.append((struct.calcsize(sub), struct.calcsize("=" + code), False))
    return out


def _header_constants() -> dict[str, str]:
    """Python name -> header name of every protocol.py constant the header can be asked
    about (whether this header defines it or not)."""
    names: dict[str, str] = {}
    for op in p.Op:
        names[f"Op.{op.name}"] = f"FUSE_{op.name}"
    for code in p.Notify:
        names[f"Notify.{code.name}"] = f"FUSE_NOTIFY_{code.name}"
    for flag in p.Init:
        names[f"Init.{flag.name}"] = f"FUSE_{flag.name}"
    for name, value in vars(p).items():
        if isinstance(value, int) and not isinstance(value, bool) and name.isupper():
            if name.startswith(("FOPEN_", "FATTR_", "FUSE_")):
                names[name] = name
            elif name in RENAMED:
                names[name] = RENAMED[name]
    return names


def _python_value(name: str) -> int:
    obj = p
    for part in name.split("."):
        obj = getattr(obj, part)
    return int(obj)


@pytest.fixture(scope="module")
def abi(tmp_path_factory) -> SimpleNamespace:
    """Layouts and constants as the C compiler sees them in the kernel header."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is missing (linux-libc-dev)")
    text = HEADER.read_text()
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/fuse.h>",
        '#define F(py, i, st, m) printf("F %s %d %zu %zu\\n", py, i, '
        "offsetof(struct st, m), sizeof(((struct st *)0)->m));",
        '#define R(py, base, end) printf("R %s %zu %zu\\n", py, (size_t)(base), (size_t)(end));',
        '#define C(name) printf("C %s %lld\\n", #name, (long long)(name));',
        "int main(void) {",
        'printf("V %d %d\\n", FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION);',
    ]
    for name, c_struct, members, base, end in LAYOUTS:
        for i, member in enumerate(members):
            lines.append(f'F("{name}", {i}, {c_struct}, {member})')
        lines.append(f'R("{name}", {base}, {end or f"sizeof(struct {c_struct})"})')
    wanted = set(_header_constants().values())
    # every opcode, notification code and INIT flag the header has, to check the reverse too
    opcodes = re.search(r"enum fuse_opcode \{(.*?)\};", text, re.S).group(1)
    header_ops = set(re.findall(r"\b(FUSE_\w+)\s*=", opcodes))
    notify = re.search(r"enum fuse_notify_code \{(.*?)\};", text, re.S).group(1)
    header_notify = set(re.findall(r"\b(FUSE_NOTIFY_\w+)\s*=", notify))
    init = text[text.index("INIT request/reply flags") : text.index("CUSE INIT request/reply")]
    header_init = set(re.findall(r"#define\s+(FUSE_\w+)\s+\(1(?:ULL)?\s*<<\s*\d+\)", init))
    for name in sorted(wanted | header_ops | header_notify | header_init):
        if re.search(rf"\b{name}\b", text):
            lines.append(f"C({name})")
    for n in range(0, 20):
        lines.append(
            f'printf("D {n} %zu %zu\\n", (size_t)FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + {n}), '
            f"(size_t)FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + {n}));"
        )
    lines += ["return 0;", "}"]
    work = tmp_path_factory.mktemp("fuse_abi")
    source, binary = work / "abi.c", work / "abi"
    source.write_text("\n".join(lines) + "\n")
    build = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    abi = SimpleNamespace(
        fields={},
        ranges={},
        constants={},
        dirents={},
        version=None,
        header_ops=header_ops - {n for n in header_ops if "BSWAP" in n},
        header_notify=header_notify - {"FUSE_NOTIFY_CODE_MAX"},
        header_init=header_init,
    )
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "V":
            abi.version = (int(rest[0]), int(rest[1]))
        elif kind == "F":
            abi.fields[(rest[0], int(rest[1]))] = (int(rest[2]), int(rest[3]))
        elif kind == "R":
            abi.ranges[rest[0]] = (int(rest[1]), int(rest[2]))
        elif kind == "C":
            value = int(rest[1])  # (1 << 31) is negative as a C int; every flag is a u32/u64
            abi.constants[rest[0]] = value & 0xFFFFFFFF if value < 0 else value
        elif kind == "D":
            abi.dirents[int(rest[0])] = (int(rest[1]), int(rest[2]))
    return abi


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_struct_layout_matches_the_kernel_header(abi, name):
    _, c_struct, members, _, _ = next(spec for spec in LAYOUTS if spec[0] == name)
    st = getattr(p, name)
    items = _items(st)
    assert len(items) == len(members), f"{name}: {len(items)} items for {len(members)} members"
    base, end = abi.ranges[name]
    assert end - base == st.size, f"{name} is {st.size} bytes, struct {c_struct} {end - base}"
    for i, (member, (offset, size, padding)) in enumerate(zip(members, items, strict=True)):
        c_offset, c_size = abi.fields[(name, i)]
        assert base + offset == c_offset, f"{name}.{member}: offset {offset} vs {c_offset}"
        if not padding:  # padding runs may cover part of an array or several members
            assert size == c_size, f"{name}.{member}: {size} bytes vs {c_size}"


def test_every_struct_in_protocol_is_checked():
    structs = {n for n, v in vars(p).items() if isinstance(v, struct.Struct)}
    assert structs == set(LAYOUT_NAMES)
    for name in structs:
        assert getattr(p, name).format.startswith("="), f"{name} must be native, unaligned"


def test_sizes_the_kernel_insists_on(abi):
    # what the kernel's copy_out_args and fuse_dev_do_read check, independently of offsets
    assert p.IN_HEADER.size == 40 and p.OUT_HEADER.size == 16
    assert p.ENTRY_OUT.size == 128 and p.ATTR_OUT.size == 104
    assert p.INIT_IN.size + p.INIT_IN_EXT.size == 64
    assert p.INIT_OUT.size == 64
    assert p.STATFS_OUT.size == 80
    # the compat setxattr layout until SETXATTR_EXT is agreed, the extended one after
    assert p.SETXATTR_IN.size == abi.constants["FUSE_COMPAT_SETXATTR_IN_SIZE"]
    assert p.SETXATTR_IN_EXT.size == 16


def test_constants_match_the_kernel_header(abi):
    assert abi.version[0] == p.KERNEL_VERSION
    missing = []
    for py_name, c_name in _header_constants().items():
        if c_name not in abi.constants:
            missing.append(py_name)
            continue
        assert _python_value(py_name) == abi.constants[c_name], f"{py_name} vs {c_name}"
    # only names newer than the header may be missing from it
    newer = {
        "Op.STATX",
        "Init.CREATE_SUPP_GROUP",
        "Init.DIRECT_IO_ALLOW_MMAP",
        "Init.PASSTHROUGH",
        "Init.NO_EXPORT_SUPPORT",
        "Init.HAS_RESEND",
    }
    assert set(missing) <= newer, set(missing) - newer


def test_the_header_has_nothing_protocol_lacks(abi):
    for c_name in abi.header_ops:
        if c_name.startswith("CUSE_"):
            continue
        op = p.Op[c_name.removeprefix("FUSE_")]
        assert op == abi.constants[c_name]
    for c_name in abi.header_notify:
        assert p.Notify[c_name.removeprefix("FUSE_NOTIFY_")] == abi.constants[c_name]
    for c_name in abi.header_init:
        assert p.Init[c_name.removeprefix("FUSE_")] == abi.constants[c_name]


def test_dirent_sizes_match_the_kernel_macros(abi):
    for n, (plain, plus) in abi.dirents.items():
        assert p.dirent_size(n) == plain, n
        assert p.dirent_size(n, plus=True) == plus, n


def test_body_sizes_are_the_fixed_parts_of_the_requests():
    assert p.BODY_SIZE[p.Op.INIT] == 16  # what a kernel before 7.36 sends
    assert p.BODY_SIZE[p.Op.SETXATTR] == p.COMPAT_SETXATTR_IN_SIZE
    for op in (p.Op.READ, p.Op.READDIR, p.Op.READDIRPLUS):
        assert p.BODY_SIZE[op] == p.READ_IN.size
    for op in (p.Op.GETLK, p.Op.SETLK, p.Op.SETLKW):
        assert p.BODY_SIZE[op] == p.LK_IN.size


# ---- a session over a socket pair ---------------------------------------------------------

Reply = namedtuple("Reply", "error unique body")
InitOut = namedtuple(
    "InitOut",
    "major minor max_readahead flags max_background congestion_threshold max_write time_gran "
    "max_pages map_alignment flags2 max_stack_depth",
)


def agreed_by(offered: int) -> int:
    """The INIT flags riverfs agrees to: DONT_MASK only with POSIX_ACL (it applies the umask
    itself only where it also inherits default ACLs)."""
    full = int(WANTED | ACL_WANTED)
    wanted = full if offered & I.POSIX_ACL else full & ~I.DONT_MASK
    return offered & wanted


def request(opcode, body=b"", unique=2, nodeid=1, length=None, extlen=0) -> bytes:
    size = p.IN_HEADER.size + len(body)
    header = p.IN_HEADER.pack(size if length is None else length, opcode, unique, nodeid,
                              1000, 1000, 4242, extlen, 0)  # fmt: skip
    return header + bytes(body)


def init_body(minor, flags=0, flags2=None, major=7, max_readahead=128 << 10) -> bytes:
    body = p.INIT_IN.pack(major, minor, max_readahead, flags & 0xFFFFFFFF)
    if flags2 is not None:  # a 7.36+ kernel sends the whole 64-byte fuse_init_in
        body += p.INIT_IN_EXT.pack(flags2)
    return body


def bits(*flags) -> int:
    out = 0
    for f in flags:
        out |= int(f)
    return out


I = p.Init  # noqa: E741
OFFERED_7_12 = bits(I.ASYNC_READ, I.POSIX_LOCKS, I.ATOMIC_O_TRUNC, I.EXPORT_SUPPORT,
                    I.BIG_WRITES, I.DONT_MASK)  # fmt: skip
OFFERED_7_22 = OFFERED_7_12 | bits(I.SPLICE_WRITE, I.SPLICE_MOVE, I.SPLICE_READ, I.FLOCK_LOCKS,
                                   I.HAS_IOCTL_DIR, I.AUTO_INVAL_DATA, I.DO_READDIRPLUS,
                                   I.READDIRPLUS_AUTO, I.ASYNC_DIO)  # fmt: skip
OFFERED_7_31 = (1 << 27) - 1  # everything up to MAP_ALIGNMENT
OFFERED_7_38 = (1 << 31) - 1  # everything up to INIT_EXT
OFFERED2_7_38 = bits(I.SECURITY_CTX, I.HAS_INODE_DAX, I.CREATE_SUPP_GROUP, I.HAS_EXPIRE_ONLY) >> 32


class Kernel:
    """The kernel's end of a SOCK_SEQPACKET pair whose other end the session serves."""

    def __init__(self, handlers=None, settings=None) -> None:
        self.sock, dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.setblocking(False)
        settings = settings or Settings(posix_acl=True)  # as riverfs's mount asks
        self.session = Session(dev.detach(), dict(handlers or {}), settings)
        self._uniques = itertools.count(2, 2)  # the kernel's uniques are even

    async def __aenter__(self) -> Kernel:
        self.session.start()
        return self

    async def __aexit__(self, *exc) -> None:
        self.session.stop()
        await self.session.drain(timeout=0.5)
        self.session.close()
        self.sock.close()

    def next_unique(self) -> int:
        return next(self._uniques)

    def send(self, opcode, body=b"", **header) -> int:
        """Dispatch one request directly; returns its unique."""
        unique = header.pop("unique", None) or self.next_unique()
        self.session.dispatch(request(opcode, body, unique=unique, **header))
        return unique

    def write(self, opcode, body=b"", **header) -> int:
        """Hand one request to the session's read loop (through the socket)."""
        unique = header.pop("unique", None) or self.next_unique()
        self.sock.send(request(opcode, body, unique=unique, **header))
        return unique

    def reply_now(self) -> Reply | None:
        try:
            msg = self.sock.recv(4 << 20)
        except BlockingIOError:
            return None
        return self._parse(msg)

    async def reply(self, timeout: float = 5.0) -> Reply:
        loop = asyncio.get_running_loop()
        msg = await asyncio.wait_for(loop.sock_recv(self.sock, 4 << 20), timeout)
        return self._parse(msg)

    async def reply_or_none(self, timeout: float) -> Reply | None:
        try:
            return await self.reply(timeout)
        except TimeoutError:
            return None

    async def silent(self, delay: float = 0.05) -> bool:
        """True if no reply arrives within `delay`."""
        await asyncio.sleep(delay)
        return self.reply_now() is None

    @staticmethod
    def _parse(msg: bytes) -> Reply:
        length, error, unique = p.OUT_HEADER.unpack_from(msg)
        assert length == len(msg), f"out header says {length} bytes, message has {len(msg)}"
        body = msg[p.OUT_HEADER.size :]
        if error:
            assert body == b"", "an error reply is the header alone"
        return Reply(error, unique, body)

    async def init(self, minor=38, flags=OFFERED_7_38, flags2=OFFERED2_7_38, **kw) -> Reply:
        unique = self.send(p.Op.INIT, init_body(minor, flags, flags2, **kw))
        reply = self.reply_now()
        assert reply is not None and reply.unique == unique
        return reply


def init_out(body: bytes) -> InitOut:
    return InitOut(*p.INIT_OUT.unpack(body + bytes(p.INIT_OUT.size - len(body))))


def answer(data):
    async def handler(req, body):
        return data

    return handler


# -- INIT


@pytest.mark.parametrize(
    ("minor", "offered"), [(12, OFFERED_7_12), (22, OFFERED_7_22)], ids=["7.12", "7.22"]
)
@async_test
async def test_init_with_an_old_minor_gets_the_24_byte_reply(minor, offered):
    async with Kernel() as k:
        reply = await k.init(minor, offered, None)
        assert reply.error == 0
        assert len(reply.body) == p.COMPAT_INIT_OUT_SIZE == 24
        out = init_out(reply.body)
        assert (out.major, out.minor) == (7, minor)
        assert out.max_readahead == 128 << 10
        assert out.flags == agreed_by(offered)
        assert not out.flags & ~offered
        assert out.max_write == 128 << 10  # no MAX_PAGES before 7.28: the kernel's limit
        assert out.max_background == 64 and out.congestion_threshold == 48
        assert k.session.proto_minor == minor
        assert k.session.initialized.done()
        # the kernel refuses to read into a buffer smaller than this (fuse_dev_do_read)
        need = p.IN_HEADER.size + p.WRITE_IN.size + out.max_write
        assert k.session._bufsize >= max(p.FUSE_MIN_READ_BUFFER, need)


@async_test
async def test_init_7_31_gets_the_full_reply_without_flags2():
    async with Kernel() as k:
        reply = await k.init(31, OFFERED_7_31, None)
        assert reply.error == 0 and len(reply.body) == 64
        out = init_out(reply.body)
        assert (out.major, out.minor) == (7, 31)
        assert out.flags == agreed_by(OFFERED_7_31)
        assert not out.flags & I.INIT_EXT and out.flags2 == 0
        assert out.max_write == 1 << 20 and out.max_pages == 256
        assert out.time_gran == 1 and out.map_alignment == 0
        for flag in (I.ASYNC_READ, I.POSIX_LOCKS, I.FLOCK_LOCKS, I.PARALLEL_DIROPS,
                     I.READDIRPLUS_AUTO, I.CACHE_SYMLINKS, I.EXPLICIT_INVAL_DATA):  # fmt: skip
            assert out.flags & flag, flag.name
        assert not out.flags & I.WRITEBACK_CACHE  # opt-in only


@pytest.mark.parametrize("minor", [36, 38, 41, 45])
@async_test
async def test_init_with_init_ext_reads_and_answers_flags2(monkeypatch, minor):
    # riverfs wants no flag above bit 31 today; want one to see flags2 travel both ways
    wanted = WANTED | I.HAS_EXPIRE_ONLY
    monkeypatch.setattr(session_module, "WANTED", wanted)
    async with Kernel() as k:
        reply = await k.init(minor, OFFERED_7_38 | I.INIT_EXT, OFFERED2_7_38)
        assert reply.error == 0 and len(reply.body) == 64
        out = init_out(reply.body)
        assert (out.major, out.minor) == (7, min(minor, p.KERNEL_MINOR_VERSION))
        assert out.flags & I.INIT_EXT
        assert out.flags == (OFFERED_7_38 & int(wanted | ACL_WANTED)) | I.INIT_EXT
        assert out.flags2 == int(I.HAS_EXPIRE_ONLY) >> 32
        assert k.session.agreed & I.HAS_EXPIRE_ONLY
        assert not k.session.agreed & (I.SECURITY_CTX | I.HAS_INODE_DAX | I.CREATE_SUPP_GROUP)
        assert out.max_write == 1 << 20 and out.max_pages == 256
        assert out.max_stack_depth == 0
        assert k.session.proto_minor == min(minor, p.KERNEL_MINOR_VERSION)


@async_test
async def test_init_without_init_ext_ignores_the_flags2_word(monkeypatch):
    monkeypatch.setattr(session_module, "WANTED", WANTED | I.HAS_EXPIRE_ONLY)
    async with Kernel() as k:
        reply = await k.init(38, OFFERED_7_38 & ~int(I.INIT_EXT), OFFERED2_7_38)
        out = init_out(reply.body)
        assert out.flags2 == 0 and not out.flags & I.INIT_EXT
        assert not k.session.agreed & I.HAS_EXPIRE_ONLY


@async_test
async def test_init_agrees_to_nothing_that_changes_the_layouts():
    async with Kernel() as k:
        out = init_out((await k.init()).body)
        assert out.flags2 == 0
        assert out.flags & I.HANDLE_KILLPRIV_V2 and out.flags & I.MAX_PAGES
        # SECURITY_CTX and CREATE_SUPP_GROUP add request extensions the handlers do not parse
        for flag in (I.SECURITY_CTX, I.CREATE_SUPP_GROUP, I.WRITEBACK_CACHE):
            assert not k.session.agreed & flag, flag.name
        # POSIX ACLs: the umask unapplied, and the 16-byte fuse_setxattr_in that says whether
        # an ACL's setter keeps setgid (Operations.initialized switches its layout)
        for flag in (I.POSIX_ACL, I.DONT_MASK, I.SETXATTR_EXT):
            assert k.session.agreed & flag, flag.name


@async_test
async def test_init_without_posix_acl_keeps_the_kernel_applying_the_umask():
    """A filesystem that stores no ACLs (benchmarks/memfs.py) asks for none of it."""
    async with Kernel(settings=Settings()) as k:
        await k.init()
        for flag in (I.POSIX_ACL, I.DONT_MASK, I.SETXATTR_EXT):
            assert not k.session.agreed & flag, flag.name


@async_test
async def test_init_writeback_cache_when_asked():
    async with Kernel(settings=Settings(writeback_cache=True)) as k:
        out = init_out((await k.init()).body)
        assert out.flags & I.WRITEBACK_CACHE


@pytest.mark.parametrize(
    ("max_write", "offered", "want_write", "want_pages"),
    [
        (256 << 10, OFFERED_7_31, 256 << 10, 64),
        (1 << 20, OFFERED_7_31 & ~int(I.MAX_PAGES), 128 << 10, 0),
        (64 << 10, OFFERED_7_31 & ~int(I.MAX_PAGES), 64 << 10, 0),
        (1 << 20, OFFERED_7_31, 1 << 20, 256),
    ],
)
@async_test
async def test_init_max_write_and_max_pages(max_write, offered, want_write, want_pages):
    async with Kernel(settings=Settings(max_write=max_write)) as k:
        out = init_out((await k.init(31, offered, None)).body)
        assert out.max_write == want_write and out.max_pages == want_pages
        assert bool(out.flags & I.MAX_PAGES) == bool(want_pages)
        need = p.IN_HEADER.size + p.WRITE_IN.size + out.max_write
        assert k.session._bufsize >= max(p.FUSE_MIN_READ_BUFFER, need)


@async_test
async def test_init_major_8_asks_for_7():
    async with Kernel() as k:
        reply = await k.init(0, 0, None, major=8)
        assert reply.error == 0 and len(reply.body) == 64
        out = init_out(reply.body)
        assert (out.major, out.minor) == (7, p.KERNEL_MINOR_VERSION)
        assert not k.session.initialized.done()
        # the kernel then retries with major 7
        reply = await k.init()
        assert reply.error == 0 and init_out(reply.body).minor == 38
        assert k.session.initialized.done()


@pytest.mark.parametrize(("major", "minor"), [(6, 99), (7, 11), (7, 0)])
@async_test
async def test_init_too_old_is_eproto_and_ends_the_session(major, minor):
    async with Kernel() as k:
        reply = await k.init(minor, OFFERED_7_12, None, major=major)
        assert reply.error == -errno.EPROTO
        assert not k.session._reading
        await asyncio.wait_for(k.session.wait_closed(), 1)


@async_test
async def test_init_with_a_short_body_is_einval():
    async with Kernel() as k:
        unique = k.send(p.Op.INIT, struct.pack("=II", 7, 38))
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        assert not k.session.initialized.done()


# -- what is answered how


@pytest.mark.parametrize("opcode", [9999, 7, 19, p.Op.BMAP, p.Op.IOCTL, p.Op.POLL, p.Op.STATX])
@async_test
async def test_unknown_opcodes_are_answered_enosys(opcode):
    async with Kernel({p.Op.GETATTR: answer(b"x")}) as k:
        unique = k.send(opcode, bytes(64))
        assert k.reply_now() == Reply(-errno.ENOSYS, unique, b"")
        unique = k.send(p.Op.GETATTR, bytes(16))  # and the session goes on
        assert k.reply_now() == Reply(0, unique, b"x")


@async_test
async def test_forgets_are_never_answered():
    async with Kernel() as k:
        k.send(p.Op.FORGET, p.FORGET_IN.pack(3), nodeid=5)
        body = p.BATCH_FORGET_IN.pack(2, 0) + p.FORGET_ONE.pack(5, 1) + p.FORGET_ONE.pack(6, 2)
        k.send(p.Op.BATCH_FORGET, body)
        assert await k.silent()
    forgotten = []

    async def forget(req, body):
        forgotten.append(req.nodeid)
        await asyncio.sleep(0)  # also when it finishes in a task
        return None

    async with Kernel({p.Op.FORGET: forget, p.Op.BATCH_FORGET: forget}) as k:
        k.send(p.Op.FORGET, p.FORGET_IN.pack(3), nodeid=5)
        k.send(p.Op.BATCH_FORGET, body)
        assert await k.silent()
        assert forgotten == [5, 1]


@pytest.mark.parametrize("size", [0, 1, 16, p.IN_HEADER.size - 1])
@async_test
async def test_a_short_request_is_ignored(size):
    async with Kernel({p.Op.GETATTR: answer(b"ok")}) as k:
        k.session.dispatch(request(p.Op.GETATTR, bytes(16), unique=8)[:size])
        assert await k.silent(0.01)
        unique = k.send(p.Op.GETATTR, bytes(16))
        assert k.reply_now() == Reply(0, unique, b"ok")


@async_test
async def test_a_short_request_through_the_read_loop_does_not_end_it():
    async with Kernel({p.Op.GETATTR: answer(b"ok")}) as k:
        k.sock.send(b"\x01\x02\x03")
        unique = k.write(p.Op.GETATTR, bytes(16))
        assert await k.reply() == Reply(0, unique, b"ok")
        assert k.session._reading


@pytest.mark.parametrize(
    "header",
    [
        {"length": p.IN_HEADER.size + 16 + 8},  # longer than what was read
        {"length": p.IN_HEADER.size + 8},  # shorter
        {"length": 0},
        {"extlen": 8},  # extensions longer than the request
    ],
    ids=["long", "short", "zero", "extlen"],
)
@async_test
async def test_a_header_whose_length_disagrees_is_eio(header):
    called = []

    async def getattr_(req, body):
        called.append(req.unique)
        return b"ok"

    async with Kernel({p.Op.GETATTR: getattr_}) as k:
        unique = k.send(p.Op.GETATTR, bytes(16), **header)
        assert k.reply_now() == Reply(-errno.EIO, unique, b"")
        assert called == []
        unique = k.send(p.Op.GETATTR, bytes(16))
        assert k.reply_now() == Reply(0, unique, b"ok")


@async_test
async def test_extensions_are_cut_from_the_body():
    seen = []

    async def lookup(req, body):
        seen.append(bytes(body))
        return b""

    async with Kernel({p.Op.LOOKUP: lookup}) as k:
        unique = k.send(p.Op.LOOKUP, b"name\0\0\0\0" + b"E" * 16, extlen=2)
        assert k.reply_now() == Reply(0, unique, b"")
        assert seen == [b"name\0\0\0\0"]


@pytest.mark.parametrize(
    ("opcode", "size"),
    [(p.Op.GETATTR, 8), (p.Op.READ, 24), (p.Op.WRITE, 39), (p.Op.SETLKW, 40),
     (p.Op.INTERRUPT, 4), (p.Op.SETATTR, 0), (p.Op.CREATE, 12), (p.Op.INIT, 12)],
)  # fmt: skip
@async_test
async def test_a_body_shorter_than_its_struct_is_einval(opcode, size):
    called = []

    async def handler(req, body):
        called.append(req.opcode)
        return b""

    builtin = (p.Op.INTERRUPT, p.Op.INIT)  # served by the session itself
    async with Kernel({} if opcode in builtin else {opcode: handler}) as k:
        unique = k.send(opcode, bytes(size))
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        assert called == []


# -- replies and errors from handlers


@async_test
async def test_replies_in_several_buffers_are_one_message():
    data = bytearray(b"abc")
    async with Kernel({p.Op.READ: answer([b"hello ", memoryview(b"world"), data])}) as k:
        unique = k.send(p.Op.READ, bytes(40))
        assert k.reply_now() == Reply(0, unique, b"hello worldabc")


@async_test
async def test_a_reply_of_more_buffers_than_iov_max_is_still_one_message():
    pieces = [bytes([i % 251]) * 3 for i in range(3000)]
    async with Kernel({p.Op.READDIR: answer(pieces)}) as k:
        unique = k.send(p.Op.READDIR, bytes(p.READ_IN.size))
        assert k.reply_now() == Reply(0, unique, b"".join(pieces))


@async_test
async def test_fserror_becomes_minus_errno_inline_and_in_a_task():
    async def fail_now(req, body):
        raise FSError(errno.EACCES)

    async def fail_later(req, body):
        await asyncio.sleep(0.01)
        raise FSError(errno.ENOSPC, "full")

    async with Kernel({p.Op.GETATTR: fail_now, p.Op.WRITE: fail_later}) as k:
        unique = k.send(p.Op.GETATTR, bytes(16))
        assert k.reply_now() == Reply(-errno.EACCES, unique, b"")
        unique = k.send(p.Op.WRITE, bytes(40))
        assert k.reply_now() is None
        assert await k.reply() == Reply(-errno.ENOSPC, unique, b"")


@async_test
async def test_an_unexpected_exception_is_eio_and_the_session_goes_on(caplog):
    async def broken_now(req, body):
        raise KeyError("bug")

    async def broken_later(req, body):
        await asyncio.sleep(0.01)
        raise ZeroDivisionError

    handlers = {p.Op.GETATTR: broken_now, p.Op.WRITE: broken_later, p.Op.STATFS: answer(b"s")}
    async with Kernel(handlers) as k:
        unique = k.send(p.Op.GETATTR, bytes(16))
        assert k.reply_now() == Reply(-errno.EIO, unique, b"")
        unique = k.send(p.Op.WRITE, bytes(40))
        assert await k.reply() == Reply(-errno.EIO, unique, b"")
        unique = k.send(p.Op.STATFS)
        assert k.reply_now() == Reply(0, unique, b"s")
        assert k.session._reading and not k.session._tasks
    assert "failed unexpectedly" in caplog.text


@async_test
async def test_a_handler_that_waits_is_answered_from_its_task():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    steps = []

    async def read(req, body):
        steps.append("first")
        await asyncio.sleep(0)
        steps.append("after sleep(0)")
        value = await fut
        steps.append("after the future")
        await asyncio.sleep(0.01)
        return b"got " + value

    async with Kernel({p.Op.READ: read}) as k:
        unique = k.send(p.Op.READ, bytes(40))
        assert steps == ["first"]  # the first step ran inline
        assert k.reply_now() is None and unique in k.session._tasks
        await asyncio.sleep(0.01)
        assert steps == ["first", "after sleep(0)"]
        fut.set_result(b"it")
        assert await k.reply() == Reply(0, unique, b"got it")
        assert steps[-1] == "after the future"
        assert not k.session._tasks and k.session._bounded == 0


@async_test
async def test_requests_through_the_read_loop():
    async def slow(req, body):
        await asyncio.sleep(0.02)
        return b"slow"

    async with Kernel({p.Op.READ: slow, p.Op.GETATTR: answer(b"fast")}) as k:
        k.sock.send(request(p.Op.INIT, init_body(38, OFFERED_7_38, OFFERED2_7_38), unique=2))
        assert (await k.reply()).unique == 2
        k.write(p.Op.READ, bytes(40), unique=4)
        k.write(p.Op.GETATTR, bytes(16), unique=6)
        first, second = await k.reply(), await k.reply()
        assert (first.unique, first.body) == (6, b"fast")  # answered inline, before the READ
        assert (second.unique, second.body) == (4, b"slow")


# -- interrupts


@async_test
async def test_interrupt_cancels_a_waiting_setlkw_with_eintr():
    gate = asyncio.Event()
    cancelled = []

    async def setlkw(req, body):
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(req.unique)
            raise
        return b""

    async with Kernel({p.Op.SETLKW: setlkw}) as k:
        unique = k.send(p.Op.SETLKW, bytes(p.LK_IN.size))
        assert await k.silent(0.01)
        k.send(p.Op.INTERRUPT, p.INTERRUPT_IN.pack(unique), unique=unique | 1)
        reply = await k.reply()
        assert reply == Reply(-errno.EINTR, unique, b"")
        assert cancelled == [unique]
        assert await k.silent(), "INTERRUPT itself has no reply"
        assert not k.session._tasks and not k.session._interrupted


@async_test
async def test_interrupt_right_after_the_request_still_answers_eintr():
    gate = asyncio.Event()

    async def setlkw(req, body):
        await gate.wait()
        return b""

    async with Kernel({p.Op.SETLKW: setlkw}) as k:
        unique = k.send(p.Op.SETLKW, bytes(p.LK_IN.size))
        # no await in between: the kernel's INTERRUPT comes in the same read burst
        k.send(p.Op.INTERRUPT, p.INTERRUPT_IN.pack(unique), unique=unique | 1)
        assert await k.reply_or_none(0.5) == Reply(-errno.EINTR, unique, b"")
        assert not k.session._tasks


@async_test
async def test_interrupt_in_the_same_read_burst_keeps_the_bound_right():
    gate = asyncio.Event()

    async def read(req, body):
        await gate.wait()
        return b"data"

    async with Kernel({p.Op.READ: read}, Settings(max_in_flight=4)) as k:
        # through the read loop: both messages are waiting when the fd becomes readable
        unique = k.write(p.Op.READ, bytes(p.READ_IN.size))
        k.write(p.Op.INTERRUPT, p.INTERRUPT_IN.pack(unique), unique=unique | 1)
        assert await k.reply_or_none(0.5) == Reply(-errno.EINTR, unique, b"")
        assert k.session._bounded == 0 and not k.session._tasks


@async_test
async def test_interrupt_of_a_request_not_safe_to_abandon_lets_it_finish():
    gate = asyncio.Event()

    async def write(req, body):
        await gate.wait()
        return p.WRITE_OUT.pack(7, 0)

    async with Kernel({p.Op.WRITE: write}) as k:
        unique = k.send(p.Op.WRITE, bytes(p.WRITE_IN.size))
        k.send(p.Op.INTERRUPT, p.INTERRUPT_IN.pack(unique), unique=unique | 1)
        assert await k.silent(0.02)
        gate.set()
        assert await k.reply() == Reply(0, unique, p.WRITE_OUT.pack(7, 0))


@async_test
async def test_interrupt_of_an_unknown_request_is_ignored():
    async with Kernel({p.Op.GETATTR: answer(b"a")}) as k:
        k.send(p.Op.INTERRUPT, p.INTERRUPT_IN.pack(1234), unique=4321)
        assert await k.silent(0.01)
        unique = k.send(p.Op.GETATTR, bytes(16))
        assert k.reply_now() == Reply(0, unique, b"a")


@async_test
async def test_drain_cancels_what_is_left_with_eio():
    async def stuck(req, body):
        await asyncio.Event().wait()

    k = Kernel({p.Op.READ: stuck})
    async with k:
        unique = k.send(p.Op.READ, bytes(40))
        k.session.stop()
        await k.session.drain(timeout=0.02)
        assert await k.reply() == Reply(-errno.EIO, unique, b"")


# -- back-pressure


@async_test
async def test_back_pressure_stops_reading_at_the_bound_and_resumes():
    gate = asyncio.Event()
    started = []

    async def wait(req, body):
        started.append(req.unique)
        await gate.wait()
        return b"done"

    loop = asyncio.get_running_loop()
    async with Kernel({p.Op.READ: wait}, Settings(max_in_flight=2)) as k:
        fd = k.session.fd
        k.write(p.Op.READ, bytes(40), unique=2)
        await asyncio.sleep(0.01)
        assert started == [2] and k.session._reading
        k.write(p.Op.READ, bytes(40), unique=4)
        k.write(p.Op.READ, bytes(40), unique=6)  # waits in the "device"
        await asyncio.sleep(0.02)
        assert started == [2, 4], "the third request must stay unread"
        assert not k.session._reading and k.session._bounded == 2
        assert not loop.remove_reader(fd), "the fd must not be watched at the bound"
        gate.set()
        replies = {(await k.reply()).unique for _ in range(3)}
        assert replies == {2, 4, 6}
        assert started == [2, 4, 6]
        assert k.session._reading and k.session._bounded == 0


@async_test
async def test_back_pressure_with_direct_dispatch():
    gate = asyncio.Event()

    async def wait(req, body):
        await gate.wait()
        return b""

    async with Kernel({p.Op.READ: wait}, Settings(max_in_flight=2)) as k:
        k.send(p.Op.READ, bytes(40))
        assert k.session._reading
        k.send(p.Op.READ, bytes(40))
        assert not k.session._reading
        gate.set()
        await k.reply()
        assert k.session._reading  # one below the bound again
        await k.reply()


@async_test
async def test_lock_waits_do_not_count_against_the_bound():
    gate = asyncio.Event()

    async def wait(req, body):
        await gate.wait()
        return b""

    async with Kernel({p.Op.SETLKW: wait, p.Op.READ: wait}, Settings(max_in_flight=2)) as k:
        for _ in range(5):
            k.send(p.Op.SETLKW, bytes(p.LK_IN.size))
        assert k.session._reading and k.session._bounded == 0
        k.send(p.Op.READ, bytes(40))
        k.send(p.Op.READ, bytes(40))
        assert not k.session._reading
        gate.set()
        for _ in range(7):
            await k.reply()
        assert k.session._reading and not k.session._tasks


# -- notifications


def test_notifications_are_written_as_the_kernel_parses_them():
    kernel, dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    kernel.settimeout(5)
    notifier = session_module.Notifier(dev.fileno())
    notifier.start()
    try:
        notifier.forget_entry(7, b"name")
        notifier.forget_inode(8, data=False)
        notifier.forget_inode(9, data=True)
        notifier.forget_range(10, 4096, 8192)
        msgs = [kernel.recv(1 << 16) for _ in range(4)]
    finally:
        notifier.stop()
        kernel.close()
        dev.close()
    for msg in msgs:
        length, code, unique = p.OUT_HEADER.unpack_from(msg)
        assert length == len(msg) and unique == 0
    entry = msgs[0]
    assert p.OUT_HEADER.unpack_from(entry)[1] == p.Notify.INVAL_ENTRY
    # fuse_notify_inval_entry: size == sizeof(outarg) + namelen + 1
    assert len(entry) == p.OUT_HEADER.size + p.NOTIFY_INVAL_ENTRY_OUT.size + 4 + 1
    assert p.NOTIFY_INVAL_ENTRY_OUT.unpack_from(entry, 16) == (7, 4, 0)
    assert entry.endswith(b"name\0")
    inodes = [p.NOTIFY_INVAL_INODE_OUT.unpack_from(m, 16) for m in msgs[1:]]
    for m in msgs[1:]:  # fuse_notify_inval_inode: size == sizeof(outarg)
        assert p.OUT_HEADER.unpack_from(m)[1] == p.Notify.INVAL_INODE
        assert len(m) == p.OUT_HEADER.size + p.NOTIFY_INVAL_INODE_OUT.size
    assert inodes == [(8, -1, 0), (9, 0, 0), (10, 4096, 8192)]  # off < 0: attributes only


# -- through Operations, with a stub VFS


def make_attr(inode: int, mode: int = 0o100644) -> Attr:
    t = 1_700_000_000_123_456_789
    return Attr(inode=inode, mode=mode, nlink=1, uid=1000, gid=1000, rdev=0, size=5,
                stored=5, atime=t, mtime=t, ctime=t, parent=1)  # fmt: skip


class StubVFS:
    """The few VFS calls these requests make."""

    def __init__(self) -> None:
        self.remembered: list[int] = []
        self.calls: list[str] = []

    async def lookup(self, parent: int, name: bytes) -> Attr:
        self.calls.append("lookup")
        if name == b"missing":
            raise FSError(errno.ENOENT)
        await asyncio.sleep(0)
        return make_attr(42)

    async def getattr(self, inode: int) -> Attr:
        self.calls.append("getattr")
        return make_attr(inode)

    async def write(self, fh, offset, data, *rest) -> int:
        self.calls.append("write")
        return len(data)

    async def rename(self, *args) -> None:
        self.calls.append("rename")

    def remember(self, inode: int) -> None:
        self.remembered.append(inode)


def operations_kernel() -> tuple[Kernel, StubVFS]:
    vfs = StubVFS()
    ops = Operations(vfs, SimpleNamespace(entry_timeout=1.0, attr_timeout=1.5))
    return Kernel(ops.handlers()), vfs


@async_test
async def test_lookup_through_operations():
    k, vfs = operations_kernel()
    async with k:
        unique = k.send(p.Op.LOOKUP, b"name\0")
        reply = await k.reply()
        assert reply.error == 0 and reply.unique == unique
        assert len(reply.body) == p.ENTRY_OUT.size
        fields = p.ENTRY_OUT.unpack(reply.body)
        assert fields[:6] == (42, 0, 1, 1, 0, 500_000_000)
        assert fields[6] == 42 and fields[7] == 5  # attr.ino, attr.size
        assert fields[9] == 1_700_000_000 and fields[12] == 123_456_789  # atime, atimensec
        assert vfs.remembered == [42]


@async_test
async def test_lookup_without_its_nul_is_einval():
    k, vfs = operations_kernel()
    async with k:
        unique = k.send(p.Op.LOOKUP, b"name")
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        unique = k.send(p.Op.LOOKUP, b"")
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        assert vfs.calls == [] and vfs.remembered == []


@async_test
async def test_lookup_error_becomes_minus_errno():
    k, vfs = operations_kernel()
    async with k:
        unique = k.send(p.Op.LOOKUP, b"missing\0")
        assert k.reply_now() == Reply(-errno.ENOENT, unique, b"")
        assert vfs.remembered == []


@async_test
async def test_getattr_through_operations_and_too_short():
    k, vfs = operations_kernel()
    async with k:
        unique = k.send(p.Op.GETATTR, bytes(8), nodeid=9)
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        assert vfs.calls == []
        unique = k.send(p.Op.GETATTR, p.GETATTR_IN.pack(0, 0, 0), nodeid=9)
        reply = k.reply_now()
        assert reply.error == 0 and reply.unique == unique
        assert len(reply.body) == p.ATTR_OUT.size
        valid, valid_ns, _, ino = p.ATTR_OUT.unpack(reply.body)[:4]
        assert (valid, valid_ns, ino) == (1, 500_000_000, 9)


@async_test
async def test_malformed_bodies_through_operations_are_einval():
    k, vfs = operations_kernel()
    async with k:
        # a WRITE that claims more data than it carries
        unique = k.send(p.Op.WRITE, p.WRITE_IN.pack(1, 0, 100, 0, 0, 0, 0) + b"x" * 10)
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        # a RENAME with one name only
        unique = k.send(p.Op.RENAME, p.RENAME_IN.pack(1) + b"old\0")
        assert k.reply_now() == Reply(-errno.EINVAL, unique, b"")
        assert vfs.calls == []
        unique = k.send(p.Op.WRITE, p.WRITE_IN.pack(1, 0, 3, 0, 0, 0, 0) + b"abc")
        assert k.reply_now() == Reply(0, unique, p.WRITE_OUT.pack(3, 0))


@async_test
async def test_unknown_flags_are_refused_before_any_vfs_call():
    """The kernel filters flags first, but riverfs never drops one it does not know either:
    an unknown setattr valid bit, rename, setxattr or copy_file_range flag is EINVAL."""
    k, vfs = operations_kernel()
    async with k:
        setattr_in = bytearray(p.SETATTR_IN.size)
        struct.pack_into("=I", setattr_in, 0, p.FATTR_MODE | 1 << 20)
        requests = [
            (p.Op.SETATTR, bytes(setattr_in)),
            (p.Op.RENAME2, p.RENAME2_IN.pack(1, 1 << 3, 0) + b"a\0b\0"),
            (p.Op.SETXATTR, p.SETXATTR_IN.pack(1, 4) + b"user.a\0x"),
            (p.Op.COPY_FILE_RANGE, p.COPY_FILE_RANGE_IN.pack(1, 0, 2, 3, 0, 10, 1)),
        ]
        for op, body in requests:
            unique = k.send(op, body)
            assert k.reply_now() == Reply(-errno.EINVAL, unique, b""), op
        assert vfs.calls == []
