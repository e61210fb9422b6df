"""Fault injection: a proxy in front of the S3 server answers 5xx/4xx, resets or stalls requests.

The SDK retries what is retryable and succeeds, gives up with a typed error after the policy's
limit, never retries a 4xx, and never leaves a partial object visible as complete.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from objects_support import FAST_RETRY, TEST_CREDENTIALS

from riverfs.objects import (
    AuthenticationError,
    BucketError,
    Client,
    ObjectError,
    RetryPolicy,
    open_store,
)
from riverfs.objects.store import PART_SIZE

pytest_plugins = ["objects_fixtures"]  # the moto server and fault proxy fixtures


def make_client(proxy, **policy) -> Client:
    retry = RetryPolicy(**{**_fast(), **policy})
    return Client(proxy.url(), retry=retry, credentials=TEST_CREDENTIALS)


def _fast() -> dict:
    return {
        "max_attempts": FAST_RETRY.max_attempts,
        "initial_backoff": FAST_RETRY.initial_backoff,
        "max_backoff": FAST_RETRY.max_backoff,
        "total_timeout": FAST_RETRY.total_timeout,
        "read_timeout": FAST_RETRY.read_timeout,
    }


@pytest.fixture
def setup(fault_proxy, moto_server):
    bucket = moto_server.new_bucket()
    with make_client(fault_proxy) as c:
        yield c, fault_proxy, bucket


@pytest.mark.parametrize("action", ["503", "500", "502", "504", "429", "reset"])
def test_retryable_failures_are_retried_until_success(setup, action):
    c, proxy, b = setup
    proxy.add(action, 2, method="PUT")
    proxy.add(action, 2, method="GET")
    c.put_object(b, "k", b"data")
    assert c.get_object(b, "k") == b"data"
    assert proxy.count("PUT") == 3 and proxy.count("GET") == 3


def test_a_stalled_answer_times_out_and_is_retried(fault_proxy, moto_server):
    b = moto_server.new_bucket()
    with make_client(fault_proxy, read_timeout=0.5) as c:
        c.put_object(b, "k", b"data")
        fault_proxy.add("delay:2", 1, method="GET")
        start = time.monotonic()
        assert c.get_object(b, "k") == b"data"
        assert time.monotonic() - start < 1.9
        assert fault_proxy.count("GET") == 2


def test_gives_up_after_max_attempts_with_a_typed_error(setup):
    c, proxy, b = setup
    c.put_object(b, "k", b"data")
    proxy.clear()
    proxy.add("503", 100, method="GET")
    with pytest.raises(ObjectError) as e:
        c.get_object(b, "k")
    assert e.value.code == "ERR_OBJECT_GET" and e.value.reason == "SlowDown"
    assert "gave up after 4 tries" in e.value.message
    assert proxy.count("GET") == FAST_RETRY.max_attempts


def test_total_time_bounds_the_retries(fault_proxy, moto_server):
    b = moto_server.new_bucket()
    with make_client(
        fault_proxy, max_attempts=1000, initial_backoff=0.1, max_backoff=0.2, total_timeout=1.0
    ) as c:
        fault_proxy.add("503", 10_000, method="PUT")
        start = time.monotonic()
        with pytest.raises(ObjectError) as e:
            c.put_object(b, "k", b"data")
        assert time.monotonic() - start < 2.0
        assert e.value.code == "ERR_OBJECT_PUT"
        assert 2 <= fault_proxy.count("PUT") < 100


@pytest.mark.parametrize(
    ("action", "error", "reason"),
    [("403", AuthenticationError, "AccessDenied"), ("400", ObjectError, "InvalidRequest")],
)
def test_client_errors_are_never_retried(setup, action, error, reason):
    c, proxy, b = setup
    proxy.add(action, 100, method="PUT")
    with pytest.raises(error) as e:
        c.put_object(b, "k", b"data")
    assert (e.value.code, e.value.reason) == ("ERR_OBJECT_PUT", reason)
    assert proxy.count("PUT") == 1


def test_bucket_operations_are_retried_too(setup):
    c, proxy, _ = setup
    name = f"r-{uuid.uuid4().hex[:10]}"
    proxy.add("503", 1, method="HEAD")
    proxy.add("reset", 1, method="PUT")
    c.create_bucket(name)
    assert c.head_bucket(name).name == name
    proxy.add("403", 100, method="DELETE")
    with pytest.raises(AuthenticationError) as e:
        c.delete_bucket(name)
    assert e.value.code == "ERR_BUCKET_DELETE"
    proxy.add("503", 100, method="GET", path="/")
    with pytest.raises(BucketError) as e:
        c.list_buckets()
    assert e.value.code == "ERR_BUCKET_LIST"


def test_a_download_cut_short_resumes_where_it_broke(setup):
    c, proxy, b = setup
    data = bytes(range(256)) * 8192  # 2 MiB
    c.put_object(b, "k", data)
    proxy.add("cut", 2, method="GET")
    assert b"".join(c.iter_object(b, "k", part_size=256 << 10)) == data
    assert proxy.count("GET") == 3
    ranged = [t for m, t, _ in proxy.seen if m == "GET"]
    assert len(ranged) == 3


def test_multipart_parts_are_retried_and_a_failed_upload_leaves_nothing(setup):
    c, proxy, b = setup
    part = b"p" * PART_SIZE

    def parts():
        yield from (part, part, b"tail")

    proxy.add("503", 2, method="PUT", query="partNumber")
    c.put_object(b, "ok", parts())
    assert c.head_object(b, "ok").content_length == 2 * PART_SIZE + 4

    proxy.clear()
    proxy.add("503", 1000, method="PUT", query="partNumber=2")
    with pytest.raises(ObjectError) as e:
        c.put_object(b, "broken", parts())
    assert e.value.code == "ERR_OBJECT_PUT"
    with pytest.raises(ObjectError) as e:
        c.head_object(b, "broken")
    assert e.value.reason == "NoSuchKey"
    assert "broken" not in list(c.list_objects(b))


def test_a_put_reset_after_sending_is_retried_and_complete(setup):
    c, proxy, b = setup
    data = b"z" * (3 << 20)
    proxy.add("reset", 1, method="PUT")
    c.put_object(b, "k", data)
    assert c.get_object(b, "k") == data


def test_the_filesystem_store_retries(fault_proxy, moto_server):
    bucket = moto_server.new_bucket()
    store = open_store(
        fault_proxy.url(bucket, "vol"), credentials=TEST_CREDENTIALS, policy=FAST_RETRY
    )

    async def go():
        fault_proxy.add("503", 2, method="PUT")
        fault_proxy.add("reset", 1, method="GET")
        await store.put("chunks/1", b"block")
        assert await store.get("chunks/1") == b"block"

    asyncio.run(go())
