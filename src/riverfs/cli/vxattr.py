"""Asking a mount's daemon through a virtual extended attribute (vfs/introspect.py).

One getxattr call with a buffer large enough for any answer, so the daemon computes the
answer once: os.getxattr asks with 128 bytes first and, for a longer value, asks again.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

XATTR_SIZE_MAX = 65536  # the kernel's limit on one xattr value

_libc = ctypes.CDLL(None, use_errno=True)
for _call in (_libc.getxattr, _libc.lgetxattr):
    _call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    _call.restype = ctypes.c_ssize_t


def ask(path: str | Path, name: str, size: int = XATTR_SIZE_MAX, follow: bool = True) -> bytes:
    """The value of xattr `name` of `path` in one request (OSError as os.getxattr raises)."""
    buf = ctypes.create_string_buffer(size)
    call = _libc.getxattr if follow else _libc.lgetxattr
    n = call(os.fsencode(path), name.encode(), buf, size)
    if n < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    return buf.raw[:n]
