"""Models and endpoint configurations: definitions only (no runtime state), so Create is final.

Error wording follows SageMaker's older APIs, which clients match on: a missing model or endpoint config
is a ValidationException starting "Could not find ..."; a duplicate says "Cannot create already existing
..." (SDK v2 `_create_resource` and `_deployment_entity_exists` depend on both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opensage.errors import ValidationException
from opensage.services.base import Deps, check_s3_uri, list_query
from opensage.store.resources import AlreadyExists, Resource
from opensage.store.tags import check_user_tags

MODEL = "model"
ENDPOINT_CONFIG = "endpoint-config"
DEFINED = "Defined"  # models and configs have no SageMaker status; the row needs one


def _check_mode(container: dict[str, Any], where: str) -> None:
    """A MultiModel container's ModelDataUrl is the S3 prefix of its models (the Mode and
    InferenceExecutionConfig.Mode enums are checked from botocore's model by api/validate.py)."""
    if container.get("Mode") != "MultiModel":
        return
    url = container.get("ModelDataUrl")
    if not url:
        raise ValidationException(f"A container with Mode MultiModel needs ModelDataUrl at '{where}.modelDataUrl': "
                                  "the S3 prefix under which the model archives are (e.g. s3://bucket/models/).")
    if url.endswith((".tar.gz", ".tgz")):
        raise ValidationException(
            f"ModelDataUrl '{url}' at '{where}.modelDataUrl' names one archive, but a container with Mode MultiModel "
            "takes the S3 prefix holding its model archives (e.g. s3://bucket/models/); invocations then pick one "
            "with TargetModel (e.g. 'model-a.tar.gz').")


def _check_execution(params: dict[str, Any], containers: list[dict[str, Any]]) -> None:
    """InferenceExecutionConfig.Mode and ContainerHostname rules of a multi-container model."""
    mode = (params.get("InferenceExecutionConfig") or {}).get("Mode") or "Serial"
    if not params.get("Containers"):
        if mode == "Direct":
            raise ValidationException("InferenceExecutionConfig Mode Direct needs a model with Containers (a "
                                      "multi-container model); this one has a PrimaryContainer.")
        return
    hostnames = [c.get("ContainerHostname") for c in containers]
    named = [h for h in hostnames if h]
    if named and len(named) != len(hostnames):
        raise ValidationException("ContainerHostname must be specified for every container or for none: "
                                  f"{len(named)} of {len(hostnames)} containers have one.")
    duplicates = sorted({h for h in named if named.count(h) > 1})
    if duplicates:
        raise ValidationException(f"ContainerHostname values must be unique within a model: "
                                  f"{', '.join(duplicates)} appears more than once.")


