"""SigV4 for S3 requests, as the object store's front door checks and re-creates it.

``verify`` checks a request's signature (``Authorization`` header or presigned query) against the principal
``CredentialAuthority.principal`` returns for its access key and session token, and answers what the body
must then be checked against (``PayloadRule``). ``sign_for_backend`` signs the request again with the
platform's root key, which is the only identity SeaweedFS knows. ``ChunkVerifier`` checks the per-chunk
signatures of ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` uploads.

Errors are ``S3AuthError``: the code, HTTP status and message S3 answers with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from opensage.credentials import Principal

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Query parameters of presigned authentication: never forwarded to the backend.
PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                  "X-Amz-Signature", "X-Amz-Security-Token")
# Signature Version 2 query authentication (boto3's default for presigned S3 URLs in us-east-1).
V2_PARAMS = ("AWSAccessKeyId", "Signature", "Expires", "x-amz-security-token")
# Sub-resources SigV2 signs (botocore's HmacV1Auth.QSAOfInterest).
V2_SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock"})

Lookup = Callable[[str, str | None], Principal | None]


class S3AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _signature_mismatch() -> S3AuthError:
    return S3AuthError(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                       "signature you provided. Check your key and signing method.")


class Headers:
    """Request headers in arrival order, looked up case-insensitively."""

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self.items: list[tuple[str, str]] = list(items or [])

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.items:
            if key.lower() == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.items if key.lower() == name]

    def remove(self, *names: str) -> None:
        drop = {n.lower() for n in names}
        self.items = [(k, v) for k, v in self.items if k.lower() not in drop]

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.items.append((name, value))

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.items}


@dataclass
class PayloadRule:
    """What the proxy must check the body against once the headers verified."""

    content_sha256: str  # the hex hash, UNSIGNED-PAYLOAD or a STREAMING-* value
    principal: Principal
    scope: str = ""
    amz_date: str = ""
    seed_signature: str = ""  # for STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER)
    presigned: bool = False
    removed_query: list[str] = field(default_factory=list)


# -- canonical forms ---------------------------------------------------------------------------------
def canonical_uri(path: str) -> str:
    """S3 signs the path once-encoded (botocore quotes all but ``/~`` and RFC 3986 unreserved)."""
    return quote(unquote(path), safe="/~")


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def canonical_query(pairs: list[tuple[str, str]]) -> str:
    encoded = [(quote(n, safe="-_.~"), quote(v, safe="-_.~")) for n, v in pairs]
    return "&".join(f"{n}={v}" for n, v in sorted(encoded))


def canonical_headers(headers: Headers, signed: tuple[str, ...]) -> str:
    return "".join(f"{name}:{','.join(' '.join(v.split()) for v in headers.get_all(name))}\n" for name in signed)


def _signing_key(secret: str, scope: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, method: str, path: str, query_pairs: list[tuple[str, str]], headers: Headers,
              signed: tuple[str, ...], payload: str, amz_date: str, scope: str) -> str:
    canonical_request = "\n".join([method, canonical_uri(path), canonical_query(query_pairs),
                                   canonical_headers(headers, signed), ";".join(signed), payload])
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    return hmac.new(_signing_key(secret, scope), string_to_sign.encode(), hashlib.sha256).hexdigest()


# -- verifying ---------------------------------------------------------------------------------------
def _parse_authorization(value: str) -> tuple[str, str, tuple[str, ...], str]:
    """(access key, scope, signed headers, signature) of an ``AWS4-HMAC-SHA256 Credential=...`` header."""
    fields: dict[str, str] = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name] = val.strip()
    access_key, sep, scope = fields.get("Credential", "").partition("/")
    if not sep or "SignedHeaders" not in fields or "Signature" not in fields or len(scope.split("/")) != 4:
        raise S3AuthError(400, "AuthorizationHeaderMalformed", "The authorization header is malformed; "
                          "it must name Credential=<key>/<date>/<region>/s3/aws4_request, SignedHeaders and "
                          "Signature.")
    return access_key, scope, tuple(fields["SignedHeaders"].split(";")), fields["Signature"]


def _parse_amz_date(value: str | None) -> float | None:
    """Seconds since the epoch of ``yyyyMMddTHHmmssZ`` (None if malformed)."""
    if not value or len(value) != 16 or value[8] != "T" or value[15] != "Z" or not (value[:8] + value[9:15]).isdigit():
        return None
    try:
        return datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]), int(value[11:13]),
                        int(value[13:15]), tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _principal(lookup: Lookup, access_key: str, token: str | None) -> Principal:
    principal = lookup(access_key, token or None)
    if principal is not None:
        return principal
    if token:
        raise S3AuthError(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    raise S3AuthError(403, "InvalidAccessKeyId",
                      "The AWS Access Key Id you provided does not exist in our records.")


def _unsigned_amz_headers(headers: Headers, signed: tuple[str, ...]) -> None:
    """S3 refuses x-amz-* headers left out of the signature (the session token among them)."""
    loose = sorted(n for n in headers.names() if n.startswith("x-amz-") and n not in signed
                   and n != "x-amz-content-sha256")
    if loose:
        raise S3AuthError(403, "AccessDenied", "There were headers present in the request which were not "
                          f"signed: {', '.join(loose)}")


def verify(method: str, target: str, headers: Headers, lookup: Lookup, now: float | None = None) -> PayloadRule:
    """Check the request's SigV4 (header or presigned form); raises S3AuthError when S3 would refuse it."""
    now = time.time() if now is None else now
    path, _, query = target.partition("?")
    pairs = _query_pairs(query)
    params = dict(pairs)
    authorization = headers.get("authorization")
    if authorization is not None:
        if authorization.startswith("AWS "):
            return _verify_v2(method, path, query, headers, authorization, lookup, now)
        if not authorization.startswith(ALGORITHM + " "):
            raise S3AuthError(400, "InvalidArgument", "Only AWS4-HMAC-SHA256 (Signature Version 4) "
                              "authorization is supported.")
        return _verify_header(method, path, pairs, headers, authorization, lookup, now)
    if "X-Amz-Signature" in params or "X-Amz-Credential" in params:
        return _verify_presigned(method, path, pairs, headers, lookup, now)
    if "Signature" in params or "AWSAccessKeyId" in params:
        return _verify_v2(method, path, query, headers, None, lookup, now)
    raise S3AuthError(403, "AccessDenied", "Access Denied")


