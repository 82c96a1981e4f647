"""Issue 7 items 10 and 12: a job's S3 transfers wait out a restarting object store; failures say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

from opensage.objects.file import FileStore
from opensage.runner import transfers
from opensage.runner.channels import ChannelError, prepare_channels
from opensage.runner.jobspec import ChannelSpec
from opensage.runner.transfers import RetryingStore, describe_s3_error


class DownFor:
    """A store that refuses connections for its first ``calls`` calls (a platform restarting)."""

    def __init__(self, inner: FileStore, calls: int, error: Exception) -> None:
        self.inner, self.left, self.error = inner, calls, error

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        target = getattr(self.inner, name)

        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            if self.left > 0:
                self.left -= 1
                raise self.error
            return target(*args, **kwargs)
        return call


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfers, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(transfers, "MAX_DELAY", 0.02)


def _store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "s3")
    store.ensure_bucket("bkt")
    store.put_bytes("bkt", "data/train/a.csv", b"1,2\n")
    return store


def test_channel_fetch_store_refusing_connections_then_up_succeeds(tmp_path: Path) -> None:
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    flaky = DownFor(_store(tmp_path), 4, refused)
    prepare_channels(RetryingStore(flaky), [ChannelSpec("train", "s3://bkt/data/train")], tmp_path / "data", 0, 1)
    assert (tmp_path / "data" / "train" / "a.csv").read_text() == "1,2\n"


def test_channel_fetch_store_answering_503_then_up_succeeds(tmp_path: Path) -> None:
    busy = ClientError({"Error": {"Code": "503", "Message": "Service Unavailable"}}, "ListObjectsV2")
    flaky = DownFor(_store(tmp_path), 3, busy)
    prepare_channels(RetryingStore(flaky), [ChannelSpec("train", "s3://bkt/data/train")], tmp_path / "data", 0, 1)
    assert (tmp_path / "data" / "train" / "a.csv").exists()


def test_channel_fetch_store_down_past_deadline_fails_clearly(tmp_path: Path) -> None:
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    flaky = DownFor(_store(tmp_path), 10**6, refused)
    with pytest.raises(ChannelError) as err:
        prepare_channels(RetryingStore(flaky, deadline_seconds=0.1), [ChannelSpec("train", "s3://bkt/data/train")],
                         tmp_path / "data", 0, 1)
    assert "platform is running" in str(err.value) and "'train'" in str(err.value)


def test_channel_fetch_access_denied_not_retried_and_worded(tmp_path: Path) -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2")
    flaky = DownFor(_store(tmp_path), 1, denied)
    with pytest.raises(ChannelError) as err:
        prepare_channels(RetryingStore(flaky), [ChannelSpec("train", "s3://bkt/data/train")], tmp_path / "data", 0, 1)
    message = str(err.value)
    assert "access to s3://bkt/data/train was denied" in message and "channel 'train'" in message
    assert "An error occurred" not in message


def test_describe_s3_error_raw_botocore_text_replaced() -> None:
    head = ClientError({"Error": {"Code": "400", "Message": "Bad Request"}}, "HeadObject")
    text = describe_s3_error(head, "s3://b/k")
    assert "HeadObject" not in text and "check the bucket name and key" in text
    invalid = ParamValidationError(report="Invalid bucket name \"a\"")
    assert "not a valid S3 location" in describe_s3_error(invalid, "s3://a/k")
