"""SigV4 verification of incoming requests against the credential authority.

Canonicalisation mirrors botocore's signer (auth.SigV4Auth) for non-S3 services: the URI path as sent is
quoted once more, the query string is used as sent (pairs sorted), header values are whitespace-collapsed.

Two steps, so that nothing is read from an unauthenticated client beyond its headers:

* ``check_headers`` (before the body is read): the Authorization header parses, the access key (+ session
  token) names a live principal, X-Amz-Date is within 15 minutes, and every header that changes what the
  request means is among the SignedHeaders (``x-amz-*`` / ``x-amzn-*``: the date, the target operation, the
  session token, the payload hash, the runtime's SageMaker headers).
* ``check_body``: the payload hash is always computed from the received body (a client's
  ``X-Amz-Content-SHA256`` is only compared with it, never trusted: a captured request replayed with another
  body fails), then the signature.

Every request pays for this check (InvokeEndpoint included), so what repeats is cached: the derived signing
key per (secret, date, region, service), the parsed X-Amz-Date, the quoted path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

from opensage.credentials import Principal
from opensage.errors import AccessDenied

_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]+)"
)
_AMZ_DATE_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_SKEW_SECONDS = 15 * 60
# Headers a client may add unsigned although their names start with x-amz: botocore never signs the trace id.
_UNSIGNABLE = frozenset({"x-amzn-trace-id"})
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.")


class PrincipalLookup(Protocol):
    """What verification needs of ``credentials.CredentialAuthority``."""

    def principal(self, access_key: str, session_token: str | None) -> Principal | None: ...


Credentials = PrincipalLookup | Mapping[str, str]  # a plain mapping: root-style keys only (tests, benchmarks)


class SignedIdentity(NamedTuple):  # a tuple: built on every request, cheaper than a frozen dataclass
    access_key: str
    region: str
    service: str
    principal: Principal | None = None


class PendingSignature(NamedTuple):  # a tuple: built on every request, cheaper than a dataclass
    """What ``check_headers`` found; ``check_body`` finishes the check once the body is read."""

    principal: Principal
    date: str
    region: str
    service: str
    amz_date: str
    signed: list[str]
    signature: str
    content_sha256: str | None


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


@lru_cache(maxsize=256)
def _amz_epoch(amz_date: str) -> float:
    """``parse_amz_date(amz_date).timestamp()``: a request's date repeats for a second, so it is parsed once."""
    return parse_amz_date(amz_date).timestamp()


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


def _lookup(credentials: Credentials, access_key: str, token: str | None) -> Principal | None:
    find = getattr(credentials, "principal", None)
    if find is not None:
        return find(access_key, token)
    secret = credentials.get(access_key)  # type: ignore[union-attr]
    return Principal(access_key, secret) if secret is not None and not token else None


def check_headers(lower: Mapping[str, str], credentials: Credentials, now: datetime | None = None
                  ) -> PendingSignature:
    """Everything about the signature that the headers alone decide (``lower``: names in lower case).

    Raises AccessDenied; called before any of the body is read.
    """
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
    signed = m.group("signed").split(";")
    for name in lower:  # a header that changes the request's meaning must be covered by the signature
        if name.startswith("x-amz") and name not in signed and name not in _UNSIGNABLE:
            raise AccessDenied(f"Header {name} is present in the request but is not among the SignedHeaders. "
                               + MISMATCH, code="InvalidSignatureException")
    token = lower.get("x-amz-security-token")
    principal = _lookup(credentials, access_key, token) if terminal == "aws4_request" else None
    if principal is None:
        raise AccessDenied("The security token included in the request is invalid.",
                           code="UnrecognizedClientException")
    amz_date = lower.get("x-amz-date", "")
    try:
        when = _amz_epoch(amz_date)
    except ValueError:
        raise AccessDenied("Request is missing a valid X-Amz-Date header.",
                           code="IncompleteSignatureException") from None
    if abs((now.timestamp() if now is not None else time.time()) - when) > MAX_SKEW_SECONDS:
        raise AccessDenied(f"Signature expired: {amz_date} is now earlier or later than the allowed 15 minutes.",
                           code="InvalidSignatureException")
    content_sha256 = lower.get("x-amz-content-sha256")
    if content_sha256 is not None and not _is_sha256_hex(content_sha256):
        # UNSIGNED-PAYLOAD / streaming payloads are S3's (the S3 proxy verifies those), never this API's.
        raise AccessDenied(f"x-amz-content-sha256 must be the SHA-256 of the body for this API, not "
                           f"{content_sha256[:64]!r}.", code="InvalidSignatureException")
    return PendingSignature(principal, date, region, service, amz_date, signed, m.group("sig"), content_sha256)


def _is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and not value.strip("0123456789abcdef")


def check_body(pending: PendingSignature, method: str, raw_path: str, raw_query: str, lower: Mapping[str, str],
               body: bytes) -> SignedIdentity:
    """The signature over the request as received: the payload hash is always the body's own."""
    payload_hash = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    if pending.content_sha256 is not None and pending.content_sha256 != payload_hash:
        raise AccessDenied("The provided 'x-amz-content-sha256' header does not match what was computed. "
                           + MISMATCH, code="InvalidSignatureException")
    creq = _canonical_request(method, raw_path, raw_query, lower, pending.signed, payload_hash)  # type: ignore[arg-type]
    scope = f"{pending.date}/{pending.region}/{pending.service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", pending.amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    expected = _signature(pending.principal.secret_key, pending.date, pending.region, pending.service, to_sign)
    if not hmac.compare_digest(expected, pending.signature):
        raise AccessDenied(MISMATCH, code="InvalidSignatureException")
    return SignedIdentity(pending.principal.access_key, pending.region, pending.service, pending.principal)


def verify(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes,
           credentials: Credentials, now: datetime | None = None) -> SignedIdentity:
    """Raise AccessDenied unless the request is SigV4-signed by a principal of ``credentials`` (a
    ``CredentialAuthority``, or a plain access key -> secret mapping that allows no session tokens)."""
    lower = {k.lower(): v for k, v in headers.items()}
    return check_body(check_headers(lower, credentials, now), method, raw_path, raw_query, lower, body)
