"""The tuning service called in-process (a pipeline's TuningStep): the same checks as over the wire."""

from __future__ import annotations

import pytest

from opensage.api.dispatch import RequestContext
from opensage.errors import ValidationException
from tests.api.tuning_support import tuning_request


def test_create_hyper_parameter_tuning_job_in_process_bad_shape_is_validation_exception(tmp_path):
    from opensage.app import create_app
    from opensage.settings import Settings

    settings = Settings.build(tmp_path, port=1, s3_endpoint=f"file://{tmp_path / 's3'}")
    platform = create_app(settings, run_background=False)
    service = platform.capabilities.services["tuning"]
    req = tuning_request("t" * 40)
    req["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxParallelTrainingJobs"] = 0
    with pytest.raises(ValidationException) as e:
        service.create_hyper_parameter_tuning_job(RequestContext(), req)
    assert "hyperParameterTuningJobName" in e.value.message and "maxParallelTrainingJobs" in e.value.message
