"""Application Auto Scaling for SageMaker variants: scalable targets, target-tracking policies, activities.

Only the `sagemaker` namespace and `sagemaker:variant:DesiredInstanceCount` are served; the scaling loop is
serving/autoscaler.py. Targets and policies are rows of the resources table (kinds below).
"""

from __future__ import annotations

import uuid
from typing import Any

from opensage.errors import ServiceError
from opensage.services.base import Deps
from opensage.store.resources import ListQuery, Resource

TARGET = "scalable-target"
POLICY = "scaling-policy"
ACTIVITY = "scaling-activity"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


class AutoscalingValidation(ServiceError):
    code = "ValidationException"


class ObjectNotFoundException(ServiceError):
    code = "ObjectNotFoundException"


def target_key(resource_id: str, dimension: str) -> str:
    return f"{resource_id}|{dimension}"


def parse_resource_id(resource_id: str) -> tuple[str, str]:
    """``endpoint/<name>/variant/<variant>`` -> (endpoint, variant)."""
    parts = resource_id.split("/")
    if len(parts) != 4 or parts[0] != "endpoint" or parts[2] != "variant":
        raise AutoscalingValidation(
            f"Unsupported resource ID {resource_id!r}: expected endpoint/<endpoint-name>/variant/<variant-name>.")
    return parts[1], parts[3]


class AutoscalingService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _check(self, params: dict[str, Any]) -> tuple[str, str]:
        if params.get("ServiceNamespace") != "sagemaker":
            raise AutoscalingValidation("OpenSage scales only the 'sagemaker' service namespace.")
        if params.get("ScalableDimension", DIMENSION) != DIMENSION:
            raise AutoscalingValidation(f"Unsupported scalable dimension; use {DIMENSION}.")
        endpoint, variant = parse_resource_id(params["ResourceId"])
        ep = self.d.resources.get("endpoint", endpoint)
        if ep is None or variant not in {v["VariantName"] for v in ep.state.get("ProductionVariants", [])}:
            raise AutoscalingValidation(
                f"The endpoint variant {params['ResourceId']} does not exist or is not InService yet.")
        return endpoint, variant

    def register_scalable_target(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._check(params)
        key = target_key(params["ResourceId"], DIMENSION)
        existing = self.d.resources.get(TARGET, key)
        now = self.d.clock.time()
        arn = f"arn:aws:application-autoscaling:{self.d.settings.region}:{self.d.settings.account}:" \
              f"scalable-target/{uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:20]}"
        request = {k: v for k, v in params.items() if k != "Tags"}
        if existing is None:
            if params.get("MinCapacity") is None or params.get("MaxCapacity") is None:
                raise AutoscalingValidation("MinCapacity and MaxCapacity are required for a new scalable target.")
            self.d.resources.create(Resource(TARGET, key, arn, "Active", now, now, request, {}))
        else:
            existing.request.update({k: v for k, v in request.items() if v is not None})
            self.d.resources.save(existing, now)
        mn, mx = (existing.request if existing else request)["MinCapacity"], \
            (existing.request if existing else request)["MaxCapacity"]
        if mn > mx:
            raise AutoscalingValidation(f"MinCapacity {mn} is greater than MaxCapacity {mx}.")
        return {"ScalableTargetARN": arn}

    def describe_scalable_targets(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        ids = set(params.get("ResourceIds") or [])
        out = []
        for res in self._all(TARGET):
            if ids and res.request["ResourceId"] not in ids:
                continue
            out.append({**res.request, "ScalableDimension": DIMENSION, "CreationTime": res.creation_time,
                        "ScalableTargetARN": res.arn, "RoleARN": res.request.get("RoleARN") or
                        f"arn:aws:iam::{self.d.settings.account}:role/aws-service-role/"
                        "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling"
                        "_SageMakerEndpoint"})
        return {"ScalableTargets": out}

    def deregister_scalable_target(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        key = target_key(params["ResourceId"], DIMENSION)
        if self.d.resources.get(TARGET, key) is None:
            raise ObjectNotFoundException(f"No scalable target registered for {params['ResourceId']}.")
        for policy in self._all(POLICY):
            if policy.request["ResourceId"] == params["ResourceId"]:
                self.d.resources.delete(POLICY, policy.name)
        self.d.resources.delete(TARGET, key)
        return {}

    def put_scaling_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._check(params)
        if self.d.resources.get(TARGET, target_key(params["ResourceId"], DIMENSION)) is None:
            raise ObjectNotFoundException(
                f"No scalable target registered for {params['ResourceId']}; call RegisterScalableTarget first.")
        if (params.get("PolicyType") or "StepScaling") != "TargetTrackingScaling":
            raise AutoscalingValidation("OpenSage supports PolicyType TargetTrackingScaling.")
        cfg = params.get("TargetTrackingScalingPolicyConfiguration") or {}
        metric = (cfg.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
        if metric != "SageMakerVariantInvocationsPerInstance":
            raise AutoscalingValidation(
                "TargetTrackingScalingPolicyConfiguration must use PredefinedMetricType "
                "SageMakerVariantInvocationsPerInstance.")
        if not cfg.get("TargetValue") or cfg["TargetValue"] <= 0:
            raise AutoscalingValidation("TargetValue must be greater than 0.")
        key = f"{params['ResourceId']}|{params['PolicyName']}"
        now = self.d.clock.time()
        arn = (f"arn:aws:autoscaling:{self.d.settings.region}:{self.d.settings.account}:scalingPolicy:"
               f"{uuid.uuid5(uuid.NAMESPACE_URL, key)}:resource/sagemaker/{params['ResourceId']}:"
               f"policyName/{params['PolicyName']}")
        existing = self.d.resources.get(POLICY, key)
        if existing is None:
            self.d.resources.create(Resource(POLICY, key, arn, "Active", now, now, dict(params), {}))
        else:
            existing.request = dict(params)
            self.d.resources.save(existing, now)
        return {"PolicyARN": arn, "Alarms": []}

    def describe_scaling_policies(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        names = set(params.get("PolicyNames") or [])
        out = []
        for res in self._all(POLICY):
            req = res.request
            if names and req["PolicyName"] not in names:
                continue
            if params.get("ResourceId") and req["ResourceId"] != params["ResourceId"]:
                continue
            out.append({**req, "ScalableDimension": DIMENSION, "PolicyARN": res.arn, "Alarms": [],
                        "CreationTime": res.creation_time})
        return {"ScalingPolicies": out}

    def delete_scaling_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        key = f"{params['ResourceId']}|{params['PolicyName']}"
        if self.d.resources.get(POLICY, key) is None:
            raise ObjectNotFoundException(f"No scaling policy {params['PolicyName']} on {params['ResourceId']}.")
        self.d.resources.delete(POLICY, key)
        return {}

    def describe_scaling_activities(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        out = [{**r.request, "StartTime": r.creation_time, "EndTime": r.last_modified_time}
               for r in self._all(ACTIVITY, descending=True)
               if not params.get("ResourceId") or r.request["ResourceId"] == params["ResourceId"]]
        return {"ScalingActivities": out[: params.get("MaxResults") or 50]}

    def _all(self, kind: str, descending: bool = False) -> list[Resource]:
        items, _ = self.d.resources.list(kind, ListQuery(limit=1000, descending=descending))
        return items
