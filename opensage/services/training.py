"""Training jobs: Create/Describe/List/Stop. Requests record intent; the training reconciler does the work."""

from __future__ import annotations

import posixpath
from typing import Any

from opensage.errors import ResourceInUse, ResourceNotFound, ValidationException
from opensage.images import PROGRAM_HYPERPARAMETER
from opensage.services.base import Deps, check_s3_uri, list_jobs, stop_job
from opensage.store.resources import AlreadyExists, Resource
from opensage.store.tags import check_user_tags

KIND = "training-job"
DEFAULT_STOPPING = {"MaxRuntimeInSeconds": 86400}


def resolve_image(params: dict[str, Any]):
    """The one call into images.py for a training request; ValueError -> ValidationException.

    An image this platform cannot run raises ``images.UnsupportedImage`` (a ValueError): CreateTrainingJob
    accepts it as SageMaker accepts any image, and the reconciler fails the job with its message."""
    from opensage import images

    algo = params.get("AlgorithmSpecification") or {}
    try:
        return images.resolve_training_image(
            algo.get("TrainingImage"), algo.get("AlgorithmName"), params.get("HyperParameters") or {},
            algo.get("ContainerEntrypoint"), algo.get("ContainerArguments"))
    except images.UnsupportedImage:
        raise
    except ValueError as e:
        raise ValidationException(str(e)) from None


def no_s3_objects_message(uri: str, role_arn: str, region: str) -> str:
    """SageMaker's words when a channel's S3 input has nothing in it (seen in public reports)."""
    from opensage.objects.base import split_s3_uri

    bucket = split_s3_uri(uri)[0]
    return (f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure that the '
            f'bucket exists in the selected region ({region}), that objects exist under that S3 prefix, and '
            f'that the role "{role_arn}" has "s3:ListBucket" permissions on bucket "{bucket}".')


CONTAINER_ROOT = "/opt/ml"


def check_container_path(value: str, field_path: str) -> str:
    """A path inside the job's container tree (``/opt/ml/...``), normalized; else ValidationException.

    In SageMaker such a path is inside the container; here the container is a directory of the host, and the
    agent (root in a plain install) writes into and uploads from it, so nothing outside /opt/ml is taken.
    """
    normalized = posixpath.normpath(value) if value else value
    if not value or not value.startswith("/") or ".." in value.split("/") or not (
            normalized == CONTAINER_ROOT or normalized.startswith(CONTAINER_ROOT + "/")):
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{field_path}' failed to satisfy constraint: "
            f"Member must be an absolute path under {CONTAINER_ROOT} (the job's container directory), "
            f"e.g. {CONTAINER_ROOT}/checkpoints")
    return normalized