def _verify_header(method: str, path: str, pairs: list[tuple[str, str]], headers: Headers, authorization: str,
                   lookup: Lookup, now: float) -> PayloadRule:
    access_key, scope, signed, provided = _parse_authorization(authorization)
    if "host" not in signed:
        raise S3AuthError(400, "AuthorizationHeaderMalformed", "The host header must be signed.")
    payload = headers.get("x-amz-content-sha256")
    if payload is None:
        raise S3AuthError(400, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if "x-amz-content-sha256" not in signed:
        raise S3AuthError(403, "AccessDenied", "There were headers present in the request which were not "
                          "signed: x-amz-content-sha256")
    if not (_HEX64.fullmatch(payload) or payload in (UNSIGNED, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
                                                     STREAMING_UNSIGNED_TRAILER)):
        raise S3AuthError(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                          "STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER), STREAMING-UNSIGNED-PAYLOAD-TRAILER "
                          "or a valid sha256 value.")
    _unsigned_amz_headers(headers, signed)
    amz_date = headers.get("x-amz-date") or ""
    when = _parse_amz_date(amz_date)
    if when is None:
        raise S3AuthError(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if abs(now - when) > MAX_SKEW_SECONDS:
        raise S3AuthError(403, "RequestTimeTooSkewed",
                          "The difference between the request time and the current time is too large.")
    principal = _principal(lookup, access_key, headers.get("x-amz-security-token"))
    expected = signature(principal.secret_key, method, path, pairs, headers, signed, payload, amz_date, scope)
    if not hmac.compare_digest(expected, provided):
        raise _signature_mismatch()
    return PayloadRule(payload, principal, scope, amz_date, seed_signature=provided)


def _verify_presigned(method: str, path: str, pairs: list[tuple[str, str]], headers: Headers, lookup: Lookup,
                      now: float) -> PayloadRule:
    params = dict(pairs)
    missing = [p for p in PRESIGN_PARAMS[:-1] if p not in params]
    if missing or params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3AuthError(400, "AuthorizationQueryParametersError", "Query-string authentication version 4 "
                          "requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
                          "X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    access_key, _, scope = params["X-Amz-Credential"].partition("/")
    signed = tuple(params["X-Amz-SignedHeaders"].split(";"))
    if len(scope.split("/")) != 4 or "host" not in signed:
        raise S3AuthError(400, "AuthorizationQueryParametersError", "X-Amz-Credential must be "
                          "<key>/<date>/<region>/s3/aws4_request and X-Amz-SignedHeaders must include host.")
    _unsigned_amz_headers(headers, signed)
    when = _parse_amz_date(params["X-Amz-Date"])
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if when is None or not 0 <= expires <= MAX_PRESIGN_EXPIRES:
        raise S3AuthError(400, "AuthorizationQueryParametersError", "X-Amz-Date must be yyyyMMddTHHmmssZ and "
                          "X-Amz-Expires between 0 and 604800 seconds.")
    if when - now > MAX_SKEW_SECONDS:
        raise S3AuthError(403, "AccessDenied", "Request is not valid yet")
    if now > when + expires:
        raise S3AuthError(403, "AccessDenied", "Request has expired")
    principal = _principal(lookup, access_key, params.get("X-Amz-Security-Token"))
    payload = headers.get("x-amz-content-sha256") or UNSIGNED
    unsigned_pairs = [(n, v) for n, v in pairs if n != "X-Amz-Signature"]
    expected = signature(principal.secret_key, method, path, unsigned_pairs, headers, signed, payload,
                         params["X-Amz-Date"], scope)
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        raise _signature_mismatch()
    if payload.startswith("STREAMING-"):
        raise S3AuthError(400, "InvalidRequest", "Streaming uploads cannot be presigned.")
    return PayloadRule(payload, principal, scope, params["X-Amz-Date"], presigned=True)


def _verify_v2(method: str, path: str, query: str, headers: Headers, authorization: str | None, lookup: Lookup,
               now: float) -> PayloadRule:
    """Signature Version 2: ``Authorization: AWS key:sig`` or the ``AWSAccessKeyId/Signature/Expires`` query.

    The string to sign covers the method, Content-MD5, Content-Type, the date (or Expires), the x-amz-*
    headers (and, presigned, x-amz-* query parameters) and the resource: as on S3, a presigned PUT must send
    the Content-Type it was presigned with.
    """
    raw_pairs = [part.split("=", 1) for part in query.split("&") if part]
    params = {name: unquote(value[0]) if value else "" for name, *value in raw_pairs}
    amz: dict[str, list[str]] = {}
    for name, value in headers.items:
        if name.lower().startswith("x-amz-"):
            amz.setdefault(name.lower(), []).append(value.strip())
    if authorization is None:
        if not all(p in params for p in V2_PARAMS[:3]):
            raise S3AuthError(403, "AccessDenied", "Query-string authentication requires the Signature, "
                              "Expires and AWSAccessKeyId parameters")
        access_key, provided, date_line = params["AWSAccessKeyId"], params["Signature"], params["Expires"]
        try:
            expires = int(date_line)
        except ValueError:
            expires = 0
        if now > expires:
            raise S3AuthError(403, "AccessDenied", "Request has expired")
        for name, value in params.items():
            if name.lower().startswith("x-amz-"):
                amz.setdefault(name.lower(), []).append(value.strip())
        token = params.get("x-amz-security-token")
    else:
        access_key, _, provided = authorization[4:].strip().rpartition(":")
        date_line = "" if "x-amz-date" in amz else headers.get("date") or ""
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(headers.get("x-amz-date") or date_line).timestamp()
        except (TypeError, ValueError):
            raise S3AuthError(403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date "
                              "header") from None
        if abs(now - when) > MAX_SKEW_SECONDS:
            raise S3AuthError(403, "RequestTimeTooSkewed",
                              "The difference between the request time and the current time is too large.")
        token = headers.get("x-amz-security-token")
    principal = _principal(lookup, access_key, token)
    sub = sorted((name, unquote(value[0]) if value else None) for name, *value in raw_pairs
                 if name in V2_SUBRESOURCES)
    resource = path + ("?" + "&".join(n if v is None else f"{n}={v}" for n, v in sub) if sub else "")

    def matches(content_type: str) -> bool:
        to_sign = "\n".join([method, (headers.get("content-md5") or "").strip(), content_type, date_line]
                            + [f"{n}:{','.join(v)}" for n, v in sorted(amz.items())] + [resource])
        expected = base64.b64encode(hmac.new(principal.secret_key.encode(), to_sign.encode(), hashlib.sha1).digest())
        return hmac.compare_digest(expected.decode(), provided)

    content_type = (headers.get("content-type") or "").strip()
    # boto3 presigns SigV2 URLs for a custom endpoint where AWS gets SigV4 ones, which leave Content-Type
    # unsigned: a URL presigned without one accepts any Content-Type, as the URL AWS users get does.
    if not matches(content_type) and not (authorization is None and content_type and matches("")):
        raise _signature_mismatch()
    payload = headers.get("x-amz-content-sha256") or UNSIGNED
    if authorization is not None and method in ("PUT", "POST") and not _HEX64.fullmatch(payload):
        # A SigV2 header signature covers the headers, not the body: a captured PUT could be replayed with
        # other bytes. x-amz-* headers are signed in SigV2, so a hex x-amz-content-sha256 pins the body.
        raise S3AuthError(400, "InvalidRequest", "Signature Version 2 does not cover the request body: sign "
                          "PUT and POST requests with AWS4-HMAC-SHA256 (Signature Version 4, every AWS SDK's "
                          "default) or send a signed x-amz-content-sha256 of the body.")
    return PayloadRule(payload if _HEX64.fullmatch(payload) else UNSIGNED, principal, presigned=True)


# -- re-signing for the backend ----------------------------------------------------------------------
def backend_target(target: str) -> tuple[str, list[tuple[str, str]], str]:
    """(path, query pairs without presigned authentication, the target to send)."""
    path, _, query = target.partition("?")
    auth_params = PRESIGN_PARAMS + V2_PARAMS if "Signature=" in query else PRESIGN_PARAMS
    kept = [part for part in query.split("&") if part and unquote(part.partition("=")[0]) not in auth_params]
    pairs = _query_pairs("&".join(kept))
    return path, pairs, path + ("?" + "&".join(kept) if kept else "")


def sign_for_backend(method: str, path: str, pairs: list[tuple[str, str]], headers: Headers, access_key: str,
                     secret_key: str, payload: str, now: float | None = None, region: str = "us-east-1") -> None:
    """Replace the request's authentication with a fresh header signature by ``access_key`` (in place)."""
    headers.remove("authorization", "x-amz-security-token", "x-amz-date", "x-amz-content-sha256")
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    headers.set("x-amz-date", amz_date)
    headers.set("x-amz-content-sha256", payload)
    signed = tuple(sorted(n for n in headers.names()
                          if n == "host" or n.startswith("x-amz-") or n in ("content-type", "content-md5")))
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    sig = signature(secret_key, method, path, pairs, headers, signed, payload, amz_date, scope)
    headers.set("Authorization", f"{ALGORITHM} Credential={access_key}/{scope}, "
                                 f"SignedHeaders={';'.join(signed)}, Signature={sig}")


# -- aws-chunked signatures --------------------------------------------------------------------------
class ChunkVerifier:
    """Checks each chunk of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` body against the chained signatures."""

    def __init__(self, rule: PayloadRule) -> None:
        self._key = _signing_key(rule.principal.secret_key, rule.scope)
        self._prefix = f"{ALGORITHM}-PAYLOAD\n{rule.amz_date}\n{rule.scope}\n"
        self._trailer_prefix = f"{ALGORITHM}-TRAILER\n{rule.amz_date}\n{rule.scope}\n"
        self.previous = rule.seed_signature

    def chunk(self, data: bytes, provided: str) -> None:
        to_sign = f"{self._prefix}{self.previous}\n{EMPTY_SHA256}\n{hashlib.sha256(data).hexdigest()}"
        expected = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, provided):
            raise _signature_mismatch()
        self.previous = expected

    def trailer(self, trailer_lines: bytes, provided: str) -> None:
        to_sign = f"{self._trailer_prefix}{self.previous}\n{hashlib.sha256(trailer_lines).hexdigest()}"
        expected = hmac.new(self._key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, provided):
            raise _signature_mismatch()
