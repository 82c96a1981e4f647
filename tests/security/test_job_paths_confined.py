"""Issue 7 item 4: host paths in the API are confined to the job's /opt/ml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from opensage.frameworks.training import ClientError as ToolkitClientError
from opensage.frameworks.training import fetch_source
from opensage.runner.agent import AgentError, local_path
from opensage.runner.channels import ChannelError, check_channel_name
from opensage.serving.handlers import ModelLoadError
from opensage.serving.model_server import resolve_code_dir
from tests.conftest import training_request


@pytest.mark.parametrize("path", ["/etc/cron.d", "/opt/ml/../../etc", "relative/ckpt", "/opt/mlx", "/"])
def test_create_training_job_checkpoint_local_path_outside_opt_ml_refused(fake_server, path: str) -> None:
    sm = fake_server.client("sagemaker")
    req = training_request(f"ckpt-{abs(hash(path)) % 10**8}",
                           CheckpointConfig={"S3Uri": "s3://bucket1/ckpt", "LocalPath": path})
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**req)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "checkpointConfig.localPath" in err.value.response["Error"]["Message"]


def test_create_training_job_checkpoint_local_path_under_opt_ml_accepted(fake_server) -> None:
    sm = fake_server.client("sagemaker")
    req = training_request("ckpt-ok", CheckpointConfig={"S3Uri": "s3://bucket1/ckpt",
                                                        "LocalPath": "/opt/ml/checkpoints/run1"})
    assert sm.create_training_job(**req)["TrainingJobArn"].endswith("/ckpt-ok")


@pytest.mark.parametrize("name", ["..", "."])
def test_create_training_job_dot_channel_name_refused(fake_server, name: str) -> None:
    sm = fake_server.client("sagemaker")
    req = training_request(f"chan-{len(name)}")
    req["InputDataConfig"][0]["ChannelName"] = name
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**req)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "channelName" in err.value.response["Error"]["Message"]


def test_agent_local_path_outside_opt_ml_refused(tmp_path: Path) -> None:
    assert local_path(tmp_path, "/opt/ml/checkpoints") == tmp_path / "checkpoints"
    for bad in ("/etc", "/opt/ml/../../etc", "/opt/mlx"):
        with pytest.raises(AgentError):
            local_path(tmp_path, bad)
    for bad in ("..", ".", "a/b"):
        with pytest.raises(ChannelError):
            check_channel_name(bad)


def test_fetch_source_local_host_path_refused(tmp_path: Path) -> None:
    outside = tmp_path / "host-secret"
    outside.mkdir()
    (outside / "train.py").write_text("print('from the host')")
    ml = tmp_path / "ml"
    (ml / "code").mkdir(parents=True)
    with pytest.raises(ToolkitClientError, match="outside the job's /opt/ml"):
        fetch_source(str(outside), ml / "code", ml)
    with pytest.raises(ToolkitClientError, match="outside the job's /opt/ml"):
        fetch_source("file:///opt/ml/../../" + str(outside).lstrip("/"), ml / "code", ml)
    assert not any((ml / "code").iterdir())
    inside = ml / "input" / "data" / "code"
    inside.mkdir(parents=True)
    (inside / "train.py").write_text("ok")
    fetch_source("/opt/ml/input/data/code", ml / "code", ml)
    assert (ml / "code" / "train.py").read_text() == "ok"


def test_model_server_submit_directory_host_path_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    (model_dir / "code").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ModelLoadError, match="outside /opt/ml/model"):
        resolve_code_dir(model_dir, str(outside))
    assert resolve_code_dir(model_dir, "/opt/ml/model/code") == (model_dir / "code").resolve()
    assert json.dumps(str(resolve_code_dir(model_dir, str(model_dir / "code"))))
