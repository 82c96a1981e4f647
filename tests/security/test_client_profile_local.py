"""The generated `opensage` profile never sends a client to real AWS (issue 8 item 1, a security defect too:
an Application Auto Scaling client under a typo'd key went to AWS with the platform's keys)."""

from __future__ import annotations

from urllib.parse import urlparse

import boto3
import botocore.session
import pytest

from opensage.cli.clientconfig import CONTROL_PLANE_SERVICES, PROFILE, env_exports, write_client_config
from opensage.settings import Settings

S3_URL = "http://127.0.0.1:7999"


@pytest.fixture(scope="module")
def profile_session(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings.build(home, port=7421)
    write_client_config(settings, S3_URL)
    env = env_exports(settings.home)
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_DEFAULT_REGION", "AWS_REGION"):
            mp.delenv(name, raising=False)
        for key, value in env.items():
            mp.setenv(key, value)
        core = botocore.session.Session(profile=PROFILE)
        yield settings, boto3.session.Session(botocore_session=core)


def test_create_client_every_botocore_service_under_the_profile_is_local(profile_session):
    settings, session = profile_session
    remote = []
    services = botocore.session.get_session().get_available_services()
    assert len(services) > 300
    for name in services:
        try:
            client = session.client(name)
        except Exception as exc:  # noqa: BLE001 - a client that cannot be built sends nothing anywhere
            remote.append(f"{name}: could not build ({type(exc).__name__})")
            continue
        host = urlparse(client.meta.endpoint_url).hostname
        if host != "127.0.0.1":
            remote.append(f"{name}: {client.meta.endpoint_url}")
    assert remote == []


def test_create_client_served_services_reach_the_control_plane_and_s3_the_store(profile_session):
    settings, session = profile_session
    for name in (*CONTROL_PLANE_SERVICES, "application-autoscaling", "logs"):
        assert session.client(name).meta.endpoint_url == settings.endpoint_url, name
    assert session.client("s3").meta.endpoint_url == S3_URL


def test_write_client_config_service_keys_are_botocore_service_ids(profile_session):
    settings, _ = profile_session
    text = (settings.home / "aws" / "config").read_text()
    assert "application_auto_scaling =" in text and "cloudwatch_logs =" in text
    assert "application_autoscaling =" not in text and "\nlogs =" not in text
