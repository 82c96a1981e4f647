"""Inference image URIs -> model-server kinds."""

from __future__ import annotations

import pytest

from opensage.images import resolve_inference_image

ECR = "683313688378.dkr.ecr.us-east-1.amazonaws.com"


def test_resolve_inference_image_xgboost_without_program_is_builtin():
    resolved = resolve_inference_image(f"{ECR}/sagemaker-xgboost:1.7-1", {})
    assert resolved.kind == "builtin-xgboost"
    assert resolved.algorithm == "xgboost"
    assert resolved.command[-2:] == ["--kind", "builtin-xgboost"]


def test_resolve_inference_image_xgboost_with_program_is_script_mode():
    resolved = resolve_inference_image(f"{ECR}/sagemaker-xgboost:1.7-1", {"SAGEMAKER_PROGRAM": "serve.py"})
    assert (resolved.kind, resolved.framework) == ("xgboost-script", "xgboost")


@pytest.mark.parametrize(("image", "kind"), [
    (f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", "sklearn"),
    ("763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.1-cpu-py310", "pytorch"),
    ("763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference@sha256:abc", "pytorch"),
])
def test_resolve_inference_image_framework_repository_gives_kind(image, kind):
    assert resolve_inference_image(image, {}).kind == kind


def test_resolve_inference_image_unknown_repository_names_supported_images():
    with pytest.raises(ValueError, match="tensorflow-inference.*sagemaker-scikit-learn"):
        resolve_inference_image(f"{ECR}/tensorflow-inference:2.13-cpu", {})


def test_resolve_inference_image_empty_says_what_to_give():
    with pytest.raises(ValueError, match="Image is empty"):
        resolve_inference_image("  ", {})
