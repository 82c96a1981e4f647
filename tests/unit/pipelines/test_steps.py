"""Child naming, cache keys, ExpireAfter durations and retry policies."""

from __future__ import annotations

import re

import pytest

from opensage.errors import InternalFailure, ValidationException
from opensage.pipelines.steps import (
    JOB_KINDS,
    cache_key,
    child_name,
    expire_seconds,
    failure_class,
    retry_delay,
)


def test_child_name_is_sagemakers_pipeline_job_name_within_limits():
    name = child_name(JOB_KINDS["Training"], "cfvy1tjuxdq8", "Abalone_Train", {})
    assert re.fullmatch(r"pipelines-cfvy1tjuxdq8-abalonetrain-[a-z0-9]{10}", name)
    long = child_name(JOB_KINDS["Processing"], "cfvy1tjuxdq8", "x" * 64, {})
    assert len(long) <= 63
    tuning = child_name(JOB_KINDS["Tuning"], "cfvy1tjuxdq8", "TuneTheModel", {})
    assert len(tuning) <= 32 and tuning.startswith("cfvy1tjuxdq8-")


def test_cache_key_compares_only_the_documented_attributes():
    a = {"AppSpecification": {"ImageUri": "i"}, "ProcessingInputs": [1], "RoleArn": "r1"}
    b = {**a, "RoleArn": "r2", "ProcessingOutputConfig": {"x": 1}}
    assert cache_key("Processing", a) == cache_key("Processing", b)
    assert cache_key("Processing", a) != cache_key("Processing", {**a, "Environment": {"K": "V"}})


@pytest.mark.parametrize("text, seconds", [("P30D", 30 * 86400), ("p30d", 30 * 86400), ("PT1H", 3600),
                                           ("30d", 30 * 86400), ("T16m", 960)])
def test_expire_after_iso_durations_in_every_spelling(text, seconds):
    assert expire_seconds(text) == seconds


def test_expire_after_garbage_is_refused():
    with pytest.raises(ValueError):
        expire_seconds("soon")


def test_failure_classes_map_to_retry_exception_types():
    assert failure_class(reason="InternalServerError: agent died") == "SageMaker.JOB_INTERNAL_ERROR"
    assert failure_class(reason="AlgorithmError: bad data") is None
    assert failure_class(error=InternalFailure("x")) == "Step.SERVICE_FAULT"
    assert failure_class(error=ValidationException("x")) is None


def test_retry_delay_backs_off_and_stops_at_max_attempts():
    policies = [{"ExceptionType": ["Step.SERVICE_FAULT"], "IntervalSeconds": 2, "BackoffRate": 3.0,
                 "MaxAttempts": 3}]
    assert retry_delay(policies, "Step.SERVICE_FAULT", 1, 0) == 2
    assert retry_delay(policies, "Step.SERVICE_FAULT", 2, 0) == 6
    assert retry_delay(policies, "Step.SERVICE_FAULT", 3, 0) is None
    assert retry_delay(policies, "SageMaker.CAPACITY_ERROR", 1, 0) is None
    expiring = [{"ExceptionType": ["Step.THROTTLING"], "IntervalSeconds": 30, "ExpireAfterMin": 1}]
    assert retry_delay(expiring, "Step.THROTTLING", 1, 45) is None


def test_package_failure_reads_validation_statuses_failure_reasons():
    from opensage.pipelines.engine import _package_failure

    desc = {"ModelPackageStatus": "Failed", "ModelPackageStatusDetails": {"ValidationStatuses": [
        {"Name": "profile-1", "Status": "Failed", "FailureReason": "Transform job v-1 failed: bad input"},
        {"Name": "profile-2", "Status": "Completed"}]}}
    assert _package_failure(desc) == "Transform job v-1 failed: bad input"
    assert _package_failure({"ModelPackageStatus": "Failed"}) == ""
