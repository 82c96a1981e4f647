"""The model registry through boto3: model package groups, versioned and unversioned model packages, and models,
endpoints and transform jobs made from an approved package (the in-process control plane)."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import breast_cancer_xgb

MODEL_URL = "s3://bucket1/registry/model.tar.gz"


@pytest.fixture
def sm(fake_server):
    return fake_server.client("sagemaker")


def _spec(**extra) -> dict:
    spec = {"Containers": [{"Image": XGB_IMAGE, "ModelDataUrl": MODEL_URL}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]}
    spec.update(extra)
    return spec


def _version(sm, group: str, **kw) -> str:
    return sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=_spec(), **kw)[
        "ModelPackageArn"]


def _error(e: pytest.ExceptionInfo) -> tuple[str, str]:
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


# -- groups ------------------------------------------------------------------------------------------------
def test_create_model_package_group_describe_list_delete_round_trip(sm):
    arn = sm.create_model_package_group(ModelPackageGroupName="Churn-Models",
                                        ModelPackageGroupDescription="churn classifiers")["ModelPackageGroupArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:000000000000:model-package-group/churn-models"
    d = sm.describe_model_package_group(ModelPackageGroupName="Churn-Models")
    assert (d["ModelPackageGroupName"], d["ModelPackageGroupArn"], d["ModelPackageGroupStatus"]) == (
        "Churn-Models", arn, "Completed")
    assert d["ModelPackageGroupDescription"] == "churn classifiers" and "CreatedBy" in d
    assert sm.describe_model_package_group(ModelPackageGroupName=arn)["ModelPackageGroupName"] == "Churn-Models"
    listed = sm.list_model_package_groups(NameContains="churn-mod")["ModelPackageGroupSummaryList"]
    assert [g["ModelPackageGroupArn"] for g in listed] == [arn]
    sm.delete_model_package_group(ModelPackageGroupName="Churn-Models")
    with pytest.raises(ClientError) as e:
        sm.describe_model_package_group(ModelPackageGroupName="Churn-Models")
    assert _error(e) == ("ValidationException", f"ModelPackageGroup {arn} does not exist.")


def test_create_model_package_group_duplicate_says_already_exists(sm):
    sm.create_model_package_group(ModelPackageGroupName="dup-group")
    for name in ("dup-group", "DUP-group"):  # names are unique regardless of case, as their ARNs
        with pytest.raises(ClientError) as e:
            sm.create_model_package_group(ModelPackageGroupName=name)
        code, message = _error(e)
        assert code == "ValidationException" and message.startswith("Model Package Group already exists: arn:")


def test_delete_model_package_group_with_versions_is_conflict(sm):
    sm.create_model_package_group(ModelPackageGroupName="busy-group")
    arn = _version(sm, "busy-group")
    with pytest.raises(ClientError) as e:
        sm.delete_model_package_group(ModelPackageGroupName="busy-group")
    code, message = _error(e)
    assert code == "ConflictException" and "contains model packages" in message
    sm.delete_model_package(ModelPackageName=arn)
    sm.delete_model_package_group(ModelPackageGroupName="busy-group")


def test_list_model_package_groups_sort_and_paging_visit_each_once(sm):
    names = [f"page-group-{i}" for i in range(5)]
    for name in names:
        sm.create_model_package_group(ModelPackageGroupName=name)
    seen, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        out = sm.list_model_package_groups(NameContains="page-group", SortBy="Name", SortOrder="Descending",
                                           MaxResults=2, **kw)
        seen += [g["ModelPackageGroupName"] for g in out["ModelPackageGroupSummaryList"]]
        token = out.get("NextToken")
        if not token:
            break
    assert seen == sorted(names, reverse=True)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert sm.list_model_package_groups(NameContains="page-group", CreationTimeAfter=future)[
        "ModelPackageGroupSummaryList"] == []


def test_model_package_group_policy_put_get_delete(sm):
    sm.create_model_package_group(ModelPackageGroupName="policy-group")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "AddPermModelPackageGroup", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": ["sagemaker:DescribeModelPackageGroup"],
        "Resource": "arn:aws:sagemaker:us-east-1:000000000000:model-package-group/policy-group"}]})
    with pytest.raises(ClientError) as e:
        sm.get_model_package_group_policy(ModelPackageGroupName="policy-group")
    assert _error(e)[0] == "ValidationException"
    out = sm.put_model_package_group_policy(ModelPackageGroupName="policy-group", ResourcePolicy=policy)
    assert out["ModelPackageGroupArn"].endswith(":model-package-group/policy-group")
    assert json.loads(sm.get_model_package_group_policy(ModelPackageGroupName="policy-group")["ResourcePolicy"]) == \
        json.loads(policy)
    with pytest.raises(ClientError) as e:
        sm.put_model_package_group_policy(ModelPackageGroupName="policy-group", ResourcePolicy="{not json")
    assert "not valid JSON" in _error(e)[1]
    with pytest.raises(ClientError) as e:  # nested past Python's recursion limit: still a 400
        sm.put_model_package_group_policy(ModelPackageGroupName="policy-group", ResourcePolicy="[" * 10000)
    assert _error(e)[0] == "ValidationException"
    sm.delete_model_package_group_policy(ModelPackageGroupName="policy-group")
    with pytest.raises(ClientError):
        sm.get_model_package_group_policy(ModelPackageGroupName="policy-group")


def test_create_model_package_group_tags_are_listed_and_dropped_with_it(sm):
    arn = sm.create_model_package_group(ModelPackageGroupName="tagged-group",
                                        Tags=[{"Key": "team", "Value": "fraud"}])["ModelPackageGroupArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "dev"}])
    assert {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]} == {"team": "fraud", "stage": "dev"}
    sm.delete_model_package_group(ModelPackageGroupName="tagged-group")
    with pytest.raises(ClientError):
        sm.list_tags(ResourceArn=arn)


# -- packages ----------------------------------------------------------------------------------------------
def test_create_model_package_in_group_numbers_versions_from_one(sm):
    sm.create_model_package_group(ModelPackageGroupName="Abalone-Group")
    first, second = _version(sm, "Abalone-Group"), _version(sm, "Abalone-Group")
    assert first == "arn:aws:sagemaker:us-east-1:000000000000:model-package/abalone-group/1"
    assert second.endswith(":model-package/abalone-group/2")
    d = sm.describe_model_package(ModelPackageName=second)
    assert (d["ModelPackageGroupName"], d["ModelPackageVersion"]) == ("Abalone-Group", 2)
    assert "ModelPackageName" not in d  # a version is named by its ARN (SDK v3's refresh() relies on it)
    assert d["ModelPackageStatus"] == "Completed"
    assert d["ModelPackageStatusDetails"]["ValidationStatuses"] == [{"Name": "Abalone-Group", "Status": "Completed"}]
    assert d["ModelApprovalStatus"] == "PendingManualApproval" and d["CertifyForMarketplace"] is False
    assert d["InferenceSpecification"] == _spec()
    # deleting the newest version does not give its number to the next one
    sm.delete_model_package(ModelPackageName=second)
    assert _version(sm, "Abalone-Group").endswith("/3")


def test_describe_model_package_by_group_and_version_name_and_missing(sm):
    sm.create_model_package_group(ModelPackageGroupName="named-group")
    arn = _version(sm, "named-group")
    assert sm.describe_model_package(ModelPackageName="named-group/1")["ModelPackageArn"] == arn
    with pytest.raises(ClientError) as e:
        sm.describe_model_package(ModelPackageName="named-group/9")
    assert _error(e) == ("ValidationException",
                         "ModelPackage arn:aws:sagemaker:us-east-1:000000000000:model-package/named-group/9 does not "
                         "exist.")
    with pytest.raises(ClientError) as e:  # the group's name alone names no package: say how to name a version
        sm.describe_model_package(ModelPackageName="named-group")
    assert "'named-group/<version>'" in _error(e)[1]


def test_create_model_package_records_metrics_baselines_and_metadata(sm):
    sm.create_model_package_group(ModelPackageGroupName="metrics-group")
    metrics = {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                               "S3Uri": "s3://bucket1/eval/evaluation.json"}}}
    baselines = {"ModelDataQuality": {"Statistics": {"ContentType": "application/json",
                                                     "S3Uri": "s3://bucket1/baseline/statistics.json"},
                                      "Constraints": {"ContentType": "application/json",
                                                      "S3Uri": "s3://bucket1/baseline/constraints.json"}}}
    arn = _version(sm, "metrics-group", ModelMetrics=metrics, DriftCheckBaselines=baselines,
                   CustomerMetadataProperties={"git-sha": "abc123"}, ModelPackageDescription="first",
                   MetadataProperties={"ProjectId": "p-1"}, Domain="MACHINE_LEARNING", Task="CLASSIFICATION",
                   SamplePayloadUrl="s3://bucket1/payload/sample.tar.gz")
    d = sm.describe_model_package(ModelPackageName=arn)
    assert d["ModelMetrics"] == metrics and d["DriftCheckBaselines"] == baselines
    assert d["CustomerMetadataProperties"] == {"git-sha": "abc123"} and d["MetadataProperties"] == {"ProjectId": "p-1"}
    assert (d["ModelPackageDescription"], d["Domain"], d["Task"]) == ("first", "MACHINE_LEARNING", "CLASSIFICATION")
    with pytest.raises(ClientError) as e:
        _version(sm, "metrics-group", ModelMetrics={"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": "s3://b/eval.json"}}})
    assert "modelMetrics.modelQuality.statistics.s3Uri" in _error(e)[1]


def test_create_model_package_missing_group_is_validation_error(sm):
    with pytest.raises(ClientError) as e:
        _version(sm, "no-such-group")
    assert _error(e) == ("ValidationException", "ModelPackageGroup arn:aws:sagemaker:us-east-1:000000000000:"
                                                "model-package-group/no-such-group does not exist.")


def test_create_model_package_with_name_and_group_is_validation_error(sm):
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageName="x", ModelPackageGroupName="y", InferenceSpecification=_spec())
    assert "Both ModelPackageName and ModelPackageGroupName" in _error(e)[1]


def test_create_model_package_unservable_image_names_the_field(sm):
    sm.create_model_package_group(ModelPackageGroupName="image-group")
    spec = _spec(Containers=[{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own-server:1",
                              "ModelDataUrl": MODEL_URL}])
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageGroupName="image-group", InferenceSpecification=spec)
    code, message = _error(e)
    assert code == "ValidationException" and "inferenceSpecification.containers.1.member.image" in message
    # SkipModelValidation=All registers it anyway (it can then not be deployed here)
    arn = sm.create_model_package(ModelPackageGroupName="image-group", InferenceSpecification=spec,
                                  SkipModelValidation="All")["ModelPackageArn"]
    statuses = sm.describe_model_package(ModelPackageName=arn)["ModelPackageStatusDetails"]["ValidationStatuses"]
    assert statuses[0]["Status"] == "NotStarted"


def test_create_model_package_bad_content_type_and_missing_image_are_refused(sm):
    sm.create_model_package_group(ModelPackageGroupName="spec-group")
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageGroupName="spec-group",
                                InferenceSpecification=_spec(SupportedContentTypes=["csv"]))
    assert "inferenceSpecification.supportedContentTypes.1.member" in _error(e)[1]
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageGroupName="spec-group",
                                InferenceSpecification=_spec(Containers=[{"ModelDataUrl": MODEL_URL}]))
    assert "inferenceSpecification.containers.1.member.image" in _error(e)[1]


def test_create_unversioned_model_package_needs_instance_types_and_refuses_marketplace(sm):
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=_spec())
    assert "SupportedRealtimeInferenceInstanceTypes" in _error(e)[1]
    spec = _spec(SupportedRealtimeInferenceInstanceTypes=["ml.m5.large"],
                 SupportedTransformInstanceTypes=["ml.m5.large"])
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec, CertifyForMarketplace=True)
    assert "Marketplace" in _error(e)[1]
    arn = sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec,
                                  CertifyForMarketplace=False)["ModelPackageArn"]
    assert arn.endswith(":model-package/standalone")
    d = sm.describe_model_package(ModelPackageName="standalone")
    assert d["ModelPackageName"] == "standalone" and "ModelPackageVersion" not in d
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec)
    assert "already exists" in _error(e)[1]
    with pytest.raises(ClientError) as e:
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert "unversioned" in _error(e)[1]
    sm.delete_model_package(ModelPackageName="standalone")


def test_create_model_package_versioned_with_marketplace_certification_is_refused(sm):
    sm.create_model_package_group(ModelPackageGroupName="mkt-group")
    with pytest.raises(ClientError) as e:
        _version(sm, "mkt-group", CertifyForMarketplace=True)
    assert "does not apply to versioned" in _error(e)[1]


def test_create_model_package_same_client_token_returns_same_version(sm):
    sm.create_model_package_group(ModelPackageGroupName="token-group")
    first = _version(sm, "token-group", ClientToken="retry-1")
    assert _version(sm, "token-group", ClientToken="retry-1") == first
    assert _version(sm, "token-group", ClientToken="retry-2").endswith("/2")


def test_update_model_package_approval_and_metadata_sets_last_modified(sm):
    sm.create_model_package_group(ModelPackageGroupName="approve-group")
    arn = _version(sm, "approve-group", CustomerMetadataProperties={"a": "1", "b": "2"})
    before = sm.describe_model_package(ModelPackageName=arn)
    assert "LastModifiedTime" not in before
    out = sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                                  ApprovalDescription="passed evaluation",
                                  CustomerMetadataProperties={"c": "3", "a": "9"},
                                  CustomerMetadataPropertiesToRemove=["b"])
    assert out["ModelPackageArn"] == arn
    d = sm.describe_model_package(ModelPackageName=arn)
    assert (d["ModelApprovalStatus"], d["ApprovalDescription"]) == ("Approved", "passed evaluation")
    assert d["CustomerMetadataProperties"] == {"a": "9", "c": "3"}
    assert d["LastModifiedTime"] >= d["CreationTime"] and "LastModifiedBy" in d
    with pytest.raises(ClientError) as e:
        sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={"x": "1"},
                                CustomerMetadataPropertiesToRemove=["x"])
    assert "CustomerMetadataPropertiesToRemove" in _error(e)[1]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Rejected"


def test_update_model_package_adds_additional_inference_specifications_with_unique_names(sm):
    sm.create_model_package_group(ModelPackageGroupName="extra-spec-group")
    extra = {"Name": "cpu-small", "Containers": [{"Image": XGB_IMAGE, "ModelDataUrl": MODEL_URL}]}
    arn = _version(sm, "extra-spec-group", AdditionalInferenceSpecifications=[extra])
    sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[
        {**extra, "Name": "cpu-large", "SupportedContentTypes": ["text/csv"]}])
    d = sm.describe_model_package(ModelPackageName=arn)
    assert [s["Name"] for s in d["AdditionalInferenceSpecifications"]] == ["cpu-small", "cpu-large"]
    with pytest.raises(ClientError) as e:
        sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[extra])
    assert "unique" in _error(e)[1]
    with pytest.raises(ClientError) as e:  # the added specification's image is checked like the main one
        sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[
            {"Name": "gpu", "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/custom:1"}]}])
    assert "additionalInferenceSpecificationsToAdd.1.member.containers.1.member.image" in _error(e)[1]


def test_list_model_packages_filters_by_type_group_approval_and_pages(sm):
    sm.create_model_package_group(ModelPackageGroupName="list-group")
    arns = [_version(sm, "list-group", ModelApprovalStatus=s)
            for s in ("Approved", "Rejected", "Approved", "PendingManualApproval")]
    spec = _spec(SupportedRealtimeInferenceInstanceTypes=["ml.m5.large"],
                 SupportedTransformInstanceTypes=["ml.m5.large"])
    solo = sm.create_model_package(ModelPackageName="list-group-solo", InferenceSpecification=spec)["ModelPackageArn"]

    def listed(**kw) -> list[str]:
        out, token = [], None
        while True:
            page = sm.list_model_packages(MaxResults=1, **kw, **({"NextToken": token} if token else {}))
            out += [s["ModelPackageArn"] for s in page["ModelPackageSummaryList"]]
            token = page.get("NextToken")
            if not token:
                return out

    assert listed(ModelPackageGroupName="list-group") == arns
    assert listed(ModelPackageGroupName="list-group", ModelApprovalStatus="Approved",
                  SortOrder="Descending") == [arns[2], arns[0]]
    assert listed(NameContains="list-group") == [solo]  # default type: Unversioned
    assert listed(NameContains="list-group", ModelPackageType="Both") == [*arns, solo]
    assert listed(NameContains="list-group", ModelPackageType="Versioned", SortBy="Name") == arns
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # boto3 sends whole seconds: compare far apart
    assert listed(ModelPackageGroupName="list-group", CreationTimeBefore=later) == arns
    assert listed(ModelPackageGroupName="list-group", CreationTimeAfter=later) == []
    summary = sm.list_model_packages(ModelPackageGroupName="list-group")["ModelPackageSummaryList"][0]
    assert (summary["ModelPackageGroupName"], summary["ModelPackageVersion"], summary["ModelApprovalStatus"]) == (
        "list-group", 1, "Approved")
    assert "ModelPackageName" not in summary  # as SageMaker: versioned summaries carry no name
    token = sm.list_model_packages(ModelPackageGroupName="list-group", MaxResults=1)["NextToken"]
    with pytest.raises(ClientError) as e:
        sm.list_model_packages(ModelPackageGroupName="list-group", ModelApprovalStatus="Rejected", NextToken=token)
    assert _error(e)[0] == "ValidationException"


def test_create_model_package_from_source_uri_of_a_model_or_package_fills_inference_specification(sm):
    sm.create_model_package_group(ModelPackageGroupName="source-group")
    model_arn = sm.create_model(ModelName="source-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": MODEL_URL, "Environment": {"K": "V"}})["ModelArn"]
    from_model = sm.create_model_package(ModelPackageGroupName="source-group", SourceUri=model_arn)["ModelPackageArn"]
    d = sm.describe_model_package(ModelPackageName=from_model)
    assert d["SourceUri"] == model_arn
    assert d["InferenceSpecification"]["Containers"] == [{"Image": XGB_IMAGE, "ModelDataUrl": MODEL_URL,
                                                          "Environment": {"K": "V"}}]
    clone = sm.create_model_package(ModelPackageGroupName="source-group", SourceUri=from_model)["ModelPackageArn"]
    assert sm.describe_model_package(ModelPackageName=clone)["InferenceSpecification"] == d["InferenceSpecification"]
    with pytest.raises(ClientError) as e:
        sm.create_model_package(ModelPackageGroupName="source-group", SourceUri=model_arn,
                                InferenceSpecification=_spec())
    assert "either SourceUri or InferenceSpecification" in _error(e)[1]
    # the SDK's other path: create with the specification, then UpdateModelPackage with the SourceUri
    sm.update_model_package(ModelPackageArn=clone, SourceUri="s3://bucket1/mlflow/run-1/model")
    assert sm.describe_model_package(ModelPackageName=clone)["SourceUri"] == "s3://bucket1/mlflow/run-1/model"


def test_batch_describe_model_package_reports_found_and_missing(sm):
    sm.create_model_package_group(ModelPackageGroupName="batch-group")
    arn = _version(sm, "batch-group", ModelApprovalStatus="Approved")
    missing = arn[:-1] + "7"
    out = sm.batch_describe_model_package(ModelPackageArnList=[arn, missing])
    found = out["ModelPackageSummaries"][arn]
    assert (found["ModelPackageGroupName"], found["ModelPackageVersion"], found["ModelApprovalStatus"]) == (
        "batch-group", 1, "Approved")
    assert found["InferenceSpecification"]["Containers"][0]["Image"] == XGB_IMAGE
    assert out["BatchDescribeModelPackageErrorMap"][missing]["ErrorCode"] == "ValidationException"


def test_search_model_packages_by_metadata_and_groups_by_name(sm):
    sm.create_model_package_group(ModelPackageGroupName="search-group", Tags=[{"Key": "team", "Value": "risk"}])
    arns = [_version(sm, "search-group", CustomerMetadataProperties={"auc": auc}, ModelApprovalStatus=status)
            for auc, status in (("0.81", "Approved"), ("0.93", "Approved"), ("0.95", "Rejected"))]
    out = sm.search(Resource="ModelPackage", SearchExpression={"Filters": [
        {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": "search-group"},
        {"Name": "ModelApprovalStatus", "Operator": "Equals", "Value": "Approved"},
        {"Name": "CustomerMetadataProperties.auc", "Operator": "GreaterThan", "Value": "0.9"}]})
    assert [r["ModelPackage"]["ModelPackageArn"] for r in out["Results"]] == [arns[1]]
    newest_first = sm.search(Resource="ModelPackage", MaxResults=2, SearchExpression={"Filters": [
        {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": "search-group"}]})
    assert [r["ModelPackage"]["ModelPackageVersion"] for r in newest_first["Results"]] == [3, 2]
    rest = sm.search(Resource="ModelPackage", MaxResults=2, NextToken=newest_first["NextToken"], SearchExpression={
        "Filters": [{"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": "search-group"}]})
    assert [r["ModelPackage"]["ModelPackageVersion"] for r in rest["Results"]] == [1] and "NextToken" not in rest
    # what SDK v2's register() asks before creating a group
    groups = sm.search(Resource="ModelPackageGroup", SearchExpression={"Filters": [
        {"Name": "ModelPackageGroupName", "Value": "search-group", "Operator": "Equals"}]})["Results"]
    assert [g["ModelPackageGroup"]["ModelPackageGroupName"] for g in groups] == ["search-group"]
    assert groups[0]["ModelPackageGroup"]["Tags"] == [{"Key": "team", "Value": "risk"}]
    with pytest.raises(ClientError) as e:
        sm.search(Resource="FeatureGroup")
    assert "not supported" in _error(e)[1]


# -- models from packages ----------------------------------------------------------------------------------
def test_create_model_from_unapproved_package_is_refused(sm):
    sm.create_model_package_group(ModelPackageGroupName="pending-group")
    arn = _version(sm, "pending-group")
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName="from-pending", ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": arn}])
    code, message = _error(e)
    assert code == "ValidationException" and "PendingManualApproval" in message
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName="from-missing", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"ModelPackageName": arn[:-1] + "5"})
    assert "does not exist" in _error(e)[1]


def test_create_model_from_approved_package_takes_image_data_and_environment(sm):
    sm.create_model_package_group(ModelPackageGroupName="deploy-group")
    spec = _spec(Containers=[{"Image": XGB_IMAGE, "ModelDataUrl": MODEL_URL, "Environment": {"A": "1", "B": "2"}}])
    arn = sm.create_model_package(ModelPackageGroupName="deploy-group", InferenceSpecification=spec,
                                  ModelApprovalStatus="Approved")["ModelPackageArn"]
    sm.create_model(ModelName="from-package", ExecutionRoleArn=ROLE,
                    Containers=[{"ModelPackageName": arn, "Environment": {"B": "override"}}])
    container = sm.describe_model(ModelName="from-package")["Containers"][0]
    assert (container["Image"], container["ModelDataUrl"], container["ModelPackageName"]) == (XGB_IMAGE, MODEL_URL, arn)
    assert container["Environment"] == {"A": "1", "B": "override"}


def test_registry_called_from_inside_the_platform_creates_the_group(fake_server, sm):
    """A pipeline's RegisterModel step calls the service in-process; SageMaker Pipelines creates the group."""
    from opensage.api.dispatch import RequestContext

    registry = fake_server.platform.capabilities.services["registry"]
    out = registry.create_model_package(RequestContext(), {
        "ModelPackageGroupName": "PipelineGroup", "InferenceSpecification": _spec(),
        "ModelApprovalStatus": "PendingManualApproval", "SkipModelValidation": "None"})
    assert out["ModelPackageArn"].endswith(":model-package/pipelinegroup/1")
    assert sm.describe_model_package_group(ModelPackageGroupName="PipelineGroup")["ModelPackageGroupStatus"] == \
        "Completed"


