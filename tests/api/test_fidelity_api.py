"""Issue 8 item 9: smaller points where SageMaker's real answers differ from a naive reading of the spec."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.model import Shape

from opensage.api.spec import operation_model
from tests.conftest import ROLE, XGB_IMAGE, training_request
from tests.modelfiles import breast_cancer_xgb

ACCOUNT_ARN = "arn:aws:sagemaker:us-east-1:000000000000"


def _error(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


# -- tags -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda sm, arn: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "k", "Value": "v"}]),
    lambda sm, arn: sm.list_tags(ResourceArn=arn),
    lambda sm, arn: sm.delete_tags(ResourceArn=arn, TagKeys=["k"]),
], ids=["AddTags", "ListTags", "DeleteTags"])
def test_tags_missing_resource_is_validation_exception(fake_server, call):
    sm = fake_server.client("sagemaker")
    arn = f"{ACCOUNT_ARN}:training-job/never-created"
    with pytest.raises(ClientError) as e:
        call(sm, arn)
    code, message = _error(e)
    assert code == "ValidationException" and arn in message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_list_tags_endpoint_arn_in_any_case_finds_lower_cased_arn(fake_server):
    sm = fake_server.client("sagemaker")
    sm.create_model(ModelName="tag-case-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/none/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="tag-case-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "tag-case-model", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    arn = sm.create_endpoint(EndpointName="Tag-Case-EP", EndpointConfigName="tag-case-cfg",
                             Tags=[{"Key": "team", "Value": "a"}])["EndpointArn"]
    assert arn == f"{ACCOUNT_ARN}:endpoint/tag-case-ep"  # SageMaker lower-cases endpoint ARNs
    as_named = f"{ACCOUNT_ARN}:endpoint/Tag-Case-EP"  # what a caller builds from the name it chose
    sm.add_tags(ResourceArn=as_named, Tags=[{"Key": "stage", "Value": "dev"}])
    expected = [{"Key": "stage", "Value": "dev"}, {"Key": "team", "Value": "a"}]
    assert sm.list_tags(ResourceArn=as_named)["Tags"] == expected
    assert sm.list_tags(ResourceArn=arn)["Tags"] == expected
    sm.delete_tags(ResourceArn=as_named, TagKeys=["team"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "stage", "Value": "dev"}]
    sm.delete_endpoint(EndpointName="Tag-Case-EP")


# -- enum violations ---------------------------------------------------------------------------------------
def test_create_training_job_enum_violation_is_aws_generic_constraint_message(fake_server):
    sm = fake_server.client("sagemaker")
    req = training_request("enum-bad")
    req["AlgorithmSpecification"]["TrainingInputMode"] = "Streaming"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    # AWS's wording (Coral's generic constraint message): the value, the member path, the enum set.
    assert _error(e) == ("ValidationException", (
        "1 validation error detected: Value 'Streaming' at 'algorithmSpecification.trainingInputMode' failed "
        "to satisfy constraint: Member must satisfy enum value set: [Pipe, File, FastFile]"))


def test_list_endpoints_enum_violation_in_filter_is_aws_generic_constraint_message(fake_server):
    sm = fake_server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.list_endpoints(StatusEquals="Running")
    code, message = _error(e)
    assert code == "ValidationException"
    enum = operation_model("sagemaker", "ListEndpoints").input_shape.members["StatusEquals"].enum
    assert message == ("1 validation error detected: Value 'Running' at 'statusEquals' failed to satisfy "
                       f"constraint: Member must satisfy enum value set: [{', '.join(enum)}]")


# -- every output member botocore marks required is present --------------------------------------------------
def missing_required(value: Any, shape: Shape | None, path: str = "") -> list[str]:
    """Paths of members the output shape marks required that ``value`` (a parsed boto3 response) lacks."""
    if shape is None or value is None:
        return []
    out: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name in shape.required_members:
            if value.get(name) is None:
                out.append(f"{path}{name}")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                out += missing_required(value[name], member, f"{path}{name}.")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            out += missing_required(item, shape.member, f"{path[:-1]}[{i}].")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            out += missing_required(item, shape.value, f"{path[:-1]}[{key}].")
    return out


def check_outputs(client, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """Each (operation, params) called with boto3 -> the required members its answer lacks (only failures)."""
    from botocore import xform_name

    service = client.meta.service_model.service_name
    found: dict[str, list[str]] = {}
    for op, params in calls:
        answer = getattr(client, xform_name(op))(**params)
        answer.pop("ResponseMetadata", None)
        missing = missing_required(answer, operation_model(service, op).output_shape)
        if missing:
            found[f"{op}({', '.join(str(v) for v in params.values())})"] = missing
    return found


def test_missing_required_walker_finds_nested_members():
    shape = operation_model("sagemaker", "DescribeTrainingJob").output_shape
    missing = missing_required({"TrainingJobName": "x", "SecondaryStatusTransitions": [{"StartTime": 1}]}, shape)
    assert "ModelArtifacts" in missing and "SecondaryStatusTransitions[0].Status" in missing


def test_describe_model_and_endpoint_config_outputs_have_every_required_member(fake_server):
    sm = fake_server.client("sagemaker")
    sm.create_model(ModelName="req-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/none/model.tar.gz"})
    sm.create_model(ModelName="req-pipeline", ExecutionRoleArn=ROLE, Containers=[
        {"Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/none/a.tar.gz"},
        {"Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/none/b.tar.gz"}])
    sm.create_endpoint_config(EndpointConfigName="req-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "req-model", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}],
        DataCaptureConfig={"InitialSamplingPercentage": 50, "DestinationS3Uri": "s3://bucket1/capture",
                           "CaptureOptions": [{"CaptureMode": "Input"}]},
        Tags=[{"Key": "k", "Value": "v"}])
    arn = sm.describe_endpoint_config(EndpointConfigName="req-cfg")["EndpointConfigArn"]
    assert check_outputs(sm, [
        ("DescribeModel", {"ModelName": "req-model"}), ("DescribeModel", {"ModelName": "req-pipeline"}),
        ("DescribeEndpointConfig", {"EndpointConfigName": "req-cfg"}),
        ("ListModels", {}), ("ListEndpointConfigs", {}), ("ListTags", {"ResourceArn": arn}),
    ]) == {}


# Resources served by other modules (services/training.py, services/endpoints.py, services/transform.py):
# one run on the real platform, each Describe / List checked in its own test below.
@pytest.fixture(scope="module")
def served(server) -> dict[str, dict[str, list[str]]]:
    sm = server.client("sagemaker")
    store = server.store()
    store.ensure_bucket("reqbucket")
    blob, X, y, _ = breast_cancer_xgb(5)
    store.put_bytes("reqbucket", "model/model.tar.gz", blob)
    train = "\n".join(",".join([str(int(label))] + [f"{v:.6g}" for v in row]) for label, row in zip(y, X, strict=True))
    store.put_bytes("reqbucket", "data/train/train.csv", train.encode())
    store.put_bytes("reqbucket", "batch/in.csv",
                    "\n".join(",".join(f"{v:.6g}" for v in row) for row in X[:5]).encode())

    sm.create_training_job(**training_request("req-train", bucket="reqbucket"))
    sm.create_training_job(**training_request("req-train-fails", bucket="reqbucket",
                                              HyperParameters={"num_round": "5", "objective": "no-such"}))
    in_progress = check_outputs(sm, [("DescribeTrainingJob", {"TrainingJobName": "req-train"})])
    sm.create_model(ModelName="req-served", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://reqbucket/model/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="req-served-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "req-served", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="req-served-ep", EndpointConfigName="req-served-cfg")
    sm.create_transform_job(
        TransformJobName="req-transform", ModelName="req-served",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://reqbucket/batch"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://reqbucket/batch-out"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    deadline = time.time() + 180
    while time.time() < deadline:
        done = (all(sm.describe_training_job(TrainingJobName=n)["TrainingJobStatus"] != "InProgress"
                    for n in ("req-train", "req-train-fails"))
                and sm.describe_endpoint(EndpointName="req-served-ep")["EndpointStatus"] != "Creating"
                and sm.describe_transform_job(TransformJobName="req-transform")["TransformJobStatus"]
                != "InProgress")
        if done:
            break
        time.sleep(0.5)
    aas, cw = server.client("application-autoscaling"), server.client("cloudwatch")
    target = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/req-served-ep/variant/AllTraffic",
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    aas.register_scalable_target(**target, MinCapacity=1, MaxCapacity=2)
    aas.put_scaling_policy(PolicyName="req-policy", PolicyType="TargetTrackingScaling", **target,
                           TargetTrackingScalingPolicyConfiguration={"TargetValue": 100.0, "PredefinedMetricSpecification": {
                               "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    cw.put_metric_alarm(AlarmName="req-alarm", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
                        Dimensions=[{"Name": "EndpointName", "Value": "req-served-ep"},
                                    {"Name": "VariantName", "Value": "AllTraffic"}],
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1.0,
                        ComparisonOperator="GreaterThanOrEqualToThreshold")
    return {
        "training-in-progress": in_progress,
        "training": check_outputs(sm, [("DescribeTrainingJob", {"TrainingJobName": "req-train"}),
                                       ("ListTrainingJobs", {})]),
        "training-failed": check_outputs(sm, [("DescribeTrainingJob", {"TrainingJobName": "req-train-fails"})]),
        "autoscaling": check_outputs(aas, [("DescribeScalableTargets", {"ServiceNamespace": "sagemaker"}),
                                           ("DescribeScalingPolicies", {"ServiceNamespace": "sagemaker"}),
                                           ("DescribeScalingActivities", {"ServiceNamespace": "sagemaker"})]),
        "cloudwatch": check_outputs(cw, [("DescribeAlarms", {}), ("DescribeAlarmHistory", {}),
                                         ("ListMetrics", {"Namespace": "AWS/SageMaker"})]),
        "logs": check_outputs(server.client("logs"), [
            ("DescribeLogStreams", {"logGroupName": "/aws/sagemaker/TrainingJobs"})]),
        "endpoint": check_outputs(sm, [("DescribeEndpoint", {"EndpointName": "req-served-ep"}),
                                       ("ListEndpoints", {})]),
        "transform": check_outputs(sm, [("DescribeTransformJob", {"TransformJobName": "req-transform"}),
                                        ("ListTransformJobs", {})]),
    }


@pytest.mark.slow
@pytest.mark.parametrize("resource", ["training-in-progress", "training",
                                      "training-failed",
                                      "endpoint", "transform", "autoscaling", "cloudwatch", "logs"])
def test_describe_served_resources_outputs_have_every_required_member(served, resource):
    assert served[resource] == {}
