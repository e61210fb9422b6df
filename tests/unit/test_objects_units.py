"""Pure parts of riverfs.objects: ranges, names, URLs, credentials, retries, signing."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from riverfs.objects import BucketError, ConfigurationError, ObjectError, RetryPolicy
from riverfs.objects.client import check_bucket_name, parse_byte_range
from riverfs.objects.credentials import Credentials, resolve_credentials
from riverfs.objects.errors import StoreError
from riverfs.objects.retry import is_retryable, with_retries
from riverfs.objects.s3api import sign_v4
from riverfs.objects.store import classify, open_store
from riverfs.objects.urls import parse_store_url, redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-1023", (0, 1024, None)),
        ("bytes=5-5", (5, 6, None)),
        ("100-", (100, None, None)),
        ("-20", (None, None, 20)),
    ],
)
def test_byte_ranges_are_inclusive_like_http(text, expected):
    assert parse_byte_range(text) == expected


@pytest.mark.parametrize("text", ["5-2", "abc", "", "-", "1-2-3", "-0", "0x10-20", " - "])
def test_invalid_byte_ranges_are_object_errors(text):
    with pytest.raises(ObjectError) as e:
        parse_byte_range(text)
    assert (e.value.code, e.value.reason) == ("ERR_OBJECT_GET", "InvalidRange")
    assert repr(text) in e.value.message


@pytest.mark.parametrize(
    "name", ["ab", "A-b", "-ab", "ab-", "a..b", "a.-b", "192.168.1.1", "a_b", "x" * 64]
)
def test_bad_bucket_names(name):
    with pytest.raises(BucketError) as e:
        check_bucket_name(name, "ERR_BUCKET_CREATE")
    assert e.value.reason == "InvalidBucketName"


def test_good_bucket_names():
    for name in ["abc", "my.bucket-1", "x" * 63, "1.2.3"]:
        check_bucket_name(name, "ERR_BUCKET_CREATE")


def test_s3_url_parsing_takes_endpoint_region_and_path_style():
    creds = Credentials("AK", "SECRET", source="test")
    c = parse_store_url(
        "s3://bkt/some/prefix?endpoint=http://127.0.0.1:9000/&region=eu-west-1", credentials=creds
    )
    assert (c.bucket, c.prefix, c.endpoint, c.region) == (
        "bkt",
        "some/prefix",
        "http://127.0.0.1:9000",
        "eu-west-1",
    )
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        parse_store_url("s3://b?endpont=x", credentials=creds)
    with pytest.raises(ConfigurationError, match="must be http"):
        parse_store_url("s3://b?endpoint=ftp://x", credentials=creds)
    with pytest.raises(ConfigurationError, match="carries credentials"):
        parse_store_url("s3://AK:SECRET@b", credentials=creds)
    assert open_store("s3://b/p?endpoint=http://127.0.0.1:9", credentials=creds).kind == "s3"


def test_gs_and_az_stores_are_wired():
    assert open_store("gs://bucket/p").kind == "gs"
    assert open_store("az://container/p?account=acct").kind == "az"


def test_an_incomplete_provider_configuration_is_a_configuration_error(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(ConfigurationError, match="cannot set up az://c"):
        open_store("az://c/p")


def test_redaction_hides_passwords_and_secret_parameters():
    assert "SECRET" not in redact_url("s3://AK:SECRET@b/p?endpoint=http://h:1")
    assert "TOKEN" not in redact_url("s3://b?session_token=TOKEN")
    assert redact_url("file:///a/b") == "file:///a/b"


def test_credentials_repr_never_shows_the_secret():
    c = Credentials("AKIAEXAMPLEKEY", "wJalrSECRET", "SESSIONTOKEN", source="test")
    for text in (repr(c), str(c), f"{c}"):
        assert "wJalrSECRET" not in text and "SESSIONTOKEN" not in text
        assert "AKIAEXAMPLEKEY" not in text  # only a hint of the key id


def write_profiles(tmp_path, text):
    path = tmp_path / "credentials.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


PROFILES = """
[default]
access_key_id = "DEFAULT"
secret_access_key = "s1"

