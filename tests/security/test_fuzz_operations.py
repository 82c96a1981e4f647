"""Issue 7 item 11: no hostile, wrong-typed or malformed request gets a 5xx (boto3 retries those).

A fixed-seed sweep over every operation botocore knows for each service the platform serves, implemented
or not, in each protocol it answers (CloudWatch in JSON 1.0 and RPC v2 CBOR), properly SigV4-signed and sent
through the in-process app. Implemented operations run real service code against a fake executor.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials

from opensage.api.spec import service_model
from tests.security.fuzz import CANDIDATES, Probe, ProbeBuilder, signed

with warnings.catch_warnings():  # starlette asks for httpx2; the TestClient works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SEED = 20261126
# service -> protocols the platform answers it in
SERVICES = {
    "sagemaker": ("json",),
    "sagemaker-runtime": ("rest-json",),
    "sts": ("query",),
    "iam": ("query",),
    "logs": ("json",),
    "cloudwatch": ("json", "cbor"),
    "application-autoscaling": ("json",),
    "sqs": ("json",),
}


# Services whose "nearly valid" probes are known to get 2xx answers (they run real service code).
REACHES_SERVICE_CODE = ("sagemaker", "cloudwatch", "application-autoscaling", "sts", "logs", "sqs")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[tuple[TestClient, Credentials, Any]]:
    from opensage.app import create_app
    from opensage.executors.fake import FakeExecutor
    from opensage.settings import Settings

    home = tmp_path_factory.mktemp("fuzz-home")
    (home / "s3").mkdir()
    settings = Settings.build(home, s3_endpoint=f"file://{home / 's3'}", stop_grace_seconds=1)
    platform = create_app(settings, executor=FakeExecutor(), run_background=False)
    creds = Credentials(settings.credentials.access_key, settings.credentials.secret_key)
    # Log groups named like the probes' candidate values, so Logs probes get past ResourceNotFound and reach
    # the paging code (hostile nextTokens once answered 500 there).
    for group in CANDIDATES:
        platform.deps.logs.append(group, "abc", [(1, "line")], 2)
    with TestClient(platform.asgi, base_url="http://testserver", raise_server_exceptions=False) as client:
        yield client, creds, platform.dispatcher


def probes(service: str, creds: Credentials, dispatcher: Any) -> Iterator[Probe]:
    model = service_model(service)
    builder = ProbeBuilder(model, creds, SEED, lambda name: dispatcher.handler(service, name) is not None)
    for name in model.operation_names:
        op = model.operation_model(name)
        for protocol in SERVICES[service]:
            if protocol == "json":
                yield from builder.json_probes(op, model.metadata.get("jsonVersion", "1.0"))
            elif protocol == "cbor":
                yield from builder.cbor_probes(op)
            elif protocol == "query":
                yield from builder.query_probes(op)
            else:
                yield from builder.rest_json_probes(op)


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_operation_hostile_requests_no_5xx(app, service, caplog):
    client, creds, dispatcher = app
    caplog.set_level(logging.CRITICAL)  # the sweep's 4xx answers are expected; keep the log quiet
    failures: list[str] = []
    started, count, succeeded = time.monotonic(), 0, 0
    for probe in probes(service, creds, dispatcher):
        count += 1
        response = client.request(probe.method, probe.path, headers=probe.headers, content=probe.body)
        succeeded += response.status_code < 300
        if response.status_code >= 500:
            failures.append(f"{probe.label}: {response.status_code} {response.text[:200]}")
        if response.status_code == 403:
            failures.append(f"{probe.label}: 403 (probe not signed as the server expects) {response.text[:200]}")
    assert not failures, f"{len(failures)} of {count} requests failed:\n" + "\n".join(failures[:40])
    if service in REACHES_SERVICE_CODE:  # the sweep is not vacuous: some requests pass validation and run
        assert succeeded > 0
    assert time.monotonic() - started < 60


def _send(app, target: str, body: bytes, json_version: str = "1.1"):
    client, creds, _ = app
    headers = {"X-Amz-Target": target, "Content-Type": f"application/x-amz-json-{json_version}"}
    return client.post("/", headers=signed(creds, "sagemaker", "POST", "/", headers, body), content=body)


@pytest.mark.parametrize("body", [b'{"NameContains":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                  b'{"MaxResults": NaN}', b"not json"])
def test_list_training_jobs_malformed_json_is_400_serialization_exception(app, body):
    r = _send(app, "SageMaker.ListTrainingJobs", body)
    assert r.status_code == 400, r.text
    assert r.json()["__type"] == "SerializationException"


def test_list_training_jobs_timestamp_1e308_is_400_validation_exception(app):
    r = _send(app, "SageMaker.ListTrainingJobs", b'{"CreationTimeAfter": 1e308}')
    assert r.status_code == 400, r.text
    assert r.json()["__type"] == "ValidationException"
    assert "creationTimeAfter" in r.json()["message"]
