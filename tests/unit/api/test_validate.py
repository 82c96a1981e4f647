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