[work]
access_key_id = "WORK"
secret_access_key = "s2"
region = "eu-west-1"
endpoint = "http://127.0.0.1:9000"
"""


def test_credentials_order_argument_then_env_profile_then_env_then_default(tmp_path):
    path = write_profiles(tmp_path, PROFILES)
    env = {"RIVERFS_CREDENTIALS_FILE": str(path)}
    assert resolve_credentials("work", env).access_key_id == "WORK"
    assert resolve_credentials(None, {**env, "RIVERFS_PROFILE": "work"}).region == "eu-west-1"
    aws = {"AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "s3", "AWS_REGION": "r"}
    got = resolve_credentials(None, {**env, **aws})
    assert (got.access_key_id, got.region, got.source) == ("ENV", "r", "environment")
    assert resolve_credentials(None, env).access_key_id == "DEFAULT"
    assert resolve_credentials(None, {"RIVERFS_CREDENTIALS_FILE": str(tmp_path / "x")}).empty
    with pytest.raises(ConfigurationError, match=r"no profile \[nope\].*default, work"):
        resolve_credentials("nope", env)


def test_xdg_config_home_locates_the_file(tmp_path):
    (tmp_path / "riverfs").mkdir()
    write_profiles(tmp_path / "riverfs", PROFILES)
    assert resolve_credentials("work", {"XDG_CONFIG_HOME": str(tmp_path)}).access_key_id == "WORK"


def test_a_broken_credentials_file_is_reported_without_its_content(tmp_path):
    path = write_profiles(tmp_path, '[default]\nsecret_access_key = "TOPSECRET\n')
    with pytest.raises(ConfigurationError) as e:
        resolve_credentials(None, {"RIVERFS_CREDENTIALS_FILE": str(path)})
    assert "TOPSECRET" not in str(e.value) and "not valid TOML" in str(e.value)
    path = write_profiles(tmp_path, '[default]\npassword = "x"\n')
    with pytest.raises(ConfigurationError, match="unknown settings password"):
        resolve_credentials(None, {"RIVERFS_CREDENTIALS_FILE": str(path)})


def test_a_readable_credentials_file_is_warned_about(tmp_path, caplog):
    path = write_profiles(tmp_path, PROFILES)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        resolve_credentials("work", {"RIVERFS_CREDENTIALS_FILE": str(path)})
    assert "readable by others" in caplog.text
    assert "s2" not in caplog.text


@pytest.mark.parametrize(
    ("status", "code", "text", "retry"),
    [
        (503, "SlowDown", "", True),
        (500, None, "", True),
        (502, None, "", True),
        (504, None, "", True),
        (429, None, "", True),
        (400, "RequestTimeout", "", False),
        (403, "AccessDenied", "", False),
        (404, None, "", False),
        (501, None, "", False),
        (None, None, "error sending request: connection reset by peer", True),
        (None, None, "operation timed out", True),
        (None, None, "Object at location x not found", False),
    ],
)
def test_what_is_retryable(status, code, text, retry):
    assert is_retryable(status, code, text) is retry


def test_classify_reads_status_and_s3_code_from_obstore_messages():
    e = classify(
        RuntimeError(
            "Generic S3 error: Error performing GET http://h/b/k in 2ms - Server returned non-2xx "
            'status code: 503 Service Unavailable: <?xml version="1.0"?><Error><Code>SlowDown'
            "</Code><Message>Reduce your rate</Message></Error>\n\nDebug source: ..."
        ),
        "get k",
    )
    assert (e.status, e.s3_code, e.retryable) == (503, "SlowDown", True)
    assert "Reduce your rate" in e.message and "<?xml" not in e.message


def test_backoff_is_jittered_exponential_and_capped():
    p = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2)
    for retry in range(1, 10):
        cap = min(1.0, 0.1 * 2 ** (retry - 1))
        samples = [p.backoff(retry) for _ in range(50)]
        assert all(0 <= s <= cap for s in samples)
        assert len(set(samples)) > 1


def test_with_retries_stops_at_max_attempts_and_never_retries_final_errors():
    policy = RetryPolicy(max_attempts=3, initial_backoff=0, max_backoff=0.001)
    calls = []

    def attempt_with(error):
        async def attempt():
            calls.append(1)
            raise error

        return attempt

    def run(error):
        calls.clear()
        with pytest.raises(StoreError) as e:
            asyncio.run(with_retries(policy, "op", attempt_with(error), lambda e: e))
        return e.value

    err = run(StoreError("busy", status=503, retryable=True))
    assert len(calls) == 3 and err.attempts == 3
    err = run(StoreError("denied", status=403))
    assert len(calls) == 1 and err.attempts == 1


def test_with_retries_returns_after_transient_failures():
    policy = RetryPolicy(max_attempts=5, initial_backoff=0, max_backoff=0.001)
    left = [2]

    async def attempt():
        if left[0]:
            left[0] -= 1
            raise StoreError("busy", retryable=True)
        return "done"

    assert asyncio.run(with_retries(policy, "op", attempt, lambda e: e)) == "done"


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=2, max_backoff=1)


def test_sigv4_matches_the_published_example():
    # The GET-object example of the S3 SigV4 documentation (range bytes=0-9).
    creds = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    headers = sign_v4(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        {},
        {"Range": "bytes=0-9"},
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        creds,
        "us-east-1",
        datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["authorization"].endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date" in headers["authorization"]
