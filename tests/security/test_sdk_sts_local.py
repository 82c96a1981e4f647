"""SageMaker SDK calls that pass an explicit AWS ``endpoint_url`` stay on the platform under the generated
profile (issue 8 item 1): SDK v2/v3 ``get_execution_role()``, ``Session.account_id()`` and
``generate_default_sagemaker_bucket_name()`` build STS clients on ``https://sts.<region>.amazonaws.com``,
which beats the profile's endpoint_url. botocore's ``before-send`` event sees every request's URL; a request
for any other host is stopped there, so nothing ever leaves this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.session
import pytest

from opensage.cli.clientconfig import PROFILE, env_exports, write_client_config

ROOT = Path(__file__).resolve().parents[2]
SDK3_PYTHON = ROOT / ".venv-sdk3" / "bin" / "python"
S3_URL = "http://127.0.0.1:9"  # never reached: S3 requests are stopped in the hook


class _Stopped(Exception):
    """Raised in before-send: the request is recorded and never sent."""


@pytest.fixture(scope="module")
def profile(server):
    write_client_config(server.settings, S3_URL)
    env = env_exports(server.settings.home)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_DEFAULT_REGION", "AWS_REGION"):
            mp.delenv(name, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
        yield server, env


def _recording_session(server, sent: list[str]) -> boto3.session.Session:
    local = urlsplit(server.url).netloc

    def before_send(request, **_):
        sent.append(request.url)
        if urlsplit(request.url).netloc != local:
            raise _Stopped(request.url)  # AWS (a leak) or our S3 stand-in: neither is sent

    core = botocore.session.Session(profile=PROFILE)
    core.register("before-send", before_send)
    return boto3.session.Session(botocore_session=core)


def test_account_id_under_the_profile_is_answered_by_the_platform(profile):
    import sagemaker

    server, _ = profile
    sent: list[str] = []
    session = sagemaker.Session(boto_session=_recording_session(server, sent))
    assert session.account_id() == server.settings.account
    assert sent and all(url.startswith(server.url) for url in sent), sent


def test_generate_default_sagemaker_bucket_name_under_the_profile_never_asks_aws(profile):
    from sagemaker.session import generate_default_sagemaker_bucket_name

    server, _ = profile
    sent: list[str] = []
    name = generate_default_sagemaker_bucket_name(_recording_session(server, sent))
    assert name == f"sagemaker-{server.settings.region}-{server.settings.account}"
    assert sent and all(url.startswith(server.url) for url in sent), sent


def test_get_execution_role_under_the_profile_asks_the_platform_not_aws(profile):
    import sagemaker

    server, _ = profile
    sent: list[str] = []
    session = sagemaker.Session(boto_session=_recording_session(server, sent))
    # The platform's key is a session of SageMakerRole (as a notebook's is): AWS notebooks' first line works.
    role = sagemaker.get_execution_role(session)
    assert role == f"arn:aws:iam::{server.settings.account}:role/SageMakerRole"
    assert sent and all(url.startswith(server.url) for url in sent), sent


def test_default_bucket_under_the_profile_uses_the_platform_bucket_without_sts(profile):
    import sagemaker

    server, _ = profile
    sent: list[str] = []
    session = sagemaker.Session(boto_session=_recording_session(server, sent))
    with pytest.raises(Exception):  # noqa: B017 - the S3 probe is stopped in before-send on purpose
        session.default_bucket()
    assert sent and all(urlsplit(url).netloc == urlsplit(S3_URL).netloc for url in sent), sent
    # the SDK config generated with the profile names the bucket, so no STS account lookup is needed
    assert session._default_bucket_name_override == server.settings.bucket


def test_create_client_with_an_aws_endpoint_and_a_real_profile_key_is_left_alone(profile, tmp_path):
    """Only the platform's key is redirected: another profile's STS client still goes where it was told."""
    server, _ = profile
    creds = tmp_path / "credentials"
    creds.write_text("[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = x\n")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"], saved = str(creds), os.environ["AWS_SHARED_CREDENTIALS_FILE"]
    try:
        core = botocore.session.Session(profile="other")
        sent: list[str] = []
        core.register("before-send", lambda request, **_: (sent.append(request.url), (_ for _ in ()).throw(
            _Stopped(request.url))))
        client = boto3.session.Session(botocore_session=core).client(
            "sts", region_name="us-east-1", endpoint_url="https://sts.us-east-1.amazonaws.com")
        with pytest.raises(_Stopped):
            client.get_caller_identity()
    finally:
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = saved
    assert sent == ["https://sts.us-east-1.amazonaws.com/"]


_SDK3_SCRIPT = textwrap.dedent("""
    import json, sys
    from urllib.parse import urlsplit
    import boto3, botocore.session
    local = urlsplit(sys.argv[1]).netloc
    sent = []
    def before_send(request, **_):
        sent.append(request.url)
        if urlsplit(request.url).netloc != local:
            raise RuntimeError("stopped " + request.url)
    core = botocore.session.Session(profile="opensage")
    core.register("before-send", before_send)
    boto = boto3.session.Session(botocore_session=core)
    from sagemaker.core.helper.session_helper import Session, get_execution_role
    from sagemaker.core.utils.utils import SageMakerClient
    session = Session(boto_session=boto)
    out = {"account": session.account_id(),
           "bucket": session.generate_default_sagemaker_bucket_name(boto)}
    try:
        out["role"] = get_execution_role(session)
    except ValueError as exc:
        out["role_error"] = str(exc)
    core_clients = SageMakerClient(session=boto, region_name="us-east-1")
    out["endpoints"] = sorted({c.meta.endpoint_url for c in (
        session.sagemaker_client, session.sagemaker_runtime_client, core_clients.sagemaker_client,
        core_clients.sagemaker_runtime_client, core_clients.sagemaker_metrics_client)})
    out["sent"] = sent
    print(json.dumps(out))
""")


def test_sdk_v3_session_and_sagemaker_core_clients_under_the_profile_are_local(profile, tmp_path):
    server, env = profile
    if not SDK3_PYTHON.exists():
        pytest.skip("SDK v3 venv missing: run `make install-sdk3` (it builds .venv-sdk3)")
    script = tmp_path / "sdk3_sts.py"
    script.write_text(_SDK3_SCRIPT)
    # opensage itself is not installed in the SDK v3 venv: the plugin module is found on PYTHONPATH.
    run_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(SDK3_PYTHON), str(script), server.url], env=run_env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["account"] == server.settings.account
    assert out["bucket"] == f"sagemaker-{server.settings.region}-{server.settings.account}"
    assert out["endpoints"] == [server.url]
    assert out["sent"] and all(url.startswith(server.url) for url in out["sent"]), out["sent"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
