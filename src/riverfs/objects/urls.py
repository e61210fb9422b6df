"""Storage URLs: parsing them into a StoreConfig, and showing them without secrets.

    file:///abs/path                    a directory (for the SDK: a directory per bucket)
    memory://[name]                     in this process only (tests)
    s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&profile=x
    s3://?endpoint=...                  (SDK) the whole service; buckets chosen per call
    gs://bucket/prefix                  (credentials from GOOGLE_* variables, as obstore reads them)
    az://container/prefix?account=name  (or AZURE_STORAGE_ACCOUNT_NAME; keys from AZURE_* variables)

For S3, a custom endpoint means path-style requests (what MinIO, Ceph and moto want), and plain
http is allowed only when the endpoint itself is http://. Credentials never go in the URL: a URL
with a user or password is refused (it would end up in logs and `riverfs status`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from riverfs.objects.credentials import Credentials, resolve_credentials
from riverfs.objects.errors import ConfigurationError
from riverfs.objects.retry import RetryPolicy

SCHEMES = ("file", "memory", "s3", "gs", "az")
_QUERY = {"s3": {"endpoint", "region", "profile"}, "gs": set(), "az": {"account"}}
_SECRET_PARAMS = {"secret_access_key", "session_token", "password", "secret", "token", "sig"}


@dataclass(slots=True, frozen=True)
class StoreConfig:
    scheme: str
    root: Path | None = None  # file://
    name: str = ""  # memory://name
    bucket: str = ""
    prefix: str = ""
    endpoint: str | None = None
    account: str | None = None  # az://
    region: str | None = None
    credentials: Credentials = field(default_factory=Credentials)
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def url_for(self, bucket: str | None = None, prefix: str = "") -> str:
        """A URL naming `bucket`/`prefix` of this store (for messages and repr)."""
        if self.scheme == "file":
            parts = [str(self.root).rstrip("/"), bucket or "", prefix.strip("/")]
            return "file://" + "/".join(p for p in parts if p)
        path = "/".join(p for p in (self.prefix.strip("/"), prefix.strip("/")) if p)
        netloc = bucket or self.bucket or (self.name if self.scheme == "memory" else "")
        query = {}
        if self.endpoint:
            query["endpoint"] = self.endpoint
        return urlunsplit((self.scheme, netloc, "/" + path if path else "", urlencode(query), ""))


def redact_url(url: str) -> str:
    """The URL with any password and secret-looking query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if k.lower() in _SECRET_PARAMS else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe=":/")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret (urlunsplit would also turn sqlite:/// into sqlite:/)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_store_url(
    url: str,
    *,
    profile: str | None = None,
    policy: RetryPolicy | None = None,
    credentials: Credentials | None = None,
) -> StoreConfig:
    """Parse a storage URL; ConfigurationError (a RiverError) says what is wrong with it."""
    policy = policy or RetryPolicy()
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ConfigurationError(f"cannot parse storage URL {redact_url(url)!r}: {e}") from None
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"unknown storage URL {redact_url(url)!r}: use file:///absolute/path, "
            "s3://bucket/prefix?endpoint=..., gs://bucket/prefix, az://container/prefix "
            "(or memory:// for tests)",
            reason="InvalidURL",
        )
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"storage URL {redact_url(url)!r} carries credentials; put them in the "
            "credentials file or the environment instead (see docs/SDK.md)",
            reason="CredentialsInURL",
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ConfigurationError(
                f"storage URL {url!r} must be file:///absolute/path", reason="InvalidURL"
            )
        return StoreConfig("file", root=Path(parts.path), policy=policy)
    if scheme == "memory":
        return StoreConfig("memory", name=parts.netloc + parts.path, policy=policy)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY[scheme])
    if unknown:
        known = ", ".join(sorted(_QUERY[scheme])) or "none"
        raise ConfigurationError(
            f"storage URL {redact_url(url)!r}: unknown parameter(s) {', '.join(unknown)} "
            f"(known for {scheme}://: {known})",
            reason="InvalidURL",
        )
    bucket = parts.netloc
    prefix = parts.path.strip("/")
    if scheme != "s3":
        return StoreConfig(
            scheme, bucket=bucket, prefix=prefix, account=query.get("account"), policy=policy
        )
    creds = credentials or resolve_credentials(profile or query.get("profile"))
    endpoint = query.get("endpoint") or creds.endpoint
    if endpoint:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise ConfigurationError(
                f"endpoint {endpoint!r} must be http://host:port or https://host:port",
                reason="InvalidURL",
            )
        endpoint = endpoint.rstrip("/")
    return StoreConfig(
        "s3",
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        region=query.get("region") or creds.region,
        credentials=creds,
        policy=policy,
    )
