"""Object storage: one async interface over obstore, used for all store I/O, and the public SDK.

The filesystem uses `open_store` / `ObjectStore`; programs use `Client` (sync) or `AsyncClient`.
"""

from riverfs.objects.client import (
    AsyncClient,
    Bucket,
    Client,
    HeadBucketOutput,
    HeadObjectOutput,
    ListObjectsOptions,
    ObjectStream,
    parse_byte_range,
)
from riverfs.objects.credentials import Credentials, resolve_credentials
from riverfs.objects.errors import (
    AccessDenied,
    AuthenticationError,
    BucketError,
    BucketNotFound,
    ConfigurationError,
    InvalidRange,
    ObjectError,
    ObjectNotFound,
    SDKError,
    StoreError,
    StoreFull,
)
from riverfs.objects.retry import RetryPolicy
from riverfs.objects.store import CommonPrefix, ObjectInfo, ObjectReader, ObjectStore, open_store

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "AuthenticationError",
    "Bucket",
    "BucketError",
    "BucketNotFound",
    "Client",
    "CommonPrefix",
    "ConfigurationError",
    "Credentials",
    "HeadBucketOutput",
    "HeadObjectOutput",
    "InvalidRange",
    "ListObjectsOptions",
    "ObjectError",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectReader",
    "ObjectStore",
    "ObjectStream",
    "RetryPolicy",
    "SDKError",
    "StoreError",
    "StoreFull",
    "open_store",
    "parse_byte_range",
    "resolve_credentials",
]
