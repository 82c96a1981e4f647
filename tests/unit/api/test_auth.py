from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from opensage.api.auth import verify
from opensage.errors import AccessDenied

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