class TrainingService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    # -- helpers -----------------------------------------------------------------------------------
    def _get(self, name: str, missing=ValidationException) -> Resource:
        res = self.d.resources.get(KIND, name)
        if res is None:
            if missing is ResourceNotFound:
                raise ResourceNotFound(f"Training job {name} does not exist.")
            raise ValidationException("Requested resource not found.")
        return res

    def _check_request(self, params: dict[str, Any]) -> None:
        if not params.get("ServerlessJobConfig"):
            for member in ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition"):
                if not params.get(member):
                    raise ValidationException(
                        f"1 validation error detected: Value null at '{member[0].lower() + member[1:]}' "
                        "failed to satisfy constraint: Member must not be null")
        algo = params.get("AlgorithmSpecification") or {}
        if not algo.get("TrainingImage") and not algo.get("AlgorithmName"):
            raise ValidationException(
                "AlgorithmSpecification must specify either TrainingImage or AlgorithmName.")
        check_s3_uri(params["OutputDataConfig"]["S3OutputPath"], "outputDataConfig.s3OutputPath")
        check_spot_and_cluster(params)
        seen: set[str] = set()
        for i, ch in enumerate(params.get("InputDataConfig") or [], start=1):
            name = ch["ChannelName"]
            if name in (".", ".."):  # the pattern allows dots; these would name input/data or its parent
                raise ValidationException(
                    f"1 validation error detected: Value '{name}' at 'inputDataConfig.{i}.member.channelName' "
                    "failed to satisfy constraint: Member must not be '.' or '..' (a channel is a directory "
                    "under /opt/ml/input/data)")
            if name in seen:
                raise ValidationException(f"Channel names must be unique; '{name}' appears more than once.")
            seen.add(name)
            s3 = (ch.get("DataSource") or {}).get("S3DataSource")
            if s3 is None:
                raise ValidationException(
                    f"Channel '{name}': only S3DataSource is supported (inputDataConfig.{i}.member.dataSource).")
            check_s3_uri(s3["S3Uri"], f"inputDataConfig.{i}.member.dataSource.s3DataSource.s3Uri")
            mode = ch.get("InputMode") or algo.get("TrainingInputMode") or "File"
            if ch.get("CompressionType") == "Gzip" and mode == "File":
                # SageMaker's own refusal (sagemaker-python-sdk#716): only Pipe mode decompresses channels.
                raise ValidationException(
                    f"Invalid compression type for channel {name}: File mode only supports NONE, got Gzip instead")
        ckpt = params.get("CheckpointConfig")
        if ckpt:
            check_s3_uri(ckpt["S3Uri"], "checkpointConfig.s3Uri")
            if ckpt.get("LocalPath") is not None:
                check_container_path(ckpt["LocalPath"], "checkpointConfig.localPath")
        from opensage import images

        try:
            resolve_image(params)
        except images.UnsupportedImage:
            pass  # accepted as SageMaker does: the job fails at once with the message (runner/training.py)
        self._check_inputs_exist(params)

    def _check_inputs_exist(self, params: dict[str, Any]) -> None:
        """SageMaker lists every channel's S3 input at Create: an empty prefix (or a missing manifest) is a
        ValidationException there, not a failed job."""
        from opensage.objects import ObjectNotFound, split_s3_uri

        channels = [ch for ch in params.get("InputDataConfig") or []
                    if (ch.get("DataSource") or {}).get("S3DataSource")]
        if not channels:
            return
        s = self.d.settings
        store = self.d.platform_store()
        for ch in channels:
            source = ch["DataSource"]["S3DataSource"]
            uri = source["S3Uri"]
            bucket, key = split_s3_uri(uri)
            try:
                if source.get("S3DataType") in ("ManifestFile", "AugmentedManifestFile"):
                    found = store.exists(bucket, key)
                else:
                    found = any(not info.key.endswith("/") for info in store.list(bucket, key))
            except ObjectNotFound:
                found = False
            if not found:
                raise ValidationException(no_s3_objects_message(uri, params.get("RoleArn") or "", s.region))

    # -- operations --------------------------------------------------------------------------------
    def create_training_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TrainingJobName"]
        arn = self.d.arns.sagemaker(KIND, name)
        if self.d.resources.get(KIND, name) is not None:
            raise ResourceInUse(f"Training job names must be unique within an AWS account and region, and a "
                                f"training job with this name already exists ({arn})")
        self._check_request(params)
        now = self.d.clock.time()
        state = {
            "SecondaryStatus": "Starting",
            "SecondaryStatusTransitions": [
                {"Status": "Starting", "StartTime": now, "StatusMessage": "Starting the training job."}],
        }
        check_user_tags(params.get("Tags") or [])  # before the resource exists
        request = {k: v for k, v in params.items() if k != "Tags"}
        try:
            self.d.resources.create(Resource(KIND, name, arn, "InProgress", now, now, request, state,
                                             parent_arn=params.get("_TuningJobArn")))
        except AlreadyExists:
            raise ResourceInUse(f"Training job {name} already exists ({arn})") from None
        self.d.tags.put(arn, params.get("Tags") or [])
        self.d.wake(KIND)
        return {"TrainingJobArn": arn}

    def describe_training_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(params["TrainingJobName"])
        return describe(res)

    def list_training_jobs(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(self.d, KIND, params, "TrainingJobSummaries", summary)

    def stop_training_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TrainingJobName"]
        return stop_job(self.d, KIND, lambda: self._get(name, missing=ResourceNotFound), "training job",
                        "StopTrainingJob", state=_stopping_state)


def check_spot_and_cluster(params: dict[str, Any]) -> None:
    """SageMaker's checks of StoppingCondition.MaxWaitTimeInSeconds against managed spot training, and of
    InstanceGroups against InstanceType / InstanceCount (their wording)."""
    stopping = params.get("StoppingCondition") or {}
    max_wait = stopping.get("MaxWaitTimeInSeconds")
    if params.get("EnableManagedSpotTraining"):
        if max_wait is None or max_wait < stopping.get("MaxRuntimeInSeconds", 86400):
            raise ValidationException("Invalid MaxWaitTimeInSeconds. It must be present and be greater than or "
                                      "equal to MaxRuntimeInSeconds")
    elif max_wait is not None:
        raise ValidationException("Invalid MaxWaitTimeInSeconds. It is only supported when "
                                  "EnableManagedSpotTraining is set to true")
    resources = params.get("ResourceConfig") or {}
    if resources.get("InstanceGroups") and (resources.get("InstanceType") or resources.get("InstanceCount")):
        raise ValidationException("ResourceConfig: InstanceGroups cannot be specified together with InstanceType "
                                  "or InstanceCount.")


def _stopping_state(res: Resource, now: float) -> dict[str, Any]:
    """SecondaryStatus Stopping, closing the running secondary status."""
    transitions = close_transition(res.state.get("SecondaryStatusTransitions", []), now)
    transitions.append({"Status": "Stopping", "StartTime": now, "StatusMessage": "Stopping the training job."})
    return {"SecondaryStatus": "Stopping", "SecondaryStatusTransitions": transitions}


def close_transition(transitions: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    out = [dict(t) for t in transitions]
    if out and "EndTime" not in out[-1]:
        out[-1]["EndTime"] = now
    return out


def describe(res: Resource) -> dict[str, Any]:
    req = res.request
    out: dict[str, Any] = dict(req)
    out.update({k: v for k, v in res.state.items() if not k.startswith("_")})
    out.update({
        "TrainingJobName": res.name,
        "TrainingJobArn": res.arn,
        "TrainingJobStatus": res.status,
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "StoppingCondition": req.get("StoppingCondition") or DEFAULT_STOPPING,
        "EnableNetworkIsolation": req.get("EnableNetworkIsolation", False),
        "EnableInterContainerTrafficEncryption": req.get("EnableInterContainerTrafficEncryption", False),
        "EnableManagedSpotTraining": req.get("EnableManagedSpotTraining", False),
    })
    if res.parent_arn:
        out["TuningJobArn"] = res.parent_arn
    if out.get("OutputDataConfig"):
        # SageMaker answers KmsKeyId "" when none was given; SDK v2's Estimator.attach (tuner.deploy of the
        # best training job) reads it unconditionally.
        out["OutputDataConfig"] = {"KmsKeyId": "", **out["OutputDataConfig"]}
    spec = req.get("AlgorithmSpecification") or {}
    if (spec.get("TrainingImage") and not spec.get("MetricDefinitions")
            and PROGRAM_HYPERPARAMETER not in (req.get("HyperParameters") or {})):
        # A built-in algorithm's own metric definitions, as SageMaker fills them (described, never stored:
        # the runner adds the algorithm's matching regexes itself).
        from opensage.algorithms.registry import describe_metric_definitions

        definitions = describe_metric_definitions(spec["TrainingImage"])
        if definitions:
            out["AlgorithmSpecification"] = {**spec, "MetricDefinitions": definitions}
    if not out.get("ModelArtifacts"):
        # botocore marks it required: before (or without) an upload it names where the model goes.
        output_path = ((req.get("OutputDataConfig") or {}).get("S3OutputPath") or "").rstrip("/")
        out["ModelArtifacts"] = {"S3ModelArtifacts": f"{output_path}/{res.name}/output/model.tar.gz"}
    return out


def summary(res: Resource) -> dict[str, Any]:
    out = {
        "TrainingJobName": res.name,
        "TrainingJobArn": res.arn,
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "TrainingJobStatus": res.status,
        "SecondaryStatus": res.state.get("SecondaryStatus"),
    }
    if res.state.get("TrainingEndTime"):
        out["TrainingEndTime"] = res.state["TrainingEndTime"]
    return out
