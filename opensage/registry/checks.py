"""What CreateModelPackage / UpdateModelPackage check beyond botocore's shapes (api/validate.py does those).

Wording follows SageMaker's validation errors: the field is named the way the wire names it
(``inferenceSpecification.containers.1.member.image``) so a user can find it in their request.
"""

from __future__ import annotations

import re
from typing import Any

from opensage.errors import ValidationException
from opensage.services.base import check_s3_uri

MAX_ADDITIONAL_SPECS = 15  # UpdateModelPackage's documented limit on AdditionalInferenceSpecifications
MAX_CUSTOMER_METADATA = 50  # CustomerMetadataMap's max entries (botocore), also after an update merges
_MIME = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+*-]+(\s*;.*)?")


def _invalid(value: Any, where: str, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{where}' failed to satisfy constraint: {constraint}")


def _missing(where: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value null at '{where}' failed to satisfy constraint: Member must not be null")


def check_container(container: dict[str, Any], where: str, check_image: bool) -> None:
    """One ModelPackageContainerDefinition: an image we can serve, well-formed S3 locations."""
    image = container.get("Image")
    if not image:
        raise _missing(f"{where}.image")
    if container.get("ModelDataUrl"):
        check_s3_uri(container["ModelDataUrl"], f"{where}.modelDataUrl")
    source = (container.get("ModelDataSource") or {}).get("S3DataSource")
    if source:
        check_s3_uri(source["S3Uri"], f"{where}.modelDataSource.s3DataSource.s3Uri")
        if container.get("ModelDataUrl"):
            raise ValidationException(f"Specify either ModelDataUrl or ModelDataSource at '{where}', not both.")
    extra = container.get("AdditionalS3DataSource")
    if extra:
        check_s3_uri(extra["S3Uri"], f"{where}.additionalS3DataSource.s3Uri")
    if check_image:
        from opensage import images

        try:
            images.resolve_inference_image(image, container.get("Environment") or {})
        except ValueError as e:
            # A package whose image cannot be served here could never deploy or transform: say so now,
            # not at CreateEndpoint. SkipModelValidation=All registers it anyway.
            raise ValidationException(f"Value '{image}' at '{where}.image' cannot be used: {e}") from None


def check_inference_specification(spec: dict[str, Any], where: str, versioned: bool, check_image: bool) -> None:
    containers = spec.get("Containers") or []
    if not containers:
        raise _missing(f"{where}.containers")
    hostnames = [c.get("ContainerHostname") for c in containers]
    named = [h for h in hostnames if h]
    if named and len(named) != len(hostnames):
        raise ValidationException(f"ContainerHostname must be specified for every container at '{where}.containers' "
                                  f"or for none: {len(named)} of {len(hostnames)} containers have one.")
    if len(set(named)) != len(named):
        raise ValidationException(f"ContainerHostname values at '{where}.containers' must be unique.")
    for i, container in enumerate(containers, start=1):
        check_container(container, f"{where}.containers.{i}.member", check_image)
    for key in ("SupportedContentTypes", "SupportedResponseMIMETypes"):
        for i, value in enumerate(spec.get(key) or [], start=1):
            if not _MIME.fullmatch(value):
                raise _invalid(value, f"{where}.{key[0].lower() + key[1:]}.{i}.member",
                               "Member must be a MIME type such as text/csv or application/json")
    if not versioned:
        # Documented: required for unversioned models, optional for versioned ones.
        for key in ("SupportedRealtimeInferenceInstanceTypes", "SupportedTransformInstanceTypes"):
            if not spec.get(key):
                raise ValidationException(f"{key} is required at '{where}.{key[0].lower() + key[1:]}' for an "
                                          "unversioned model package (one created with ModelPackageName).")


def check_metrics_sources(value: Any, where: str) -> None:
    """Every S3Uri in ModelMetrics / DriftCheckBaselines (nested MetricsSource / FileSource) is well formed."""
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{where}.{key[0].lower() + key[1:]}"
            if key == "S3Uri" and isinstance(item, str):
                check_s3_uri(item, sub)
            else:
                check_metrics_sources(item, sub)


def check_create(params: dict[str, Any]) -> None:
    """CreateModelPackage's rules between members (each member's own shape is checked already)."""
    group, name = params.get("ModelPackageGroupName"), params.get("ModelPackageName")
    if group and name:
        raise ValidationException("Both ModelPackageName and ModelPackageGroupName are provided in the input. "
                                  "Cannot determine which one to use.")
    if not group and not name:
        raise ValidationException("Missing ARN: give ModelPackageGroupName (a versioned model package in a model "
                                  "group) or ModelPackageName (an unversioned model package).")
    if group and params.get("CertifyForMarketplace"):
        raise ValidationException("CertifyForMarketplace does not apply to versioned model packages (created with "
                                  "ModelPackageGroupName); only unversioned model packages can be listed on AWS "
                                  "Marketplace.")
    if name and params.get("CertifyForMarketplace"):
        raise ValidationException("CertifyForMarketplace is not supported here: this platform cannot publish model "
                                  "packages to AWS Marketplace. Create the package with CertifyForMarketplace false.")
    if name and params.get("SourceUri"):
        raise ValidationException("SourceUri is not supported for unversioned model packages.")
    check_source_uri(params)
    if not params.get("InferenceSpecification") and not params.get("SourceAlgorithmSpecification"):
        if not params.get("SourceUri"):
            raise ValidationException("Either InferenceSpecification or SourceAlgorithmSpecification must be "
                                      "specified.")
    skip = params.get("SkipModelValidation") == "All"
    if params.get("InferenceSpecification"):
        check_inference_specification(params["InferenceSpecification"], "inferenceSpecification",
                                      versioned=bool(group), check_image=not skip)
    for i, spec in enumerate(params.get("AdditionalInferenceSpecifications") or [], start=1):
        check_additional(spec, f"additionalInferenceSpecifications.{i}.member", not skip)
    names = [s["Name"] for s in params.get("AdditionalInferenceSpecifications") or []]
    if len(set(names)) != len(names):
        raise ValidationException("AdditionalInferenceSpecifications names must be unique.")
    algorithms = (params.get("SourceAlgorithmSpecification") or {}).get("SourceAlgorithms") or []
    for i, algo in enumerate(algorithms, start=1):
        if algo.get("ModelDataUrl"):
            check_s3_uri(algo["ModelDataUrl"], f"sourceAlgorithmSpecification.sourceAlgorithms.{i}.member"
                                               ".modelDataUrl")
    if algorithms and not params.get("InferenceSpecification"):
        # Algorithm resources (CreateAlgorithm, Marketplace algorithms) do not exist on this platform, so their
        # inference image cannot be looked up.
        raise ValidationException(f"Could not find algorithm '{algorithms[0]['AlgorithmName']}': algorithm "
                                  "resources are not available here. Give InferenceSpecification with the "
                                  "inference image and ModelDataUrl instead.")
    for i, profile in enumerate((params.get("ValidationSpecification") or {}).get("ValidationProfiles") or [],
                                start=1):
        where = f"validationSpecification.validationProfiles.{i}.member.transformJobDefinition"
        job = profile["TransformJobDefinition"]
        check_s3_uri(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"],
                     f"{where}.transformInput.dataSource.s3DataSource.s3Uri")
        check_s3_uri(job["TransformOutput"]["S3OutputPath"], f"{where}.transformOutput.s3OutputPath")
    if params.get("ValidationSpecification") and not params.get("InferenceSpecification"):
        raise ValidationException("ValidationSpecification needs an InferenceSpecification to validate.")
    if params.get("SamplePayloadUrl"):
        check_s3_uri(params["SamplePayloadUrl"], "samplePayloadUrl")
    check_metrics_sources(params.get("ModelMetrics"), "modelMetrics")
    check_metrics_sources(params.get("DriftCheckBaselines"), "driftCheckBaselines")


def check_source_uri(params: dict[str, Any]) -> None:
    """SourceUri and InferenceSpecification are not accepted together (SDK v2 sends them in two calls)."""
    if params.get("SourceUri") and params.get("InferenceSpecification"):
        raise ValidationException("Specify either SourceUri or InferenceSpecification, not both: a model or model "
                                  "package ARN in SourceUri fills the InferenceSpecification in; for another URI, "
                                  "create the package with InferenceSpecification, then UpdateModelPackage with "
                                  "SourceUri.")


def check_additional(spec: dict[str, Any], where: str, check_image: bool) -> None:
    check_inference_specification(spec, where, versioned=True, check_image=check_image)


def merge_customer_metadata(current: dict[str, str] | None, add: dict[str, str] | None,
                            remove: list[str] | None) -> dict[str, str]:
    """UpdateModelPackage: add/overwrite, then remove; a key may not be both added and removed."""
    add, remove = add or {}, remove or []
    both = sorted(set(add) & set(remove))
    if both:
        raise ValidationException(f"The same key cannot be in CustomerMetadataProperties and "
                                  f"CustomerMetadataPropertiesToRemove: {', '.join(both)}.")
    merged = {**(current or {}), **add}
    for key in remove:
        merged.pop(key, None)
    if len(merged) > MAX_CUSTOMER_METADATA:
        raise ValidationException(f"A model package can have at most {MAX_CUSTOMER_METADATA} "
                                  f"CustomerMetadataProperties; this update would leave {len(merged)}.")
    return merged
