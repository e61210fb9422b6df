"""The public SDK: buckets and objects, as an async client and a sync facade over it.

    from riverfs.objects import Client, ListObjectsOptions
    c = Client("s3://?endpoint=http://127.0.0.1:9000", profile="default")
    c.create_bucket("b")
    c.put_object("b", "k", b"data")
    c.get_object("b", "k", byte_range="0-1023")

`AsyncClient` holds the logic; `Client` runs it on an event loop in a thread of its own, so it
works from plain scripts and from code that already runs a loop. Every failure is an SDKError
(see errors.py); docs/SDK.md lists the codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import zstandard

from riverfs.objects.credentials import Credentials
from riverfs.objects.errors import (
    AccessDenied,
    AlreadyExists,
    AuthenticationError,
    BucketError,
    BucketNotFound,
    ConfigurationError,
    InvalidKey,
    InvalidRange,
    NotEmpty,
    ObjectError,
    ObjectNotFound,
    SDKError,
    StoreError,
)
from riverfs.objects.retry import RetryPolicy, is_retryable, with_retries
from riverfs.objects.s3api import S3Api, S3HTTPError
from riverfs.objects.store import (
    PART_SIZE,
    CommonPrefix,
    ObjectInfo,
    ObjectStore,
    _memory_stores,
    build_store,
)
from riverfs.objects.urls import StoreConfig, parse_store_url, redact_url

COMPRESSION_KEY = "riverfs-compression"
LENGTH_KEY = "riverfs-length"
_INTERNAL_KEYS = {COMPRESSION_KEY, LENGTH_KEY}
_STANDARD_ATTRIBUTES = {
    "Content-Type": "content_type",
    "Content-Encoding": "content_encoding",
    "Content-Language": "content_language",
    "Content-Disposition": "content_disposition",
    "Cache-Control": "cache_control",
}
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_RANGE = re.compile(r"^(?:bytes=)?(\d*)-(\d*)$")
_DECOMPRESS_SLICE = 64 << 10  # compressed bytes fed at a time: bounds the decoded burst
_THREAD_WORK = 1 << 20  # compress/decompress parts this big in a thread, not on the loop

Data = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]


@dataclass(slots=True, frozen=True)
class ListObjectsOptions:
    prefix: str = ""
    start_after: str | None = None
    max_keys: int | None = None
    delimiter: str | None = None  # with one, common prefixes are listed too (ending in it)


@dataclass(slots=True, frozen=True)
class Bucket:
    name: str
    creation_date: datetime | None = None


@dataclass(slots=True, frozen=True)
class HeadBucketOutput:
    name: str
    region: str | None = None


@dataclass(slots=True, frozen=True)
class HeadObjectOutput:
    content_type: str | None
    content_encoding: str | None
    content_language: str | None
    content_length: int  # the object's length as written (before riverfs compression)
    last_modified: datetime
    etag: str | None
    user_metadata: dict[str, str] = field(default_factory=dict)
    server_side_encryption: str | None = None
    version_id: str | None = None
    compressed: bool = False  # stored zstd-compressed by riverfs (read back transparently)
    stored_length: int = 0  # bytes in the store


def parse_byte_range(text: str) -> tuple[int | None, int | None, int | None]:
    """'A-B' (inclusive, as in HTTP), 'A-' or '-N' -> (start, end exclusive, suffix).

    Raises ObjectError (reason InvalidRange) for anything else, such as '5-2' or 'abc'."""
    m = _RANGE.match(text.strip())
    bad = None
    if not m or (not m.group(1) and not m.group(2)):
        bad = "use 'START-END' (inclusive, e.g. '0-1023'), 'START-' or '-LAST_N'"
    else:
        first, last = m.group(1), m.group(2)
        if first and last:
            if int(last) < int(first):
                bad = f"the end {last} is before the start {first}"
            else:
                return int(first), int(last) + 1, None
        elif first:
            return int(first), None, None
        elif int(last) == 0:
            bad = "a suffix range must ask for at least one byte"
        else:
            return None, None, int(last)
    raise ObjectError(
        "ERR_OBJECT_GET", f"invalid byte range {text!r}: {bad}", reason="InvalidRange"
    )


def check_bucket_name(name: str, code: str) -> None:
    """S3's rules, applied to every store so a bucket can move between them."""
    problem = None
    if not isinstance(name, str) or not _BUCKET_NAME.match(name):
        problem = (
            "3 to 63 characters of lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit"
        )
    elif ".." in name or ".-" in name or "-." in name:
        problem = "no two dots in a row, and no dot next to a hyphen"
    else:
        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(name)
            problem = "not formatted as an IP address"
    if problem:
        raise BucketError(
            code,
            f"invalid bucket name {name!r}: {problem}",
            reason="InvalidBucketName",
            bucket=name if isinstance(name, str) else None,
        )


