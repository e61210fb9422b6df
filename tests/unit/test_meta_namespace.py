"""meta/engine.py on both engines: the namespace (create, lookup, unlink, rename, links...)."""

from __future__ import annotations

import errno
import random
import stat

import pytest
from unit_helpers import DIR, FILE, ROOT, async_test, meta_url, new_meta, sql_all

from riverfs.errors import FSError
from riverfs.meta.engine import RENAME_EXCHANGE, RENAME_NOREPLACE
from riverfs.meta.slices import Slice

pytestmark = pytest.mark.usefixtures("meta_engine")


def never(_inode: int) -> bool:
    return False


def always(_inode: int) -> bool:
    return True


async def expect_errno(code: int, coro) -> None:
    with pytest.raises(FSError) as info:
        await coro
    assert info.value.errno == code, (
        f"{errno.errorcode[info.value.errno]} != {errno.errorcode[code]}"
    )


async def names(meta, parent: int) -> list[bytes]:
    return sorted(e.name for e in await meta.readdir(parent, 0, 10_000))


async def nlink(meta, inode: int) -> int:
    return (await meta.getattr(inode)).nlink


@async_test
async def test_format_makes_an_empty_root_directory(tmp_path):
    meta = await new_meta(tmp_path)
    root = await meta.getattr(ROOT)
    assert root.is_dir and root.nlink == 2 and root.parent == ROOT
    assert await meta.readdir(ROOT, 0, 100) == []
    assert (await meta.usage()).inodes == 1
    assert (await meta.usage()).used_bytes == 0
    settings = await meta.load_settings()
    assert settings.uuid == "u"
    await meta.close()


@async_test
async def test_create_lookup_getattr(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"f", FILE, 1000, 1001)
    assert a.is_file and a.nlink == 1 and a.uid == 1000 and a.gid == 1001 and a.size == 0
    assert a.parent == ROOT and stat.S_IMODE(a.mode) == 0o644
    assert await meta.lookup(ROOT, b"f") == a
    assert await meta.getattr(a.inode) == a
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    assert d.is_dir and d.nlink == 2
    assert (await meta.lookup(d.inode, b"..")).inode == ROOT
    assert (await meta.lookup(d.inode, b".")).inode == d.inode
    assert (await meta.lookup(ROOT, b"..")).inode == ROOT
    s = await meta.create(ROOT, b"s", stat.S_IFLNK | 0o777, 0, 0, target=b"/some/where")
    assert await meta.readlink(s.inode) == b"/some/where"
    assert s.size == len(b"/some/where")
    await expect_errno(errno.EINVAL, meta.readlink(a.inode))
    assert await names(meta, ROOT) == [b"d", b"f", b"s"]
    assert (await meta.usage()).inodes == 4
    await meta.close()


