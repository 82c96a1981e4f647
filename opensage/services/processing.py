"""Processing jobs: Create/Describe/List/Stop. Requests record intent; the processing reconciler
(runner/processing.py, on the shared agent runner) does the work."""

from __future__ import annotations

import posixpath
from typing import Any

from opensage.errors import ResourceInUse, ResourceNotFound, ValidationException
from opensage.services.base import Deps, check_s3_uri, list_jobs, stop_job
from opensage.store.resources import AlreadyExists, Resource
from opensage.store.tags import check_user_tags

KIND = "processing-job"
PROCESSING_ROOT = "/opt/ml/processing"
DEFAULT_STOPPING = {"MaxRuntimeInSeconds": 86400}


def resolve_image(params: dict[str, Any]):
    """The one call into images.py for a processing request. ``images.UnsupportedImage`` is raised as is
    (accepted at Create, as SageMaker accepts any image; the job then fails at once); any other ValueError
    is a ValidationException."""
    from opensage import images

    app = params.get("AppSpecification") or {}
    try:
        return images.resolve_processing_image(app.get("ImageUri") or "", app.get("ContainerEntrypoint"),
                                               app.get("ContainerArguments"))
    except images.UnsupportedImage:
        raise
    except ValueError as e:
        raise ValidationException(str(e)) from None


def check_processing_path(value: str | None, field_path: str) -> str:
    """SageMaker's rule: every LocalPath is an absolute path under /opt/ml/processing/."""
    normalized = posixpath.normpath(value) if value else ""
    if (not value or not value.startswith("/") or ".." in value.split("/")
            or not normalized.startswith(PROCESSING_ROOT + "/")):
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{field_path}' failed to satisfy constraint: "
            f"Member must be an absolute path under {PROCESSING_ROOT}/ (e.g. {PROCESSING_ROOT}/input/data)")
    return normalized


def _validation(message: str) -> ValidationException:
    return ValidationException(f"1 validation error detected: {message}")


