"""Pipeline expressions: Get / Std:Join / Std:JsonGet, conditions, paths and shape coercion."""

from __future__ import annotations

import pytest

from opensage.pipelines.expressions import (
    ExpressionError,
    Scope,
    coerce,
    evaluate_all,
    parse_path,
    resolve,
    walk,
)

DESCRIBE = {"ProcessingOutputConfig": {"Outputs": [
    {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/train"}},
    {"OutputName": "test", "S3Output": {"S3Uri": "s3://b/test"}}]},
    "FinalMetricDataList": [{"MetricName": "validation:rmse", "Value": 3.5}]}


def scope(**params) -> Scope:
    docs = {"s3://b/eval/evaluation.json": {"metrics": {"mse": {"value": 2.5}}, "list": [1, {"a": "x"}]}}
    return Scope(parameters=params,
                 execution=lambda path: {"Execution.PipelineExecutionId": "abc123def456"}[path],
                 step_property=lambda step, segments: walk(DESCRIBE, segments, step),
                 property_file=lambda step, name: docs["s3://b/eval/evaluation.json"],
                 read_json=lambda uri: docs[uri])


def test_parse_path_named_and_indexed_segments_parsed():
    assert parse_path("Outputs['train'].S3Output.S3Uri[0]") == ["Outputs", "train", "S3Output", "S3Uri", 0]


def test_get_steps_named_list_item_resolves_by_its_name():
    value = resolve({"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['test'].S3Output.S3Uri"}, scope())
    assert value == "s3://b/test"
    metric = resolve({"Get": "Steps.Train.FinalMetricDataList['validation:rmse'].Value"}, scope())
    assert metric == 3.5


def test_join_prints_booleans_lower_case_and_numbers():
    expr = {"Std:Join": {"On": "/", "Values": ["s3:/", {"Get": "Parameters.Flag"}, {"Get": "Parameters.N"},
                                                     {"Get": "Execution.PipelineExecutionId"}]}}
    assert resolve(expr, scope(Flag=False, N=3)) == "s3://false/3/abc123def456"


def test_json_get_property_file_and_s3_uri_read_the_document():
    pf = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"}, "Path": "metrics.mse.value"}}
    assert resolve(pf, scope()) == 2.5
    s3 = {"Std:JsonGet": {"S3Uri": {"Std:Join": {"On": "/", "Values": ["s3://b/eval", "evaluation.json"]}},
                          "Path": "list[1]['a']"}}
    assert resolve(s3, scope()) == "x"


def test_json_get_missing_path_raises_expression_error_naming_it():
    with pytest.raises(ExpressionError, match="'nope'"):
        resolve({"Std:JsonGet": {"S3Uri": "s3://b/eval/evaluation.json", "Path": "metrics.nope"}}, scope())


@pytest.mark.parametrize("condition, expected", [
    ({"Type": "Equals", "LeftValue": {"Get": "Parameters.S"}, "RightValue": "a"}, True),
    ({"Type": "GreaterThan", "LeftValue": 3, "RightValue": {"Get": "Parameters.F"}}, True),
    ({"Type": "GreaterThanOrEqualTo", "LeftValue": 2.5, "RightValue": "2.5"}, True),
    ({"Type": "LessThan", "LeftValue": {"Get": "Parameters.F"}, "RightValue": 1}, False),
    ({"Type": "LessThanOrEqualTo", "LeftValue": 1, "RightValue": 1}, True),
    ({"Type": "In", "QueryValue": {"Get": "Parameters.S"}, "Values": ["b", "a"]}, True),
    ({"Type": "Not", "Condition": {"Type": "In", "QueryValue": "z", "Values": ["a"]}}, True),
    ({"Type": "Or", "Conditions": [{"Type": "Equals", "LeftValue": 1, "RightValue": 2},
                                   {"Type": "Equals", "LeftValue": {"Get": "Parameters.B"}, "RightValue": True}]},
     True),
    ({"Type": "Equals", "LeftValue": {"Get": "Parameters.B"}, "RightValue": "false"}, False),
])
def test_every_condition_type_evaluates(condition, expected):
    assert evaluate_all([condition], scope(S="a", F=2.0, B=True)) is expected


def test_conditions_list_is_a_conjunction():
    yes = {"Type": "Equals", "LeftValue": 1, "RightValue": 1}
    no = {"Type": "Equals", "LeftValue": 1, "RightValue": 2}
    assert evaluate_all([yes, yes], scope()) and not evaluate_all([yes, no], scope())


def test_coerce_follows_the_create_request_shape():
    from opensage.api.spec import operation_model

    shape = operation_model("sagemaker", "CreateTrainingJob").input_shape
    out = coerce({"HyperParameters": {"num_round": 5, "flag": True},
                  "ResourceConfig": {"InstanceCount": "2", "VolumeSizeInGB": 10.0}}, shape)
    assert out == {"HyperParameters": {"num_round": "5", "flag": "true"},
                   "ResourceConfig": {"InstanceCount": 2, "VolumeSizeInGB": 10}}
