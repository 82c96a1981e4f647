"""Issue 7 item 3 (a): jobs get temporary credentials of their own, never the platform's key pair."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from opensage.credentials import TEMPORARY_PREFIX, resource_owner
from opensage.executors.local import agent_env
from opensage.runner.jobspec import JobSpec
from opensage.runner.sandbox import build_env
from tests.conftest import training_request


def _jobspec(server, name: str) -> tuple[Path, JobSpec]:
    jobdir = server.settings.jobs_dir / name / "algo-1"
    deadline = time.time() + 20
    while not (jobdir / "jobspec.json").exists():
        assert time.time() < deadline, "job never launched"
        time.sleep(0.05)
    return jobdir, JobSpec.read(jobdir)


def test_training_job_jobspec_has_temporary_credentials_not_root_secret(fake_server) -> None:
    sm = fake_server.client("sagemaker")
    sm.create_training_job(**training_request("creds-1"))
    jobdir, spec = _jobspec(fake_server, "creds-1")
    root = fake_server.settings.credentials
    raw = (jobdir / "jobspec.json").read_text()
    assert root.secret_key not in raw and root.access_key not in raw
    store = spec.object_store
    assert store.access_key.startswith(TEMPORARY_PREFIX) and store.session_token
    row = fake_server.platform.deps.resources.get("training-job", "creds-1")
    principal = fake_server.platform.credentials.principal(store.access_key, store.session_token)
    assert principal is not None and principal.owner == resource_owner("training-job", "creds-1", row.creation_time)
    assert principal.secret_key == store.secret_key

    env = build_env(spec, "/opt/ml", True, jobdir / "ml")
    assert env["AWS_SESSION_TOKEN"] == store.session_token and env["AWS_ACCESS_KEY_ID"] == store.access_key
    assert root.secret_key not in json.dumps(env)
    assert "AWS_PROFILE" not in env and "AWS_SHARED_CREDENTIALS_FILE" not in env


def test_training_job_environment_platform_profile_not_inherited(fake_server, monkeypatch) -> None:
    root = fake_server.settings.credentials
    sm = fake_server.client("sagemaker")
    sm.create_training_job(**training_request("creds-2"))
    jobdir, spec = _jobspec(fake_server, "creds-2")
    # `opensage up` started from a shell with `opensage env`'s exports (and the keys themselves)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", root.secret_key)
    monkeypatch.setenv("AWS_PROFILE", "opensage")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(fake_server.settings.home / "aws" / "credentials"))
    assert root.secret_key not in json.dumps(agent_env())
    env = build_env(spec, "/opt/ml", True, jobdir / "ml")
    assert root.secret_key not in json.dumps(env) and "AWS_PROFILE" not in env


def test_transform_and_endpoint_replicas_get_temporary_credentials(fake_server) -> None:
    platform = fake_server.platform
    root = fake_server.settings.credentials
    from opensage.store.resources import Resource

    now = time.time()
    platform.deps.resources.create(Resource("endpoint", "ep-creds", "arn:ep", "Creating", now, now, {}, {}))
    env = platform.deployments._replica_credentials("ep-creds")
    assert env["AWS_ACCESS_KEY_ID"].startswith(TEMPORARY_PREFIX) and env["AWS_SESSION_TOKEN"]
    assert root.secret_key not in json.dumps(env)
    owner = platform.credentials.principal(env["AWS_ACCESS_KEY_ID"], env["AWS_SESSION_TOKEN"]).owner
    assert owner.startswith("endpoint/ep-creds/")


def test_training_job_script_uses_temporary_credentials_against_api(server) -> None:
    """Once verification accepts AWS_SESSION_TOKEN: a job's own boto3 call (DescribeTrainingJob on itself)
    succeeds with the job's credentials, and the root secret is not in its environment."""
    sm = server.client("sagemaker")
    store = server.store()
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "data/train/x.csv", b"1,2\n")
    code = ("import boto3, os, json; d = boto3.client('sagemaker').describe_training_job("
            "TrainingJobName=os.environ['TRAINING_JOB_NAME']); "
            "open('/opt/ml/model/env.json','w').write(json.dumps(dict(os.environ)))")
    req = training_request("creds-api", AlgorithmSpecification={
        "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "TrainingInputMode": "File",
        "ContainerEntrypoint": [sys.executable, "-c", code]})
    sm.create_training_job(**req)
    from tests.conftest import wait_for_status

    d = wait_for_status(sm, "creds-api")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    env = json.loads((server.settings.jobs_dir / "creds-api" / "algo-1" / "ml" / "model" / "env.json").read_text())
    assert env["AWS_SESSION_TOKEN"] and server.settings.credentials.secret_key not in json.dumps(env)


def test_get_caller_identity_with_job_credentials_answers_the_jobs_assumed_role(fake_server) -> None:
    from opensage.api.dispatch import RequestContext
    from opensage.credentials import Principal
    from opensage.services.sts import StsService

    sm = fake_server.client("sagemaker")
    sm.create_training_job(**training_request("creds-sts"))
    row = fake_server.platform.deps.resources.get("training-job", "creds-sts")
    role = row.request["RoleArn"].rpartition("/")[2]
    owner = resource_owner("training-job", "creds-sts", row.creation_time)
    ctx = RequestContext(access_key="ASIAJOB", principal=Principal("ASIAJOB", "s", owner))
    ident = StsService(fake_server.platform.deps).get_caller_identity(ctx, {})
    account = fake_server.settings.account
    # As inside a SageMaker job: the role's session, never the platform's own user.
    assert ident == {"UserId": "ASIAJOB:SageMaker", "Account": account,
                     "Arn": f"arn:aws:sts::{account}:assumed-role/{role}/SageMaker"}
    root = StsService(fake_server.platform.deps).get_caller_identity(RequestContext(access_key="AKID"), {})
    assert root["Arn"] == f"arn:aws:sts::{account}:assumed-role/SageMakerRole/opensage"
