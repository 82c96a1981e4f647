"""The tuning reconciler driven pass by pass on a fake clock (no background threads)."""

from __future__ import annotations

from opensage.api.dispatch import RequestContext
from opensage.clock import FakeClock
from opensage.executors.fake import FakeExecutor, FakeRun
from tests.api.tuning_support import BUCKET, tuning_request


def _platform(tmp_path, executor):
    from opensage.app import create_app
    from opensage.settings import Settings

    settings = Settings.build(tmp_path, port=1, s3_endpoint=f"file://{tmp_path / 's3'}")
    clock = FakeClock(start=1_700_000_000.0)
    platform = create_app(settings, executor=executor, clock=clock, run_background=False)
    from opensage.app import object_store_spec
    from opensage.objects import open_store

    store = open_store(object_store_spec(settings))
    store.ensure_bucket(BUCKET)
    store.put_bytes(BUCKET, "data/train/part-0.csv", b"1,0.5\n")
    tuning = next(w for w in platform.capabilities.background if type(w).__name__ == "TuningReconciler")
    return platform, clock, tuning


def test_max_runtime_in_seconds_stops_running_children_and_completes(tmp_path):
    executor = FakeExecutor(default=FakeRun(keep_running=True))  # children run until stopped
    platform, clock, tuning = _platform(tmp_path, executor)
    service = platform.capabilities.services["tuning"]
    req = tuning_request("tune-runtime", max_jobs=4, parallel=2)
    req["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxRuntimeInSeconds"] = 300
    service.create_hyper_parameter_tuning_job(RequestContext(), req)
    tuning.run_once()  # launches two children
    platform.training.run_once()
    d = service.describe_hyper_parameter_tuning_job(RequestContext(), {"HyperParameterTuningJobName": "tune-runtime"})
    assert d["TrainingJobStatusCounters"]["InProgress"] == 2
    clock.advance(301)
    tuning.run_once()  # past MaxRuntimeInSeconds: children asked to stop
    platform.training.run_once()
    platform.training.run_once()
    tuning.run_once()
    d = service.describe_hyper_parameter_tuning_job(RequestContext(), {"HyperParameterTuningJobName": "tune-runtime"})
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert d["TrainingJobStatusCounters"]["Stopped"] == 2
    assert d["ConsumedResources"]["RuntimeInSeconds"] == 301

