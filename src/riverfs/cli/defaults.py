"""Where things live when the user names nothing: the default volume, caches, pid files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from riverfs.errors import RiverError


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_volume_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "riverfs" / "default"


def default_meta_url() -> str:
    return f"sqlite://{default_volume_dir() / 'meta.db'}"


def default_storage_url(meta_url: str) -> str:
    """For a SQLite volume: an `objects` directory beside the database."""
    if meta_url.startswith("sqlite:///"):
        return f"file://{Path(meta_url[len('sqlite://') :]).parent / 'objects'}"
    raise RiverError("--storage is required for this metadata URL")


def default_cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "riverfs"


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/riverfs-{os.getuid()}"
    path = Path(base) / "riverfs" if os.environ.get("XDG_RUNTIME_DIR") else Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def pid_file(mountpoint: Path) -> Path:
    """The file holding the pid of the daemon serving `mountpoint`."""
    digest = hashlib.sha256(str(mountpoint).encode()).hexdigest()[:16]
    return runtime_dir() / f"mount-{digest}.pid"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str) -> int:
    """'4M', '10GiB', '512k', '1048576' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] != "" and not t[-1:].isdigit() else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        raise RiverError(f"cannot read size {text!r}: use a number with K, M, G, T or P") from None
    if value < 0:
        raise RiverError(f"size {text!r} is negative")
    return int(value * _UNITS[unit])


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
