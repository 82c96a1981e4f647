"""CreateModelPackage / UpdateModelPackage rules beyond the shapes (opensage/registry/checks.py)."""

from __future__ import annotations

import pytest

from opensage.errors import ValidationException
from opensage.registry.checks import check_create, merge_customer_metadata

XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SKLEARN = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def _spec(**kw) -> dict:
    return {"Containers": [{"Image": XGB, "ModelDataUrl": "s3://bucket/model.tar.gz"}], **kw}


def test_check_create_versioned_with_servable_images_passes():
    check_create({"ModelPackageGroupName": "g", "InferenceSpecification": _spec(
        Containers=[{"Image": SKLEARN, "ModelDataUrl": "s3://bucket/pre.tar.gz", "ContainerHostname": "pre",
                     "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}},
                    {"Image": XGB, "ModelDataUrl": "s3://bucket/xgb.tar.gz", "ContainerHostname": "xgb"}])})


@pytest.mark.parametrize(("params", "fragment"), [
    ({"ModelPackageGroupName": "g"}, "Either InferenceSpecification or SourceAlgorithmSpecification"),
    ({}, "Missing ARN"),
    ({"ModelPackageGroupName": "g", "InferenceSpecification": _spec(Containers=[
        {"Image": XGB, "ModelDataUrl": "s3://bucket/a.tar.gz", "ContainerHostname": "a"},
        {"Image": XGB, "ModelDataUrl": "s3://bucket/b.tar.gz"}])}, "ContainerHostname must be specified"),
    ({"ModelPackageGroupName": "g", "InferenceSpecification": _spec(Containers=[
        {"Image": XGB, "ModelDataUrl": "not-a-uri"}])}, "inferenceSpecification.containers.1.member.modelDataUrl"),
    ({"ModelPackageGroupName": "g", "InferenceSpecification": _spec(SupportedResponseMIMETypes=["json"])},
     "supportedResponseMIMETypes.1.member"),
    ({"ModelPackageGroupName": "g", "SourceAlgorithmSpecification": {"SourceAlgorithms": [
        {"AlgorithmName": "my-algo", "ModelDataUrl": "s3://bucket/m.tar.gz"}]}}, "Could not find algorithm 'my-algo'"),
    ({"ModelPackageName": "p", "InferenceSpecification": _spec(SupportedRealtimeInferenceInstanceTypes=["ml.m5.large"])},
     "SupportedTransformInstanceTypes is required"),
    ({"ModelPackageGroupName": "g", "InferenceSpecification": _spec(), "SamplePayloadUrl": "ftp://x/y"},
     "samplePayloadUrl"),
    ({"ModelPackageGroupName": "g", "InferenceSpecification": _spec(), "DriftCheckBaselines": {
        "Bias": {"ConfigFile": {"S3Uri": "nope"}}}}, "driftCheckBaselines.bias.configFile.s3Uri"),
])
def test_check_create_invalid_request_names_the_problem(params, fragment):
    with pytest.raises(ValidationException) as e:
        check_create(params)
    assert fragment in e.value.message


def test_merge_customer_metadata_adds_overwrites_then_removes():
    assert merge_customer_metadata({"a": "1", "b": "2"}, {"a": "9", "c": "3"}, ["b"]) == {"a": "9", "c": "3"}
    assert merge_customer_metadata(None, None, ["missing"]) == {}


def test_merge_customer_metadata_over_fifty_keys_is_refused():
    with pytest.raises(ValidationException, match="at most 50"):
        merge_customer_metadata({str(i): "v" for i in range(50)}, {"one-more": "v"}, None)
