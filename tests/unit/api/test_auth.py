import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from opensage.api.auth import check_body, check_headers, verify
from opensage.credentials import CredentialAuthority
from opensage.errors import AccessDenied
from opensage.settings import Credentials as PlatformCredentials

CREDS = {"AKID": "secret"}


def _signed(url="http://127.0.0.1:7420/endpoints/my%20ep/invocations?b=2&a=1", body=b"{}", secret="secret"):
    req = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKID", secret), "sagemaker", "us-east-1").add_auth(req)
    prepared = req.prepare()
    path, _, query = prepared.url.split("7420", 1)[1].partition("?")
    headers = dict(prepared.headers.items())
    headers["host"] = "127.0.0.1:7420"
    return path, query, headers, body


def test_verify_botocore_signature_with_encoded_path_and_query_passes():
    path, query, headers, body = _signed()
    ident = verify("POST", path, query, headers, body, CREDS)
    assert (ident.access_key, ident.region, ident.service) == ("AKID", "us-east-1", "sagemaker")


def test_verify_wrong_secret_is_invalid_signature():
    path, query, headers, body = _signed(secret="other")
    with pytest.raises(AccessDenied) as e:
        verify("POST", path, query, headers, body, CREDS)
    assert e.value.code == "InvalidSignatureException"


def test_verify_old_request_is_expired():
    path, query, headers, body = _signed()
    later = datetime.now(UTC) + timedelta(minutes=20)
    with pytest.raises(AccessDenied) as e:
        verify("POST", path, query, headers, body, CREDS, now=later)
    assert "expired" in e.value.message


def _signed_with(creds: Credentials, body=b"{}", extra: dict | None = None):
    req = AWSRequest("POST", "http://127.0.0.1:7420/", data=body, headers={"X-Amz-Target": "SageMaker.ListModels",
                                                                          **(extra or {})})
    SigV4Auth(creds, "sagemaker", "us-east-1").add_auth(req)
    headers = dict(req.prepare().headers.items())
    headers["host"] = "127.0.0.1:7420"
    return headers


def test_verify_temporary_credentials_name_their_owner():
    authority = CredentialAuthority(PlatformCredentials("AKID", "secret"))
    temp = authority.issue("endpoint/ep/1")
    headers = _signed_with(Credentials(temp.access_key_id, temp.secret_access_key, temp.session_token))
    ident = verify("POST", "/", "", headers, b"{}", authority)
    assert (ident.access_key, ident.principal.owner) == (temp.access_key_id, "endpoint/ep/1")
    root = verify("POST", "/", "", _signed_with(Credentials("AKID", "secret")), b"{}", authority)
    assert root.principal.owner is None and root.principal.name == "platform"


def test_verify_mapping_credentials_refuse_a_session_token():
    headers = _signed_with(Credentials("AKID", "secret", "token"))
    with pytest.raises(AccessDenied) as e:
        verify("POST", "/", "", headers, b"{}", CREDS)
    assert e.value.code == "UnrecognizedClientException"


def test_check_headers_needs_no_body_and_check_body_hashes_the_one_received():
    headers = {k.lower(): v for k, v in _signed_with(Credentials("AKID", "secret")).items()}
    pending = check_headers(headers, CREDS)
    assert check_body(pending, "POST", "/", "", headers, b"{}").access_key == "AKID"
    with pytest.raises(AccessDenied) as e:
        check_body(pending, "POST", "/", "", headers, b"[]")
    assert e.value.code == "InvalidSignatureException"


def test_verify_trace_id_header_may_be_unsigned():
    headers = _signed_with(Credentials("AKID", "secret"))
    headers["X-Amzn-Trace-Id"] = "Root=1-abc"  # botocore never signs it
    assert verify("POST", "/", "", headers, b"{}", CREDS).access_key == "AKID"


def test_verify_unsigned_content_sha256_is_refused_even_when_it_matches():
    headers = _signed_with(Credentials("AKID", "secret"))
    headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"{}").hexdigest()
    with pytest.raises(AccessDenied) as e:
        verify("POST", "/", "", headers, b"{}", CREDS)
    assert e.value.code == "InvalidSignatureException" and "x-amz-content-sha256" in e.value.message
