"""The metadata schema, with the meaning of every column.

Times are nanoseconds since the epoch. Names and symlink targets are bytes (BLOB). Inode 1 is
the root directory; its `parent` is 1.
"""

# 3: locks, locked_inodes; 4: slice_refs, pending_block_deletes; 5: inline_blocks;
# 6: dir_usage (built from the namespace when an older volume is opened), nodes_dirs_by_parent
SCHEMA_VERSION = 6

TABLES = """
-- One row: name 'volume', value = VolumeSettings as JSON (also copied to <store>/riverfs.json).
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Monotonic counters. next_inode / next_slice: the next id not yet handed out (ids are taken
-- in batches). used_bytes / inodes: the base of the volume's usage; the live figure is this
-- plus the sum of the usage table.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- One row per inode.
--   mode:   full st_mode (file type bits and permission bits, incl. setuid/setgid/sticky)
--   nlink:  hard links; for a directory 2 + number of subdirectories. 0 = deleted but still
--           open somewhere (see sustained), freed when the last handle closes.
--   length: file size in bytes (directories: 0; symlinks: target length)
--   stored: bytes of data committed for this file, capped at length (drives st_blocks)
--   rdev:   device number for character/block devices, else 0
--   parent: the directory holding it (directories have exactly one); for files the directory
--           of the first link, informational only
CREATE TABLE IF NOT EXISTS nodes (
    inode  INTEGER PRIMARY KEY,
    mode   INTEGER NOT NULL,
    uid    INTEGER NOT NULL,
    gid    INTEGER NOT NULL,
    atime  INTEGER NOT NULL,
    mtime  INTEGER NOT NULL,
    ctime  INTEGER NOT NULL,
    nlink  INTEGER NOT NULL,
    length INTEGER NOT NULL DEFAULT 0,
    stored INTEGER NOT NULL DEFAULT 0,
    rdev   INTEGER NOT NULL DEFAULT 0,
    parent INTEGER NOT NULL
);

-- Directory entries. id: increasing per insert, the stable readdir cookie (an entry keeps its
-- id until it is removed or renamed).
CREATE TABLE IF NOT EXISTS edges (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    parent INTEGER NOT NULL,
    name   BLOB NOT NULL,
    inode  INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX IF NOT EXISTS edges_by_parent ON edges (parent, id);
CREATE INDEX IF NOT EXISTS edges_by_inode ON edges (inode);
-- The subdirectories of a directory (`riverfs info` sums dir_usage over a tree): partial, so
-- creating a file never touches it.
CREATE INDEX IF NOT EXISTS nodes_dirs_by_parent ON nodes (parent) WHERE (mode & 61440) = 16384;

-- File data: chunk `idx` (64 MiB each) of `inode`; slices = packed slice records in commit
-- order (meta/slices.py). A missing row is a hole.
CREATE TABLE IF NOT EXISTS chunks (
    inode  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    slices BLOB NOT NULL,
    PRIMARY KEY (inode, idx)
);

CREATE TABLE IF NOT EXISTS symlinks (
    inode  INTEGER PRIMARY KEY,
    target BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS xattrs (
    inode INTEGER NOT NULL,
    name  BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (inode, name)
);

-- Mounts. heartbeat: last sign of life; a session whose heartbeat is stale is dead and any
-- other mount may clean it up (free its sustained inodes).
CREATE TABLE IF NOT EXISTS sessions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    mountpoint TEXT NOT NULL,
    version    TEXT NOT NULL,
    started    INTEGER NOT NULL,
    heartbeat  INTEGER NOT NULL,
    beat_every REAL NOT NULL DEFAULT 10,  -- seconds between its heartbeats
    staged     INTEGER NOT NULL DEFAULT 0, -- bytes waiting to upload (write-back), at the last beat
    metrics    TEXT NOT NULL DEFAULT ''    -- its Prometheus endpoint (--metrics HOST:PORT) or empty
);

-- Inodes with nlink 0 kept alive because `session` still has them open.
CREATE TABLE IF NOT EXISTS sustained (
    session INTEGER NOT NULL,
    inode   INTEGER NOT NULL,
    PRIMARY KEY (session, inode)
);

-- Slices no file references any more, waiting for the background deleter to remove their
-- blocks from the store. size: the slice's full size, from which its block keys derive.
CREATE TABLE IF NOT EXISTS pending_deletes (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    slice  INTEGER NOT NULL,
    size   INTEGER NOT NULL,
    queued INTEGER NOT NULL
);

-- Slices referenced by more than one chunk row (copy_file_range shares slices between files and
-- between chunks of one file; meta/refs.py). refs: how many chunk rows (inode, idx) have at
-- least one record naming the slice, always 2 or more. A slice without a row here is named by
-- one chunk row (or by none: then it waits in pending_deletes). size: the slice's full size.
CREATE TABLE IF NOT EXISTS slice_refs (
    slice INTEGER PRIMARY KEY,
    size  INTEGER NOT NULL,
    refs  INTEGER NOT NULL
);

-- Small slices stored in the database instead of the object store (meta/inline.py): the slice's
-- one block in its stored form (chunk/block.py), as the object would hold it. size: the
-- slice's size (the block's plain length). Deleted with the last chunk row naming the slice.
CREATE TABLE IF NOT EXISTS inline_blocks (
    slice INTEGER PRIMARY KEY,
    size  INTEGER NOT NULL,
    data  BLOB NOT NULL
);

-- Blocks of a slice still in use that no record needs any more (a hole punched through an
-- unshared slice), waiting for the background deleter. first_block, last_block: the block
-- indexes, inclusive; size: the slice's full size (block keys derive from it).
CREATE TABLE IF NOT EXISTS pending_block_deletes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    slice       INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    first_block INTEGER NOT NULL,
    last_block  INTEGER NOT NULL,
    queued      INTEGER NOT NULL
);

-- Changes other mounts must hear about, for engines without notifications (SQLite volumes
-- mounted more than once on a host poll it). PostgreSQL sends the same payload with NOTIFY.
--   session: the mount that made the change; events: meta/changes.py text form
CREATE TABLE IF NOT EXISTS changelog (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    session INTEGER NOT NULL DEFAULT 0,
    events  TEXT NOT NULL DEFAULT '',
    at      INTEGER NOT NULL
);

-- Usage deltas, one row per slot (a database connection): every create, delete and write adds
-- to its own slot's row, so concurrent transactions never update the same row. The leader
-- folds the rows into counters now and then.
CREATE TABLE IF NOT EXISTS usage (
    slot   INTEGER PRIMARY KEY,
    inodes INTEGER NOT NULL,
    bytes  INTEGER NOT NULL
);

-- What each directory holds, as deltas in one row per (directory, slot) like `usage` (every
-- create, unlink, rename, link and size change adds to its own connection's row in the same
-- transaction: no hot row). A directory's figures are the sums over its rows; the leader folds
-- them into slot 0 now and then; counters 'dir_usage' = 1 once they were built for the volume.
--   entries: the names directly in it (every type; each hard link is one name)
--   bytes:   the st_size sum of those of its entries that are not directories (a file with
--            two links here counts twice, one with a link elsewhere counts there too)
CREATE TABLE IF NOT EXISTS dir_usage (
    inode   INTEGER NOT NULL,
    slot    INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    PRIMARY KEY (inode, slot)
);

-- Leases elect one mount for a job (name 'background': deferred deletes, cleaning up dead
-- sessions, freeing doomed inodes). expires: nanoseconds; a lease past it may be taken.
CREATE TABLE IF NOT EXISTS leases (
    name    TEXT PRIMARY KEY,
    session INTEGER NOT NULL,
    expires INTEGER NOT NULL
);

-- Inodes whose last link went away while other mounts were live: freed by the leader after a
-- grace period unless a mount that still has them open adds a sustained row first.
CREATE TABLE IF NOT EXISTS doomed (
    inode INTEGER PRIMARY KEY,
    at    INTEGER NOT NULL
);

-- File locks, held across every mount (meta/locks.py has the range algebra). One row per
-- range one owner holds; an owner's ranges never overlap, and adjacent ones of one type are
-- merged.
--   session: the mount holding it (its locks go when it unmounts or is judged dead)
--   owner:   the FUSE lock_owner of the holder (a u64, stored as signed 64-bit)
--   kind:    'p' POSIX record lock (fcntl), 'f' flock (whole file; the two never conflict)
--   type:    0 F_RDLCK (shared), 1 F_WRLCK (exclusive)
--   first_byte, last_byte: the range, inclusive; last_byte 2**63-1 = to the end of the file
--   pid:     the process that set it, on the session's host (F_GETLK reports it there)
CREATE TABLE IF NOT EXISTS locks (
    inode      INTEGER NOT NULL,
    session    INTEGER NOT NULL,
    owner      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    type       INTEGER NOT NULL,
    first_byte INTEGER NOT NULL,
    last_byte  INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    PRIMARY KEY (inode, session, owner, kind, first_byte)
);
CREATE INDEX IF NOT EXISTS locks_by_session ON locks (session);

-- Inodes that have (or had) locks. Every lock taken or changed updates its inode's row, so
-- two concurrent lock transactions on one inode collide on it (PostgreSQL REPEATABLE READ
-- retries the loser, which then sees the winner's lock). Removed when the inode is freed.
--   changes: how many lock changes the inode has seen (only written, never read)
CREATE TABLE IF NOT EXISTS locked_inodes (
    inode   INTEGER PRIMARY KEY,
    changes INTEGER NOT NULL
);
"""

COUNTERS = ("next_inode", "next_slice", "used_bytes", "inodes")
