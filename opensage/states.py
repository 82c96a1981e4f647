"""One status-transition table per resource. Every status here is a value of the spec's enum (tested)."""

from __future__ import annotations

from opensage.store.resources import Resource, ResourceRepository


class IllegalTransition(Exception):
    pass


# resource kind -> (status enum shape in the sagemaker model, {from: {to, ...}})
TABLES: dict[str, tuple[str, dict[str, set[str]]]] = {
    "training-job": ("TrainingJobStatus", {
        "InProgress": {"Stopping", "Completed", "Failed", "Stopped"},
        "Stopping": {"Stopped", "Completed", "Failed"},
        "Completed": {"Deleting"},
        "Failed": {"Deleting"},
        "Stopped": {"Deleting"},
        "Deleting": set(),
    }),
    "endpoint": ("EndpointStatus", {
        "Creating": {"InService", "Failed", "Deleting"},
        "InService": {"Updating", "Deleting", "SystemUpdating"},
        "Updating": {"InService", "RollingBack", "Failed", "Deleting"},
        "SystemUpdating": {"InService", "Deleting"},
        "RollingBack": {"InService", "UpdateRollbackFailed", "Deleting"},
        "UpdateRollbackFailed": {"Deleting"},
        "Failed": {"Deleting"},
        "Deleting": set(),
    }),
    # Shadow tests; Created -> Starting by StartInferenceExperiment or the schedule, Running -> Completed at the
    # schedule's end, any running status -> Cancelled when its endpoint is deleted.
    "inference-experiment": ("InferenceExperimentStatus", {
        "Creating": {"Created", "Cancelled"},
        "Created": {"Starting", "Updating", "Cancelled"},
        "Starting": {"Running", "Stopping", "Completed", "Cancelled"},
        "Running": {"Updating", "Stopping", "Completed", "Cancelled"},
        "Updating": {"Created", "Running", "Stopping", "Completed", "Cancelled"},
        "Stopping": {"Completed", "Cancelled"},
        "Completed": set(),
        "Cancelled": set(),
    }),
    "processing-job": ("ProcessingJobStatus", {
        "InProgress": {"Stopping", "Completed", "Failed", "Stopped"},
        "Stopping": {"Stopped", "Completed", "Failed"},
        "Completed": set(),
        "Failed": set(),
        "Stopped": set(),
    }),
    "transform-job": ("TransformJobStatus", {
        "InProgress": {"Stopping", "Completed", "Failed", "Stopped"},
        "Stopping": {"Stopped", "Completed", "Failed"},
        "Completed": set(),
        "Failed": set(),
        "Stopped": set(),
    }),
    # Automatic model tuning (capabilities/tuning): Stopping while its running child jobs are stopped.
    "hyper-parameter-tuning-job": ("HyperParameterTuningJobStatus", {
        "InProgress": {"Stopping", "Completed", "Failed", "Stopped"},
        "Stopping": {"Stopped", "Completed", "Failed"},
        "Completed": {"Deleting"},
        "Failed": {"Deleting"},
        "Stopped": {"Deleting"},
        "Deleting": {"DeleteFailed"},
        "DeleteFailed": {"Deleting"},
    }),
    "pipeline": ("PipelineStatus", {
        "Active": {"Deleting"},
        "Deleting": set(),
    }),
    # Executing -> Succeeded / Failed / CompletedWithFailures (a step failed but the run went on, as with
    # a step's retry policy exhausted on a non-blocking branch); RetryPipelineExecution: Failed -> Executing.
    "pipeline-execution": ("PipelineExecutionStatus", {
        "Executing": {"Stopping", "Succeeded", "Failed", "CompletedWithFailures", "Stopped"},
        "Stopping": {"Stopped", "Failed", "Succeeded"},
        "Failed": {"Executing"},
        "Stopped": {"Executing"},
        "Succeeded": set(),
        "CompletedWithFailures": set(),
    }),
    "model-package-group": ("ModelPackageGroupStatus", {
        "Pending": {"InProgress", "Completed", "Failed", "Deleting"},
        "InProgress": {"Completed", "Failed", "Deleting"},
        "Completed": {"Deleting"},
        "Failed": {"Deleting"},
        "Deleting": {"DeleteFailed"},
        "DeleteFailed": {"Deleting"},
    }),
    "model-package": ("ModelPackageStatus", {
        "Pending": {"InProgress", "Completed", "Failed", "Deleting"},
        "InProgress": {"Completed", "Failed", "Deleting"},
        "Completed": {"Deleting"},
        "Failed": {"Deleting"},
        "Deleting": set(),
    }),
}

TERMINAL = {"training-job": {"Completed", "Failed", "Stopped"},
            "transform-job": {"Completed", "Failed", "Stopped"},
            # A processing job's temporary credentials end with it (credentials.resource_is_active).
            "processing-job": {"Completed", "Failed", "Stopped"},
            "hyper-parameter-tuning-job": {"Completed", "Failed", "Stopped"}}


def check(kind: str, current: str, target: str) -> None:
    _, table = TABLES[kind]
    if target not in table.get(current, set()):
        raise IllegalTransition(f"{kind} cannot go from {current} to {target}")


def transition(repo: ResourceRepository, res: Resource, target: str, now: float, **state) -> Resource:
    """Move ``res`` to ``target`` (compare-and-set on the row version), merging ``state`` into its state."""
    check(res.kind, res.status, target)
    res.status = target
    res.state.update(state)
    return repo.save(res, now)
