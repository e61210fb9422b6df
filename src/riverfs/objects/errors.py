"""Errors of the object layer.

Two families:

- The store errors (`StoreError` and its subclasses) are what `ObjectStore` raises. The
  filesystem catches them: `ObjectNotFound` for a missing block, `StoreFull` for ENOSPC, the rest
  is EIO. Each carries the HTTP status and the S3 error code when there was one, and whether
  the failure was retryable.
- The SDK errors (`SDKError` and its subclasses) are what `Client` raises. `code` names the
  failed operation (`ERR_OBJECT_GET`, `ERR_BUCKET_CREATE`, ...) and is stable: programs may
  match on it. `reason` names the cause in S3's words (`NoSuchKey`, `NoSuchBucket`,
  `InvalidRange`, `AccessDenied`, ...). The class says what the cause is about: the bucket, the
  object, the credentials or the configuration.
"""

from __future__ import annotations

from riverfs.errors import RiverError

# ---- store errors ---------------------------------------------------------------------------


class StoreError(RiverError):
    """The store failed an operation (after the retries the policy allows).

    Also a RiverError: a store failure that reaches the CLI is printed as one line."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        s3_code: str | None = None,
        retryable: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.s3_code = s3_code
        self.retryable = retryable
        self.attempts = attempts


class ObjectNotFound(StoreError):
    """The object does not exist."""


class BucketNotFound(ObjectNotFound):
    """The bucket (or, for a file store, the root directory) does not exist."""


class AccessDenied(StoreError):
    """The store refused the credentials, or they lack the permission."""


class InvalidRange(StoreError):
    """A byte range the object cannot satisfy (it starts past the end)."""


class InvalidKey(StoreError):
    """A key the store cannot hold (empty segments, `.` or `..`, ...)."""


class AlreadyExists(StoreError):
    """The bucket exists already."""


class NotEmpty(StoreError):
    """The bucket still holds objects."""


class StoreFull(StoreError):
    """The store has no space left (a local store on a full disk, or a quota)."""


# ---- SDK errors -----------------------------------------------------------------------------


class SDKError(RiverError):
    """Base of every error the SDK raises: a stable `code` and a readable `message`.

    Also a RiverError: the CLI prints it as one line (`riverfs: error: CODE: message`)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        reason: str = "Unknown",
        bucket: str | None = None,
        key: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.bucket = bucket
        self.key = key
        self.status = status


class AuthenticationError(SDKError):
    """Credentials missing, wrong, or without the permission for the operation."""


class BucketError(SDKError):
    """The bucket is the problem: missing, badly named, not empty, already there."""


class ObjectError(SDKError):
    """The object operation failed: missing key, bad range, store failure, ..."""


class ConfigurationError(SDKError):
    """The client cannot be set up: bad URL, unknown profile, unreadable credentials."""

    def __init__(self, message: str, *, reason: str = "InvalidConfiguration") -> None:
        super().__init__("ERR_CONFIG", message, reason=reason)
