"""Application Auto Scaling for SageMaker variants: scalable targets, scaling policies, activities.

Only the `sagemaker` namespace is served: `sagemaker:variant:DesiredInstanceCount` (instances) and
`sagemaker:variant:DesiredProvisionedConcurrency` (a serverless variant's ProvisionedConcurrency, registered only
for a serverless variant that has one, within 1..its MaxConcurrency); the scaling loop is
serving/autoscaler.py. Targets and policies are rows of the resources table (kinds below).

Policies act as on AWS, through CloudWatch alarms (services/alarms.py, evaluated by serving/alarms.py):
* TargetTrackingScaling: PutScalingPolicy creates the two alarms Application Auto Scaling manages,
  ``TargetTracking-<resource id>-AlarmHigh-<uuid>`` (metric > target for 3 of 3 one-minute datapoints) and
  ``...-AlarmLow-<uuid>`` (metric < 90 % of target for 15 of 15; not created with DisableScaleIn), each
  with the policy's ARN as its alarm action; they are returned in ``Alarms`` and deleted with the policy.
  The metric is a predefined SageMaker metric or any CloudWatch metric (CustomizedMetricSpecification).
  SageMakerVariantConcurrentRequestsPerModelHighResolution alarms high on 10-second periods (the metric is
  published every 10 s), low on the standard one-minute ones.
  SageMakerVariantProvisionedConcurrencyUtilization tracks ServerlessProvisionedConcurrencyUtilization (per
  minute, serving/metrics.py) on the provisioned-concurrency dimension. Inference-component metric types are
  refused, naming why.
* StepScaling: the user's own alarms name the policy ARN in AlarmActions.
The autoscaler executes the policies whose alarms are in ALARM.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from opensage.errors import ServiceError
from opensage.services.alarms import ALARM_KIND, AlarmService, check_alarm
from opensage.services.base import Deps
from opensage.store.resources import ListQuery, Resource

TARGET = "scalable-target"
POLICY = "scaling-policy"
ACTIVITY = "scaling-activity"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PC_DIMENSION = "sagemaker:variant:DesiredProvisionedConcurrency"  # a serverless variant's ProvisionedConcurrency
DIMENSIONS = (DIMENSION, PC_DIMENSION)
SERVICE = "sagemaker"

# AWS's managed target-tracking alarms (Application Auto Scaling User Guide, "How target tracking works").
HIGH_DATAPOINTS = 3
LOW_DATAPOINTS = 15
LOW_FRACTION = 0.9
ALARM_PERIOD = 60

# The SageMaker predefined metric types botocore lists -> how they are alarmed, or why they are refused.
@dataclass(frozen=True)
class Predefined:
    metric: str
    statistic: str
    high_period: int  # AlarmHigh's Period; AlarmLow always uses one-minute periods


SERVED_PREDEFINED = {
    # The per-minute count of invocations per instance (AWS/SageMaker, Sum over one minute).
    "SageMakerVariantInvocationsPerInstance": Predefined("InvocationsPerInstance", "Sum", 60),
    # High resolution (serving/metrics.py publishes it every 10 s): AlarmHigh looks at 10-second periods so
    # scale-out reacts within ~30 s; scale-in keeps the standard 15 one-minute periods, as AWS documents.
    "SageMakerVariantConcurrentRequestsPerModelHighResolution":
        Predefined("ConcurrentRequestsPerModel", "Average", 10),
    # In-flight requests / ProvisionedConcurrency, averaged over each minute (serving/metrics.py).
    "SageMakerVariantProvisionedConcurrencyUtilization":
        Predefined("ServerlessProvisionedConcurrencyUtilization", "Average", 60),
}
PREDEFINED_DIMENSIONS = {
    "SageMakerVariantInvocationsPerInstance": "sagemaker:variant:DesiredInstanceCount",
    "SageMakerVariantConcurrentRequestsPerModelHighResolution": "sagemaker:variant:DesiredInstanceCount",
    "SageMakerVariantProvisionedConcurrencyUtilization": "sagemaker:variant:DesiredProvisionedConcurrency",
    "SageMakerInferenceComponentInvocationsPerCopy": "sagemaker:inference-component:DesiredCopyCount",
    "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution":
        "sagemaker:inference-component:DesiredCopyCount",
}
_NO_INFERENCE_COMPONENTS = ("it scales the copies of an inference component (scalable dimension "
                            "sagemaker:inference-component:DesiredCopyCount), and OpenSage has no inference "
                            "components: scale the variant's instances with SageMakerVariantInvocationsPerInstance "
                            "or SageMakerVariantConcurrentRequestsPerModelHighResolution")
UNSERVED_WHY = {
    "SageMakerInferenceComponentInvocationsPerCopy": _NO_INFERENCE_COMPONENTS,
    "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution": _NO_INFERENCE_COMPONENTS,
}
ADJUSTMENT_TYPES = ("ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity")


class AutoscalingValidation(ServiceError):
    code = "ValidationException"


class ObjectNotFoundException(ServiceError):
    code = "ObjectNotFoundException"


def target_key(resource_id: str, dimension: str) -> str:
    return f"{resource_id}|{dimension}"


def policy_key(resource_id: str, name: str) -> str:
    return f"{resource_id}|{name}"


def parse_resource_id(resource_id: str) -> tuple[str, str]:
    """``endpoint/<name>/variant/<variant>`` -> (endpoint, variant)."""
    parts = resource_id.split("/")
    if len(parts) != 4 or parts[0] != "endpoint" or parts[2] != "variant":
        raise AutoscalingValidation(
            f"Unsupported resource ID {resource_id!r}: expected endpoint/<endpoint-name>/variant/<variant-name>.")
    return parts[1], parts[3]


def is_policy_arn(arn: str) -> bool:
    """An Application Auto Scaling policy ARN (what an alarm action names to run a scaling policy)."""
    return arn.startswith("arn:aws:autoscaling:") and ":scalingPolicy:" in arn and ":resource/" in arn


# -- the metric a target-tracking policy tracks ---------------------------------------------------------
def tracked_metric(resource_id: str, cfg: dict[str, Any], dimension: str = DIMENSION) -> dict[str, Any]:
    """The alarm members (Namespace/MetricName/Dimensions/Statistic[/Unit], or Metrics) of the policy's metric."""
    predefined = cfg.get("PredefinedMetricSpecification")
    custom = cfg.get("CustomizedMetricSpecification")
    if bool(predefined) == bool(custom):
        raise AutoscalingValidation("Exactly one of PredefinedMetricSpecification and "
                                    "CustomizedMetricSpecification must be specified.")
    if predefined:
        kind = predefined["PredefinedMetricType"]
        if kind in UNSERVED_WHY:
            raise AutoscalingValidation(f"Unsupported metric type {kind}: {UNSERVED_WHY[kind]}.")
        if PREDEFINED_DIMENSIONS.get(kind) != dimension:  # AWS's wording (seen for the serverless dimension)
            allowed = ", ".join(k for k, d in PREDEFINED_DIMENSIONS.items() if d == dimension)
            raise AutoscalingValidation(f"Scalable dimension {dimension} only supports the following predefined "
                                        f"metric types: {allowed}")
        served = SERVED_PREDEFINED[kind]
        endpoint, variant = parse_resource_id(resource_id)
        return {"Namespace": "AWS/SageMaker", "MetricName": served.metric, "Statistic": served.statistic,
                "Dimensions": [
            {"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]}
    if custom.get("Metrics"):
        return {"Metrics": _custom_queries(custom)}
    missing = [m for m in ("MetricName", "Namespace", "Statistic") if not custom.get(m)]
    if missing:
        raise AutoscalingValidation(f"CustomizedMetricSpecification must specify {', '.join(missing)} (or Metrics).")
    out = {k: custom[k] for k in ("Namespace", "MetricName", "Statistic") if custom.get(k)}
    out["Dimensions"] = custom.get("Dimensions") or []
    if custom.get("Unit"):
        out["Unit"] = custom["Unit"]
    return out


def _custom_queries(custom: dict[str, Any]) -> list[dict[str, Any]]:
    others = [m for m in ("MetricName", "Namespace", "Dimensions", "Statistic", "Unit") if custom.get(m)]
    if others:
        raise AutoscalingValidation(f"CustomizedMetricSpecification cannot specify both Metrics and "
                                    f"{', '.join(others)}.")
    queries = custom["Metrics"]
    returned = [q for q in queries if q.get("ReturnData", True)]
    if len(queries) != 1 or len(returned) != 1 or not queries[0].get("MetricStat") or queries[0].get("Expression"):
        raise AutoscalingValidation("CustomizedMetricSpecification.Metrics must hold exactly one MetricStat query "
                                    "with ReturnData true: OpenSage does not evaluate metric math expressions.")
    stat = queries[0]["MetricStat"]
    metric = {k: v for k, v in stat["Metric"].items() if v is not None}
    query: dict[str, Any] = {"Id": queries[0]["Id"], "ReturnData": True, "MetricStat": {
        "Metric": metric, "Period": ALARM_PERIOD, "Stat": stat["Stat"]}}
    if stat.get("Unit"):
        query["MetricStat"]["Unit"] = stat["Unit"]
    return [query]


def managed_alarms(deps: Deps, policy_arn: str, resource_id: str, cfg: dict[str, Any],
                   names: dict[str, str], dimension: str = DIMENSION) -> list[dict[str, Any]]:
    """PutMetricAlarm requests for the target-tracking alarms (``names``: AlarmHigh/AlarmLow -> name to keep)."""
    metric = tracked_metric(resource_id, cfg, dimension)
    predefined = SERVED_PREDEFINED.get((cfg.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType"))
    high_period = predefined.high_period if predefined else ALARM_PERIOD
    target = float(cfg["TargetValue"])
    description = f"DO NOT EDIT OR DELETE. For TargetTrackingScaling policy {policy_arn}."
    out = []
    for which, n, threshold, operator, period in (
            ("AlarmHigh", HIGH_DATAPOINTS, target, "GreaterThanThreshold", high_period),
            ("AlarmLow", LOW_DATAPOINTS, target * LOW_FRACTION, "LessThanThreshold", ALARM_PERIOD)):
        if which == "AlarmLow" and cfg.get("DisableScaleIn"):
            continue
        name = names.get(which) or f"TargetTracking-{resource_id}-{which}-{uuid.uuid4()}"
        periodic = metric if "Metrics" in metric else {**metric, "Period": period}
        out.append({"AlarmName": name, "AlarmDescription": description, "ActionsEnabled": True,
                    "AlarmActions": [policy_arn], "EvaluationPeriods": n, "DatapointsToAlarm": n,
                    "Threshold": threshold, "ComparisonOperator": operator, **periodic})
    return out


def _which(alarm_name: str) -> str:
    return "AlarmHigh" if "-AlarmHigh-" in alarm_name else "AlarmLow"


def check_step_config(cfg: dict[str, Any] | None) -> None:
    if not cfg:
        raise AutoscalingValidation("StepScalingPolicyConfiguration is required for PolicyType StepScaling.")
    kind = cfg.get("AdjustmentType")
    if kind not in ADJUSTMENT_TYPES:
        raise AutoscalingValidation(f"AdjustmentType must be one of {', '.join(ADJUSTMENT_TYPES)}.")
    steps = cfg.get("StepAdjustments") or []
    if not steps:
        raise AutoscalingValidation("StepScalingPolicyConfiguration must specify at least one StepAdjustment.")
    if cfg.get("MinAdjustmentMagnitude") is not None and kind != "PercentChangeInCapacity":
        raise AutoscalingValidation("MinAdjustmentMagnitude is only supported with AdjustmentType "
                                    "PercentChangeInCapacity.")
    inf = float("inf")
    spans = sorted((s.get("MetricIntervalLowerBound", -inf), s.get("MetricIntervalUpperBound", inf)) for s in steps)
    for lo, hi in spans:
        if lo >= hi:
            raise AutoscalingValidation(f"Step adjustment interval [{lo}, {hi}) is empty: MetricIntervalLowerBound "
                                        "must be less than MetricIntervalUpperBound.")
    for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
        if lo < hi:
            raise AutoscalingValidation("Step adjustment intervals must not overlap.")
        if lo > hi:
            raise AutoscalingValidation("Step adjustment intervals must not have gaps between them.")
    if sum(1 for lo, hi in spans if lo == -inf or hi == inf) == 0:
        raise AutoscalingValidation("One step adjustment must have a null lower or upper bound.")


class AutoscalingService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.alarms = AlarmService(deps)  # the managed alarms go through PutMetricAlarm's own checks

    def _check(self, params: dict[str, Any]) -> dict[str, Any]:
        """The variant's summary (DescribeEndpoint's ProductionVariants item) the request names."""
        if params.get("ServiceNamespace") != SERVICE:
            raise AutoscalingValidation("OpenSage scales only the 'sagemaker' service namespace.")
        dimension = params.get("ScalableDimension", DIMENSION)
        if dimension not in DIMENSIONS:
            raise AutoscalingValidation(f"Unsupported scalable dimension {dimension}; use one of "
                                        f"{', '.join(DIMENSIONS)}.")
        endpoint, variant = parse_resource_id(params["ResourceId"])
        ep = self.d.resources.get("endpoint", endpoint)
        summary = next((v for v in (ep.state.get("ProductionVariants", []) if ep else [])
                        if v["VariantName"] == variant), None)
        if summary is None:
            raise AutoscalingValidation(
                f"The endpoint variant {params['ResourceId']} does not exist or is not InService yet.")
        if dimension == PC_DIMENSION and not (summary.get("CurrentServerlessConfig") or {}).get(
                "ProvisionedConcurrency"):
            raise AutoscalingValidation(
                f"Scalable dimension {PC_DIMENSION} is only supported for a serverless variant with "
                f"ProvisionedConcurrency: variant {variant} of endpoint {endpoint} has none.")
        return summary

    @staticmethod
    def _check_bounds(dimension: str, summary: dict[str, Any], mn: int, mx: int) -> None:
        if mn > mx:
            raise AutoscalingValidation(f"MinCapacity {mn} is greater than MaxCapacity {mx}.")
        if dimension == PC_DIMENSION:  # provisioned concurrency is 1..MaxConcurrency (ServerlessConfig's bounds)
            most = int(summary["CurrentServerlessConfig"].get("MaxConcurrency") or 200)
            if mn < 1 or mx > most:
                raise AutoscalingValidation(
                    f"MinCapacity and MaxCapacity of {PC_DIMENSION} must be between 1 and the variant's "
                    f"MaxConcurrency ({most}); got {mn} and {mx}.")

    def register_scalable_target(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        summary = self._check(params)
        dimension = params.get("ScalableDimension", DIMENSION)
        key = target_key(params["ResourceId"], dimension)
        existing = self.d.resources.get(TARGET, key)
        now = self.d.clock.time()
        arn = f"arn:aws:application-autoscaling:{self.d.settings.region}:{self.d.settings.account}:" \
              f"scalable-target/{uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:20]}"
        request = {k: v for k, v in params.items() if k != "Tags"}
        request["ScalableDimension"] = dimension
        if existing is None and (params.get("MinCapacity") is None or params.get("MaxCapacity") is None):
            raise AutoscalingValidation("MinCapacity and MaxCapacity are required for a new scalable target.")
        merged = {**(existing.request if existing else {}), **{k: v for k, v in request.items() if v is not None}}
        if dimension == PC_DIMENSION:  # checked before anything is written
            self._check_bounds(dimension, summary, merged["MinCapacity"], merged["MaxCapacity"])
        if existing is None:
            self.d.resources.create(Resource(TARGET, key, arn, "Active", now, now, request, {}))
        else:
            existing.request = merged
            self.d.resources.save(existing, now)
        mn, mx = merged["MinCapacity"], merged["MaxCapacity"]
        if mn > mx:
            raise AutoscalingValidation(f"MinCapacity {mn} is greater than MaxCapacity {mx}.")
        return {"ScalableTargetARN": arn}

    def describe_scalable_targets(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        ids = set(params.get("ResourceIds") or [])
        out = []
        for res in self._all(TARGET):
            if ids and res.request["ResourceId"] not in ids:
                continue
            out.append({**res.request, "ScalableDimension": res.request.get("ScalableDimension") or DIMENSION,
                        "CreationTime": res.creation_time,
                        "ScalableTargetARN": res.arn, "RoleARN": res.request.get("RoleARN") or
                        f"arn:aws:iam::{self.d.settings.account}:role/aws-service-role/"
                        "sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling"
                        "_SageMakerEndpoint"})
        return {"ScalableTargets": out}

    def deregister_scalable_target(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        dimension = params.get("ScalableDimension", DIMENSION)
        key = target_key(params["ResourceId"], dimension)
        if self.d.resources.get(TARGET, key) is None:
            raise ObjectNotFoundException(f"No scalable target registered for {params['ResourceId']}.")
        for policy in self._all(POLICY):
            if policy.request["ResourceId"] == params["ResourceId"] and \
                    (policy.request.get("ScalableDimension") or DIMENSION) == dimension:
                self._delete_policy(policy)
        self.d.resources.delete(TARGET, key)
        return {}

    def put_scaling_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._check(params)
        resource_id = params["ResourceId"]
        dimension = params.get("ScalableDimension", DIMENSION)
        if self.d.resources.get(TARGET, target_key(resource_id, dimension)) is None:
            raise ObjectNotFoundException(
                f"No scalable target registered for {resource_id}; call RegisterScalableTarget first.")
        kind = params.get("PolicyType") or "StepScaling"
        if kind == "PredictiveScaling":
            raise AutoscalingValidation(f"PredictiveScaling is not supported for service namespace {SERVICE}.")
        if kind == "TargetTrackingScaling":
            cfg = params.get("TargetTrackingScalingPolicyConfiguration")
            if not cfg:
                raise AutoscalingValidation("TargetTrackingScalingPolicyConfiguration is required for PolicyType "
                                            "TargetTrackingScaling.")
            if cfg["TargetValue"] <= 0:
                raise AutoscalingValidation("TargetValue must be greater than 0.")
            tracked_metric(resource_id, cfg, dimension)  # refuse an unusable metric before anything is written
        else:
            check_step_config(params.get("StepScalingPolicyConfiguration"))
        key = policy_key(resource_id, params["PolicyName"])
        now = self.d.clock.time()
        arn = (f"arn:aws:autoscaling:{self.d.settings.region}:{self.d.settings.account}:scalingPolicy:"
               f"{uuid.uuid5(uuid.NAMESPACE_URL, key)}:resource/{SERVICE}/{resource_id}:"
               f"policyName/{params['PolicyName']}")
        request = {**params, "PolicyType": kind, "ScalableDimension": dimension}
        existing = self.d.resources.get(POLICY, key)
        alarms = self._put_alarms(arn, request, existing.state.get("Alarms", []) if existing else [])
        if existing is None:
            self.d.resources.create(Resource(POLICY, key, arn, "Active", now, now, request, {"Alarms": alarms}))
        else:
            existing.request = request
            existing.state["Alarms"] = alarms
            self.d.resources.save(existing, now)
        return {"PolicyARN": arn, "Alarms": alarms or self._step_alarms(arn)}

    def _put_alarms(self, arn: str, request: dict[str, Any], before: list[dict[str, str]]) -> list[dict[str, str]]:
        """Create or update a target-tracking policy's alarms (keeping their names); delete those no longer
        needed (DisableScaleIn turned on, or the policy became a step policy)."""
        kept = {_which(a["AlarmName"]): a["AlarmName"] for a in before}
        alarms: list[dict[str, str]] = []
        if request["PolicyType"] == "TargetTrackingScaling":
            configs = managed_alarms(self.d, arn, request["ResourceId"],
                                     request["TargetTrackingScalingPolicyConfiguration"], kept,
                                     request.get("ScalableDimension") or DIMENSION)
            for alarm in configs:  # all checked before any is written
                try:
                    check_alarm(alarm)
                except ServiceError as e:
                    raise AutoscalingValidation(f"The target-tracking metric cannot be alarmed on: {e.message}") \
                        from None
            for alarm in configs:
                self.alarms.put_metric_alarm(None, alarm)
                alarms.append({"AlarmName": alarm["AlarmName"],
                               "AlarmARN": self.d.resources.get(ALARM_KIND, alarm["AlarmName"]).arn})
        stale = [n for n in kept.values() if n not in {a["AlarmName"] for a in alarms}]
        if stale:
            self.alarms.delete_alarms(None, {"AlarmNames": stale})
        return alarms

    def ensure_alarms(self, policy: Resource) -> None:
        """A target-tracking policy stored before its alarms existed (an older OpenSage home): create them."""
        policy.request.setdefault("PolicyType", "TargetTrackingScaling")
        if policy.request["PolicyType"] != "TargetTrackingScaling" or policy.state.get("Alarms"):
            return
        policy.state["Alarms"] = self._put_alarms(policy.arn, policy.request, [])
        self.d.resources.save(policy, self.d.clock.time())

    def _step_alarms(self, arn: str) -> list[dict[str, str]]:
        """The alarms whose actions name a step policy (AWS lists them with the policy)."""
        out = []
        for res in self.alarms.all_alarms():
            cfg = res.request
            if arn in [*cfg.get("AlarmActions", []), *cfg.get("OKActions", []),
                       *cfg.get("InsufficientDataActions", [])]:
                out.append({"AlarmName": res.name, "AlarmARN": res.arn})
        return out

    def describe_scaling_policies(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        names = set(params.get("PolicyNames") or [])
        out = []
        for res in self._all(POLICY):
            req = res.request
            if names and req["PolicyName"] not in names:
                continue
            if params.get("ResourceId") and req["ResourceId"] != params["ResourceId"]:
                continue
            kind = req.get("PolicyType") or "TargetTrackingScaling"  # rows from before step policies existed
            alarms = res.state.get("Alarms") or (self._step_alarms(res.arn) if kind == "StepScaling" else [])
            out.append({**req, "PolicyType": kind, "ScalableDimension": req.get("ScalableDimension") or DIMENSION,
                        "PolicyARN": res.arn,
                        "Alarms": alarms, "CreationTime": res.creation_time})
        return {"ScalingPolicies": out}

    def delete_scaling_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        policy = self.d.resources.get(POLICY, policy_key(params["ResourceId"], params["PolicyName"]))
        if policy is None:
            raise ObjectNotFoundException(f"No scaling policy found for service namespace: {SERVICE}, resource ID: "
                                          f"{params['ResourceId']}, scalable dimension: "
                                          f"{params.get('ScalableDimension', DIMENSION)}, policy name: "
                                          f"{params['PolicyName']}")
        self._delete_policy(policy)
        return {}

    def _delete_policy(self, policy: Resource) -> None:
        """The policy and the alarms Application Auto Scaling created for it (a user's step alarms stay)."""
        names = [a["AlarmName"] for a in policy.state.get("Alarms", [])]
        if names:
            self.alarms.delete_alarms(None, {"AlarmNames": names})
        self.d.resources.delete(POLICY, policy.name)

    def describe_scaling_activities(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        out = [{**r.request, "StartTime": r.creation_time, "EndTime": r.last_modified_time}
               for r in self._all(ACTIVITY, descending=True)
               if not params.get("ResourceId") or r.request["ResourceId"] == params["ResourceId"]]
        return {"ScalingActivities": out[: params.get("MaxResults") or 50]}

    def _all(self, kind: str, descending: bool = False) -> list[Resource]:
        items, _ = self.d.resources.list(kind, ListQuery(limit=1000, descending=descending))
        return items
