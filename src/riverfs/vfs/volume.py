"""Opening and formatting a volume: one metadata database paired with one store prefix.

`format` writes the settings into the database and a copy into the store (`riverfs.json`);
`open_volume` checks that the two agree, so a store is never silently paired with the wrong
database.

A mount keeps the verified record beside its cache dir (`<cache-dir>/<uuid>.riverfs.json`,
mode 0600, the same bytes as the store's copy): when the store cannot be reached, the volume
still opens from it, degraded (reads from the disk cache and staging, writes staged until the
store is back; `Volume.degraded`). A store that answers but refuses (denied, wrong volume,
riverfs.json missing) is an error as before.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from riverfs.chunk import crypto
from riverfs.chunk.store import BlockStore
from riverfs.errors import RiverError
from riverfs.meta import Meta, VolumeSettings, open_meta
from riverfs.objects import ObjectNotFound, ObjectStore, StoreError, open_store
from riverfs.objects.urls import redact_url

SETTINGS_KEY = "riverfs.json"


@dataclass(slots=True)
class Volume:
    meta: Meta
    settings: VolumeSettings
    store: ObjectStore
    keys: crypto.VolumeKeys | None = None  # set by `unlock` for an encrypted volume
    degraded: bool = False  # opened from the local settings copy: the store is unreachable

    @property
    def encrypted(self) -> bool:
        return bool(self.settings.encryption)

    def block_store(self) -> BlockStore:
        """Blocks of this volume for a tool (gc, fsck): no disk cache, no staging."""
        s = self.settings
        cipher = self.keys.blocks if self.keys is not None else None
        return BlockStore(self.store, s.block_size, s.compression, None, cipher=cipher)

    def unlock(self, passphrase: Callable[[], str]) -> None:
        """Unwrap the master key (asking `passphrase` only if the volume is encrypted);
        WrongPassphrase if it does not fit."""
        if self.encrypted:
            self.keys = crypto.unlock(self.settings.encryption, passphrase())


async def take_over_store(settings: VolumeSettings) -> None:
    """Make the store belong to `settings.uuid` (a restored volume): the volume it belonged
    to before no longer opens it."""
    store = open_store(settings.storage)
    try:
        await store.put(SETTINGS_KEY, settings.to_json().encode())
    except StoreError as e:
        raise _store_problem(settings.storage, e) from e


async def change_passphrase(volume: Volume, old: str, new: str) -> None:
    """Rewrap the master key with `new`, in the database and in the store's copy."""
    entry = crypto.rewrap(volume.settings.encryption, old, new)
    settings = dataclasses.replace(volume.settings, encryption=entry)
    try:
        await volume.store.put(SETTINGS_KEY, settings.to_json().encode())
    except StoreError as e:
        raise _store_problem(settings.storage, e) from e
    await volume.meta.save_settings(settings)
    volume.settings = settings


async def format_volume(
    meta_url: str,
    storage_url: str,
    *,
    block_size: int = 4 << 20,
    compression: str = "none",
    capacity: int = 1 << 50,
    force: bool = False,
    passphrase: str | None = None,
    inline_limit: int = 0,
) -> VolumeSettings:
    """Create a volume; with `passphrase`, an encrypted one (its data, and its disk cache).
    `inline_limit`: small slices up to this size are kept in the database (meta/inline.py)."""
    store = open_store(storage_url)
    meta = await open_meta(meta_url, create=True)
    try:
        existing = await meta.load_settings()
        if existing is not None and not force:
            raise RiverError(
                f"{redact_url(meta_url)} already holds volume {existing.uuid}; "
                "use --force to overwrite it (its data becomes unreachable)"
            )
        if not force and await _holds_volume(store):
            raise RiverError(
                f"{redact_url(storage_url)} already holds a riverfs volume; "
                "use another storage URL or --force"
            )
        settings = VolumeSettings(
            uuid=str(uuid.uuid4()),
            storage=storage_url,
            block_size=block_size,
            compression=compression,
            capacity=capacity,
            created=time.time_ns(),
            encryption=crypto.new_encryption(passphrase)[0] if passphrase is not None else {},
            inline_limit=inline_limit,
        )
        try:
            next_slice = await _first_free_slice_id(store) if force else 1
            await store.put(SETTINGS_KEY, settings.to_json().encode())
        except StoreError as e:
            raise _store_problem(storage_url, e) from e
        await meta.format(settings, os.getuid(), os.getgid(), next_slice)
        return settings
    finally:
        await meta.close()