class ModelService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        # (ModelPackageName, container, field path) -> the model containers it stands for; set by the registry
        # capability (capabilities/registry.py) to RegistryService.resolve_containers.
        self.package_resolver: Callable[[str, dict[str, Any], str], list[dict[str, Any]]] | None = None

    # -- models -------------------------------------------------------------------------------------
    def create_model(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        arn = self.d.arns.sagemaker(MODEL, name)
        if params.get("PrimaryContainer") and params.get("Containers"):
            raise ValidationException("Specify either PrimaryContainer or Containers, not both.")
        params = self._with_packages(params)
        containers = params.get("Containers") or ([params["PrimaryContainer"]] if params.get("PrimaryContainer")
                                                  else [])
        if not containers:
            raise ValidationException("Either PrimaryContainer or Containers must be specified.")
        if len(containers) > 15:
            raise ValidationException("An inference pipeline can have at most 15 containers.")
        for i, c in enumerate(containers, start=1):
            where = "primaryContainer" if params.get("PrimaryContainer") else f"containers.{i}.member"
            if c.get("ModelDataUrl"):
                check_s3_uri(c["ModelDataUrl"], f"{where}.modelDataUrl")
            if not c.get("Image") and not c.get("ModelPackageName"):
                raise ValidationException(f"Container image is required at '{where}.image'.")
            _check_mode(c, where)
        _check_execution(params, containers)
        self._create(MODEL, name, arn, params, "model")
        return {"ModelArn": arn}

    def _with_packages(self, params: dict[str, Any]) -> dict[str, Any]:
        """Containers naming a ModelPackageName take the package's image, model data and environment (the
        registry's ``resolve_containers``; a multi-container package becomes that many containers), so the
        stored model serves like any other."""
        primary = bool(params.get("PrimaryContainer"))
        given = [params["PrimaryContainer"]] if primary else list(params.get("Containers") or [])
        if not any(c.get("ModelPackageName") for c in given):
            return params
        if self.package_resolver is None:
            raise ValidationException("ModelPackageName needs the model registry, which is not installed.")
        resolved: list[dict[str, Any]] = []
        for i, c in enumerate(given, start=1):
            where = "primaryContainer" if primary else f"containers.{i}.member"
            if not c.get("ModelPackageName"):
                resolved.append(c)
                continue
            if c.get("Image") or c.get("ModelDataUrl"):
                raise ValidationException(f"A container with ModelPackageName takes its image and model data "
                                          f"from the model package: remove Image and ModelDataUrl at '{where}'.")
            resolved.extend(self.package_resolver(c["ModelPackageName"], c, where))
        out = {k: v for k, v in params.items() if k not in ("PrimaryContainer", "Containers")}
        if primary and len(resolved) == 1:
            out["PrimaryContainer"] = resolved[0]
        else:
            out["Containers"] = resolved
        return out

    def describe_model(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self.get_model(params["ModelName"])
        out = dict(res.request)
        out.update({"ModelArn": res.arn, "CreationTime": res.creation_time,
                    "EnableNetworkIsolation": res.request.get("EnableNetworkIsolation", False)})
        return out

    def list_models(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        items, token = self.d.resources.list(MODEL, list_query(params))
        out: dict[str, Any] = {"Models": [{"ModelName": r.name, "ModelArn": r.arn,
                                           "CreationTime": r.creation_time} for r in items]}
        if token:
            out["NextToken"] = token
        return out

    def delete_model(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self.get_model(params["ModelName"])
        self.d.resources.delete(MODEL, res.name)
        self.d.tags.drop_all(res.arn)
        return {}

    def get_model(self, name: str) -> Resource:
        res = self.d.resources.get(MODEL, name)
        if res is None:
            raise ValidationException(f'Could not find model "{self.d.arns.sagemaker(MODEL, name)}".')
        return res

    # -- endpoint configs ---------------------------------------------------------------------------
    def create_endpoint_config(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        arn = self.d.arns.sagemaker(ENDPOINT_CONFIG, name)
        variants = list(params["ProductionVariants"]) + list(params.get("ShadowProductionVariants") or [])
        seen: set[str] = set()
        for v in variants:
            vname = v["VariantName"]
            if vname in seen:
                raise ValidationException(f"Variant names must be unique; '{vname}' appears more than once.")
            seen.add(vname)
            if not v.get("ModelName"):
                raise ValidationException(f"ModelName is required for variant '{vname}'.")
            self.get_model(v["ModelName"])
            if not v.get("ServerlessConfig") and not v.get("InitialInstanceCount"):
                raise ValidationException(
                    f"Variant '{vname}' needs InitialInstanceCount (or a ServerlessConfig).")
        if params.get("ShadowProductionVariants") and (len(params["ProductionVariants"]) != 1
                                                       or len(params["ShadowProductionVariants"]) != 1):
            raise ValidationException("An endpoint configuration with ShadowProductionVariants must have exactly "
                                      "one variant in ProductionVariants and one in ShadowProductionVariants.")
        for v in variants:
            memory = (v.get("ServerlessConfig") or {}).get("MemorySizeInMB")
            if memory is not None and memory not in (1024, 2048, 3072, 4096, 5120, 6144):
                raise ValidationException(f"ServerlessConfig.MemorySizeInMB of variant '{v['VariantName']}' must be "
                                          f"one of 1024, 2048, 3072, 4096, 5120 or 6144; got {memory}.")
        capture = params.get("DataCaptureConfig")
        if capture:
            check_s3_uri(capture["DestinationS3Uri"], "dataCaptureConfig.destinationS3Uri")
        async_cfg = (params.get("AsyncInferenceConfig") or {}).get("OutputConfig") or {}
        for key in ("S3OutputPath", "S3FailurePath"):
            if async_cfg.get(key):
                check_s3_uri(async_cfg[key], f"asyncInferenceConfig.outputConfig.{key[0].lower() + key[1:]}")
        self._create(ENDPOINT_CONFIG, name, arn, params, "endpoint configuration")
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self.get_endpoint_config(params["EndpointConfigName"])
        out = dict(res.request)
        out.update({"EndpointConfigArn": res.arn, "CreationTime": res.creation_time})
        return out

    def list_endpoint_configs(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        items, token = self.d.resources.list(ENDPOINT_CONFIG, list_query(params))
        out: dict[str, Any] = {"EndpointConfigs": [{"EndpointConfigName": r.name, "EndpointConfigArn": r.arn,
                                                    "CreationTime": r.creation_time} for r in items]}
        if token:
            out["NextToken"] = token
        return out

    def delete_endpoint_config(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self.get_endpoint_config(params["EndpointConfigName"])
        self.d.resources.delete(ENDPOINT_CONFIG, res.name)
        self.d.tags.drop_all(res.arn)
        return {}

    def get_endpoint_config(self, name: str) -> Resource:
        res = self.d.resources.get(ENDPOINT_CONFIG, name)
        if res is None:
            raise ValidationException(
                f'Could not find endpoint configuration "{self.d.arns.sagemaker(ENDPOINT_CONFIG, name)}".')
        return res

    # -- shared -------------------------------------------------------------------------------------
    def _create(self, kind: str, name: str, arn: str, params: dict[str, Any], noun: str) -> None:
        now = self.d.clock.time()
        check_user_tags(params.get("Tags") or [])  # before the resource exists
        request = {k: v for k, v in params.items() if k != "Tags"}
        try:
            self.d.resources.create(Resource(kind, name, arn, DEFINED, now, now, request, {}))
        except AlreadyExists:
            raise ValidationException(f'Cannot create already existing {noun} "{arn}".') from None
        self.d.tags.put(arn, params.get("Tags") or [])
