"""Retries: exponential backoff with full jitter, for retryable failures only.

A failure is retryable when the store could not answer (connection refused or reset, timeout)
or answered that it is busy or broken (HTTP 429, 500, 502, 503, 504; S3's SlowDown). A 4xx
answer other than 429 is final: the request itself is wrong and repeating it cannot help.

The policy bounds both the number of attempts and the total time spent, sleeps included.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_S3_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "InternalError"}
)
_TRANSIENT_WORDS = re.compile(
    r"timed out|timeout|connection (?:reset|refused|closed|aborted)|broken pipe|"
    r"error sending request|incomplete ?message|unexpected eof|end of file|"
    r"connection error|error trying to connect|hyper::Error|operation was canceled|"
    r"error decoding response body|reset by peer",
    re.IGNORECASE,
)


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    """How hard to try. `max_attempts` counts the first try (1 = never retry)."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    total_timeout: float = 60.0
    # Per request: a stalled read fails after `read_timeout`; a request fails after `timeout`.
    read_timeout: float = 30.0
    timeout: float = 600.0
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff <= max_backoff")
        if self.total_timeout <= 0:
            raise ValueError("total_timeout must be positive")

    def backoff(self, retry: int) -> float:
        """Sleep before retry number `retry` (1, 2, ...): full jitter over the capped exponent."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(0, cap)

    def obstore_retry_config(self) -> dict:
        """The same policy for obstore's own per-request retries (used for multipart parts)."""
        return {
            "max_retries": self.max_attempts - 1,
            "retry_timeout": timedelta(seconds=self.total_timeout),
            "backoff": {
                "init_backoff": timedelta(seconds=max(self.initial_backoff, 0.001)),
                "max_backoff": timedelta(seconds=max(self.max_backoff, 0.001)),
                "base": self.multiplier,
            },
        }

    def client_options(self) -> dict:
        return {
            "timeout": timedelta(seconds=self.timeout),
            "read_timeout": timedelta(seconds=self.read_timeout),
            "connect_timeout": timedelta(seconds=self.connect_timeout),
        }


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(status: int | None, s3_code: str | None, text: str) -> bool:
    if status is not None:
        return status in RETRYABLE_STATUS or (s3_code in RETRYABLE_S3_CODES)
    return bool(_TRANSIENT_WORDS.search(text))


async def with_retries(
    policy: RetryPolicy,
    what: str,
    attempt: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], BaseException],
) -> T:
    """Run `attempt` until it succeeds, fails for good, or the policy is spent.

    `classify` turns a raw exception into a StoreError (with `.retryable`); that error is raised
    with `.attempts` set when the policy gives up.
    """
    start = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            return await attempt()
        except Exception as raw:
            err = classify(raw)
            if err is not raw:
                err.__cause__ = raw
            retryable = getattr(err, "retryable", False)
            if not retryable or tries >= policy.max_attempts:
                if hasattr(err, "attempts"):
                    err.attempts = tries
                if err is raw:
                    raise
                raise err from raw
            delay = policy.backoff(tries)
            if time.monotonic() - start + delay > policy.total_timeout:
                err.attempts = tries
                raise err from raw
            log.warning(
                "%s failed (attempt %d of %d), retrying in %.2fs: %s",
                what,
                tries,
                policy.max_attempts,
                delay,
                err,
            )
            await asyncio.sleep(delay)