@async_test
async def test_create_existing_name_is_eexist(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.create(ROOT, b"x", FILE, 0, 0)
    await expect_errno(errno.EEXIST, meta.create(ROOT, b"x", DIR, 0, 0))
    await expect_errno(errno.EEXIST, meta.create(ROOT, b"x", FILE, 0, 0))
    assert (await meta.usage()).inodes == 2
    await meta.close()


@async_test
async def test_missing_names_and_inodes_are_enoent(tmp_path):
    meta = await new_meta(tmp_path)
    await expect_errno(errno.ENOENT, meta.lookup(ROOT, b"nope"))
    await expect_errno(errno.ENOENT, meta.getattr(12345))
    await expect_errno(errno.ENOENT, meta.unlink(ROOT, b"nope", never))
    await expect_errno(errno.ENOENT, meta.rmdir(ROOT, b"nope"))
    await expect_errno(errno.ENOENT, meta.rename(ROOT, b"nope", ROOT, b"x", 0, never))
    await expect_errno(errno.ENOENT, meta.create(999, b"x", FILE, 0, 0))
    await meta.close()


@async_test
async def test_file_used_as_directory_is_enotdir(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await expect_errno(errno.ENOTDIR, meta.create(f.inode, b"x", FILE, 0, 0))
    await expect_errno(errno.ENOTDIR, meta.link(f.inode, f.inode, b"x"))
    await expect_errno(errno.ENOTDIR, meta.rmdir(ROOT, b"f"))
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    await expect_errno(errno.ENOTDIR, meta.rename(ROOT, b"d", ROOT, b"f", 0, never))
    await expect_errno(errno.EISDIR, meta.rename(ROOT, b"f", ROOT, b"d", 0, never))
    assert (await meta.lookup(ROOT, b"d")).inode == d.inode
    await meta.close()


@async_test
async def test_lookup_in_a_file_is_enotdir(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await expect_errno(errno.ENOTDIR, meta.lookup(f.inode, b"x"))
    await meta.close()


@async_test
async def test_rmdir_of_non_empty_directory_is_enotempty(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    await meta.create(d.inode, b"f", FILE, 0, 0)
    await expect_errno(errno.ENOTEMPTY, meta.rmdir(ROOT, b"d"))
    e = await meta.create(ROOT, b"e", DIR, 0, 0)
    await meta.create(e.inode, b"g", FILE, 0, 0)
    await expect_errno(errno.ENOTEMPTY, meta.rename(ROOT, b"d", ROOT, b"e", 0, never))
    await meta.unlink(d.inode, b"f", never)
    await meta.rmdir(ROOT, b"d")
    await expect_errno(errno.ENOENT, meta.lookup(ROOT, b"d"))
    await expect_errno(errno.ENOENT, meta.getattr(d.inode))
    # A removed directory cannot get new entries (someone may still have it as cwd).
    await expect_errno(errno.ENOENT, meta.create(d.inode, b"late", FILE, 0, 0))
    await meta.close()


@async_test
async def test_unlink_of_directory_is_eisdir(tmp_path):
    meta = await new_meta(tmp_path)
    await meta.create(ROOT, b"d", DIR, 0, 0)
    await expect_errno(errno.EISDIR, meta.unlink(ROOT, b"d", never))
    await meta.close()


@async_test
async def test_name_of_256_bytes_is_enametoolong_and_255_is_fine(tmp_path):
    meta = await new_meta(tmp_path)
    long, ok = b"n" * 256, b"n" * 255
    f = await meta.create(ROOT, ok, FILE, 0, 0)
    await expect_errno(errno.ENAMETOOLONG, meta.create(ROOT, long, FILE, 0, 0))
    await expect_errno(errno.ENAMETOOLONG, meta.lookup(ROOT, long))
    await expect_errno(errno.ENAMETOOLONG, meta.link(f.inode, ROOT, long))
    await expect_errno(errno.ENAMETOOLONG, meta.rename(ROOT, ok, ROOT, long, 0, never))
    await expect_errno(errno.ENAMETOOLONG, meta.unlink(ROOT, long, never))
    await expect_errno(errno.ENAMETOOLONG, meta.rmdir(ROOT, long))
    assert (await meta.usage()).inodes == 2
    await meta.close()


@async_test
async def test_directory_nlink_is_two_plus_subdirectories(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"a", DIR, 0, 0)
    b = await meta.create(ROOT, b"b", DIR, 0, 0)
    await meta.create(ROOT, b"file", FILE, 0, 0)
    assert await nlink(meta, ROOT) == 4
    c = await meta.create(a.inode, b"c", DIR, 0, 0)
    assert await nlink(meta, a.inode) == 3
    # Move c from a to b.
    await meta.rename(a.inode, b"c", b.inode, b"c", 0, never)
    assert (await nlink(meta, a.inode), await nlink(meta, b.inode)) == (2, 3)
    assert (await meta.getattr(c.inode)).parent == b.inode
    assert (await meta.lookup(c.inode, b"..")).inode == b.inode
    # Rename within one directory changes nothing.
    await meta.rename(b.inode, b"c", b.inode, b"c2", 0, never)
    assert await nlink(meta, b.inode) == 3
    # Replace an empty directory in another parent.
    await meta.create(a.inode, b"victim", DIR, 0, 0)
    assert await nlink(meta, a.inode) == 3
    await meta.rename(b.inode, b"c2", a.inode, b"victim", 0, never)
    assert (await nlink(meta, a.inode), await nlink(meta, b.inode)) == (3, 2)
    # Replace an empty directory in the same parent.
    await meta.create(a.inode, b"other", DIR, 0, 0)
    assert await nlink(meta, a.inode) == 4
    await meta.rename(a.inode, b"other", a.inode, b"victim", 0, never)
    assert await nlink(meta, a.inode) == 3
    await meta.rmdir(a.inode, b"victim")
    assert await nlink(meta, a.inode) == 2
    await meta.rmdir(ROOT, b"a")
    assert await nlink(meta, ROOT) == 3
    assert (await meta.usage()).inodes == 3  # root, b, file
    await meta.close()


@async_test
async def test_rename_moves_a_file_and_replaces_the_target(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    g = await meta.create(d.inode, b"g", FILE, 0, 0)
    replaced = await meta.rename(ROOT, b"f", d.inode, b"g", 0, never)
    assert replaced.inode == g.inode
    assert (await meta.lookup(d.inode, b"g")).inode == f.inode
    await expect_errno(errno.ENOENT, meta.lookup(ROOT, b"f"))
    await expect_errno(errno.ENOENT, meta.getattr(g.inode))  # its last link went away
    assert (await meta.usage()).inodes == 3
    await meta.close()


@async_test
async def test_rename_onto_a_hard_link_of_itself_does_nothing(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await meta.link(f.inode, ROOT, b"g")
    assert await meta.rename(ROOT, b"f", ROOT, b"g", 0, never) is None
    assert await names(meta, ROOT) == [b"f", b"g"]
    assert await nlink(meta, f.inode) == 2
    await meta.close()


@async_test
async def test_rename_noreplace_on_existing_target_is_eexist(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"a", FILE, 0, 0)
    b = await meta.create(ROOT, b"b", FILE, 0, 0)
    await expect_errno(errno.EEXIST, meta.rename(ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE, never))
    assert (await meta.lookup(ROOT, b"a")).inode == a.inode
    assert (await meta.lookup(ROOT, b"b")).inode == b.inode
    await meta.rename(ROOT, b"a", ROOT, b"c", RENAME_NOREPLACE, never)
    assert await names(meta, ROOT) == [b"b", b"c"]
    await expect_errno(
        errno.EINVAL,
        meta.rename(ROOT, b"b", ROOT, b"c", RENAME_NOREPLACE | RENAME_EXCHANGE, never),
    )
    await meta.close()


@async_test
async def test_rename_exchange_swaps_two_files(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"a", FILE, 0, 0)
    b = await meta.create(ROOT, b"b", FILE, 0, 0)
    other = await meta.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE, never)
    assert other.inode == b.inode
    assert (await meta.lookup(ROOT, b"a")).inode == b.inode
    assert (await meta.lookup(ROOT, b"b")).inode == a.inode
    assert (await meta.usage()).inodes == 3
    await expect_errno(
        errno.ENOENT, meta.rename(ROOT, b"a", ROOT, b"missing", RENAME_EXCHANGE, never)
    )
    await meta.close()


@async_test
async def test_rename_exchange_of_directory_and_file_in_different_parents_fixes_nlink(tmp_path):
    meta = await new_meta(tmp_path)
    p = await meta.create(ROOT, b"p", DIR, 0, 0)
    q = await meta.create(ROOT, b"q", DIR, 0, 0)
    d = await meta.create(p.inode, b"d", DIR, 0, 0)
    f = await meta.create(q.inode, b"f", FILE, 0, 0)
    assert (await nlink(meta, p.inode), await nlink(meta, q.inode)) == (3, 2)
    await meta.rename(p.inode, b"d", q.inode, b"f", RENAME_EXCHANGE, never)
    assert (await meta.lookup(p.inode, b"d")).inode == f.inode
    assert (await meta.lookup(q.inode, b"f")).inode == d.inode
    assert (await nlink(meta, p.inode), await nlink(meta, q.inode)) == (2, 3)
    assert (await meta.getattr(d.inode)).parent == q.inode
    assert (await meta.lookup(d.inode, b"..")).inode == q.inode
    await meta.close()


@async_test
async def test_rename_exchange_of_two_directories_in_different_parents(tmp_path):
    meta = await new_meta(tmp_path)
    p = await meta.create(ROOT, b"p", DIR, 0, 0)
    q = await meta.create(ROOT, b"q", DIR, 0, 0)
    d1 = await meta.create(p.inode, b"d1", DIR, 0, 0)
    d2 = await meta.create(q.inode, b"d2", DIR, 0, 0)
    await meta.create(d1.inode, b"inside1", FILE, 0, 0)
    await meta.create(d2.inode, b"sub", DIR, 0, 0)
    await meta.rename(p.inode, b"d1", q.inode, b"d2", RENAME_EXCHANGE, never)
    assert (await meta.lookup(p.inode, b"d1")).inode == d2.inode
    assert (await meta.lookup(q.inode, b"d2")).inode == d1.inode
    assert (await meta.getattr(d1.inode)).parent == q.inode
    assert (await meta.getattr(d2.inode)).parent == p.inode
    assert (await nlink(meta, p.inode), await nlink(meta, q.inode)) == (3, 3)
    assert await nlink(meta, d2.inode) == 3  # its own subdirectory still counts
    assert await names(meta, d1.inode) == [b"inside1"]
    await meta.close()


@async_test
async def test_moving_a_directory_into_its_own_subtree_is_einval(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"a", DIR, 0, 0)
    b = await meta.create(a.inode, b"b", DIR, 0, 0)
    c = await meta.create(b.inode, b"c", DIR, 0, 0)
    await expect_errno(errno.EINVAL, meta.rename(ROOT, b"a", c.inode, b"a", 0, never))
    await expect_errno(errno.EINVAL, meta.rename(ROOT, b"a", a.inode, b"self", 0, never))
    # Exchanging a directory with an entry inside it, either way round.
    await meta.create(c.inode, b"x", FILE, 0, 0)
    await expect_errno(errno.EINVAL, meta.rename(ROOT, b"a", c.inode, b"x", RENAME_EXCHANGE, never))
    await expect_errno(errno.EINVAL, meta.rename(c.inode, b"x", ROOT, b"a", RENAME_EXCHANGE, never))
    assert (await meta.lookup(ROOT, b"a")).inode == a.inode
    assert (await meta.getattr(a.inode)).parent == ROOT
    await meta.close()


@async_test
async def test_hard_links_count_and_survive_unlink_of_one_name(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    linked = await meta.link(f.inode, d.inode, b"g")
    assert linked.nlink == 2
    await meta.link(f.inode, ROOT, b"h")
    assert await nlink(meta, f.inode) == 3
    await expect_errno(errno.EEXIST, meta.link(f.inode, ROOT, b"h"))
    await expect_errno(errno.EPERM, meta.link(d.inode, ROOT, b"dirlink"))
    assert await nlink(meta, d.inode) == 2  # files do not count in a directory's nlink
    await meta.unlink(ROOT, b"f", never)
    assert await nlink(meta, f.inode) == 2
    await meta.rename(ROOT, b"h", d.inode, b"g", 0, never)  # same inode: nothing happens
    assert await nlink(meta, f.inode) == 2
    await meta.unlink(ROOT, b"h", never)
    assert (await meta.lookup(d.inode, b"g")).nlink == 1
    await meta.unlink(d.inode, b"g", never)
    await expect_errno(errno.ENOENT, meta.getattr(f.inode))
    assert (await meta.usage()).inodes == 2
    await meta.close()


@async_test
async def test_unlink_of_open_file_keeps_inode_until_release(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    sid = await meta.next_slice_id()
    await meta.write_slices(f.inode, [(0, Slice(0, sid, 100, 0, 100))], 100, 1)
    await meta.unlink(ROOT, b"f", always)
    kept = await meta.getattr(f.inode)
    assert kept.nlink == 0 and kept.size == 100
    assert await meta.read_chunk(f.inode, 0) == [Slice(0, sid, 100, 0, 100)]
    assert await meta.pending_deletes(10) == []
    assert (await meta.usage()).inodes == 2
    await expect_errno(errno.ENOENT, meta.link(f.inode, ROOT, b"again"))
    assert await meta.release(f.inode) is True
    await expect_errno(errno.ENOENT, meta.getattr(f.inode))
    assert [(s, size) for _, s, size in await meta.pending_deletes(10)] == [(sid, 100)]
    assert await meta.usage() == type(await meta.usage())(0, 1)
    assert await meta.release(f.inode) is False  # a second release is a no-op
    await meta.close()


@async_test
async def test_release_of_a_file_that_still_has_links_frees_nothing(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    assert await meta.release(f.inode) is False
    assert (await meta.getattr(f.inode)).nlink == 1
    await meta.close()


@async_test
async def test_rename_over_an_open_file_keeps_the_replaced_inode(tmp_path):
    meta = await new_meta(tmp_path)
    a = await meta.create(ROOT, b"a", FILE, 0, 0)
    b = await meta.create(ROOT, b"b", FILE, 0, 0)
    await meta.rename(ROOT, b"a", ROOT, b"b", 0, lambda ino: ino == b.inode)
    assert (await meta.getattr(b.inode)).nlink == 0
    assert (await meta.lookup(ROOT, b"b")).inode == a.inode
    assert await meta.release(b.inode)
    await expect_errno(errno.ENOENT, meta.getattr(b.inode))
    await meta.close()


@async_test
async def test_close_session_frees_the_inodes_it_sustained(tmp_path):
    meta = await new_meta(tmp_path)
    sid = await meta.open_session("host", 123, "/mnt", "0.1")
    assert [s.id for s in await meta.sessions()] == [sid]
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    g = await meta.create(ROOT, b"g", FILE, 0, 0)
    slice_id = await meta.next_slice_id()
    await meta.write_slices(f.inode, [(0, Slice(0, slice_id, 10, 0, 10))], 10, 1)
    await meta.unlink(ROOT, b"f", always)
    await meta.unlink(ROOT, b"g", always)
    await meta.heartbeat()
    assert (await meta.getattr(f.inode)).nlink == 0
    assert await meta.close_session(sid) == 2
    await expect_errno(errno.ENOENT, meta.getattr(f.inode))
    await expect_errno(errno.ENOENT, meta.getattr(g.inode))
    assert await meta.sessions() == []
    assert [s for _, s, _ in await meta.pending_deletes(10)] == [slice_id]
    usage = await meta.usage()
    assert (usage.inodes, usage.used_bytes) == (1, 0)
    assert await sql_all(meta, "SELECT * FROM sustained") == []
    await meta.close()


@async_test
async def test_setgid_directory_passes_its_group_and_setgid_bit_down(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", stat.S_IFDIR | stat.S_ISGID | 0o775, 0, 50)
    f = await meta.create(d.inode, b"f", FILE, 1000, 1000)
    assert f.gid == 50
    assert not f.mode & stat.S_ISGID
    sub = await meta.create(d.inode, b"sub", DIR, 1000, 1000)
    assert sub.gid == 50
    assert sub.mode & stat.S_ISGID
    deeper = await meta.create(sub.inode, b"deeper", FILE, 1000, 1000)
    assert deeper.gid == 50
    plain = await meta.create(ROOT, b"plain", DIR, 1000, 1000)
    assert plain.gid == 1000 and not plain.mode & stat.S_ISGID
    await meta.close()


@async_test
async def test_xattr_create_and_replace_flags(tmp_path):
    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 0, 0)
    await expect_errno(errno.ENODATA, meta.getxattr(f.inode, b"user.a"))
    await expect_errno(
        errno.ENODATA, meta.setxattr(f.inode, b"user.a", b"1", create=False, replace=True)
    )
    await meta.setxattr(f.inode, b"user.a", b"1", create=True, replace=False)
    await expect_errno(
        errno.EEXIST, meta.setxattr(f.inode, b"user.a", b"2", create=True, replace=False)
    )
    assert await meta.getxattr(f.inode, b"user.a") == b"1"
    await meta.setxattr(f.inode, b"user.a", b"3", create=False, replace=True)
    await meta.setxattr(f.inode, b"user.b", b"", create=False, replace=False)
    await meta.setxattr(f.inode, b"user.b", b"\x00bin", create=False, replace=False)
    assert await meta.getxattr(f.inode, b"user.a") == b"3"
    assert await meta.getxattr(f.inode, b"user.b") == b"\x00bin"
    assert await meta.listxattr(f.inode) == [b"user.a", b"user.b"]
    await meta.removexattr(f.inode, b"user.a")
    await expect_errno(errno.ENODATA, meta.removexattr(f.inode, b"user.a"))
    assert await meta.listxattr(f.inode) == [b"user.b"]
    await expect_errno(errno.ENOENT, meta.getxattr(999, b"user.a"))
    await expect_errno(errno.ENOENT, meta.listxattr(999))
    await meta.unlink(ROOT, b"f", never)
    assert await sql_all(meta, "SELECT * FROM xattrs") == []
    await meta.close()


@async_test
async def test_readdir_pages_return_every_entry_once_with_increasing_cookies(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    for i in range(60):
        await meta.create(d.inode, b"e%03d" % i, FILE, 0, 0)
    rng = random.Random(7)
    present = {b"e%03d" % i for i in range(60)}
    always_there = set(present)  # never removed during the listing
    seen: list[bytes] = []
    cookies: list[int] = []
    added = 0
    after = 0
    while True:
        page = await meta.readdir(d.inode, after, 7)
        if not page:
            break
        for entry in page:
            seen.append(entry.name)
            cookies.append(entry.cookie)
            assert entry.name in present, f"{entry.name!r} was removed before it was listed"
            assert entry.attr.inode == (await meta.lookup(d.inode, entry.name)).inode
        after = page[-1].cookie
        # Between pages: remove two entries (listed or not) and add one.
        for victim in rng.sample(sorted(present), min(2, len(present))):
            await meta.unlink(d.inode, victim, never)
            present.discard(victim)
            always_there.discard(victim)
        if added < 8:  # a bounded number, or the listing would never end
            name = b"new%03d" % added
            added += 1
            await meta.create(d.inode, name, FILE, 0, 0)
            present.add(name)
            always_there.add(name)
    assert cookies == sorted(cookies) and len(set(cookies)) == len(cookies)
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert always_there <= set(seen), "an entry present throughout was skipped"
    await meta.close()


@async_test
async def test_readdir_lists_only_its_directory_with_attributes(tmp_path):
    meta = await new_meta(tmp_path)
    d = await meta.create(ROOT, b"d", DIR, 0, 0)
    f = await meta.create(d.inode, b"f", FILE, 5, 6)
    await meta.create(ROOT, b"other", FILE, 0, 0)
    entries = await meta.readdir(d.inode, 0, 100)
    assert [(e.name, e.attr) for e in entries] == [(b"f", f)]
    assert await meta.readdir(d.inode, entries[0].cookie, 100) == []
    await meta.close()


@async_test
async def test_ids_are_unique_across_batches_and_reopen(tmp_path):
    meta = await new_meta(tmp_path)
    slice_ids = [await meta.next_slice_id() for _ in range(10)]
    inodes = [(await meta.create(ROOT, b"f%d" % i, FILE, 0, 0)).inode for i in range(5)]
    await meta.close()
    from riverfs.meta import open_meta

    again = await open_meta(meta_url(tmp_path))
    more_slices = [await again.next_slice_id() for _ in range(10)]
    more_inodes = [(await again.create(ROOT, b"g%d" % i, FILE, 0, 0)).inode for i in range(5)]
    assert 0 not in slice_ids
    assert len(set(slice_ids + more_slices)) == 20
    assert len(set(inodes + more_inodes)) == 10 and 1 not in inodes + more_inodes
    await again.close()


@async_test
async def test_setattr_changes_only_what_is_asked(tmp_path):
    from riverfs.meta import AttrChange

    meta = await new_meta(tmp_path)
    f = await meta.create(ROOT, b"f", FILE, 1, 2)
    a = await meta.setattr(f.inode, AttrChange(mode=stat.S_IFDIR | 0o600))
    assert a.mode == stat.S_IFREG | 0o600  # the type bits cannot change
    assert (a.uid, a.gid) == (1, 2)
    b = await meta.setattr(f.inode, AttrChange(uid=7, mtime=123))
    assert (b.uid, b.gid, b.mtime, b.mode) == (7, 2, 123, a.mode)
    await expect_errno(errno.ENOENT, meta.setattr(999, AttrChange(uid=1)))
    await meta.close()