class ProcessingService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _get(self, name: str, missing=ValidationException) -> Resource:
        res = self.d.resources.get(KIND, name)
        if res is None:
            if missing is ResourceNotFound:
                raise ResourceNotFound(f"Processing job {name} does not exist.")
            raise ValidationException("Could not find requested job with name " + name)
        return res

    def _normalize(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate the request and fill the defaults SageMaker echoes in Describe."""
        request = {k: v for k, v in params.items() if k != "Tags"}
        from opensage import images

        try:
            resolve_image(request)
        except images.UnsupportedImage:
            pass  # accepted: the job fails at once with the message (runner/processing.py)
        names: set[str] = set()
        inputs = []
        for i, item in enumerate(request.get("ProcessingInputs") or [], start=1):
            member = f"processingInputs.{i}.member"
            item = dict(item)
            if item["InputName"] in names:
                raise ValidationException(
                    f"InputName and OutputName must be unique; '{item['InputName']}' appears more than once.")
            names.add(item["InputName"])
            if item.get("DatasetDefinition"):
                raise _validation(
                    f"Value at '{member}.datasetDefinition' is not supported here: Athena and Redshift "
                    f"dataset definitions need those AWS services, which this platform does not run. Export "
                    f"the data to S3 and use S3Input instead.")
            s3 = item.get("S3Input")
            if not s3:
                raise _validation(f"Value null at '{member}.s3Input' failed to satisfy constraint: Member must "
                                  f"not be null (give S3Input or DatasetDefinition)")
            s3 = {"S3DataDistributionType": "FullyReplicated", "S3InputMode": "File",
                  "S3CompressionType": "None", **s3}
            check_s3_uri(s3["S3Uri"], f"{member}.s3Input.s3Uri")
            # AppManaged: the application reads the data itself (nothing is downloaded); LocalPath optional.
            if not item.get("AppManaged") or s3.get("LocalPath"):
                s3["LocalPath"] = check_processing_path(s3.get("LocalPath"), f"{member}.s3Input.localPath")
            if s3["S3DataType"] not in ("S3Prefix", "ManifestFile"):
                raise _validation(f"Value '{s3['S3DataType']}' at '{member}.s3Input.s3DataType' failed to "
                                  f"satisfy constraint: Member must satisfy enum value set: [ManifestFile, "
                                  f"S3Prefix]")
            if s3["S3CompressionType"] == "Gzip" and s3["S3InputMode"] != "Pipe":
                # SageMaker's rule (ProcessingS3Input): Gzip is decompressed while streaming, so Pipe only.
                raise _validation(f"Value 'Gzip' at '{member}.s3Input.s3CompressionType' failed to satisfy "
                                  f"constraint: Gzip can only be used when S3InputMode is Pipe (input "
                                  f"'{item['InputName']}' uses {s3['S3InputMode']})")
            item["S3Input"] = s3
            inputs.append(item)
        if inputs:
            request["ProcessingInputs"] = inputs
        config = request.get("ProcessingOutputConfig")
        if config:
            outputs = []
            for i, item in enumerate(config.get("Outputs") or [], start=1):
                member = f"processingOutputConfig.outputs.{i}.member"
                item = dict(item)
                if item["OutputName"] in names:
                    raise ValidationException(
                        f"InputName and OutputName must be unique; '{item['OutputName']}' appears more than once.")
                names.add(item["OutputName"])
                if item.get("AppManaged"):  # the application uploads (or writes the feature group) itself
                    if not item.get("S3Output") and not item.get("FeatureStoreOutput"):
                        raise _validation(f"Value null at '{member}.s3Output' failed to satisfy constraint: give "
                                          f"S3Output or FeatureStoreOutput")
                    if item.get("S3Output"):
                        check_s3_uri(item["S3Output"]["S3Uri"], f"{member}.s3Output.s3Uri")
                    outputs.append(item)
                    continue
                if item.get("FeatureStoreOutput") and not item.get("S3Output"):
                    raise _validation(f"Value at '{member}.featureStoreOutput' failed to satisfy constraint: "
                                      f"FeatureStoreOutput is only supported when AppManaged is true; use "
                                      f"S3Output")
                s3 = item.get("S3Output")
                if not s3:
                    raise _validation(f"Value null at '{member}.s3Output' failed to satisfy constraint: Member "
                                      f"must not be null")
                s3 = dict(s3)
                check_s3_uri(s3["S3Uri"], f"{member}.s3Output.s3Uri")
                s3["LocalPath"] = check_processing_path(s3.get("LocalPath"), f"{member}.s3Output.localPath")
                item["S3Output"] = s3
                outputs.append(item)
            request["ProcessingOutputConfig"] = {**config, "Outputs": outputs}
        return request

    # -- operations --------------------------------------------------------------------------------
    def create_processing_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ProcessingJobName"]
        arn = self.d.arns.sagemaker(KIND, name)
        if self.d.resources.get(KIND, name) is not None:
            raise ResourceInUse(f"Processing job names must be unique within an AWS account and region, and a "
                                f"processing job with this name already exists ({arn})")
        request = self._normalize(params)
        check_user_tags(params.get("Tags") or [])  # before the resource exists
        now = self.d.clock.time()
        try:
            self.d.resources.create(Resource(KIND, name, arn, "InProgress", now, now, request, {}))
        except AlreadyExists:
            raise ResourceInUse(f"Processing job names must be unique within an AWS account and region, and a "
                                f"processing job with this name already exists ({arn})") from None
        self.d.tags.put(arn, params.get("Tags") or [])
        self.d.wake(KIND)
        return {"ProcessingJobArn": arn}

    def describe_processing_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return describe(self._get(params["ProcessingJobName"]))

    def list_processing_jobs(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(self.d, KIND, params, "ProcessingJobSummaries", summary)

    def stop_processing_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ProcessingJobName"]
        return stop_job(self.d, KIND, lambda: self._get(name, missing=ResourceNotFound), "processing job",
                        "StopProcessingJob")


def describe(res: Resource) -> dict[str, Any]:
    out: dict[str, Any] = dict(res.request)
    out.update({k: v for k, v in res.state.items() if not k.startswith("_")})
    out.update({
        "ProcessingJobName": res.name,
        "ProcessingJobArn": res.arn,
        "ProcessingJobStatus": res.status,
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "StoppingCondition": res.request.get("StoppingCondition") or DEFAULT_STOPPING,
    })
    return out


def summary(res: Resource) -> dict[str, Any]:
    out = {
        "ProcessingJobName": res.name,
        "ProcessingJobArn": res.arn,
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "ProcessingJobStatus": res.status,
    }
    for key in ("ProcessingEndTime", "FailureReason", "ExitMessage"):
        if res.state.get(key):
            out[key] = res.state[key]
    return out
