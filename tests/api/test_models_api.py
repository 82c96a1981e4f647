"""CreateModel / CreateEndpointConfig and friends through boto3: SageMaker's wording for missing/duplicate."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE


@pytest.fixture
def sm(fake_server):
    return fake_server.client("sagemaker")


def _model(sm, name: str) -> str:
    return sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/out/job/output/model.tar.gz"})["ModelArn"]


def test_create_model_describe_list_delete_round_trip(sm):
    arn = _model(sm, "m-round")
    assert arn.endswith(":model/m-round")
    d = sm.describe_model(ModelName="m-round")
    assert d["PrimaryContainer"]["Image"] == XGB_IMAGE and d["ModelArn"] == arn
    assert "m-round" in [m["ModelName"] for m in sm.list_models(NameContains="m-round")["Models"]]
    sm.delete_model(ModelName="m-round")
    with pytest.raises(ClientError) as e:
        sm.describe_model(ModelName="m-round")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"].startswith("Could not find model")


def test_create_model_duplicate_says_cannot_create_already_existing(sm):
    _model(sm, "m-dup")
    with pytest.raises(ClientError) as e:
        _model(sm, "m-dup")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "Cannot create already existing model" in str(e.value)


def test_create_model_without_container_is_rejected(sm):
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName="m-none", ExecutionRoleArn=ROLE)
    assert "PrimaryContainer or Containers" in str(e.value)


def test_create_endpoint_config_requires_existing_model(sm):
    with pytest.raises(ClientError) as e:
        sm.create_endpoint_config(EndpointConfigName="ec-missing", ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "nope", "InitialInstanceCount": 1,
             "InstanceType": "ml.m5.large"}])
    assert "Could not find model" in str(e.value)


def test_create_endpoint_config_describe_and_missing(sm):
    _model(sm, "m-ec")
    arn = sm.create_endpoint_config(EndpointConfigName="ec-1", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "m-ec", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0}])["EndpointConfigArn"]
    d = sm.describe_endpoint_config(EndpointConfigName="ec-1")
    assert d["EndpointConfigArn"] == arn and d["ProductionVariants"][0]["ModelName"] == "m-ec"
    with pytest.raises(ClientError) as e:
        sm.describe_endpoint_config(EndpointConfigName="ec-nope")
    assert e.value.response["Error"]["Message"].startswith("Could not find endpoint configuration")
    with pytest.raises(ClientError) as e:
        sm.create_endpoint_config(EndpointConfigName="ec-1", ProductionVariants=d["ProductionVariants"])
    assert "Cannot create already existing endpoint configuration" in str(e.value)


def test_create_endpoint_config_duplicate_variant_names_rejected(sm):
    _model(sm, "m-var")
    v = {"VariantName": "A", "ModelName": "m-var", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
    with pytest.raises(ClientError) as e:
        sm.create_endpoint_config(EndpointConfigName="ec-dupvar", ProductionVariants=[v, v])
    assert "unique" in str(e.value)
