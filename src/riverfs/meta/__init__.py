"""Metadata: one engine interface over SQL databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from urllib.parse import urlsplit

from riverfs.errors import RiverError
from riverfs.meta.engine import Meta
from riverfs.meta.sqlite import SQLiteDatabase, sqlite_path
from riverfs.meta.types import Attr, AttrChange, Entry, SessionInfo, Usage, VolumeSettings
from riverfs.objects.urls import redact_url

__all__ = [
    "Attr",
    "AttrChange",
    "Entry",
    "Meta",
    "SessionInfo",
    "Usage",
    "VolumeSettings",
    "check_meta_url",
    "open_meta",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")
PLANNED_SCHEMES = ("redis",)
EXAMPLES = "sqlite:///absolute/path/meta.db or postgresql://user@host:5432/dbname"


def check_meta_url(url: str) -> str:
    """The scheme of a metadata URL we can open; RiverError for any other."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        sqlite_path(url)
        return scheme
    if scheme in POSTGRES_SCHEMES:
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise RiverError(
                f"metadata URL {redact_url(url)} names no database: "
                "use postgresql://user@host:5432/dbname"
            )
        return "postgresql"
    if scheme in PLANNED_SCHEMES:
        raise RiverError(f"metadata scheme {scheme}:// is not supported yet; use {EXAMPLES}")
    raise RiverError(f"unknown metadata URL {redact_url(url)!r}: use {EXAMPLES}")


async def open_meta(url: str, *, create: bool = False) -> Meta:
    """Open the metadata database a URL names; RiverError for anything we cannot open.

    A PostgreSQL database must exist (created by the administrator, `createdb`); `format`
    creates the tables in it.
    """
    if check_meta_url(url) == "postgresql":
        from riverfs.meta.postgres import PostgresDatabase

        return Meta(await PostgresDatabase.connect(url, redact_url(url)))
    path = sqlite_path(url)
    if not create and not path.exists():
        raise RiverError(
            f"volume not formatted: no database at {path}; run `riverfs format {url}` first"
        )
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RiverError(f"cannot create {path.parent}: {e.strerror}") from e
    return Meta(SQLiteDatabase(path))
