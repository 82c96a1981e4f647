"""Search expressions over plain records (opensage/registry/search.py)."""

from __future__ import annotations

import pytest

from opensage.errors import ValidationException
from opensage.registry.search import matches, sort_key

JOB = {
    "TrainingJobName": "xgb-1", "CreationTime": 1_700_000_000.5, "TrainingJobStatus": "Completed",
    "ModelArtifacts": {"S3ModelArtifacts": "s3://b/out/xgb-1/output/model.tar.gz"},
    "HyperParameters": {"max_depth": "3"},
    "FinalMetricDataList": [{"MetricName": "train:auc", "Value": 0.91}, {"MetricName": "validation:auc", "Value": 0.87}],
    "Tags": [{"Key": "team", "Value": "fraud"}],
}


@pytest.mark.parametrize(("flt", "expected"), [
    ({"Name": "ModelArtifacts.S3ModelArtifacts", "Operator": "Equals",
      "Value": "s3://b/out/xgb-1/output/model.tar.gz"}, True),
    ({"Name": "ModelArtifacts.S3ModelArtifacts", "Operator": "Equals", "Value": "s3://b/other.tar.gz"}, False),
    ({"Name": "TrainingJobName", "Operator": "Contains", "Value": "XGB"}, True),
    ({"Name": "TrainingJobStatus", "Operator": "NotEquals", "Value": "Failed"}, True),
    ({"Name": "TrainingJobStatus", "Operator": "In", "Value": "Failed,Completed"}, True),
    ({"Name": "HyperParameters.max_depth", "Operator": "GreaterThan", "Value": "2"}, True),
    ({"Name": "HyperParameters.max_depth", "Operator": "LessThanOrEqualTo", "Value": "2"}, False),
    ({"Name": "CreationTime", "Operator": "GreaterThan", "Value": "2023-11-01T00:00:00Z"}, True),
    ({"Name": "CreationTime", "Operator": "LessThan", "Value": "2023-11-01T00:00:00Z"}, False),
    ({"Name": "Tags.team", "Operator": "Equals", "Value": "fraud"}, True),
    ({"Name": "Tags.owner", "Operator": "Exists"}, False),
    ({"Name": "Tags.owner", "Operator": "NotExists"}, True),
    ({"Name": "FinalMetricDataList.MetricName", "Operator": "Equals", "Value": "validation:auc"}, True),
])
def test_filter_operator_on_record_matches_as_sagemaker(flt, expected):
    assert matches(JOB, {"Filters": [flt]}) is expected


def test_nested_filters_hold_for_one_and_the_same_list_element():
    def nested(name: str, value: str) -> dict:
        return {"NestedFilters": [{"NestedPropertyName": "FinalMetricDataList", "Filters": [
            {"Name": "FinalMetricDataList.MetricName", "Operator": "Equals", "Value": name},
            {"Name": "FinalMetricDataList.Value", "Operator": "GreaterThan", "Value": value}]}]}

    assert matches(JOB, nested("train:auc", "0.9"))
    # validation:auc is 0.87; train:auc's 0.91 must not satisfy the other element's filter
    assert not matches(JOB, nested("validation:auc", "0.9"))


def test_sub_expressions_and_or_operator_combine():
    yes = {"Name": "TrainingJobStatus", "Operator": "Equals", "Value": "Completed"}
    no = {"Name": "TrainingJobStatus", "Operator": "Equals", "Value": "Failed"}
    assert not matches(JOB, {"Filters": [yes, no]})
    assert matches(JOB, {"Filters": [yes, no], "Operator": "Or"})
    assert matches(JOB, {"SubExpressions": [{"Filters": [no]}, {"Filters": [yes]}], "Operator": "Or"})
    assert not matches(JOB, {"Filters": [yes], "SubExpressions": [{"Filters": [no]}]})
    assert matches(JOB, None)


def test_filter_without_value_is_validation_error():
    with pytest.raises(ValidationException, match="needs a Value"):
        matches(JOB, {"Filters": [{"Name": "TrainingJobName", "Operator": "Equals"}]})


def test_sort_key_numeric_or_string_with_identity():
    assert sort_key(JOB, "CreationTime", "arn-1") == (1_700_000_000.5, "arn-1")
    assert sort_key(JOB, "TrainingJobName", "arn-1") == ("xgb-1", "arn-1")
    assert sort_key(JOB, "NoSuchProperty", "arn-1") == ("", "arn-1")