def _register_step_arguments(fake_server, group: str) -> dict:
    """What SDK v2 writes for ``ModelStep(step_args=model.register(...))``: the RegisterModel step's Arguments."""
    import boto3
    from sagemaker.model import Model
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.parameters import ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession

    creds = fake_server.settings.credentials
    boto = boto3.Session(region_name="us-east-1", aws_access_key_id=creds.access_key,
                         aws_secret_access_key=creds.secret_key)
    session = PipelineSession(boto_session=boto, sagemaker_client=fake_server.client("sagemaker"),
                              default_bucket="bucket1")
    approval = ParameterString(name="ApprovalStatus", default_value="PendingManualApproval")
    model = Model(image_uri=XGB_IMAGE, model_data=MODEL_URL, role=ROLE, sagemaker_session=session)
    step_args = model.register(
        content_types=["text/csv"], response_types=["text/csv"], inference_instances=["ml.m5.large"],
        transform_instances=["ml.m5.large"], model_package_group_name=group, approval_status=approval,
        model_metrics=ModelMetrics(model_statistics=MetricsSource(s3_uri="s3://bucket1/eval/evaluation.json",
                                                                  content_type="application/json")))
    pipeline = Pipeline(name="registry-contract", parameters=[approval], sagemaker_session=session,
                        steps=[ModelStep(name="Register", step_args=step_args)])
    (step,) = json.loads(pipeline.definition())["Steps"]
    assert step["Type"] == "RegisterModel"
    return step["Arguments"]


