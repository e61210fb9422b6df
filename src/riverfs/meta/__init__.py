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
    "check_meta_url",
    "open_meta",
]

PLANNED_SCHEMES = ("postgresql", "postgres", "redis")


def check_meta_url(url: str) -> str:
    """The scheme of a metadata URL we can open; RiverError for any other."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        sqlite_path(url)
        return scheme
    if scheme in PLANNED_SCHEMES:
        raise RiverError(
            f"metadata scheme {scheme}:// is not supported yet; use sqlite:///absolute/path/meta.db"
        )
    raise RiverError(f"unknown metadata URL {url!r}: use sqlite:///absolute/path/meta.db")


def open_meta(url: str, *, create: bool = False) -> Meta:
    """Open the metadata database a URL names; RiverError for anything we cannot open."""
    check_meta_url(url)
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
