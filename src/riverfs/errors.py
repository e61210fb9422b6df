"""The two kinds of error every layer speaks.

`FSError` carries an errno: raised by meta/chunk/vfs, answered as that errno by the FUSE
transport (fuse/session.py). `RiverError` is a problem the user must fix (bad URL, unformatted
volume, ...): the CLI prints its message as one line and exits non-zero.
"""

from __future__ import annotations

import errno as _errno


class FSError(Exception):
    """A filesystem operation failed with `errno`."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(errno, message or _errno.errorcode.get(errno, str(errno)))
        self.errno = errno
        self.message = message

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{name}: {self.message}" if self.message else name


class RiverError(Exception):
    """A user-facing error: its message says what is wrong and what to do."""
