"""The async object-store interface riverfs uses for every byte it stores.

A thin layer over obstore. It maps store URLs to obstore stores (`urls.py` parses them), turns
obstore's errors into ours (`errors.py`), retries what is worth retrying (`retry.py`), and
exposes the operations the block store, the maintenance tools and the SDK need.

Where the stores differ, this module evens them out:
- Listing is in key order everywhere. obstore lists a local directory in walk order, so file
  stores are listed by our own sorted walk.
- Prefixes are plain string prefixes (S3's meaning), not obstore's path segments.
- Object attributes (content type, user metadata, riverfs' compression flag): S3 and memory
  stores keep them with the object; a file store keeps them in a JSON file under
  `.riverfs-meta/` in its root, written before the object and removed after it.
- Deleting a missing object is not an error on any store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

from riverfs import metrics
from riverfs.errors import RiverError
from riverfs.objects.credentials import Credentials
from riverfs.objects.errors import (
    AccessDenied,
    AlreadyExists,
    BucketNotFound,
    ConfigurationError,
    InvalidKey,
    InvalidRange,
    ObjectNotFound,
    StoreError,
    StoreFull,
)
from riverfs.objects.retry import RetryPolicy, is_retryable, with_retries
from riverfs.objects.urls import StoreConfig, parse_store_url, redact_url

log = logging.getLogger(__name__)

STORE_SECONDS = metrics.family(
    "store_request_seconds",
    "Object-store requests by operation (get, put, head, delete, list, copy): latency, "
    "retries included.",
    metrics.Histogram,
    "op",
)
STORE_ERRORS = metrics.family(
    "store_request_errors",
    "Object-store requests that failed for good (after retries), by operation.",
    metrics.Counter,
    "op",
)

META_DIR = ".riverfs-meta"
PART_SIZE = 8 << 20  # multipart part size, and the size of streamed read parts
MULTIPART_THRESHOLD = 2 * PART_SIZE  # bytes puts larger than this go multipart on remote stores
UPLOAD_CONCURRENCY = 4  # parts of one multipart upload in flight (memory: this x PART_SIZE)
DELETE_BATCH = 1000  # keys per bulk delete (S3's limit)
LIST_PAGE = 1000
_STAGING = re.compile(r"#\d+$")  # obstore's temporary files in a local store
_STATUS = re.compile(r"(?:status code: |status: )(\d{3})")
_S3_CODE = re.compile(r"<Code>([^<]+)</Code>")
_S3_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


@dataclass(slots=True, frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str | None = None
    version: str | None = None
    attributes: dict[str, str] | None = None  # only from stat() and get streams


@dataclass(slots=True, frozen=True)
class CommonPrefix:
    """A group of keys sharing `prefix` up to a delimiter (listings with a delimiter)."""

    prefix: str


def classify(e: BaseException, what: str) -> StoreError:
    """Turn an obstore (or OS) exception into the StoreError that says what happened."""
    if isinstance(e, StoreError):
        return e
    text = str(e)
    m = _STATUS.search(text)
    status = int(m.group(1)) if m else None
    m = _S3_CODE.search(text)
    s3_code = m.group(1) if m else None
    detail = text.split("\n", 1)[0]
    cut = detail.find(": <?xml")
    if cut >= 0:
        detail = detail[:cut]
        m = _S3_MESSAGE.search(text)
        if s3_code:
            detail += f": {s3_code}" + (f" ({m.group(1)})" if m and m.group(1) else "")
    if len(detail) > 300:
        detail = detail[:300] + "…"
    message = f"{what}: {detail}"
    kw: dict[str, Any] = {"status": status, "s3_code": s3_code}
    if s3_code == "NoSuchBucket":
        return BucketNotFound(message, **kw)
    if isinstance(e, NotFoundError | FileNotFoundError) or status == 404:
        return ObjectNotFound(message, **kw)
    if isinstance(e, PermissionDeniedError | UnauthenticatedError | PermissionError) or status in (
        401,
        403,
    ):
        return AccessDenied(message, **kw)
    if (
        status == 416
        or s3_code == "InvalidRange"
        or "Invalid range" in text
        or "InvalidRange" in text
        or "range was invalid" in text
    ):
        return InvalidRange(message, **kw)
    if isinstance(e, InvalidPathError):
        return InvalidKey(message, **kw)
    if isinstance(e, AlreadyExistsError):
        return AlreadyExists(message, **kw)
    if "No space left on device" in text or "StorageFull" in text or s3_code == "QuotaExceeded":
        return StoreFull(message, **kw)
    return StoreError(message, retryable=is_retryable(status, s3_code, text), **kw)


def _range_options(start: int | None, end: int | None, suffix: int | None) -> dict | None:
    if suffix is not None:
        return {"range": {"suffix": suffix}}
    if end is not None:
        return {"range": (start or 0, end)}
    if start:
        return {"range": {"offset": start}}
    return None


def _info(meta: dict, attributes: dict | None = None) -> ObjectInfo:
    return ObjectInfo(
        meta["path"],
        meta["size"],
        meta["last_modified"],
        meta.get("e_tag"),
        meta.get("version"),
        attributes,
    )


class ObjectReader:
    """An open object: `info` (size, attributes) and its bytes as an async iterator of parts.

    A read that fails half-way with a retryable error resumes where it stopped (pinned to the
    same object version by its etag), within the store's retry policy.
    """

    def __init__(self, store: ObjectStore, key: str, result, info: ObjectInfo, part_size: int):
        self.store = store
        self.key = key
        self.info = info
        self._result = result
        self._part_size = part_size
        self.start, self.end = result.range  # [start, end) of the object this reader yields

    @property
    def length(self) -> int:
        return self.end - self.start

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._parts()

    async def _parts(self) -> AsyncIterator[bytes]:
        pos = self.start
        result = self._result
        failures = 0
        policy = self.store.policy
        while pos < self.end:
            stream = result.stream(min_chunk_size=self._part_size)
            try:
                async for part in stream:
                    pos += len(part)
                    failures = 0
                    yield part
                if pos < self.end:  # the server closed the body early
                    raise StoreError(
                        f"get {self.key}: body ended at {pos} of {self.end}", retryable=True
                    )
                return
            except Exception as raw:
                err = classify(raw, f"get {self.key}")
                failures += 1
                if not err.retryable or failures >= policy.max_attempts:
                    err.attempts = failures
                    raise err from raw
                log.warning("get %s broke at byte %d, resuming: %s", self.key, pos, err)
                await asyncio.sleep(policy.backoff(failures))
                opts: dict[str, Any] = {"range": (pos, self.end)}
                if self.info.etag:
                    opts["if_match"] = self.info.etag
                result = await self.store._call(
                    f"get {self.key}",
                    lambda opts=opts: obstore.get_async(self.store._store, self.key, options=opts),
                )

    async def read(self) -> bytes:
        return b"".join([part async for part in self])


class ObjectStore:
    """Objects under one prefix of one store; keys are relative to that prefix."""

    def __init__(
        self,
        url: str,
        store: Any,
        *,
        policy: RetryPolicy | None = None,
        upload_store: Any = None,
        root: Path | None = None,
        kind: str = "",
    ) -> None:
        self.url = redact_url(url)
        self._store = store
        # Multipart uploads go through a store whose own per-request retries are on: a part can
        # be resent from obstore's buffer, a whole stream cannot be replayed from Python.
        self._upload_store = upload_store if upload_store is not None else store
        self.policy = policy or RetryPolicy()
        self.kind = kind or url.split(":", 1)[0]
        self._root = root  # file stores: the directory
        self._meta_dir = os.path.join(root, META_DIR) if root is not None else ""
        self.remote = self.kind in ("s3", "gs", "az")

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    async def _call(self, what: str, attempt):
        op = what.split(" ", 1)[0]
        start = time.perf_counter_ns()
        timing = metrics.begin("store", start)
        try:
            return await with_retries(self.policy, what, attempt, lambda e: classify(e, what))
        except ObjectNotFound:
            raise  # an answer, not a failure
        except Exception:  # a cancelled request (prefetch, interrupt) is no failure
            STORE_ERRORS.child(op).inc()
            raise
        finally:
            now = time.perf_counter_ns()
            STORE_SECONDS.child(op).observe_ns(now - start)
            metrics.end("store", timing, now)

    # ---- reading ----

    async def get(self, key: str) -> bytes:
        async def attempt() -> bytes:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())

        return await self._call(f"get {key}", attempt)

    async def get_buffer(self, key: str) -> memoryview:
        """The whole object as a read-only buffer, not copied out of obstore's memory (the
        block store reads this way: a 4 MiB copy per block saved)."""

        async def attempt() -> memoryview:
            result = await obstore.get_async(self._store, key)
            return memoryview(await result.bytes_async())

        return await self._call(f"get {key}", attempt)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object (fewer if it ends before `end`)."""
        return bytes(
            await self._call(
                f"get {key}[{start}:{end}]",
                lambda: obstore.get_range_async(self._store, key, start=start, end=end),
            )
        )

    async def open(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
        part_size: int = PART_SIZE,
    ) -> ObjectReader:
        """Open an object for streaming: all of it, [start, end), [start, ...) or the last
        `suffix` bytes. A range starting at or past the end raises InvalidRange."""
        opts = _range_options(start, end, suffix)
        result = await self._call(
            f"get {key}", lambda: obstore.get_async(self._store, key, options=opts)
        )
        attributes = dict(result.attributes)
        if self._root is not None:
            attributes.update(self._read_sidecar(key))
        return ObjectReader(self, key, result, _info(result.meta, attributes), part_size)

    async def read(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
    ) -> tuple[ObjectInfo, bytes]:
        """The object (or a range of it, as for open()) in one piece, with its attributes."""
        opts = _range_options(start, end, suffix)

        async def attempt():
            result = await obstore.get_async(self._store, key, options=opts)
            return result, bytes(await result.bytes_async())

        result, data = await self._call(f"get {key}", attempt)
        attributes = dict(result.attributes)
        if self._root is not None:
            attributes.update(self._read_sidecar(key))
        return _info(result.meta, attributes), data

    async def head(self, key: str) -> ObjectInfo:
        meta = await self._call(f"head {key}", lambda: obstore.head_async(self._store, key))
        return _info(meta)

    async def stat(self, key: str) -> ObjectInfo:
        """head() plus the object's attributes (content type, user metadata, ...)."""
        if self._root is not None:  # a file store keeps attributes beside the object
            info = await self.head(key)
            return ObjectInfo(
                info.key,
                info.size,
                info.last_modified,
                info.etag,
                info.version,
                self._read_sidecar(key),
            )
        result = await self._call(
            f"head {key}",
            lambda: obstore.get_async(self._store, key, options={"head": True}),
        )
        return _info(result.meta, dict(result.attributes))

    # ---- writing ----

    async def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Store `data` under `key` atomically: readers see the old object or all of the new."""
        if self._root is not None:
            await self._write_sidecar(key, attributes)
            attributes = None
        what = f"put {key}"
        if self.remote and len(data) > MULTIPART_THRESHOLD:
            await self._upload(key, data, attributes)
            return

        # Remote: one PUT, retried whole here. Local: obstore's default (it writes a file
        # larger than a part in parts, which measured faster than one write).
        multipart = False if self.remote else None

        async def attempt() -> None:
            await obstore.put_async(
                self._store, key, data, attributes=attributes or None, use_multipart=multipart
            )

        await self._call(what, attempt)

    async def put_stream(
        self,
        key: str,
        parts: AsyncIterable[bytes] | Iterable[bytes],
        *,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Store what `parts` yields under `key` without holding it all: a multipart upload
        on remote stores (at most UPLOAD_CONCURRENCY parts in memory), a temporary file renamed
        into place on file stores. Nothing is visible under `key` unless all of it arrived."""
        if self._root is not None:
            await self._write_sidecar(key, attributes)
            attributes = None
        await self._upload(key, parts, attributes)

    async def _upload(self, key: str, data, attributes: dict[str, str] | None) -> None:
        # Not retried here: obstore retries each request of the upload under the same policy.
        try:
            await obstore.put_async(
                self._upload_store,
                key,
                data,
                attributes=attributes or None,
                use_multipart=True if self.remote else None,
                chunk_size=PART_SIZE,
                max_concurrency=UPLOAD_CONCURRENCY,
            )
        except Exception as e:
            raise classify(e, f"put {key}") from e

    async def copy(self, src: str, dst: str) -> None:
        """Copy an object within this store (server-side where the store can)."""
        if self._root is not None:
            await self._write_sidecar(dst, self._read_sidecar(src))
        await self._call(f"copy {src} to {dst}", lambda: obstore.copy_async(self._store, src, dst))

    async def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error."""
        await self.delete_many([key])

    async def delete_many(self, keys: list[str]) -> None:
        """Delete objects in batches; missing ones are not an error."""
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i : i + DELETE_BATCH]
            await self._call(f"delete {len(batch)} objects", lambda b=batch: self._delete(b))
            if self._root is not None and self._has_sidecars():
                await asyncio.to_thread(self._remove_sidecars, batch)

    async def _delete(self, batch: list[str]) -> None:
        try:
            await obstore.delete_async(self._store, batch)
        except (NotFoundError, FileNotFoundError):
            for key in batch:  # one of them was missing (local stores say so): one by one
                try:
                    await obstore.delete_async(self._store, key)
                except (NotFoundError, FileNotFoundError):
                    pass

    # ---- listing ----

    async def list(
        self,
        prefix: str = "",
        *,
        start_after: str | None = None,
        max_keys: int | None = None,
    ) -> AsyncIterator[ObjectInfo]:
        """Objects whose key starts with `prefix`, in key order, streamed in pages."""
        count = 0
        if max_keys is not None and max_keys <= 0:
            return
        async for page in self.list_pages(prefix, start_after=start_after):
            for info in page:
                yield info
                count += 1
                if max_keys is not None and count >= max_keys:
                    return

    async def list_entries(
        self,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        max_keys: int | None = None,
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """Like list(); with a delimiter, keys that have it after the prefix are rolled up into
        one CommonPrefix each (S3's meaning). max_keys counts both kinds."""
        if not delimiter:
            async for info in self.list(prefix, start_after=start_after, max_keys=max_keys):
                yield info
            return
        count = 0
        last: str | None = None
        async for page in self.list_pages(prefix, start_after=start_after):
            for info in page:
                rest = info.key[len(prefix) :]
                cut = rest.find(delimiter)
                if cut < 0:
                    entry: ObjectInfo | CommonPrefix = info
                else:
                    group = prefix + rest[: cut + len(delimiter)]
                    if group == last or (start_after is not None and group <= start_after):
                        continue
                    last = group
                    entry = CommonPrefix(group)
                yield entry
                count += 1
                if max_keys is not None and count >= max_keys:
                    return

    async def list_pages(
        self, prefix: str = "", *, start_after: str | None = None
    ) -> AsyncIterator[list[ObjectInfo]]:
        """The listing as pages of up to LIST_PAGE objects (key order)."""
        if self._root is not None:
            walk = _walk_sorted(self._root, prefix, start_after)
            while True:
                page = await asyncio.to_thread(lambda: list(itertools.islice(walk, LIST_PAGE)))
                if not page:
                    return
                yield page
                if len(page) < LIST_PAGE:
                    return
        # obstore lists by path segments: list from the prefix's directory, filter by string.
        base = prefix[: prefix.rfind("/") + 1].rstrip("/") or None
        offset = start_after if start_after and start_after >= prefix else None
        stream = obstore.list(self._store, base, offset=offset, chunk_size=LIST_PAGE)
        what = f"list {prefix!r}"

        async def next_page() -> list | None:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                return None

        while True:
            try:
                metas = await self._call(what, next_page)
            except ObjectNotFound as e:
                if isinstance(e, BucketNotFound):
                    raise
                return
            if metas is None:
                return
            # obstore's offset is a Path ("a/" becomes "a"): filter by the exact string too.
            page = [
                _info(m)
                for m in metas
                if m["path"].startswith(prefix) and (offset is None or m["path"] > offset)
            ]
            if page:
                yield page
            if metas and metas[-1]["path"] > prefix and not metas[-1]["path"].startswith(prefix):
                return  # sorted: nothing further can match

    # ---- attributes of file stores ----

    def _sidecar(self, key: str) -> Path:
        return Path(self._meta_dir, key + ".json")

    def _has_sidecars(self) -> bool:
        """Whether this file store holds any attributes at all (one stat; usually not)."""
        return os.path.isdir(self._meta_dir)

    def _read_sidecar(self, key: str) -> dict[str, str]:
        """Attributes of a file-store object: a small local read, done inline."""
        if not self._has_sidecars():
            return {}
        try:
            return json.loads(self._sidecar(key).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("unreadable attributes of %s in %s: %s", key, self.url, e)
            return {}

    async def _write_sidecar(self, key: str, attributes: dict[str, str] | None) -> None:
        if not attributes:
            if self._has_sidecars():  # an overwrite without attributes drops the old ones
                self._sidecar(key).unlink(missing_ok=True)
            return

        def write() -> None:
            path = self._sidecar(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(attributes))
            os.replace(tmp, path)

        try:
            await asyncio.to_thread(write)
        except OSError as e:
            raise classify(e, f"put {key} (attributes)") from e

    def _remove_sidecars(self, keys: list[str]) -> None:
        if not self._has_sidecars():
            return
        for key in keys:
            self._sidecar(key).unlink(missing_ok=True)


def _walk_sorted(root: Path, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
    """Files under `root` whose key starts with `prefix` and sorts after `start_after`, in key
    order. A directory `d` holds the keys `d/...`, so it sorts as `d/` among its siblings."""
    base = prefix[: prefix.rfind("/") + 1]

    def walk(directory: Path, rel: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        named = []
        for entry in entries:
            if _STAGING.search(entry.name) or (not rel and entry.name == META_DIR):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            named.append((rel + entry.name + ("/" if is_dir else ""), is_dir, entry))
        named.sort(key=lambda t: t[0])
        for key, is_dir, entry in named:
            if is_dir:
                # Skip subtrees wholly outside the prefix or wholly before start_after.
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if (
                    start_after is not None
                    and key <= start_after
                    and not start_after.startswith(key)
                ):
                    continue
                yield from walk(Path(entry.path), key)
            else:
                if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    if not root.is_dir():
        raise BucketNotFound(f"list {prefix!r}: {root} does not exist")
    yield from walk(root / base if base else root, base)


# ---- opening stores -------------------------------------------------------------------------

_memory_stores: dict[str, MemoryStore] = {}


def build_store(config: StoreConfig, bucket: str | None = None, prefix: str = "") -> ObjectStore:
    """An ObjectStore for `bucket`/`prefix` of the store `config` describes."""
    policy = config.policy
    scheme = config.scheme
    url = config.url_for(bucket, prefix)
    if scheme == "file":
        assert config.root is not None
        root = config.root / bucket if bucket else config.root
        if prefix:
            root = root / prefix.strip("/")
        try:
            local = LocalStore(root)
        except Exception as e:  # obstore resolves the directory when the store is built
            if not root.is_dir():
                raise BucketNotFound(f"{redact_url(url)}: {root} does not exist") from None
            raise classify(e, f"open {redact_url(url)}") from e
        return ObjectStore(url, local, policy=policy, root=root, kind="file")
    if scheme == "memory":
        name = f"{config.name}/{bucket or ''}/{prefix}"
        return ObjectStore(
            url, _memory_stores.setdefault(name, MemoryStore()), policy=policy, kind="memory"
        )
    bucket = bucket or config.bucket
    if not bucket:
        raise RiverError(f"storage URL {redact_url(url)} names no bucket")
    full_prefix = "/".join(p for p in (config.prefix.strip("/"), prefix.strip("/")) if p) or None
    client_options = policy.client_options()
    no_retry = {"max_retries": 0, "retry_timeout": policy.obstore_retry_config()["retry_timeout"]}

    def make(retry_config: dict):
        if scheme == "s3":
            creds = config.credentials
            kw: dict[str, Any] = {"region": config.region or "us-east-1"}
            if config.endpoint:
                kw["endpoint"] = config.endpoint
                kw["virtual_hosted_style_request"] = False
                if config.endpoint.startswith("http://"):
                    client_options["allow_http"] = True
            if creds.access_key_id:
                kw["access_key_id"] = creds.access_key_id
                kw["secret_access_key"] = creds.secret_access_key
                if creds.session_token:
                    kw["session_token"] = creds.session_token
            return S3Store(
                bucket,
                prefix=full_prefix,
                client_options=client_options,
                retry_config=retry_config,
                **kw,
            )
        if scheme == "gs":
            return GCSStore(
                bucket, prefix=full_prefix, client_options=client_options, retry_config=retry_config
            )
        az: dict[str, Any] = {"account_name": config.account} if config.account else {}
        return AzureStore(
            bucket,
            **az,
            prefix=full_prefix,
            client_options=client_options,
            retry_config=retry_config,
        )

    try:
        main, upload = make(no_retry), make(policy.obstore_retry_config())
    except Exception as e:  # obstore checks its configuration when the store is built
        reason = str(e).split("\n", 1)[0]
        raise ConfigurationError(
            f"cannot set up {redact_url(url)}: {reason}", reason="InvalidConfiguration"
        ) from None
    return ObjectStore(
        url,
        main,
        policy=policy,
        upload_store=upload,
        kind=scheme,
    )


def open_store(
    url: str,
    *,
    profile: str | None = None,
    policy: RetryPolicy | None = None,
    credentials: Credentials | None = None,
) -> ObjectStore:
    """Open the store a URL names; raise RiverError for URLs we cannot serve.

    file:///abs/path, memory://[name], s3://bucket/prefix?endpoint=...&region=...,
    gs://bucket/prefix, az://container/prefix.
    """
    config = parse_store_url(url, profile=profile, policy=policy, credentials=credentials)
    if config.scheme == "file":
        assert config.root is not None
        try:
            config.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RiverError(f"cannot create storage directory {config.root}: {e.strerror}") from e
    if config.scheme == "memory":
        # One store per URL per process, so a format and a mount in one process see the same data.
        return ObjectStore(
            url, _memory_stores.setdefault(url, MemoryStore()), policy=config.policy, kind="memory"
        )
    return build_store(config)
