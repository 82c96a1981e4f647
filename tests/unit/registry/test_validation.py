"""Names of the validation transform jobs (opensage/registry/validation.py)."""

from __future__ import annotations

import re

from opensage.registry.validation import validation_name

NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # SageMaker's model / transform job name pattern


def test_validation_name_is_a_valid_stable_job_name_per_package_and_profile():
    arn = "arn:aws:sagemaker:us-east-1:000000000000:model-package/" + "a" * 60 + "/12"
    name = validation_name(arn, "csv-batch")
    assert NAME.fullmatch(name) and len(name) <= 63
    assert name == validation_name(arn, "csv-batch")  # a restarted control plane finds the same job
    assert name != validation_name(arn, "other") != validation_name(arn[:-1] + "3", "csv-batch")
    assert validation_name("arn:aws:sagemaker:us-east-1:000000000000:model-package/churn/1", "p").startswith(
        "churn-1-validation-")