def _classify_s3(e: BaseException, what: str) -> StoreError:
    if isinstance(e, StoreError):
        return e
    if isinstance(e, S3HTTPError):
        kw: dict[str, Any] = {"status": e.status, "s3_code": e.code}
        msg = f"{what}: {e.code or e.status}" + (f" ({e.message})" if e.message else "")
        if e.code == "NoSuchBucket" or (e.status == 404 and e.code in (None, "NotFound")):
            return BucketNotFound(msg, **kw)
        if e.status == 404:
            return ObjectNotFound(msg, **kw)
        if e.status in (401, 403):
            return AccessDenied(msg, **kw)
        if e.code in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            return AlreadyExists(msg, **kw)
        if e.code == "BucketNotEmpty":
            return NotEmpty(msg, **kw)
        return StoreError(msg, retryable=is_retryable(e.status, e.code, ""), **kw)
    return StoreError(f"{what}: {e}", retryable=isinstance(e, ConnectionError | TimeoutError))


async def _aiter_data(data: Data, part_size: int) -> AsyncIterator[bytes]:
    """Any accepted upload source as an async iterator of bytes."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    elif hasattr(data, "read"):
        while True:
            part = await asyncio.to_thread(data.read, part_size)  # type: ignore[union-attr]
            if not part:
                return
            yield part
    elif hasattr(data, "__aiter__"):
        async for part in data:  # type: ignore[union-attr]
            yield bytes(part)
    else:
        it = iter(data)  # type: ignore[arg-type]
        sentinel = object()
        while True:
            part = await asyncio.to_thread(next, it, sentinel)
            if part is sentinel:
                return
            yield bytes(part)  # type: ignore[arg-type]


async def _compress_stream(parts: AsyncIterator[bytes], level: int) -> AsyncIterator[bytes]:
    cobj = zstandard.ZstdCompressor(level=level).compressobj()
    async for part in parts:
        out = await _maybe_thread(cobj.compress, part)
        if out:
            yield out
    yield cobj.flush()


def _decompress(data: bytes, length: int | None) -> bytes:
    if length is not None:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=length)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


async def _maybe_thread(fn: Callable[[bytes], bytes], data: bytes) -> bytes:
    if len(data) >= _THREAD_WORK:
        return await asyncio.to_thread(fn, data)
    return fn(data)


class ObjectStream:
    """An object being read: `head` (its metadata) and its bytes as an async iterator."""

    def __init__(self, head: HeadObjectOutput, parts: AsyncIterator[bytes]) -> None:
        self.head = head
        self._parts = parts

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._parts

    async def read(self) -> bytes:
        return b"".join([p async for p in self._parts])

    async def aclose(self) -> None:
        await self._parts.aclose()  # type: ignore[attr-defined]


class AsyncClient:
    """Buckets and objects of one store, async. See the module docstring and docs/SDK.md."""

    def __init__(
        self,
        url: str,
        *,
        profile: str | None = None,
        retry: RetryPolicy | None = None,
        compress: bool = False,
        compression_level: int = 3,
        credentials: Credentials | None = None,
    ) -> None:
        self.config: StoreConfig = parse_store_url(
            url, profile=profile, policy=retry, credentials=credentials
        )
        if self.config.scheme in ("s3", "gs", "az") and self.config.prefix:
            raise ConfigurationError(
                f"client URL {redact_url(url)!r} has a path: name the service only "
                "(s3://?endpoint=...); buckets are chosen per call"
            )
        self.url = redact_url(url)
        self.compress = compress
        self.compression_level = compression_level
        self._stores: dict[str, ObjectStore] = {}
        self._s3: S3Api | None = None
        if self.config.scheme == "s3":
            self._s3 = S3Api(
                self.config.endpoint,
                self.config.region or "us-east-1",
                self.config.credentials,
                timeout=self.config.policy.read_timeout,
            )

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    @property
    def policy(self) -> RetryPolicy:
        return self.config.policy

    def store(self, bucket: str) -> ObjectStore:
        """The ObjectStore of one bucket (the filesystem's interface), cached."""
        store = self._stores.get(bucket)
        if store is None:
            store = self._stores[bucket] = build_store(self.config, bucket)
        return store

    @contextlib.contextmanager
    def _errors(self, code: str, bucket: str | None, key: str | None = None) -> Iterator[None]:
        """Translate store errors into SDK errors, once, at the boundary."""
        try:
            yield
        except SDKError:
            raise
        except StoreError as e:
            raise self._sdk_error(e, code, bucket, key) from e

    def _sdk_error(self, e: StoreError, code: str, bucket: str | None, key: str | None):
        where = f"{bucket}/{key}" if key else str(bucket)
        kw = {"bucket": bucket, "key": key, "status": e.status}
        if (
            isinstance(e, ObjectNotFound)
            and self.config.root is not None
            and bucket
            and not os.path.isdir(os.path.join(self.config.root, bucket))
        ):
            e = BucketNotFound(e.message)
        if isinstance(e, BucketNotFound):
            return BucketError(
                code, f"bucket {bucket!r} does not exist", reason="NoSuchBucket", **kw
            )
        if isinstance(e, ObjectNotFound):
            return ObjectError(
                code, f"no object {key!r} in bucket {bucket!r}", reason="NoSuchKey", **kw
            )
        if isinstance(e, AccessDenied):
            source = self.config.credentials.source
            return AuthenticationError(
                code,
                f"access denied to {where} (credentials: {source}): {e.message}",
                reason="AccessDenied",
                **kw,
            )
        if isinstance(e, InvalidRange):
            return ObjectError(
                code, f"the range starts past the end of {where}", reason="InvalidRange", **kw
            )
        if isinstance(e, InvalidKey):
            return ObjectError(code, f"invalid key {key!r}: {e.message}", reason="InvalidKey", **kw)
        if isinstance(e, AlreadyExists):
            return BucketError(
                code,
                f"bucket {bucket!r} already exists",
                reason=e.s3_code or "BucketAlreadyExists",
                **kw,
            )
        if isinstance(e, NotEmpty):
            return BucketError(
                code, f"bucket {bucket!r} is not empty", reason="BucketNotEmpty", **kw
            )
        cls = BucketError if code.startswith("ERR_BUCKET") else ObjectError
        if e.retryable:
            tries = "try" if e.attempts == 1 else "tries"
            return cls(
                code,
                f"{e.message} (gave up after {e.attempts} {tries})",
                reason=e.s3_code or "RetriesExhausted",
                **kw,
            )
        return cls(code, e.message, reason=e.s3_code or "StoreError", **kw)

    def _unsupported(self, code: str, what: str) -> ConfigurationError:
        return ConfigurationError(
            f"{what} is not supported for {self.config.scheme}:// stores yet; "
            "use the provider's console or tools",
            reason="NotSupported",
        )

    async def _s3_call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return await with_retries(
            self.policy,
            what,
            lambda: asyncio.to_thread(fn, *args),
            lambda e: _classify_s3(e, what),
        )

    async def _require_bucket(self, bucket: str, code: str, *, reading: bool = False) -> None:
        """Refuse a bad name or a missing bucket. A read of a file store skips the check: a
        missing bucket shows up as a missing object, and _sdk_error tells the two apart."""
        check_bucket_name(bucket, code)
        if self.config.scheme == "file" and not reading:
            assert self.config.root is not None
            if not os.path.isdir(os.path.join(self.config.root, bucket)):  # one stat, inline
                raise BucketError(
                    code, f"bucket {bucket!r} does not exist", reason="NoSuchBucket", bucket=bucket
                )
        elif self.config.scheme == "memory" and f"{self.config.name}/{bucket}/" not in (
            _memory_stores
        ):
            raise BucketError(
                code, f"bucket {bucket!r} does not exist", reason="NoSuchBucket", bucket=bucket
            )

    # ---- buckets ----

    async def create_bucket(self, bucket: str) -> None:
        code = "ERR_BUCKET_CREATE"
        check_bucket_name(bucket, code)
        scheme = self.config.scheme
        with self._errors(code, bucket):
            if scheme == "file":
                assert self.config.root is not None
                path = self.config.root / bucket
                try:
                    await asyncio.to_thread(self.config.root.mkdir, parents=True, exist_ok=True)
                    await asyncio.to_thread(path.mkdir)
                except FileExistsError:
                    raise AlreadyExists(
                        f"create {path}", s3_code="BucketAlreadyOwnedByYou"
                    ) from None
                except OSError as e:
                    raise StoreError(f"create {path}: {e.strerror}") from e
            elif scheme == "memory":
                name = f"{self.config.name}/{bucket}/"
                if name in _memory_stores:
                    raise AlreadyExists("create", s3_code="BucketAlreadyOwnedByYou")
                self.store(bucket)
            elif self._s3 is not None:
                # us-east-1 (and moto) answer 200 to re-creating one's own bucket: ask first, so
                # every store says BucketAlreadyOwnedByYou alike.
                try:
                    await self._s3_call(f"head bucket {bucket}", self._s3.head_bucket, bucket)
                except BucketNotFound:
                    await self._s3_call(f"create bucket {bucket}", self._s3.create_bucket, bucket)
                else:
                    raise AlreadyExists("create", s3_code="BucketAlreadyOwnedByYou")
            else:
                raise self._unsupported(code, "creating buckets")

    async def delete_bucket(self, bucket: str) -> None:
        """Delete an empty bucket (BucketError, reason BucketNotEmpty, if it holds objects)."""
        code = "ERR_BUCKET_DELETE"
        await self._require_bucket(bucket, code)
        scheme = self.config.scheme
        with self._errors(code, bucket):
            if scheme in ("file", "memory"):
                async for _ in self.store(bucket).list(max_keys=1):
                    raise NotEmpty("delete")
                if scheme == "file":
                    assert self.config.root is not None
                    await asyncio.to_thread(shutil.rmtree, self.config.root / bucket)
                else:
                    _memory_stores.pop(f"{self.config.name}/{bucket}/", None)
                self._stores.pop(bucket, None)
            elif self._s3 is not None:
                await self._s3_call(f"delete bucket {bucket}", self._s3.delete_bucket, bucket)
                self._stores.pop(bucket, None)
            else:
                raise self._unsupported(code, "deleting buckets")

    async def head_bucket(self, bucket: str) -> HeadBucketOutput:
        code = "ERR_BUCKET_HEAD"
        if self.config.scheme in ("file", "memory"):
            await self._require_bucket(bucket, code)
            return HeadBucketOutput(bucket, None)
        check_bucket_name(bucket, code)
        if self._s3 is None:
            raise self._unsupported(code, "head_bucket")
        with self._errors(code, bucket):
            region = await self._s3_call(f"head bucket {bucket}", self._s3.head_bucket, bucket)
        return HeadBucketOutput(bucket, region or self.config.region)

    async def list_buckets(self) -> list[Bucket]:
        code = "ERR_BUCKET_LIST"
        scheme = self.config.scheme
        with self._errors(code, None):
            if scheme == "file":
                assert self.config.root is not None
                root = self.config.root

                def scan() -> list[Bucket]:
                    try:
                        entries = sorted(os.scandir(root), key=lambda e: e.name)
                    except FileNotFoundError:
                        return []
                    return [
                        Bucket(e.name, datetime.fromtimestamp(e.stat().st_mtime, UTC))
                        for e in entries
                        if e.is_dir() and _BUCKET_NAME.match(e.name)
                    ]

                return await asyncio.to_thread(scan)
            if scheme == "memory":
                head = f"{self.config.name}/"
                names = sorted(
                    n[len(head) :].rstrip("/")
                    for n in _memory_stores
                    if n.startswith(head)
                    and n.endswith("/")
                    and n.count("/") == head.count("/") + 1
                )
                return [Bucket(n) for n in names]
            if self._s3 is not None:
                found = await self._s3_call("list buckets", self._s3.list_buckets)
                return [Bucket(name, created) for name, created in found]
            raise self._unsupported(code, "listing buckets")

    # ---- objects ----

    async def put_object(
        self,
        bucket: str,
        key: str,
        data: Data,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        compress: bool | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Store `data` (bytes, a binary file object, or a sync/async iterable of bytes) under
        `key`. Streams are uploaded in parts without holding the whole object in memory."""
        code = "ERR_OBJECT_PUT"
        await self._require_bucket(bucket, code)
        compress = self.compress if compress is None else compress
        attributes: dict[str, str] = {}
        if content_type:
            attributes["Content-Type"] = content_type
        for name, value in (metadata or {}).items():
            if name.lower() in _INTERNAL_KEYS or name in _STANDARD_ATTRIBUTES:
                raise ObjectError(
                    code,
                    f"metadata key {name!r} is reserved",
                    reason="InvalidArgument",
                    bucket=bucket,
                    key=key,
                )
            attributes[name] = str(value)
        with self._errors(code, bucket, key):
            store = self.store(bucket)
            if isinstance(data, bytes | bytearray | memoryview):
                payload: bytes | bytearray | memoryview = data
                if compress:
                    attributes[COMPRESSION_KEY] = "zstd"
                    attributes[LENGTH_KEY] = str(len(data))
                    cctx = zstandard.ZstdCompressor(level=self.compression_level)
                    payload = await _maybe_thread(cctx.compress, bytes(data))
                await store.put(key, payload, attributes=attributes)
                if progress:
                    progress(len(data))
                return
            parts = _aiter_data(data, PART_SIZE)
            if progress:
                parts = _counting(parts, progress)
            if compress:
                attributes[COMPRESSION_KEY] = "zstd"
                parts = _compress_stream(parts, self.compression_level)
            await store.put_stream(key, parts, attributes=attributes)

    async def _readable_range(
        self, bucket: str, key: str, byte_range: str | None, code: str
    ) -> tuple[int | None, int | None, int | None]:
        """Parse `byte_range` (errors name the object) and check the bucket can be read."""
        start = end = suffix = None
        if byte_range is not None:
            try:
                start, end, suffix = parse_byte_range(byte_range)
            except ObjectError as e:
                e.bucket, e.key = bucket, key
                raise
        await self._require_bucket(bucket, code, reading=True)
        return start, end, suffix

    async def open_object(
        self, bucket: str, key: str, byte_range: str | None = None, *, part_size: int = PART_SIZE
    ) -> ObjectStream:
        """Open an object for streaming (decompressed if riverfs compressed it)."""
        code = "ERR_OBJECT_GET"
        start, end, suffix = await self._readable_range(bucket, key, byte_range, code)
        with self._errors(code, bucket, key):
            store = self.store(bucket)
            reader = await store.open(key, start=start, end=end, suffix=suffix, part_size=part_size)
            attrs = reader.info.attributes or {}
            if attrs.get(COMPRESSION_KEY) == "zstd" and byte_range is not None:
                # A range of a compressed object: decode from the start, keep the range.
                reader = await store.open(key, part_size=part_size)
                head = self._head_output(reader.info)
                parts = _slice(
                    self._decoded(reader, code, bucket, key),
                    start,
                    end,
                    suffix,
                    head.content_length,
                )
                return ObjectStream(head, self._raw(parts, code, bucket, key))
        head = self._head_output(reader.info)
        if head.compressed:
            return ObjectStream(head, self._decoded(reader, code, bucket, key))
        return ObjectStream(head, self._raw(reader, code, bucket, key))

    async def _raw(self, reader, code: str, bucket: str, key: str) -> AsyncIterator[bytes]:
        with self._errors(code, bucket, key):
            async for part in reader:
                yield part

    async def _decoded(self, reader, code: str, bucket: str, key: str) -> AsyncIterator[bytes]:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        with self._errors(code, bucket, key):
            try:
                async for part in reader:
                    view = memoryview(part)
                    for i in range(0, len(view), _DECOMPRESS_SLICE):
                        out = dobj.decompress(view[i : i + _DECOMPRESS_SLICE])
                        if out:
                            yield out
            except zstandard.ZstdError as e:
                raise _undecodable(code, bucket, key, e) from e

    async def get_object(self, bucket: str, key: str, byte_range: str | None = None) -> bytes:
        """The object's bytes, or those of `byte_range` ('0-1023' is the first KiB).

        In one request and one piece; use open_object / iter_object for big objects."""
        code = "ERR_OBJECT_GET"
        start, end, suffix = await self._readable_range(bucket, key, byte_range, code)
        with self._errors(code, bucket, key):
            store = self.store(bucket)
            info, data = await store.read(key, start=start, end=end, suffix=suffix)
            if (info.attributes or {}).get(COMPRESSION_KEY) != "zstd":
                return data
            if byte_range is not None:  # the range was of the stored bytes: read it all
                info, data = await store.read(key)
            known = (info.attributes or {}).get(LENGTH_KEY, "")
            try:
                plain = await _maybe_thread(
                    lambda d: _decompress(d, int(known) if known.isdigit() else None), data
                )
            except zstandard.ZstdError as e:
                raise _undecodable(code, bucket, key, e) from e
            if byte_range is None:
                return plain
            if suffix is not None:
                return plain[-suffix:]
            if start is not None and start >= len(plain):
                raise InvalidRange("get: the range starts past the end")
            return plain[start:end]

    async def download_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> HeadObjectOutput:
        """Write the object to `path` (via a temporary file renamed into place)."""
        stream = await self.open_object(bucket, key)
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            f = await asyncio.to_thread(open, tmp, "wb")
            try:
                async for part in stream:
                    await asyncio.to_thread(f.write, part)
                    if progress:
                        progress(len(part))
            finally:
                f.close()
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return stream.head

    async def upload_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike,
        *,
        progress: Callable[[int], None] | None = None,
        **kw: Any,
    ) -> None:
        with open(path, "rb") as f:
            await self.put_object(bucket, key, f, progress=progress, **kw)

    def _head_output(self, info: ObjectInfo) -> HeadObjectOutput:
        attrs = dict(info.attributes or {})
        compressed = attrs.get(COMPRESSION_KEY) == "zstd"
        length = info.size
        if compressed and attrs.get(LENGTH_KEY, "").isdigit():
            length = int(attrs[LENGTH_KEY])
        user = {
            k: v
            for k, v in attrs.items()
            if k not in _STANDARD_ATTRIBUTES and k not in _INTERNAL_KEYS
        }
        return HeadObjectOutput(
            content_type=attrs.get("Content-Type"),
            content_encoding=attrs.get("Content-Encoding"),
            content_language=attrs.get("Content-Language"),
            content_length=length,
            last_modified=info.last_modified,
            etag=info.etag,
            user_metadata=user,
            server_side_encryption=None,
            version_id=info.version,
            compressed=compressed,
            stored_length=info.size,
        )

    async def head_object(self, bucket: str, key: str) -> HeadObjectOutput:
        code = "ERR_OBJECT_HEAD"
        await self._require_bucket(bucket, code, reading=True)
        with self._errors(code, bucket, key):
            try:
                return self._head_output(await self.store(bucket).stat(key))
            except ObjectNotFound as e:
                # A HEAD answer has no body to say whether the key or the bucket is missing.
                if self._s3 is None or isinstance(e, BucketNotFound):
                    raise
                await self._s3_call(f"head bucket {bucket}", self._s3.head_bucket, bucket)
                raise

    async def delete_object(self, bucket: str, key: str) -> None:
        """Delete one object; a missing object is not an error (as in S3)."""
        code = "ERR_OBJECT_DELETE"
        await self._require_bucket(bucket, code)
        with self._errors(code, bucket, key):
            await self.store(bucket).delete(key)

    async def delete_objects(self, bucket: str, keys: list[str]) -> None:
        """Delete many objects, in batches of up to 1000 per request."""
        code = "ERR_OBJECT_DELETE"
        await self._require_bucket(bucket, code)
        with self._errors(code, bucket):
            await self.store(bucket).delete_many(list(keys))

    async def list_objects(
        self, bucket: str, options: ListObjectsOptions | None = None
    ) -> AsyncIterator[str]:
        """Keys in key order (and common prefixes, when options.delimiter is set)."""
        async for entry in self.list_objects_info(bucket, options):
            yield entry.prefix if isinstance(entry, CommonPrefix) else entry.key

    async def list_objects_info(
        self, bucket: str, options: ListObjectsOptions | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        code = "ERR_OBJECT_LIST"
        options = options or ListObjectsOptions()
        await self._require_bucket(bucket, code)
        with self._errors(code, bucket):
            async for entry in self.store(bucket).list_entries(
                options.prefix,
                delimiter=options.delimiter,
                start_after=options.start_after,
                max_keys=options.max_keys,
            ):
                yield entry

    async def copy_object(self, bucket: str, copy_source: str, key: str) -> None:
        """Copy `copy_source` ("src-bucket/src-key") to `key` in `bucket`, with its metadata."""
        code = "ERR_OBJECT_COPY"
        src_bucket, sep, src_key = copy_source.lstrip("/").partition("/")
        if not sep or not src_key:
            raise ObjectError(
                code,
                f"copy source {copy_source!r} must be 'bucket/key'",
                reason="InvalidArgument",
                bucket=bucket,
                key=key,
            )
        await self._require_bucket(src_bucket, code)
        await self._require_bucket(bucket, code)
        with self._errors(code, src_bucket, src_key):
            if src_bucket == bucket:
                await self.store(bucket).copy(src_key, key)
            elif self._s3 is not None:
                await self._s3_call(
                    f"copy {copy_source} to {bucket}/{key}",
                    self._s3.copy_object,
                    src_bucket,
                    src_key,
                    bucket,
                    key,
                )
            else:
                reader = await self.store(src_bucket).open(src_key)
                await self.store(bucket).put_stream(key, reader, attributes=reader.info.attributes)

    async def close(self) -> None:
        self._stores.clear()


async def _counting(parts: AsyncIterator[bytes], progress: Callable[[int], None]):
    async for part in parts:
        progress(len(part))
        yield part


async def _slice(
    parts: AsyncIterator[bytes],
    start: int | None,
    end: int | None,
    suffix: int | None,
    length: int | None,
) -> AsyncIterator[bytes]:
    """The bytes [start, end) (or the last `suffix`) of a stream, keeping at most one part."""
    if suffix is not None:
        if length is not None:
            start, end = max(0, length - suffix), None
        else:
            tail = bytearray()
            async for part in parts:
                tail += part
                del tail[: max(0, len(tail) - suffix)]
            yield bytes(tail)
            return
    start = start or 0
    pos = 0
    async for part in parts:
        lo, hi = pos, pos + len(part)
        pos = hi
        if hi <= start:
            continue
        a = max(start - lo, 0)
        b = len(part) if end is None else min(len(part), end - lo)
        if a < b:
            yield part[a:b]
        if end is not None and hi >= end:
            await parts.aclose()  # type: ignore[attr-defined]
            return
    if pos <= start and length is not None and start >= length > 0:
        raise InvalidRange("get: the range starts past the end")


class Client:
    """The sync SDK: every AsyncClient method, run to completion on an event loop.

    A call from a thread without a running loop runs on that thread's own loop (no thread
    hop); a call from inside a running loop (a notebook, an async program) runs on a loop
    thread the client starts for that. Use it as a context manager, or call close()."""

    def __init__(self, url: str, **kw: Any) -> None:
        self._async = AsyncClient(url, **kw)
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Client({self._async.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def aio(self) -> AsyncClient:
        return self._async

    def _run(self, coro):
        if self._closed:
            coro.close()
            raise ConfigurationError("the client is closed", reason="Closed")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = getattr(self._local, "loop", None)
            if loop is None:
                loop = self._local.loop = asyncio.new_event_loop()
                with self._lock:
                    self._loops.append(loop)
            return loop.run_until_complete(coro)
        return asyncio.run_coroutine_threadsafe(coro, self._loop_thread()).result()

    def _loop_thread(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="riverfs-sdk", daemon=True
                )
                self._thread.start()
                self._thread_loop = loop
            return self._thread_loop

    def _iterate(self, agen: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(agen.aclose())  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop the client's loops (loops of other threads close when those threads call)."""
        if self._closed:
            return
        self._closed = True
        if self._thread_loop is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
        loop = getattr(self._local, "loop", None)
        if loop is not None and not loop.is_running():
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def create_bucket(self, bucket: str) -> None:
        self._run(self._async.create_bucket(bucket))

    def delete_bucket(self, bucket: str) -> None:
        self._run(self._async.delete_bucket(bucket))

    def head_bucket(self, bucket: str) -> HeadBucketOutput:
        return self._run(self._async.head_bucket(bucket))

    def list_buckets(self) -> list[Bucket]:
        return self._run(self._async.list_buckets())

    def put_object(self, bucket: str, key: str, data: Data, **kw: Any) -> None:
        self._run(self._async.put_object(bucket, key, data, **kw))

    def get_object(self, bucket: str, key: str, byte_range: str | None = None) -> bytes:
        return self._run(self._async.get_object(bucket, key, byte_range))

    def iter_object(
        self, bucket: str, key: str, byte_range: str | None = None, *, part_size: int = PART_SIZE
    ) -> Iterator[bytes]:
        """The object's bytes in parts of about `part_size`, without holding it all."""
        stream = self._run(self._async.open_object(bucket, key, byte_range, part_size=part_size))
        return self._iterate(aiter(stream))

    def download_file(self, bucket: str, key: str, path: str | os.PathLike, **kw: Any):
        return self._run(self._async.download_file(bucket, key, path, **kw))

    def upload_file(self, bucket: str, key: str, path: str | os.PathLike, **kw: Any) -> None:
        self._run(self._async.upload_file(bucket, key, path, **kw))

    def head_object(self, bucket: str, key: str) -> HeadObjectOutput:
        return self._run(self._async.head_object(bucket, key))

    def delete_object(self, bucket: str, key: str) -> None:
        self._run(self._async.delete_object(bucket, key))

    def delete_objects(self, bucket: str, keys: list[str]) -> None:
        self._run(self._async.delete_objects(bucket, keys))

    def list_objects(self, bucket: str, options: ListObjectsOptions | None = None) -> Iterator[str]:
        return self._iterate(self._async.list_objects(bucket, options))

    def list_objects_info(
        self, bucket: str, options: ListObjectsOptions | None = None
    ) -> Iterator[ObjectInfo | CommonPrefix]:
        return self._iterate(self._async.list_objects_info(bucket, options))

    def copy_object(self, bucket: str, copy_source: str, key: str) -> None:
        self._run(self._async.copy_object(bucket, copy_source, key))


def _undecodable(code: str, bucket: str, key: str, e: Exception) -> ObjectError:
    """The error for an object marked compressed whose bytes do not decode."""
    return ObjectError(
        code,
        f"{bucket}/{key} is marked compressed but does not decode: {e}",
        reason="CorruptObject",
        bucket=bucket,
        key=key,
    )