def test_register_model_step_arguments_from_sdk_register_in_process_make_a_deployable_version(fake_server, sm):
    """The pipeline engine's RegisterModel step: the SDK's Arguments, parameters resolved, called in-process."""
    from opensage.api.dispatch import RequestContext

    arguments = _register_step_arguments(fake_server, "Contract-Group")
    assert arguments["ModelApprovalStatus"] == {"Get": "Parameters.ApprovalStatus"}
    registry = fake_server.platform.capabilities.services["registry"]
    arn = registry.create_model_package(RequestContext(), {**arguments, "ModelApprovalStatus": "Approved"})[
        "ModelPackageArn"]
    assert arn.endswith(":model-package/contract-group/1")
    d = sm.describe_model_package(ModelPackageName=arn)
    assert d["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == "s3://bucket1/eval/evaluation.json"
    sm.create_model(ModelName="contract-model", ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": arn}])
    assert sm.describe_model(ModelName="contract-model")["Containers"][0]["ModelDataUrl"] == MODEL_URL


def test_register_model_in_process_with_bad_approval_value_is_validation_error(fake_server):
    from opensage.api.dispatch import RequestContext
    from opensage.errors import ValidationException

    arguments = _register_step_arguments(fake_server, "Contract-Bad-Group")
    registry = fake_server.platform.capabilities.services["registry"]
    with pytest.raises(ValidationException) as e:
        registry.create_model_package(RequestContext(), {**arguments, "ModelApprovalStatus": "approved"})
    assert "modelApprovalStatus" in e.value.message


# -- real serving: an approved package deploys and batch-transforms -------------------------------------------
@pytest.fixture(scope="module")
def approved_package(server):
    blob, X, _, booster = breast_cancer_xgb(5)
    store = server.store()
    store.ensure_bucket("regbucket")
    store.put_bytes("regbucket", "models/xgb/model.tar.gz", blob)
    sm = server.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="serving-group")
    arn = sm.create_model_package(ModelPackageGroupName="serving-group", ModelApprovalStatus="Approved",
                                  InferenceSpecification={
                                      "Containers": [{"Image": XGB_IMAGE,
                                                      "ModelDataUrl": "s3://regbucket/models/xgb/model.tar.gz"}],
                                      "SupportedContentTypes": ["text/csv"],
                                      "SupportedResponseMIMETypes": ["text/csv"]})["ModelPackageArn"]
    return arn, X, booster


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)


