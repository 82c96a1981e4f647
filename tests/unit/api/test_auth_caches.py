"""The SigV4 check's cached pieces give exactly what the uncached computations give."""

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from opensage.api import auth


@pytest.mark.parametrize("text", [
    "20240229T235959Z", "19991231T000000Z", "20240101T120000Z",  # valid
    "20241301T000000Z", "20240230T000000Z", "20240101T240000Z", "20240101T126000Z",  # out of range
    "2024011T120000Z", "20240101T120000", "20240101 120000Z", "", "x", "２０２４0101T120000Z",  # malformed
])
def test_parse_amz_date_any_text_agrees_with_strptime(text):
    try:
        expected = datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        with pytest.raises(ValueError):
            auth.parse_amz_date(text)
    else:
        assert auth.parse_amz_date(text) == expected


@pytest.mark.parametrize("secret", ["s", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "k" * 80])
def test_signature_with_precomputed_pads_equals_hmac_sha256(secret):
    to_sign = "AWS4-HMAC-SHA256\n20240101T000000Z\n20240101/us-east-1/sagemaker/aws4_request\n" + "ab" * 32
    key = auth.signing_key(secret, "20240101", "us-east-1", "sagemaker")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert auth._signature(secret, "20240101", "us-east-1", "sagemaker", to_sign) == expected
    assert auth._signature(secret, "20240101", "us-east-1", "sagemaker", to_sign) == expected  # cached pads reused


def test_signing_key_matches_the_sigv4_derivation():
    def h(k: bytes, m: str) -> bytes:
        return hmac.new(k, m.encode(), hashlib.sha256).digest()

    expected = h(h(h(h(b"AWS4secret", "20240101"), "eu-west-1"), "sagemaker"), "aws4_request")
    assert auth.signing_key("secret", "20240101", "eu-west-1", "sagemaker") == expected


def test_canonical_request_mixed_case_headers_equal_lowercase_ones():
    headers = {"Host": "h:1", "X-Amz-Date": "20240101T000000Z", "Content-Type": "text/csv  a"}
    lower = {k.lower(): v for k, v in headers.items()}
    signed = ["content-type", "host", "x-amz-date"]
    creq = auth.canonical_request("POST", "/endpoints/my ep/invocations", "b=2&a=1", headers, signed, "h")
    assert creq == auth._canonical_request("POST", "/endpoints/my ep/invocations", "b=2&a=1", lower, signed, "h")
    assert creq.split("\n")[:5] == ["POST", "/endpoints/my%20ep/invocations", "a=1&b=2", "content-type:text/csv a",
                                    "host:h:1"]


@pytest.mark.parametrize("value", ["ab" * 32, "0123456789abcdef" * 4, "AB" * 32, "ab" * 31 + "g0", "ab" * 31,
                                   "ab" * 33, "", " " + "ab" * 31 + "a"])
def test_is_sha256_hex_agrees_with_the_character_by_character_check(value):
    expected = len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    assert auth._is_sha256_hex(value) is expected


@pytest.mark.parametrize("offset", [-auth.MAX_SKEW_SECONDS - 1, -auth.MAX_SKEW_SECONDS, 0, auth.MAX_SKEW_SECONDS,
                                    auth.MAX_SKEW_SECONDS + 1])
def test_check_headers_skew_with_cached_date_matches_the_15_minute_rule(offset):
    from datetime import timedelta

    when = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    headers = {"authorization": "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/sagemaker/aws4_request, "
                                "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
               "x-amz-date": "20240101T120000Z", "host": "h"}
    now = when + timedelta(seconds=offset)
    if abs(offset) > auth.MAX_SKEW_SECONDS:
        with pytest.raises(auth.AccessDenied, match="Signature expired"):
            auth.check_headers(headers, {"AK": "s"}, now=now)
    else:
        assert auth.check_headers(headers, {"AK": "s"}, now=now).amz_date == "20240101T120000Z"
