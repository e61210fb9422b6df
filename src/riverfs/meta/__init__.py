"""Metadata: one engine interface over SQL databases (SQLite today)."""

from __future__ import annotations

from urllib.parse import urlsplit

from riverfs.errors import RiverError
from riverfs.meta.engine import Meta
from riverfs.meta.sqlite import SQLiteDatabase, sqlite_path
from riverfs.meta.types import Attr, AttrChange, Entry, SessionInfo, Usage, VolumeSettings

__all__ = [
    "Attr",
    "AttrChange",
    "Entry",
    "Meta",
    "SessionInfo",
    "Usage",
    "VolumeSettings",
    "open_meta",
]

PLANNED_SCHEMES = ("postgresql", "postgres", "redis")


def open_meta(url: str, *, create: bool = False) -> Meta:
    """Open the metadata database a URL names; RiverError for anything we cannot open."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
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
    if scheme in PLANNED_SCHEMES:
        raise RiverError(
            f"metadata scheme {scheme}:// is not supported yet; use sqlite:///absolute/path/meta.db"
        )
    raise RiverError(f"unknown metadata URL {url!r}: use sqlite:///absolute/path/meta.db")
