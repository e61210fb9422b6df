"""The public SDK (sync Client) against file://, memory:// and S3 (a moto server)."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from objects_support import FAST_RETRY, TEST_CREDENTIALS

from riverfs.objects import (
    BucketError,
    Client,
    ConfigurationError,
    ListObjectsOptions,
    ObjectError,
    SDKError,
)

pytest_plugins = ["objects_fixtures"]  # the moto server and fault proxy fixtures


@pytest.fixture(params=["memory", "file", "s3"])
def client(request, tmp_path):
    if request.param == "memory":
        url = f"memory://sdk-{uuid.uuid4().hex}"
    elif request.param == "file":
        url = f"file://{tmp_path}/root"
    else:
        url = request.getfixturevalue("moto_server").url()
    with Client(url, retry=FAST_RETRY, credentials=TEST_CREDENTIALS) as c:
        yield c


def fresh() -> str:
    return f"b-{uuid.uuid4().hex[:10]}"


def test_bucket_lifecycle(client):
    b = fresh()
    client.create_bucket(b)
    assert client.head_bucket(b).name == b
    assert b in [x.name for x in client.list_buckets()]
    with pytest.raises(BucketError) as e:
        client.create_bucket(b)
    assert e.value.code == "ERR_BUCKET_CREATE"
    client.put_object(b, "k", b"x")
    with pytest.raises(BucketError) as e:
        client.delete_bucket(b)
    assert (e.value.code, e.value.reason) == ("ERR_BUCKET_DELETE", "BucketNotEmpty")
    client.delete_object(b, "k")
    client.delete_bucket(b)
    assert b not in [x.name for x in client.list_buckets()]
    with pytest.raises(BucketError) as e:
        client.head_bucket(b)
    assert (e.value.code, e.value.reason) == ("ERR_BUCKET_HEAD", "NoSuchBucket")


def test_objects_put_get_head_copy_delete(client):
    b, other = fresh(), fresh()
    client.create_bucket(b)
    client.create_bucket(other)
    client.put_object(b, "dir/k", b"0123456789", content_type="text/plain", metadata={"a": "1"})
    assert client.get_object(b, "dir/k") == b"0123456789"
    assert client.get_object(b, "dir/k", byte_range="2-4") == b"234"
    assert client.get_object(b, "dir/k", byte_range="7-") == b"789"
    assert client.get_object(b, "dir/k", byte_range="-2") == b"89"
    assert client.get_object(b, "dir/k", byte_range="8-100") == b"89"
    head = client.head_object(b, "dir/k")
    assert head.content_length == 10 and head.content_type == "text/plain"
    assert head.user_metadata == {"a": "1"} and not head.compressed
    client.copy_object(b, f"{b}/dir/k", "copy")
    client.copy_object(other, f"{b}/dir/k", "elsewhere")
    assert client.get_object(b, "copy") == client.get_object(other, "elsewhere") == b"0123456789"
    assert client.head_object(other, "elsewhere").user_metadata == {"a": "1"}
    client.delete_objects(b, ["dir/k", "copy", "never-was"])
    assert list(client.list_objects(b)) == []


def test_list_objects_options(client):
    b = fresh()
    client.create_bucket(b)
    for k in ["a/1", "a/2", "a/x/3", "b/1", "c"]:
        client.put_object(b, k, b"")
    assert list(client.list_objects(b)) == ["a/1", "a/2", "a/x/3", "b/1", "c"]
    opts = ListObjectsOptions(prefix="a/", start_after="a/1", max_keys=2)
    assert list(client.list_objects(b, opts)) == ["a/2", "a/x/3"]
    assert list(client.list_objects(b, ListObjectsOptions(delimiter="/"))) == ["a/", "b/", "c"]
    opts = ListObjectsOptions(prefix="a/", delimiter="/")
    assert list(client.list_objects(b, opts)) == ["a/1", "a/2", "a/x/"]


def test_errors_name_the_operation_and_the_cause(client):
    b = fresh()
    client.create_bucket(b)
    client.put_object(b, "k", b"12345")
    cases = [
        (lambda: client.get_object(b, "nope"), ObjectError, "ERR_OBJECT_GET", "NoSuchKey"),
        (lambda: client.head_object(b, "nope"), ObjectError, "ERR_OBJECT_HEAD", "NoSuchKey"),
        (
            lambda: client.get_object("no-such-bucket", "k"),
            BucketError,
            "ERR_OBJECT_GET",
            "NoSuchBucket",
        ),
        (
            lambda: client.put_object("no-such-bucket", "k", b""),
            BucketError,
            "ERR_OBJECT_PUT",
            "NoSuchBucket",
        ),
        (
            lambda: client.get_object(b, "k", byte_range="5-2"),
            ObjectError,
            "ERR_OBJECT_GET",
            "InvalidRange",
        ),
        (
            lambda: client.get_object(b, "k", byte_range="abc"),
            ObjectError,
            "ERR_OBJECT_GET",
            "InvalidRange",
        ),
        (
            lambda: client.get_object(b, "k", byte_range="100-200"),
            ObjectError,
            "ERR_OBJECT_GET",
            "InvalidRange",
        ),
        (
            lambda: client.create_bucket("Bad_Name"),
            BucketError,
            "ERR_BUCKET_CREATE",
            "InvalidBucketName",
        ),
        (
            lambda: client.list_objects("no-such-bucket").__next__(),
            BucketError,
            "ERR_OBJECT_LIST",
            "NoSuchBucket",
        ),
        (
            lambda: client.copy_object(b, "justakey", "x"),
            ObjectError,
            "ERR_OBJECT_COPY",
            "InvalidArgument",
        ),
    ]
    for call, cls, code, reason in cases:
        with pytest.raises(cls) as e:
            call()
        assert isinstance(e.value, SDKError)
        assert (e.value.code, e.value.reason) == (code, reason), e.value
        assert e.value.message and "\n" not in e.value.message


def test_compression_is_transparent_and_recorded(client):
    b = fresh()
    client.create_bucket(b)
    data = b"riverfs " * 100_000
    client.put_object(b, "z", data, compress=True)
    head = client.head_object(b, "z")
    assert head.compressed and head.content_length == len(data)
    assert head.stored_length < len(data) // 10
    assert client.get_object(b, "z") == data
    assert client.get_object(b, "z", byte_range="8-15") == data[8:16]
    assert client.get_object(b, "z", byte_range="-5") == data[-5:]
    # Streamed uploads compress as they go; the reader still gets the plain bytes.
    client.put_object(
        b, "zs", (data[i : i + 65536] for i in range(0, len(data), 65536)), compress=True
    )
    assert b"".join(client.iter_object(b, "zs")) == data
    assert client.head_object(b, "zs").compressed
    client.put_object(b, "plain", data)
    assert not client.head_object(b, "plain").compressed
    assert b"".join(client.iter_object(b, "zs", byte_range="8-15")) == data[8:16]
    with pytest.raises(ObjectError) as e:
        b"".join(client.iter_object(b, "zs", byte_range=f"{len(data) + 5}-"))
    assert e.value.reason == "InvalidRange"


def test_streams_both_ways_with_files_and_iterators(client, tmp_path):
    b = fresh()
    client.create_bucket(b)
    data = bytes(range(256)) * 40_000  # ~10 MiB: more than one part
    client.put_object(b, "f", io.BytesIO(data))
    parts = list(client.iter_object(b, "f", part_size=1 << 20))
    assert b"".join(parts) == data
    assert len(parts) > 1 or client.aio.config.scheme == "memory"  # memory: one piece
    src = tmp_path / "src"
    src.write_bytes(data)
    seen = []
    client.upload_file(b, "u", src, progress=seen.append)
    assert sum(seen) == len(data)
    client.download_file(b, "u", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == data


def test_bad_configuration_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigurationError) as e:
        Client("ftp://x")
    assert e.value.code == "ERR_CONFIG"
    with pytest.raises(ConfigurationError, match="carries credentials"):
        Client("s3://AKIA:secret@bucket")
    monkeypatch.setenv("RIVERFS_CREDENTIALS_FILE", str(tmp_path / "none.toml"))
    with pytest.raises(ConfigurationError, match=r"no profile \[ghost\]"):
        Client("s3://?endpoint=http://127.0.0.1:1", profile="ghost")


def test_the_sync_client_works_inside_a_running_event_loop(tmp_path):
    async def go():
        with Client(f"file://{tmp_path}/root") as c:
            c.create_bucket("inloop")
            c.put_object("inloop", "k", b"v")
            return c.get_object("inloop", "k"), list(c.list_objects("inloop"))

    assert asyncio.run(go()) == (b"v", ["k"])


def test_a_closed_client_says_so(tmp_path):
    c = Client(f"file://{tmp_path}/root")
    c.close()
    with pytest.raises(ConfigurationError, match="closed"):
        c.list_buckets()
