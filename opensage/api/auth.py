"""SigV4 verification of incoming requests against the configured credentials.

Canonicalisation mirrors botocore's signer (auth.SigV4Auth) for non-S3 services: the URI path as sent is
quoted once more, the query string is used as sent (pairs sorted), header values are whitespace-collapsed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from opensage.errors import AccessDenied

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]+)"
)
MAX_SKEW_SECONDS = 15 * 60


@dataclass(frozen=True)
class SignedIdentity:
    access_key: str
    region: str
    service: str


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_request(method: str, raw_path: str, raw_query: str, headers: dict[str, str],
                      signed: list[str], payload_hash: str) -> str:
    path = quote(raw_path or "/", safe="/~")
    pairs = sorted(tuple(p.partition("=")[::2]) for p in raw_query.split("&")) if raw_query else []
    query = "&".join(f"{k}={v}" for k, v in pairs)
    lower = {k.lower(): v for k, v in headers.items()}
    canon_headers = "".join(f"{h}:{' '.join(lower.get(h, '').split())}\n" for h in signed)
    return "\n".join([method, path, query, canon_headers, ";".join(signed), payload_hash])


def verify(method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes,
           credentials: dict[str, str], now: datetime | None = None) -> SignedIdentity:
    """Raise AccessDenied unless the request is SigV4-signed by one of ``credentials`` (access key -> secret)."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization")
    if not auth:
        raise AccessDenied("Missing Authentication Token", code="MissingAuthenticationTokenException")
    m = _AUTH_RE.match(auth.strip())
    if not m:
        raise AccessDenied("Authorization header is not a valid AWS Signature Version 4 header.",
                           code="IncompleteSignatureException")
    try:
        access_key, date, region, service, terminal = m.group("cred").split("/")
    except ValueError:
        raise AccessDenied("Credential should be scoped to a valid region.",
                           code="IncompleteSignatureException") from None
    secret = credentials.get(access_key)
    if secret is None or terminal != "aws4_request":
        raise AccessDenied("The security token included in the request is invalid.",
                           code="UnrecognizedClientException")
    amz_date = lower.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise AccessDenied("Request is missing a valid X-Amz-Date header.",
                           code="IncompleteSignatureException") from None
    now = now or datetime.now(UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise AccessDenied(f"Signature expired: {amz_date} is now earlier or later than the allowed 15 minutes.",
                           code="InvalidSignatureException")
    signed = m.group("signed").split(";")
    payload_hash = lower.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    creq = canonical_request(method, raw_path, raw_query, headers, signed, payload_hash)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    expected = hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m.group("sig")):
        raise AccessDenied(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.", code="InvalidSignatureException")
    return SignedIdentity(access_key, region, service)