def _expected(booster, rows: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(np.array([[float(f"{v:.6g}") for v in r] for r in rows])))


@pytest.mark.slow
def test_endpoint_from_package_model_predicts_like_the_registered_booster(server, approved_package):
    arn, X, booster = approved_package
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    sm.create_model(ModelName="pkg-endpoint-model", ExecutionRoleArn=ROLE, PrimaryContainer={"ModelPackageName": arn})
    sm.create_endpoint_config(EndpointConfigName="pkg-ep-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "pkg-endpoint-model", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="pkg-ep", EndpointConfigName="pkg-ep-cfg")
    deadline = time.time() + 120
    while (d := sm.describe_endpoint(EndpointName="pkg-ep"))["EndpointStatus"] == "Creating":
        assert time.time() < deadline, "endpoint still Creating"
        time.sleep(0.3)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    body = rt.invoke_endpoint(EndpointName="pkg-ep", ContentType="text/csv", Body=_csv(X[:4]))["Body"].read()
    scores = np.array([float(s) for s in body.decode().split()])
    np.testing.assert_allclose(scores, _expected(booster, X[:4]), rtol=1e-4, atol=1e-5)
    sm.delete_endpoint(EndpointName="pkg-ep")


@pytest.mark.slow
def test_transform_job_from_package_model_writes_the_booster_predictions(server, approved_package):
    arn, X, booster = approved_package
    sm, store = server.client("sagemaker"), server.store()
    store.put_bytes("regbucket", "batch/in/rows.csv", (_csv(X[:6]) + "\n").encode())
    sm.create_model(ModelName="pkg-transform-model", ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": arn}])
    sm.create_transform_job(
        TransformJobName="pkg-transform", ModelName="pkg-transform-model",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://regbucket/batch/in"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": "s3://regbucket/batch/out", "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    deadline = time.time() + 180
    while (d := sm.describe_transform_job(TransformJobName="pkg-transform"))["TransformJobStatus"] == "InProgress":
        assert time.time() < deadline, "transform still InProgress"
        time.sleep(0.3)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = store.get_bytes("regbucket", "batch/out/rows.csv.out").decode()
    np.testing.assert_allclose([float(s) for s in out.split()], _expected(booster, X[:6]), rtol=1e-4, atol=1e-5)


def _validation_spec(input_prefix: str, output: str) -> dict:
    return {"ValidationRole": ROLE, "ValidationProfiles": [{"ProfileName": "csv-batch", "TransformJobDefinition": {
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": f"s3://regbucket/{input_prefix}"}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"s3://regbucket/{output}"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}}}]}


def _settled(sm, arn: str, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while (d := sm.describe_model_package(ModelPackageName=arn))["ModelPackageStatus"] in ("Pending", "InProgress"):
        assert time.time() < deadline, f"model package still {d['ModelPackageStatus']}"
        time.sleep(0.3)
    return d


@pytest.mark.slow
def test_create_model_package_with_validation_specification_runs_its_transform_job(server, approved_package):
    _, X, _ = approved_package
    sm, store = server.client("sagemaker"), server.store()
    store.put_bytes("regbucket", "validation/good/rows.csv", (_csv(X[:5]) + "\n").encode())
    store.put_bytes("regbucket", "validation/bad/rows.csv", b"not,a,number\n")
    spec = {"Containers": [{"Image": XGB_IMAGE, "ModelDataUrl": "s3://regbucket/models/xgb/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"]}
    good = sm.create_model_package(ModelPackageGroupName="serving-group", InferenceSpecification=spec,
                                   ValidationSpecification=_validation_spec("validation/good", "validation/out"))[
        "ModelPackageArn"]
    assert sm.describe_model_package(ModelPackageName=good)["ModelPackageStatus"] in ("Pending", "InProgress")
    d = _settled(sm, good)
    assert d["ModelPackageStatus"] == "Completed", d["ModelPackageStatusDetails"]
    assert d["ModelPackageStatusDetails"]["ValidationStatuses"][0]["Status"] == "Completed"
    assert len(store.get_bytes("regbucket", "validation/out/rows.csv.out").decode().split()) == 5

    bad = sm.create_model_package(ModelPackageGroupName="serving-group", InferenceSpecification=spec,
                                  ModelApprovalStatus="Approved",
                                  ValidationSpecification=_validation_spec("validation/bad", "validation/bad-out"))[
        "ModelPackageArn"]
    d = _settled(sm, bad)
    status = d["ModelPackageStatusDetails"]["ValidationStatuses"][0]
    assert (d["ModelPackageStatus"], status["Status"]) == ("Failed", "Failed")
    assert "csv-batch" in status["FailureReason"]
    with pytest.raises(ClientError) as e:  # a package that failed validation cannot make a model
        sm.create_model(ModelName="from-failed", ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": bad}])
    assert "status Failed" in _error(e)[1]
    leftover = [m["ModelName"] for m in sm.list_models(NameContains="validation")["Models"]]
    assert leftover == []  # the validation models are deleted once their jobs end