async def _holds_volume(store: ObjectStore) -> bool:
    try:
        await store.head(SETTINGS_KEY)
        return True
    except ObjectNotFound:
        return False
    except StoreError as e:
        raise _store_problem(store.url, e) from e


def _store_problem(url: str, e: Exception) -> RiverError:
    """One line: which store failed, how, and what to check."""
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    return RiverError(
        f"cannot use storage {redact_url(url)}: {detail} "
        "(check the URL, the endpoint, the bucket and the credentials)"
    )


async def _first_free_slice_id(store: ObjectStore) -> int:
    """One above every slice id with objects in the store (for a format over old data).

    The old volume's objects become garbage (`riverfs gc` removes them); the new volume must
    never write one of their keys again.
    """
    highest = 0
    async for info in store.list("chunks/"):
        name = info.key.rsplit("/", 1)[-1]
        head = name.split("_", 1)[0]
        if head.isdigit():
            highest = max(highest, int(head))
    return highest + 1


def settings_copy_path(cache_dir: Path, volume_uuid: str) -> Path:
    """Where a mount keeps the volume's verified settings record (beside its cache dir)."""
    return cache_dir / f"{volume_uuid}.{SETTINGS_KEY}"


def _remember_settings(path: Path, raw: bytes) -> None:
    """Keep a copy of the verified record (atomically, readable by the owner only)."""
    try:
        if path.read_bytes() == raw:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # only a convenience: the mount goes on without it


def _local_settings(path: Path, settings: VolumeSettings) -> dict | None:
    """The record kept by an earlier mount, if it is this volume's (same uuid and storage)."""
    try:
        local = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if local.get("uuid") != settings.uuid or local.get("storage") != settings.storage:
        return None
    return local


async def open_volume(
    meta_url: str, cache_dir: Path | None = None, *, unreachable_ok: bool = False
) -> Volume:
    """Open the volume of `meta_url` and check its store holds it. With `cache_dir` (a
    mount's), the verified settings record is kept there, and an unreachable store opens
    the volume degraded from that copy instead of failing. `unreachable_ok` (status, which
    only reports): an unreachable store opens it degraded with the database's settings."""
    meta = await open_meta(meta_url)
    try:
        settings = await meta.load_settings()
        if settings is None:
            raise RiverError(
                f"volume not formatted: {redact_url(meta_url)} holds no riverfs volume; "
                f"run `riverfs format {redact_url(meta_url)} --storage URL` first"
            )
        await meta.prepare()  # a volume formatted by an older riverfs gets the new tables
        store = open_store(settings.storage)
        copy = settings_copy_path(cache_dir, settings.uuid) if cache_dir is not None else None
        degraded = False
        raw = b""
        try:
            raw = bytes(await store.get(SETTINGS_KEY))
            stored = json.loads(raw)
        except ObjectNotFound:
            raise RiverError(
                f"storage {redact_url(settings.storage)} does not hold volume {settings.uuid} "
                "(riverfs.json missing): wrong store, or it was wiped"
            ) from None
        except StoreError as e:
            local = _local_settings(copy, settings) if copy is not None and e.retryable else None
            if local is None and unreachable_ok and e.retryable:
                local = {"uuid": settings.uuid}
            if local is None:
                raise _store_problem(settings.storage, e) from e
            stored, degraded = local, True
        except ValueError as e:
            raise _store_problem(settings.storage, e) from e
        if stored.get("uuid") != settings.uuid:
            raise RiverError(
                f"storage {redact_url(settings.storage)} belongs to volume {stored.get('uuid')}, "
                f"not to {settings.uuid} of {redact_url(meta_url)}"
            )
        if copy is not None and not degraded:
            _remember_settings(copy, raw)
    except BaseException:
        await meta.close()
        raise
    return Volume(meta, settings, store, degraded=degraded)
