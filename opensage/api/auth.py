"""SigV4 verification of incoming requests against the configured credentials.

Canonicalisation mirrors botocore's signer (auth.SigV4Auth) for non-S3 services: the URI path as sent is
quoted once more, the query string is used as sent (pairs sorted), header values are whitespace-collapsed.

Every request pays for this check (InvokeEndpoint included), so what repeats is cached: the derived signing
key per (secret, date, region, service), the parsed X-Amz-Date, the quoted path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from opensage.errors import AccessDenied

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]+)"
)
_AMZ_DATE_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 15 * 60


@dataclass(frozen=True)
class SignedIdentity:
    access_key: str
    region: str
    service: str


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 key derived for one day's scope (cached: it changes once a day per credential)."""
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


@lru_cache(maxsize=256)
def _keyed_sha256(secret: str, date: str, region: str, service: str) -> tuple[Any, Any]:
    """HMAC-SHA256 under the signing key, with its inner and outer pads hashed once (RFC 2104)."""
    key = signing_key(secret, date, region, service).ljust(64, b"\0")  # SHA-256 blocks are 64 bytes
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def _signature(secret: str, date: str, region: str, service: str, to_sign: str) -> str:
    inner_pad, outer_pad = _keyed_sha256(secret, date, region, service)
    inner = inner_pad.copy()
    inner.update(to_sign.encode())
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


@lru_cache(maxsize=1024)
def _quoted_path(raw_path: str) -> str:
    return quote(raw_path or "/", safe="/~")


@lru_cache(maxsize=256)
def parse_amz_date(amz_date: str) -> datetime:
    """``YYYYMMDDTHHMMSSZ`` -> aware datetime; ValueError as ``datetime.strptime`` with that format would."""
    m = _AMZ_DATE_RE.fullmatch(amz_date)
    if m is None:  # anything unusual goes to strptime, so what it accepts and refuses stays the same
        return datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    year, month, day, hour, minute, second = map(int, m.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def canonical_request(method: str, raw_path: str, raw_query: str, headers: dict[str, str],
                      signed: list[str], payload_hash: str) -> str:
    return _canonical_request(method, raw_path, raw_query, {k.lower(): v for k, v in headers.items()}, signed,
                              payload_hash)


def _canonical_request(method: str, raw_path: str, raw_query: str, lower: dict[str, str], signed: list[str],
                       payload_hash: str) -> str:
    """As canonical_request, with header names already lower-case."""
    query = ""
    if raw_query:
        pairs = sorted(tuple(p.partition("=")[::2]) for p in raw_query.split("&"))
        query = "&".join(f"{k}={v}" for k, v in pairs)
    canon_headers = "".join(f"{h}:{' '.join(lower.get(h, '').split())}\n" for h in signed)
    return "\n".join([method, _quoted_path(raw_path), query, canon_headers, ";".join(signed), payload_hash])


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
        when = parse_amz_date(amz_date)
    except ValueError:
        raise AccessDenied("Request is missing a valid X-Amz-Date header.",
                           code="IncompleteSignatureException") from None
    now = now or datetime.now(UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise AccessDenied(f"Signature expired: {amz_date} is now earlier or later than the allowed 15 minutes.",
                           code="InvalidSignatureException")
    signed = m.group("signed").split(";")
    payload_hash = lower.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    creq = _canonical_request(method, raw_path, raw_query, lower, signed, payload_hash)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    expected = _signature(secret, date, region, service, to_sign)
    if not hmac.compare_digest(expected, m.group("sig")):
        raise AccessDenied(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.", code="InvalidSignatureException")
    return SignedIdentity(access_key, region, service)
