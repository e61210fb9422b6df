"""The few S3 calls obstore does not make: bucket management and copies across buckets.

A small client on the standard library: http.client for the requests, hashlib/hmac for AWS
Signature Version 4. It makes one request per call (the caller retries); it never logs headers,
so the signature and the session token stay out of logs.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from riverfs.objects.credentials import Credentials

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(slots=True, frozen=True)
class S3Response:
    status: int
    headers: dict[str, str]
    body: bytes


class S3HTTPError(Exception):
    """A non-2xx answer (or an <Error> document in a 200 answer, as CopyObject may send)."""

    def __init__(self, method: str, target: str, status: int, code: str | None, message: str):
        super().__init__(f"{method} {target}: HTTP {status} {code or ''}: {message}".strip())
        self.status = status
        self.code = code
        self.message = message


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _q(text: str, safe: str = "-_.~") -> str:
    return quote(text, safe=safe)


def sign_v4(
    method: str,
    host: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    payload_hash: str,
    creds: Credentials,
    region: str,
    now: datetime,
) -> dict[str, str]:
    """Headers to send: `headers` plus host, x-amz-date, x-amz-content-sha256, Authorization.

    `path` is already URI-encoded as it goes on the wire (S3 does not encode it twice).
    """
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    out = {k.lower(): v.strip() for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash
    if creds.session_token:
        out["x-amz-security-token"] = creds.session_token
    names = sorted(out)
    canonical = "\n".join(
        [
            method,
            path,
            "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items())),
            "".join(f"{n}:{out[n]}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + (creds.secret_access_key or "")).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


def error_fields(body: bytes) -> tuple[str | None, str]:
    """(Code, Message) of an S3 <Error> document; (None, "") if the body is not one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None, ""
    if root.tag.rsplit("}", 1)[-1] != "Error":
        return None, ""
    code = root.findtext("Code")
    return code, root.findtext("Message") or ""


class S3Api:
    """Path-style requests for a custom endpoint, virtual-hosted ones for AWS."""

    def __init__(
        self,
        endpoint: str | None,
        region: str,
        creds: Credentials,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.region = region
        self.creds = creds
        self.timeout = timeout
        self.path_style = endpoint is not None
        parts = urlsplit(endpoint or f"https://s3.{region}.amazonaws.com")
        self.scheme = parts.scheme
        self.netloc = parts.netloc
        self.base_path = parts.path.rstrip("/")

    def _target(self, bucket: str | None, key: str | None) -> tuple[str, str]:
        """(host, encoded path) of a bucket or object."""
        path = self.base_path
        host = self.netloc
        if bucket and self.path_style:
            path += "/" + _q(bucket)
        elif bucket:
            host = f"{bucket}.{self.netloc}"
        path += "/" + (_q(key, safe="-_.~/") if key else "")
        return host, path

    def request(
        self,
        method: str,
        bucket: str | None = None,
        key: str | None = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> S3Response:
        query = query or {}
        host, path = self._target(bucket, key)
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        hdrs = dict(headers or {})
        if self.creds.empty:
            hdrs = {**{k.lower(): v for k, v in hdrs.items()}, "host": host}
        else:
            hdrs = sign_v4(
                method,
                host,
                path,
                query,
                hdrs,
                payload_hash,
                self.creds,
                self.region,
                datetime.now(UTC),
            )
        if body:
            hdrs["content-length"] = str(len(body))
        target = path + (
            "?" + "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items())) if query else ""
        )
        conn_cls = (
            http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(host, timeout=self.timeout)
        try:
            conn.request(method, target, body=body or None, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            status = resp.status
            resp_headers = {k.lower(): v for k, v in resp.getheaders()}
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            raise ConnectionError(
                f"{method} {self.scheme}://{host}{path}: {e or type(e).__name__}"
            ) from e
        finally:
            conn.close()
        shown = f"{self.scheme}://{host}{path}"
        if status >= 300 or (
            status == 200 and data.lstrip().startswith(b"<?xml") and b"<Error>" in data
        ):
            code, message = error_fields(data)
            if status < 300:
                status = 500 if code in ("InternalError", "SlowDown") else 400
            raise S3HTTPError(
                method, shown, status, code, message or http.client.responses.get(status, "")
            )
        return S3Response(status, resp_headers, data)

    # ---- the calls ----

    def list_buckets(self) -> list[tuple[str, datetime | None]]:
        resp = self.request("GET")
        root = ET.fromstring(resp.body)
        out = []
        for el in root.iter():
            if el.tag.rsplit("}", 1)[-1] != "Bucket":
                continue
            name = created = None
            for child in el:
                tag = child.tag.rsplit("}", 1)[-1]
                if tag == "Name":
                    name = child.text
                elif tag == "CreationDate" and child.text:
                    created = datetime.fromisoformat(child.text.replace("Z", "+00:00"))
            if name:
                out.append((name, created))
        return out

    def create_bucket(self, bucket: str) -> None:
        body = b""
        if self.region != "us-east-1":
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{self.region}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        self.request("PUT", bucket, body=body)

    def delete_bucket(self, bucket: str) -> None:
        self.request("DELETE", bucket)

    def head_bucket(self, bucket: str) -> str | None:
        """The bucket's region (when the server says)."""
        return self.request("HEAD", bucket).headers.get("x-amz-bucket-region")

    def copy_object(self, src_bucket: str, src_key: str, bucket: str, key: str) -> None:
        source = "/" + _q(src_bucket) + "/" + _q(src_key, safe="-_.~/")
        self.request("PUT", bucket, key, headers={"x-amz-copy-source": source})
