"""The validation reconciler against fake model / transform services: one transform job per package, resumed
(not repeated) by a restarted reconciler, the package Completed or Failed from the job's outcome."""

from __future__ import annotations

from typing import Any

import pytest

from opensage.api.dispatch import RequestContext
from opensage.arns import ArnBuilder
from opensage.clock import FakeClock
from opensage.errors import ValidationException
from opensage.registry.validation import ValidationReconciler
from opensage.services.base import Deps
from opensage.services.registry import RegistryService
from opensage.settings import Settings
from opensage.store.db import make_engine, migrate
from opensage.store.logs import LogRepository
from opensage.store.metrics import MetricRepository
from opensage.store.resources import ResourceRepository
from opensage.store.tags import TagRepository

XGB = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


class FakeModels:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []

    def create_model(self, ctx, params):
        self.models[params["ModelName"]] = params
        return {"ModelArn": params["ModelName"]}

    def describe_model(self, ctx, params):
        if params["ModelName"] not in self.models:
            raise ValidationException("Could not find model")
        return self.models[params["ModelName"]]

    def delete_model(self, ctx, params):
        self.deleted.append(params["ModelName"])
        self.models.pop(params["ModelName"], None)
        return {}


class FakeTransform:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    def create_transform_job(self, ctx, params):
        self.jobs[params["TransformJobName"]] = {**params, "TransformJobStatus": "InProgress"}
        return {}

    def describe_transform_job(self, ctx, params):
        if params["TransformJobName"] not in self.jobs:
            raise ValidationException("Could not find requested job")
        return self.jobs[params["TransformJobName"]]


@pytest.fixture
def deps(tmp_path) -> Deps:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    return Deps(settings=Settings.build(tmp_path / "home"), clock=FakeClock(1_700_000_000.0),
                arns=ArnBuilder("us-east-1", "123456789012"), resources=ResourceRepository(engine),
                tags=TagRepository(engine), logs=LogRepository(engine), metrics=MetricRepository(engine))


def _package(deps: Deps) -> tuple[RegistryService, str]:
    registry = RegistryService(deps)
    registry.create_model_package_group(RequestContext(), {"ModelPackageGroupName": "g"})
    arn = registry.create_model_package(RequestContext(), {
        "ModelPackageGroupName": "g",
        "InferenceSpecification": {"Containers": [{"Image": XGB, "ModelDataUrl": "s3://bucket/model.tar.gz"}]},
        "ValidationSpecification": {"ValidationRole": ROLE, "ValidationProfiles": [{
            "ProfileName": "p1", "TransformJobDefinition": {
                "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                   "S3Uri": "s3://bucket/in"}}},
                "TransformOutput": {"S3OutputPath": "s3://bucket/out"},
                "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}}}]}})["ModelPackageArn"]
    return registry, arn


@pytest.mark.parametrize(("outcome", "expected"), [("Completed", "Completed"), ("Failed", "Failed")])
def test_validation_restarted_reconciler_resumes_the_same_job_and_settles_the_package(deps, outcome, expected):
    registry, arn = _package(deps)
    assert registry.describe_model_package(None, {"ModelPackageName": arn})["ModelPackageStatus"] == "Pending"
    models, transform = FakeModels(), FakeTransform()
    services = {"models": models, "transform": transform}
    ValidationReconciler(deps, services).run_once()
    d = registry.describe_model_package(None, {"ModelPackageName": arn})
    assert d["ModelPackageStatus"] == "InProgress"
    assert d["ModelPackageStatusDetails"]["ValidationStatuses"][0]["Status"] == "InProgress"
    (job_name,) = transform.jobs
    job = transform.jobs[job_name]
    assert job["ModelName"] == job_name and models.models[job_name]["Containers"][0]["Image"] == XGB

    restarted = ValidationReconciler(deps, services)  # a new control plane: state comes from the row
    assert restarted.run_once() is True
    assert list(transform.jobs) == [job_name]  # still one job
    job.update(TransformJobStatus=outcome, FailureReason="ClientError: bad input" if outcome == "Failed" else None)
    restarted.run_once()
    d = registry.describe_model_package(None, {"ModelPackageName": arn})
    status = d["ModelPackageStatusDetails"]["ValidationStatuses"][0]
    assert (d["ModelPackageStatus"], status["Status"]) == (expected, expected)
    if outcome == "Failed":
        assert "p1" in status["FailureReason"] and "bad input" in status["FailureReason"]
    assert models.deleted == [job_name] and restarted.run_once() is False


def test_validation_that_cannot_start_its_job_fails_the_package(deps):
    registry, arn = _package(deps)

    class RefusingTransform(FakeTransform):
        def create_transform_job(self, ctx, params):
            raise ValidationException("Could not find model")

    models = FakeModels()
    ValidationReconciler(deps, {"models": models, "transform": RefusingTransform()}).run_once()
    d = registry.describe_model_package(None, {"ModelPackageName": arn})
    assert d["ModelPackageStatus"] == "Failed"
    assert "could not start its transform job" in d["ModelPackageStatusDetails"]["ValidationStatuses"][0][
        "FailureReason"]
    assert models.models == {}  # the model made for it is not left behind
