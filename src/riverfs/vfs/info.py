"""What `riverfs info` shows about an inode, computed inside the mount (vfs/introspect.py
serves it as the `riverfs.info` virtual xattr)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from riverfs.vfs.fs import VFS


async def describe(vfs: VFS, inode: int, first_block: int, limit: int) -> dict:
    """The inode's description as JSON-ready data, at most `limit` bytes once encoded."""
    attr = await vfs.meta.getattr(inode, fresh=True)
    return {"inode": attr.inode, "size": attr.size, "nlink": attr.nlink}
