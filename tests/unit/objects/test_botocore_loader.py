"""S3 clients of one process share botocore's parsed data files (a client cost ~0.14 s of JSON parsing)."""

from __future__ import annotations

import pytest

from opensage.objects import s3 as s3_module
from opensage.objects.s3 import S3Store, boto3_session, botocore_loader


def test_s3_store_clients_share_one_loader_with_s3_model_loaded() -> None:
    first = S3Store("http://127.0.0.1:1", "a", "b").client
    second = S3Store("http://127.0.0.1:2", "c", "d").client
    assert first._loader is second._loader is botocore_loader()
    # Each store keeps its own credentials and endpoint: only the read-only data is shared.
    assert first._request_signer._credentials.access_key == "a"
    assert second._request_signer._credentials.access_key == "c"
    assert second.meta.endpoint_url == "http://127.0.0.1:2"


def test_botocore_loader_with_other_aws_data_path_is_fresh(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    shared = botocore_loader()
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    own = botocore_loader()
    assert own is not shared
    assert str(tmp_path) in own.search_paths
    monkeypatch.delenv("AWS_DATA_PATH")
    monkeypatch.setattr(s3_module, "_loader", shared)
    monkeypatch.setattr(s3_module, "_loader_data_path", None)
    assert botocore_loader() is shared


def test_boto3_session_resolves_credentials_from_the_environment_at_use(monkeypatch: pytest.MonkeyPatch) -> None:
    botocore_loader()  # loaded before the job's credentials exist, as in a zygote
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAJOBKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "job-secret")
    client = boto3_session().client("s3", endpoint_url="http://127.0.0.1:1", region_name="us-east-1")
    assert client._request_signer._credentials.access_key == "AKIAJOBKEY"


def test_s3_store_clients_with_keys_share_one_session_until_the_aws_environment_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A session costs ~15 ms to make, a client on a made one ~8 ms: a job's agent makes its client on the
    # session its spare preloaded (warm_client_session).
    s3_module.warm_client_session()
    made = []
    real = s3_module.boto3_session
    monkeypatch.setattr(s3_module, "boto3_session", lambda: made.append(1) or real())
    first = S3Store("http://127.0.0.1:1", "a", "b").client
    second = S3Store("http://127.0.0.1:2", "c", "d").client
    assert made == []  # both on the preloaded session
    assert first._request_signer._credentials.access_key == "a"
    assert second._request_signer._credentials.access_key == "c"
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")  # what a session reads: a new one
    third = S3Store("http://127.0.0.1:3", "e", "f").client
    assert made == [1] and third._request_signer._credentials.access_key == "e"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    keyless = S3Store("http://127.0.0.1:4").client  # its own session: its keys from the credential chain
    assert len(made) == 2 and keyless._request_signer._credentials.access_key == "AKIAFROMENV"
