"""Opening a volume formatted by an older riverfs: its schema is brought up to date."""

from __future__ import annotations

import asyncio
import sqlite3

from unit_helpers import FILE, ROOT, meta_url, new_meta

from riverfs.meta import open_meta


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
