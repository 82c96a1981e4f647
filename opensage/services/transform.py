"""Transform jobs: Create/Describe/List/Stop. Requests record intent; the transform reconciler does the work.

Wording follows SageMaker: a duplicate name is ResourceInUse; a missing job on Describe is a
ValidationException "Could not find requested job with name <name>" (the boto3 waiter
TransformJobCompletedOrStopped fails on it); Stop of a missing job is ResourceNotFound.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import ResourceInUse, ResourceNotFound, ValidationException
from opensage.services.base import Deps, check_s3_uri, list_jobs, stop_job
from opensage.serving.plan import model_containers
from opensage.store.resources import AlreadyExists, Resource
from opensage.store.tags import check_user_tags

KIND = "transform-job"
MAX_TOTAL_PAYLOAD_MB = 100  # MaxConcurrentTransforms x MaxPayloadInMB


def resolve_model(model: Resource) -> list:
    """Every container's model-server kind (``images.resolve_inference_image``), in order; a container
    that cannot be served here -> ValidationException naming it."""
    from opensage import images
    from opensage.serving.plan import container_hostnames

    containers = model_containers(model.request)
    resolved = []
    for container, hostname in zip(containers, container_hostnames(containers), strict=True):
        try:
            resolved.append(images.resolve_inference_image(container.get("Image") or "",
                                                           container.get("Environment") or {}))
        except ValueError as e:
            where = f" (container {hostname})" if len(containers) > 1 else ""
            raise ValidationException(f"Model {model.name}{where}: {e}") from None
    return resolved


class TransformService:
    def __init__(self, deps: Deps, models: Any) -> None:
        self.d = deps
        self.models = models  # ModelService: get_model(name) raises SageMaker's "Could not find model"

    # -- helpers -----------------------------------------------------------------------------------
    def _get(self, name: str, missing=ValidationException) -> Resource:
        res = self.d.resources.get(KIND, name)
        if res is None:
            if missing is ResourceNotFound:
                raise ResourceNotFound(f"Transform job {name} does not exist.")
            raise ValidationException(f"Could not find requested job with name {name}")
        return res

    def _check_request(self, params: dict[str, Any]) -> None:
        model = self.models.get_model(params["ModelName"])
        resolve_model(model)
        if any(c.get("Mode") == "MultiModel" for c in model_containers(model.request)):
            raise ValidationException(f"Model {model.name} is a multi-model model (a container with Mode MultiModel); "
                                      "batch transform needs a model with one artifact per container.")
        if (model.request.get("InferenceExecutionConfig") or {}).get("Mode") == "Direct":
            raise ValidationException(f"Model {model.name} is configured for direct invocation (InferenceExecution"
                                      "Config Mode Direct); batch transform runs a model's containers as a serial "
                                      "pipeline. Create the model without InferenceExecutionConfig (or Serial).")
        tin, tout = params["TransformInput"], params["TransformOutput"]
        source = tin["DataSource"].get("S3DataSource")
        if not source:
            raise ValidationException("TransformInput.DataSource must have an S3DataSource.")
        if source.get("S3DataType") == "AugmentedManifestFile":
            raise ValidationException("S3DataType AugmentedManifestFile is not supported for transform jobs; "
                                      "use S3Prefix or ManifestFile.")
        check_s3_uri(source["S3Uri"], "transformInput.dataSource.s3DataSource.s3Uri")
        check_s3_uri(tout["S3OutputPath"], "transformOutput.s3OutputPath")
        if params.get("DataCaptureConfig"):
            check_s3_uri(params["DataCaptureConfig"]["DestinationS3Uri"], "dataCaptureConfig.destinationS3Uri")
        payload = params.get("MaxPayloadInMB")
        concurrency = params.get("MaxConcurrentTransforms")
        if payload is not None and payload > MAX_TOTAL_PAYLOAD_MB:
            raise ValidationException(f"MaxPayloadInMB must be at most {MAX_TOTAL_PAYLOAD_MB}; got {payload}.")
        if payload and concurrency and payload * concurrency > MAX_TOTAL_PAYLOAD_MB:
            raise ValidationException(
                f"MaxConcurrentTransforms x MaxPayloadInMB must be at most {MAX_TOTAL_PAYLOAD_MB} MB; got "
                f"{concurrency} x {payload}.")
        from opensage.runner.transform_data import check_data_processing

        try:
            check_data_processing(params.get("DataProcessing"), tin.get("ContentType"))
        except ValueError as e:
            raise ValidationException(str(e)) from None
        self._check_input_exists(source)

    def _check_input_exists(self, source: dict[str, Any]) -> None:
        """SageMaker lists the input at Create and refuses an empty prefix or a missing manifest."""
        from opensage.objects import ObjectNotFound, split_s3_uri

        store = self.d.platform_store()
        uri = source["S3Uri"]
        bucket, key = split_s3_uri(uri)
        try:
            if source.get("S3DataType") == "ManifestFile":
                found = store.exists(bucket, key)
            else:
                found = any(not info.key.endswith("/") for info in store.list(bucket, key))
        except ObjectNotFound:
            found = False
        if not found:
            what = "the manifest file" if source.get("S3DataType") == "ManifestFile" else "S3 objects"
            raise ValidationException(
                f"No {what} found under S3 URL \"{uri}\" given in input data source. Please ensure that the "
                f"bucket exists and that objects exist under that S3 prefix.")

    # -- operations --------------------------------------------------------------------------------
    def create_transform_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TransformJobName"]
        arn = self.d.arns.sagemaker(KIND, name)
        if self.d.resources.get(KIND, name) is not None:
            raise ResourceInUse(f"Transform job names must be unique within an AWS account and region, and a "
                                f"transform job with this name already exists ({arn})")
        self._check_request(params)
        now = self.d.clock.time()
        check_user_tags(params.get("Tags") or [])  # before the resource exists
        request = {k: v for k, v in params.items() if k != "Tags"}
        try:
            self.d.resources.create(Resource(KIND, name, arn, "InProgress", now, now, request, {}))
        except AlreadyExists:
            raise ResourceInUse(f"Transform job {name} already exists ({arn})") from None
        self.d.tags.put(arn, params.get("Tags") or [])
        self.d.wake(KIND)
        return {"TransformJobArn": arn}

    def describe_transform_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return describe(self._get(params["TransformJobName"]))

    def list_transform_jobs(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(self.d, KIND, params, "TransformJobSummaries", summary)

    def stop_transform_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["TransformJobName"]
        return stop_job(self.d, KIND, lambda: self._get(name, missing=ResourceNotFound), "transform job",
                        "StopTransformJob")


def describe(res: Resource) -> dict[str, Any]:
    out: dict[str, Any] = dict(res.request)
    out.update({k: v for k, v in res.state.items() if not k.startswith("_")})
    out.update({
        "TransformJobName": res.name,
        "TransformJobArn": res.arn,
        "TransformJobStatus": res.status,
        "CreationTime": res.creation_time,
    })
    out.setdefault("Environment", {})
    return out


def summary(res: Resource) -> dict[str, Any]:
    out = {
        "TransformJobName": res.name,
        "TransformJobArn": res.arn,
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "TransformJobStatus": res.status,
    }
    for key in ("TransformEndTime", "FailureReason"):
        if res.state.get(key):
            out[key] = res.state[key]
    return out
