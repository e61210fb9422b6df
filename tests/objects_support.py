"""Constants shared by the object-store tests (the fixtures are in objects_fixtures.py)."""

from __future__ import annotations

from riverfs.objects import Credentials, RetryPolicy

TEST_CREDENTIALS = Credentials(
    access_key_id="riverfs-test",
    secret_access_key="riverfs-test-secret",
    region="us-east-1",
    source="tests",
)
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "riverfs-test",
    "AWS_SECRET_ACCESS_KEY": "riverfs-test-secret",
    "AWS_REGION": "us-east-1",
}
# Fast retries for tests: the same shape as the default, smaller numbers.
FAST_RETRY = RetryPolicy(
    max_attempts=4, initial_backoff=0.01, max_backoff=0.05, total_timeout=20, read_timeout=5
)
