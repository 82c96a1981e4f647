"""Model files only an older xgboost reads (fixtures: see tests/api/test_builtin_xgboost_versions_legacy_api.py):
how they are recognised, which environment serves them, and the error the platform's xgboost gives instead of
xgboost's C++ trace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from opensage import images
from opensage.algorithms.xgboost import save_booster, serve, versions
from opensage.algorithms.xgboost.versions import ContainerVersion

DATA = Path(__file__).parent / "data"
ECR = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"


def _model_dir(tmp_path: Path, fixture: str) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir(parents=True)
    shutil.copy(DATA / fixture, model_dir / "xgboost-model")
    return model_dir


def _platform_booster(tmp_path: Path) -> Path:
    import numpy as np
    import xgboost as xgb

    X = np.random.default_rng(0).random((20, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=X[:, 0] > 0.5), 2)
    model_dir = tmp_path / "platform"
    model_dir.mkdir()
    save_booster(booster, model_dir / "xgboost-model")
    return model_dir


@pytest.mark.parametrize(("fixture", "expected"), [("xgb12-booster.pkl", versions.PICKLE_SNAPSHOT),
                                                   ("xgb174-model.binf", versions.BINARY),
                                                   ("xgb090-booster.pkl", versions.PICKLE_090)])
def test_model_file_format_aws_container_files_recognised(fixture, expected):
    assert versions.model_file_format(DATA / fixture) == expected


def test_model_file_format_platform_ubjson_and_garbage_are_not_legacy(tmp_path):
    model_dir = _platform_booster(tmp_path)
    assert versions.model_file_format(model_dir / "xgboost-model") == versions.JSONLIKE
    (model_dir / "junk").write_bytes(b"not a model" * 30)
    assert versions.legacy_model_files(model_dir) == []


@pytest.mark.parametrize(("fixture", "version"), [("xgb12-booster.pkl", "1.2-1"), ("xgb174-model.binf", "1.7-1"),
                                                  ("xgb174-model.binf", "1.3-1")])
def test_environment_for_image_builtin_legacy_model_gets_the_image_versions_xgboost(tmp_path, fixture, version):
    model_dir = _model_dir(tmp_path, fixture)
    spec = images.environment_for_image(f"{ECR}:{version}", "builtin", model_dir)
    assert spec is not None and spec.version == version
    assert any(r.startswith("xgboost==") for r in spec.requirements)
    assert images.environment_for_image(f"{ECR}:{version}", "builtin") is None  # training: the platform


def test_environment_for_image_builtin_platform_model_keeps_platform(tmp_path):
    model_dir = _platform_booster(tmp_path)
    assert images.environment_for_image(f"{ECR}:1.7-1", "builtin", model_dir) is None
    # No version to imitate (latest / legacy xgboost:1): the platform, whose error names the image to use.
    assert images.environment_for_image(f"{ECR}:latest", "builtin", _model_dir(tmp_path / "l", "xgb12-booster.pkl"),
                                        ) is None


def test_load_xgboost_12_pickle_under_platform_xgboost_names_the_image_not_a_cpp_trace(tmp_path):
    model_dir = _model_dir(tmp_path, "xgb12-booster.pkl")
    with pytest.raises(serve.ModelFormatError) as err:
        serve.load_now(model_dir, ContainerVersion("1.7-1"))
    message = str(err.value)
    assert "pickled by xgboost 1.0" in message and "sagemaker-xgboost:1.2-1" in message
    assert "Stack trace" not in message and "learner.cc" not in message


def test_load_binary_model_under_platform_xgboost_names_the_format_and_the_image(tmp_path):
    model_dir = _model_dir(tmp_path, "xgb174-model.binf")
    with pytest.raises(serve.ModelFormatError) as err:
        serve.load_now(model_dir, ContainerVersion("1.7-1"))
    message = str(err.value)
    assert "legacy binary format" in message and "sagemaker-xgboost:1.7-1" in message
    assert "c_api.cc" not in message
