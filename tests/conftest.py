"""Shared fixtures: an in-process control plane served by uvicorn on a free port, driven by real boto3."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from opensage.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    settings: Settings
    platform: object
    url: str
    s3_root: Path

    def client(self, service: str, **kw):
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=self.settings.credentials.access_key,
                            aws_secret_access_key=self.settings.credentials.secret_key,
                            config=Config(retries={"max_attempts": 1}), **kw)

    def store(self):
        from opensage.app import object_store_spec
        from opensage.objects import open_store

        return open_store(object_store_spec(self.settings))


def start_server(home: Path, executor=None, **settings_overrides) -> Iterator[Server]:
    import uvicorn

    from opensage.app import create_app

    s3_root = home / "s3"
    s3_root.mkdir(parents=True, exist_ok=True)
    # Bound here and handed to uvicorn: a port picked free and bound later can be taken in between by another
    # test worker's model server (seen under load: "address already in use", a module of refused connections).
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = Settings.build(home, port=sock.getsockname()[1], s3_endpoint=f"file://{s3_root}",
                              stop_grace_seconds=5, **settings_overrides)
    platform = create_app(settings, executor=executor)
    # opensage up's own server configuration (read deadline, connection cap, InvokeEndpoint's fast path), so the
    # API tests exercise the request path users get, not a plain uvicorn one.
    from opensage.server.http_limits import server_config

    config = server_config(platform.asgi, "127.0.0.1", settings.port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 120  # a loaded 2-core machine can take long to start the background threads
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the in-process control plane did not start (see the thread's exception above)"
    try:
        yield Server(settings, platform, settings.endpoint_url, s3_root)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("home"))


@pytest.fixture
def sm(server):
    return server.client("sagemaker")


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[Server]:
    """A control plane whose executor only writes scripted agent files (no processes)."""
    from opensage.executors.fake import FakeExecutor

    for server in start_server(tmp_path_factory.mktemp("home"), executor=FakeExecutor()):
        # CreateTrainingJob lists each channel's input at create time (as SageMaker): training_request's
        # default channel must have an object.
        store = server.store()
        store.ensure_bucket("bucket1")
        store.put_bytes("bucket1", "data/train/part-0.csv", b"1,0.5\n")
        yield server


def wait_for_status(sm, name: str, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"training job {name} still {d['TrainingJobStatus']} after {timeout}s")


XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"


def training_request(name: str, bucket: str = "bucket1", **overrides) -> dict:
    req = {
        "TrainingJobName": name,
        "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": {"num_round": "5", "objective": "binary:logistic"},
        "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    req.update(overrides)
    return req
