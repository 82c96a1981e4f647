from datetime import UTC, datetime

import pytest

from opensage.api.spec import operation_model
from opensage.api.validate import validate
from opensage.errors import ValidationException


def _shape(op):
    return operation_model("sagemaker", op).input_shape


def test_validate_missing_required_member_is_member_must_not_be_null():
    with pytest.raises(ValidationException) as e:
        validate({"TrainingJobName": "a"}, _shape("CreateTrainingJob"))
    assert "Value null at 'roleArn' failed to satisfy constraint: Member must not be null" in str(e.value)


def test_validate_nested_list_path_uses_member_index():
    params = {"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "bad name!", "ModelName": "m"}]}
    with pytest.raises(ValidationException) as e:
        validate(params, _shape("CreateEndpointConfig"))
    assert "at 'productionVariants.1.member.variantName'" in str(e.value)


def test_validate_integer_maximum_and_enum():
    with pytest.raises(ValidationException) as e:
        validate({"MaxResults": 101, "SortBy": "Size"}, _shape("ListTrainingJobs"))
    msg = str(e.value)
    assert msg.startswith("2 validation errors detected")
    assert "less than or equal to 100" in msg and "enum value set" in msg


def test_validate_wrong_types_reported():
    with pytest.raises(ValidationException) as e:
        validate({"MaxResults": "ten", "CreationTimeAfter": datetime.now(UTC)}, _shape("ListTrainingJobs"))
    assert "maxResults" in str(e.value)


def test_validate_valid_request_passes():
    validate({"MaxResults": 10, "SortOrder": "Descending", "NameContains": "x"}, _shape("ListTrainingJobs"))


# Issue 7 item 11: values a hostile client sends are the caller's error (400), never a 500 later on.
def test_validate_long_wider_than_64_bits_is_refused():
    shape = operation_model("logs", "GetLogEvents").input_shape  # startTime is a long without a maximum
    with pytest.raises(ValidationException, match="startTime.*less than or equal to 9223372036854775807"):
        validate({"logStreamName": "s", "startTime": 2**64}, shape)


def test_validate_integer_wider_than_32_bits_is_refused():
    shape = operation_model("cloudwatch", "GetMetricData").input_shape  # MaxDatapoints: an integer, no maximum
    params = {"MetricDataQueries": [], "StartTime": datetime.now(UTC), "EndTime": datetime.now(UTC),
              "MaxDatapoints": 2**40}
    with pytest.raises(ValidationException, match="maxDatapoints.*less than or equal to 2147483647"):
        validate(params, shape)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400])
def test_validate_double_not_finite_is_refused(value):
    shape = operation_model("cloudwatch", "PutMetricData").input_shape
    params = {"Namespace": "N", "MetricData": [{"MetricName": "M", "Value": value}]}
    with pytest.raises(ValidationException, match="metricData.1.member.value.*finite number"):
        validate(params, shape)


def test_validate_huge_value_is_not_echoed_in_full():
    with pytest.raises(ValidationException) as e:
        validate({"TrainingJobName": "a" * 100_000}, _shape("DescribeTrainingJob"))
    assert len(str(e.value)) < 1000 and "length less than or equal to 63" in str(e.value)
    assert "regular expression" not in str(e.value)  # too long already: the pattern is not run


# Issue 8 item 9: enum violations use AWS's generic constraint message, with the set in the model's order.
def test_validate_enum_violation_nested_in_list_is_aws_generic_message():
    params = {"EndpointConfigName": "c", "ProductionVariants": [{"VariantName": "v", "ModelName": "m"}],
              "DataCaptureConfig": {"InitialSamplingPercentage": 10, "DestinationS3Uri": "s3://b/c",
                                    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Everything"}]}}
    with pytest.raises(ValidationException) as e:
        validate(params, _shape("CreateEndpointConfig"))
    assert str(e.value) == (
        "1 validation error detected: Value 'Everything' at 'dataCaptureConfig.captureOptions.2.member.captureMode' "
        "failed to satisfy constraint: Member must satisfy enum value set: [Input, Output, InputAndOutput]")
