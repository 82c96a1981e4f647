"""The SSE-KMS stripping proxy: SigV4 checked and redone exactly as botocore signs, nothing else touched."""

from __future__ import annotations

import socket
from email.message import Message
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from opensage.objects.seaweed import free_port, port_is_free
from opensage.objects.sse_proxy import (
    SSE_KMS_HEADERS,
    SigV4Authorization,
    SseKmsProxy,
    sigv4_signature,
    strip_sse_kms,
)

AK, SK = "PROXYTESTKEY", "proxy-test-secret"


def _signed(method: str, url: str, headers: dict[str, str], secret: str = SK) -> tuple[str, Message]:
    """(request target, headers) of a request signed by botocore's own S3 SigV4 signer."""
    request = AWSRequest(method=method, url=url, data=b"payload", headers=headers)
    S3SigV4Auth(Credentials(AK, secret), "s3", "us-east-1").add_auth(request)
    parts = urlsplit(request.url)
    message = Message()
    message["Host"] = parts.netloc
    for name, value in request.headers.items():
        message[name] = value
    return parts.path + ("?" + parts.query if parts.query else ""), message


def _signature_verifies(method: str, target: str, headers: Message) -> bool:
    auth = SigV4Authorization.parse(headers["Authorization"])
    assert auth is not None
    return sigv4_signature(SK, method, target, headers, auth.signed_headers, auth.scope) == auth.signature


def test_sigv4_signature_matches_botocore_for_keys_needing_quoting() -> None:
    target, headers = _signed("PUT", "http://127.0.0.1:9000/bkt/dir/a%20b%2Bc~d.tar.gz?uploads=&x=1", {
        "x-amz-server-side-encryption": "aws:kms", "Content-Type": "application/x-tar"})
    assert _signature_verifies("PUT", target, headers)


def test_strip_sse_kms_valid_signature_drops_kms_headers_and_resigns() -> None:
    target, headers = _signed("PUT", "http://127.0.0.1:9000/bkt/code/sourcedir.tar.gz", {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:123456789012:key/k",
        "x-amz-meta-owner": "me"})
    assert strip_sse_kms("PUT", target, headers, {AK: SK})
    assert not any(headers.get(name) for name in SSE_KMS_HEADERS)
    auth = SigV4Authorization.parse(headers["Authorization"])
    assert auth is not None and not set(SSE_KMS_HEADERS) & set(auth.signed_headers)
    assert "x-amz-meta-owner" in auth.signed_headers and headers["x-amz-meta-owner"] == "me"
    assert _signature_verifies("PUT", target, headers)


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "no sse", "aes256", "signed chunks"])
def test_strip_sse_kms_unverifiable_or_other_requests_are_left_untouched(case: str) -> None:
    sse = "AES256" if case == "aes256" else "aws:kms"
    extra = {} if case == "no sse" else {"x-amz-server-side-encryption": sse}
    target, headers = _signed("PUT", "http://127.0.0.1:9000/bkt/k", extra,
                              secret="not-the-secret" if case == "wrong secret" else SK)
    if case == "signed chunks":  # each chunk is signed from the seed signature: it cannot be redone
        headers.replace_header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        auth = SigV4Authorization.parse(headers["Authorization"])
        assert auth is not None
        headers.replace_header("Authorization", auth.header(auth.signed_headers, sigv4_signature(
            SK, "PUT", target, headers, auth.signed_headers, auth.scope)))
        assert _signature_verifies("PUT", target, headers)
    before = list(headers.items())
    secrets = {"SOMEONEELSE": SK} if case == "unknown key" else {AK: SK}
    assert not strip_sse_kms("PUT", target, headers, secrets)
    assert list(headers.items()) == before


def test_proxy_backend_down_answers_503_service_unavailable() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    proxy = SseKmsProxy("127.0.0.1", free_port(), "127.0.0.1", dead_port, {AK: SK})
    proxy.start()
    try:
        client = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{proxy.port}", aws_access_key_id=AK,
            aws_secret_access_key=SK, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        with pytest.raises(ClientError) as info:
            client.list_buckets()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        proxy.stop()
    assert port_is_free(proxy.port)  # stop() released it
