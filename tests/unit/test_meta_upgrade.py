"""Opening a volume formatted by an older riverfs: its schema is brought up to date."""

from __future__ import annotations

import asyncio
import sqlite3
import stat

from unit_helpers import DIR, FILE, ROOT, meta_url, new_meta

from riverfs.meta import open_meta

LINK = stat.S_IFLNK | 0o777


def test_a_volume_of_schema_1_is_brought_up_to_date(tmp_path):
    """Schema 1 (riverfs before shared volumes) existed only on SQLite."""

    async def body():
        meta = await new_meta(tmp_path)
        await meta.close()
        with sqlite3.connect(tmp_path / "meta.db") as db:  # the tables as schema 1 had them
            db.executescript(
                "DROP TABLE sessions; DROP TABLE changelog; DROP TABLE usage; DROP TABLE doomed;"
                "DROP TABLE locks; DROP TABLE locked_inodes;"
                "CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL,"
                " pid INTEGER NOT NULL, mountpoint TEXT NOT NULL, version TEXT NOT NULL,"
                " started INTEGER NOT NULL, heartbeat INTEGER NOT NULL);"
                "CREATE TABLE changelog (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " inode INTEGER NOT NULL, parent INTEGER NOT NULL, name BLOB, at INTEGER NOT NULL);"
            )
        meta = await open_meta(meta_url(tmp_path))
        await meta.prepare()
        await meta.open_session("h", 1, "/m", "t", 2.5)
        f = await meta.create(ROOT, b"f", FILE, 0, 0)
        assert await meta.setlk(f.inode, meta.session_id, 1, 0, 9, 1, 1)  # schema 3: locks
        [s] = await meta.sessions()
        assert s.beat_every == 2.5 and (await meta.usage()).inodes == 2
        await meta.close()

    asyncio.run(body())


def test_a_volume_of_schema_5_gets_its_directory_counters_built(tmp_path):
    """Schema 6 added dir_usage: an older volume's counters are built from its namespace when
    it is opened, once; after that they follow every change."""

    async def body():
        meta = await new_meta(tmp_path)
        d = await meta.create(ROOT, b"d", DIR, 0, 0)
        for name, size in ((b"a", 10), (b"b", 2000)):
            f = await meta.create(d.inode, name, FILE, 0, 0)
            await meta.truncate(f.inode, size)
        await meta.create(ROOT, b"s", LINK, 0, 0, target=b"abc")
        await meta.close()
        with sqlite3.connect(tmp_path / "meta.db") as db:  # as schema 5 had it
            db.executescript(
                "DROP TABLE dir_usage; DROP INDEX nodes_dirs_by_parent;"
                "DELETE FROM counters WHERE name = 'dir_usage';"
            )
        meta = await open_meta(meta_url(tmp_path))
        await meta.prepare()
        s = await meta.dir_summary(ROOT)
        assert (s.directories, s.entries, s.bytes, s.tree_entries, s.tree_bytes) == (
            2, 2, 3, 4, 2013,
        )  # fmt: skip
        assert await meta.dir_usage_drift() == []
        await meta.create(d.inode, b"c", FILE, 0, 0)
        await meta.prepare()  # built once: opening again adds nothing
        assert (await meta.dir_summary(d.inode)).entries == 3
        assert await meta.dir_usage_drift() == []
        await meta.close()

    asyncio.run(body())
