"""Issue 7 item 1: a signature covers the body it came with, and temporary credentials need their token.

Requests are built and signed by botocore itself (its serializer for each protocol, SigV4Auth) and sent to
the real routes; the handlers behind them only record what reached them.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import cbor2
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import create_request_object, prepare_request_dict
from botocore.credentials import Credentials
from botocore.serialize import create_serializer
from starlette.applications import Starlette

from opensage.api.dispatch import Dispatcher
from opensage.api.spec import service_model
from opensage.credentials import CredentialAuthority
from opensage.server.routes import build_routes
from opensage.settings import Credentials as PlatformCredentials

BASE = "http://127.0.0.1:7420"
ROOT = PlatformCredentials("AKIDROOT", "root-secret")
OWNER = "training-job/job-1/1700000000000"

# (surface, botocore service, wire protocol, operation, params of request A, params of request B)
SURFACES: list[tuple[str, str, str, str, dict[str, Any], dict[str, Any]]] = [
    ("sagemaker json-1.1", "sagemaker", "json", "DeleteModel", {"ModelName": "model-a"}, {"ModelName": "model-b"}),
    ("runtime rest-json", "sagemaker-runtime", "rest-json", "InvokeEndpoint",
     {"EndpointName": "ep", "ContentType": "text/csv", "Body": b"1,2"},
     {"EndpointName": "ep", "ContentType": "text/csv", "Body": b"9,9"}),
    ("sts query", "sts", "query", "GetAccessKeyInfo", {"AccessKeyId": "AKIAAAAAAAAAAAAAAAAA"},
     {"AccessKeyId": "AKIABBBBBBBBBBBBBBBB"}),
    ("iam query", "iam", "query", "DeleteRole", {"RoleName": "role-a"}, {"RoleName": "role-b"}),
    ("logs json-1.1", "logs", "json", "DeleteLogGroup", {"logGroupName": "group-a"}, {"logGroupName": "group-b"}),
    ("cloudwatch json-1.0", "cloudwatch", "json", "DeleteAlarms", {"AlarmNames": ["alarm-a"]},
     {"AlarmNames": ["alarm-b"]}),
    ("cloudwatch rpc-v2-cbor", "cloudwatch", "smithy-rpc-v2-cbor", "DeleteAlarms", {"AlarmNames": ["alarm-a"]},
     {"AlarmNames": ["alarm-b"]}),
    ("application-autoscaling json-1.1", "application-autoscaling", "json", "DeregisterScalableTarget",
     {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/a/variant/AllTraffic",
      "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"},
     {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/b/variant/AllTraffic",
      "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}),
]
IDS = [s[0] for s in SURFACES]


class _Recorder:
    """Answers every operation of one service with {} and records (service, operation, params, owner)."""

    def __init__(self, service: str, seen: list[tuple]) -> None:
        self.service, self.seen = service, seen

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def handler(ctx, params):
            self.seen.append((self.service, name, params, ctx.owner))
            return {}

        return handler


class _Platform:
    def __init__(self) -> None:
        self.authority = CredentialAuthority(ROOT)
        self.seen: list[tuple] = []
        dispatcher = Dispatcher()
        for service in {s[1] for s in SURFACES}:
            dispatcher.register(service, _Recorder(service, self.seen))
        self.app = Starlette(routes=build_routes(dispatcher, self.authority))

    def send(self, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.post(path, headers=headers, content=body)

        return asyncio.run(go())


@pytest.fixture()
def platform() -> _Platform:
    return _Platform()


def wire(service: str, protocol: str, operation: str, params: dict[str, Any], creds: Credentials,
         extra_signed: dict[str, str] | None = None, base: str = BASE) -> tuple[str, dict[str, str], bytes]:
    """(path, headers, body) of the request botocore sends for ``operation``, signed with ``creds``;
    ``extra_signed``: headers added before signing."""
    model = service_model(service)
    request_dict = create_serializer(protocol).serialize_to_request(params, model.operation_model(operation))
    prepare_request_dict(request_dict, base)
    request = create_request_object(request_dict)
    for name, value in (extra_signed or {}).items():
        request.headers[name] = value
    SigV4Auth(creds, model.signing_name or model.endpoint_prefix, "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    body = prepared.body or b""
    body = body.encode() if isinstance(body, str) else body
    return prepared.url.removeprefix(base), headers, body


def error_code(r: httpx.Response) -> str:
    """The AWS error code, however the protocol carries it."""
    if "x-amzn-errortype" in r.headers:
        return r.headers["x-amzn-errortype"]
    if r.headers.get("content-type", "").startswith("text/xml"):
        return re.search(r"<Code>([^<]*)</Code>", r.text).group(1)
    if r.headers.get("content-type") == "application/cbor":
        return cbor2.loads(r.content)["__type"].rpartition("#")[2]
    return r.json()["__type"]


def root() -> Credentials:
    return Credentials(ROOT.access_key, ROOT.secret_key)


@pytest.mark.parametrize(("surface", "service", "protocol", "operation", "a", "b"), SURFACES, ids=IDS)
def test_signed_request_replayed_with_other_body_is_refused(platform, surface, service, protocol, operation, a, b):
    path, headers, body_a = wire(service, protocol, operation, a, root())
    _, _, body_b = wire(service, protocol, operation, b, root())
    r = platform.send(path, headers, body_b)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    # What the captured request in issue 7 did: an unsigned X-Amz-Content-SHA256 naming the signed body.
    forged = dict(headers, **{"X-Amz-Content-SHA256": hashlib.sha256(body_a).hexdigest()})
    r = platform.send(path, forged, body_b)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    assert platform.seen == []
    ok = platform.send(path, headers, body_a)  # the genuine request still goes through
    assert ok.status_code == 200, ok.text
    assert [(s, {k: p[k] for k in a}) for s, _, p, _ in platform.seen] == [(service, a)]


@pytest.mark.parametrize(("surface", "service", "protocol", "operation", "a", "b"), SURFACES, ids=IDS)
def test_signed_content_sha256_of_other_body_is_refused(platform, surface, service, protocol, operation, a, b):
    _, _, body_a = wire(service, protocol, operation, a, root())
    path, headers, body_b = wire(service, protocol, operation, b, root(),
                                 {"X-Amz-Content-SHA256": hashlib.sha256(body_a).hexdigest()})
    r = platform.send(path, headers, body_b)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    path, headers, _ = wire(service, protocol, operation, a, root(), {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    r = platform.send(path, headers, body_a)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    assert platform.seen == []
    path, headers, body_a = wire(service, protocol, operation, a, root(),
                                 {"X-Amz-Content-SHA256": hashlib.sha256(body_a).hexdigest()})
    assert platform.send(path, headers, body_a).status_code == 200  # the S3-style signed hash is accepted


@pytest.mark.parametrize(("surface", "service", "protocol", "operation", "a", "b"), SURFACES, ids=IDS)
def test_temporary_credentials_sign_every_surface_as_their_owner(platform, surface, service, protocol, operation,
                                                                 a, b):
    temp = platform.authority.issue(OWNER)
    path, headers, body = wire(service, protocol, operation, a,
                               Credentials(temp.access_key_id, temp.secret_access_key, temp.session_token))
    r = platform.send(path, headers, body)
    assert r.status_code == 200, r.text
    assert [(s, {k: p[k] for k in a}, owner) for s, _, p, owner in platform.seen] == [(service, a, OWNER)]


def _temp_request(platform: _Platform, token: bool = True) -> tuple[str, dict[str, str], bytes]:
    temp = platform.authority.issue(OWNER)
    creds = Credentials(temp.access_key_id, temp.secret_access_key, temp.session_token if token else None)
    return wire("sagemaker", "json", "DeleteModel", {"ModelName": "model-a"}, creds)


def test_temporary_key_without_its_token_is_refused(platform):
    path, headers, body = _temp_request(platform, token=False)
    r = platform.send(path, headers, body)
    assert (r.status_code, error_code(r)) == (403, "UnrecognizedClientException")
    assert platform.seen == []


def test_temporary_key_with_unsigned_token_is_refused(platform):
    temp = platform.authority.issue(OWNER)
    path, headers, body = wire("sagemaker", "json", "DeleteModel", {"ModelName": "model-a"},
                               Credentials(temp.access_key_id, temp.secret_access_key))
    headers["X-Amz-Security-Token"] = temp.session_token  # added after signing
    r = platform.send(path, headers, body)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    assert platform.seen == []


def test_temporary_key_with_another_keys_token_is_refused(platform):
    temp, other = platform.authority.issue(OWNER), platform.authority.issue(OWNER)
    path, headers, body = wire("sagemaker", "json", "DeleteModel", {"ModelName": "model-a"},
                               Credentials(temp.access_key_id, temp.secret_access_key, other.session_token))
    r = platform.send(path, headers, body)
    assert (r.status_code, error_code(r)) == (403, "UnrecognizedClientException")


def test_temporary_credentials_after_revoke_are_refused(platform):
    path, headers, body = _temp_request(platform)
    assert platform.send(path, headers, body).status_code == 200
    platform.authority.revoke(OWNER)
    r = platform.send(path, headers, body)
    assert (r.status_code, error_code(r)) == (403, "UnrecognizedClientException")
    assert len(platform.seen) == 1


def test_root_key_with_a_session_token_is_refused(platform):
    temp = platform.authority.issue(OWNER)
    path, headers, body = wire("sagemaker", "json", "DeleteModel", {"ModelName": "model-a"},
                               Credentials(ROOT.access_key, ROOT.secret_key, temp.session_token))
    r = platform.send(path, headers, body)
    assert (r.status_code, error_code(r)) == (403, "UnrecognizedClientException")


@pytest.mark.parametrize("header", ["X-Amz-Target", "X-Amz-Date"])
def test_unsigned_x_amz_header_is_refused(platform, header):
    # An unsigned target would let a replay run another operation on the same body; an unsigned date would
    # let it outlive its 15 minutes.
    path, headers, body = wire("sagemaker", "json", "DeleteModel", {"ModelName": "model-a"}, root())
    signed = re.search(r"SignedHeaders=([^,]+)", headers["Authorization"]).group(1).split(";")
    unsigned = ";".join(h for h in signed if h != header.lower())
    headers["Authorization"] = re.sub(r"SignedHeaders=[^,]+", f"SignedHeaders={unsigned}", headers["Authorization"])
    r = platform.send(path, headers, body)
    assert (r.status_code, error_code(r)) == (403, "InvalidSignatureException")
    assert header.lower() in r.json()["message"] and platform.seen == []


def test_delete_model_replayed_with_other_model_keeps_it(fake_server):
    """End to end on the real SageMaker service: the forged replay of issue 7 deletes nothing."""
    sm = fake_server.client("sagemaker")
    for name in ("replay-a", "replay-b"):
        sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::000000000000:role/R", PrimaryContainer={
            "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
            "ModelDataUrl": "s3://bucket1/out/job/output/model.tar.gz"})
    creds = fake_server.settings.credentials
    base = fake_server.url
    path, headers, body_a = wire("sagemaker", "json", "DeleteModel", {"ModelName": "replay-a"},
                                 Credentials(creds.access_key, creds.secret_key), base=base)
    _, _, body_b = wire("sagemaker", "json", "DeleteModel", {"ModelName": "replay-b"}, root())
    forged = dict(headers, **{"X-Amz-Content-SHA256": hashlib.sha256(body_a).hexdigest()})
    r = httpx.post(base + path, headers=forged, content=body_b)
    assert (r.status_code, r.json()["__type"]) == (403, "InvalidSignatureException")
    assert sm.describe_model(ModelName="replay-b")["ModelName"] == "replay-b"
    assert httpx.post(base + path, headers=headers, content=body_a).status_code == 200  # the genuine one works
    assert sm.list_models(NameContains="replay-")["Models"][0]["ModelName"] == "replay-b"
