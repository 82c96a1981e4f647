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



def _child_statuses(platform, service, name):
    rows = service.list_training_jobs_for_hyper_parameter_tuning_job(
        RequestContext(), {"HyperParameterTuningJobName": name, "MaxResults": 100})["TrainingJobSummaries"]
    return [r["TrainingJobStatus"] for r in rows]


def test_child_training_job_end_wakes_tuning_reconciler_before_its_next_poll(tmp_path):
    """The pass that ends a child training job wakes the tuner (Deps.on_job_end), so the next child is
    launched at once instead of after the tuner's poll interval; a training job of no tuning job does not."""
    from tests.api.tuning_support import TuningExecutor
    from tests.conftest import ROLE, XGB_IMAGE

    platform, clock, tuning = _platform(tmp_path, TuningExecutor())
    service = platform.capabilities.services["tuning"]
    training = platform.capabilities.services["training"]
    service.create_hyper_parameter_tuning_job(RequestContext(), tuning_request("tune-wake", max_jobs=2, parallel=1))
    tuning.run_once()  # launches the first child
    assert _child_statuses(platform, service, "tune-wake") == ["InProgress"]
    tuning._wake.clear()
    passes = 0
    while _child_statuses(platform, service, "tune-wake") == ["InProgress"]:
        assert not tuning._wake.is_set(), "woken before its child ended"
        platform.training.run_once()
        passes += 1
        assert passes < 10
    assert _child_statuses(platform, service, "tune-wake") == ["Completed"]
    assert tuning._wake.is_set()  # the event the tuner's loop waits on: its next pass runs now
    tuning._wake.clear()
    tuning.run_once()
    assert _child_statuses(platform, service, "tune-wake") == ["Completed", "InProgress"]

    for _ in range(10):  # the tuning job ends
        platform.training.run_once()
        tuning.run_once()
    assert service.describe_hyper_parameter_tuning_job(
        RequestContext(), {"HyperParameterTuningJobName": "tune-wake"})["HyperParameterTuningJobStatus"] == "Completed"

    # A standalone training job ending leaves the tuner asleep.
    tuning._wake.clear()
    training.create_training_job(RequestContext(), {
        "TrainingJobName": "standalone", "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": {"num_round": "2"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/train"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60}})
    for _ in range(10):
        platform.training.run_once()
    assert training.describe_training_job(RequestContext(), {"TrainingJobName": "standalone"})[
        "TrainingJobStatus"] == "Completed"
    assert not tuning._wake.is_set()


def test_tuning_job_end_runs_on_job_end_hooks_of_its_kind(tmp_path):
    from tests.api.tuning_support import TuningExecutor

    platform, clock, tuning = _platform(tmp_path, TuningExecutor())
    service = platform.capabilities.services["tuning"]
    ended = []
    platform.capabilities.deps.on_job_end.setdefault("hyper-parameter-tuning-job", []).append(
        lambda job: ended.append((job.name, job.status)))
    service.create_hyper_parameter_tuning_job(RequestContext(), tuning_request("tune-end", max_jobs=1, parallel=1))
    for _ in range(10):
        tuning.run_once()
        platform.training.run_once()
        if ended:
            break
    assert ended == [("tune-end", "Completed")]


def test_describe_hyper_parameter_tuning_job_in_progress_reports_jobs_not_improving(tmp_path):
    """TuningJobCompletionDetails while the job runs, not only once it ended."""
    from opensage.runner.jobspec import JobResult
    from tests.api.tuning_support import eval_line

    executor = FakeExecutor(default=FakeRun(keep_running=True))
    platform, clock, tuning = _platform(tmp_path, executor)
    service = platform.capabilities.services["tuning"]
    service.create_hyper_parameter_tuning_job(RequestContext(), tuning_request("tune-live", max_jobs=4, parallel=2))
    tuning.run_once()
    platform.training.run_once()
    rows = _child_statuses(platform, service, "tune-live")
    assert rows == ["InProgress", "InProgress"]
    names = [r["TrainingJobName"] for r in service.list_training_jobs_for_hyper_parameter_tuning_job(
        RequestContext(), {"HyperParameterTuningJobName": "tune-live"})["TrainingJobSummaries"]]
    first = sorted(names)[0]
    handle = next(h for h, j in executor.jobs.items() if j.spec.job_name == first)
    (executor.jobs[handle].jobdir / "logs" / "algo-1.log").open("a").write(f"1 {eval_line(0, 0.5)}\n")
    executor.finish(handle, JobResult(exit_code=0))
    for _ in range(3):
        platform.training.run_once()
    d = service.describe_hyper_parameter_tuning_job(RequestContext(), {"HyperParameterTuningJobName": "tune-live"})
    assert d["HyperParameterTuningJobStatus"] == "InProgress"
    assert d["TrainingJobStatusCounters"]["Completed"] == 1
    assert d["TuningJobCompletionDetails"] == {"NumberOfTrainingJobsObjectiveNotImproving": 0}
