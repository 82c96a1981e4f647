"""Executes Application Auto Scaling policies from CloudWatch alarm actions, as AWS does.

Every ``interval`` seconds: each alarm whose actions for its current state name a scaling policy ARN invokes
that policy when it enters the state and then once a minute while it stays there (CloudWatch's documented
behaviour for Auto Scaling actions; the invocation is recorded in the alarm's history as an ``Action``).

* Target tracking (its alarms are the ``TargetTracking-...-AlarmHigh/AlarmLow`` ones services/autoscaling.py
  creates): desired = ceil(current x metric / TargetValue) from the alarm's newest datapoint (scale out only
  on AlarmHigh, scale in only on AlarmLow, never with DisableScaleIn); from zero instances, ceil(metric /
  TargetValue) (e.g. an async endpoint's ApproximateBacklogSizePerInstance, which counts the whole backlog
  while there is no instance).
* Step scaling: the breach (aggregated metric - alarm threshold, MetricAggregationType over the alarm's
  datapoints) picks the StepAdjustment whose interval holds it; ChangeInCapacity / PercentChangeInCapacity
  (rounded away from zero, at least MinAdjustmentMagnitude) / ExactCapacity.
The result is clamped to [MinCapacity, MaxCapacity]; ScaleOutCooldown / ScaleInCooldown / Cooldown and the
target's SuspendedState are honoured. A change goes through UpdateEndpointWeightsAndCapacities' own code path,
so the deployment reconciler does the work: DesiredInstanceCount, or for the
``sagemaker:variant:DesiredProvisionedConcurrency`` dimension ServerlessUpdateConfig.ProvisionedConcurrency
(the capacity is then the serverless variant's provisioned concurrency). A policy that cannot act now (endpoint Updating) is retried on
the next pass rather than a minute later.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensage.errors import ServiceError
from opensage.services.alarms import ALARM_KIND, STATE_VALUES, append_history, history_item
from opensage.services.autoscaling import (
    ACTIVITY,
    DIMENSION,
    PC_DIMENSION,
    POLICY,
    TARGET,
    AutoscalingService,
    is_policy_arn,
    parse_resource_id,
    target_key,
)
from opensage.services.base import Deps
from opensage.serving.alarms import alarm_datapoints
from opensage.store.resources import ListQuery, Resource

log = logging.getLogger(__name__)

DEFAULT_COOLDOWN = 300.0
ACTION_REPEAT_SECONDS = 60.0  # an alarm re-invokes its Auto Scaling actions once a minute while in the state
STATE_ACTIONS = {"ALARM": "AlarmActions", "OK": "OKActions", "INSUFFICIENT_DATA": "InsufficientDataActions"}
AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "Average": lambda v: sum(v) / len(v), "Minimum": min, "Maximum": max}


@dataclass(frozen=True)
class Outcome:
    done: bool  # False: could not act now (endpoint busy): invoke again on the next pass
    decision: tuple[str, str, int] | None = None  # (endpoint, variant, new count) when it scaled


def desired_capacity(current: int, metric: float, target_value: float, minimum: int, maximum: int) -> int:
    """Target tracking's proportional answer, clamped."""
    wanted = math.ceil(current * metric / target_value) if current else math.ceil(metric / target_value)
    return max(minimum, min(maximum, wanted))


def step_capacity(current: int, breach: float, cfg: dict[str, Any]) -> int | None:
    """Step scaling's answer (before clamping), or None when no step covers the breach."""
    inf = float("inf")
    step = None
    for s in cfg.get("StepAdjustments") or []:
        lo, hi = s.get("MetricIntervalLowerBound", -inf), s.get("MetricIntervalUpperBound", inf)
        # Above the threshold the lower bound is inclusive; below it the upper bound is (AWS's convention).
        if (lo <= breach < hi) if breach >= 0 else (lo < breach <= hi):
            step = s
            break
    if step is None:
        return None
    adjustment = step["ScalingAdjustment"]
    kind = cfg.get("AdjustmentType")
    if kind == "ExactCapacity":
        return int(adjustment)
    if kind == "PercentChangeInCapacity":
        change = current * adjustment / 100.0
        change = math.floor(change) if change >= 1 else math.ceil(change) if change <= -1 else \
            (1 if change > 0 else -1 if change < 0 else 0)
        least = cfg.get("MinAdjustmentMagnitude")
        if least and 0 < abs(change) < least:
            change = least if change > 0 else -least
        return current + int(change)
    return current + int(adjustment)


class Autoscaler:
    def __init__(self, deps: Deps, scale: Callable[..., None], interval: float = 10.0,
                 before_read: Callable[[], None] | None = None) -> None:
        self.d = deps
        self.before_read = before_read  # flush in-memory endpoint metrics to the metric store
        # (endpoint, variant, count[, dimension=PC_DIMENSION]): UpdateEndpointWeightsAndCapacities
        self.scale = scale
        self.interval = interval
        self._last_scaled: dict[tuple[str, str], float] = {}  # (resource id, "out"/"in") -> time
        self._invoked: dict[tuple[str, str], float] = {}  # (alarm, policy arn) -> last invocation
        self._lock = threading.Lock()  # one pass at a time (the loop, tests)
        self.service = AutoscalingService(deps)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="autoscaler", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("autoscaler pass failed")

    def run_once(self) -> list[tuple[str, str, int]]:
        """Invoke the policies named by alarms in the matching state; returns the scaling decisions made."""
        with self._lock:
            policies, _ = self.d.resources.list(POLICY, ListQuery(limit=1000))
            if not policies:
                return []
            for policy in policies:
                if "Alarms" not in policy.state:  # stored by an older OpenSage, before its alarms existed
                    try:
                        self.service.ensure_alarms(policy)
                    except Exception:
                        log.exception("autoscaler: could not create the alarms of policy %s", policy.name)
            by_arn = {p.arn: p for p in policies}
            now = self.d.clock.time()
            decisions = []
            flushed = False
            for alarm in self.d.resources.in_status(ALARM_KIND, STATE_VALUES):
                cfg = alarm.request
                if not cfg.get("ActionsEnabled", True):
                    continue
                for arn in cfg.get(STATE_ACTIONS[alarm.status]) or []:
                    if not is_policy_arn(arn) or not self._due(alarm, arn, now):
                        continue
                    policy = by_arn.get(arn)
                    if policy is None:
                        self._invoked[(alarm.name, arn)] = now
                        self._history(alarm, f"Failed to execute action {arn}: the scaling policy does not exist.",
                                      arn, now, ok=False)
                        continue
                    if not flushed and self.before_read is not None:
                        self.before_read()
                        flushed = True
                    outcome = self._execute(policy, alarm, now)
                    if not outcome.done:
                        continue
                    self._invoked[(alarm.name, arn)] = now
                    self._history(alarm, f"Successfully executed action {arn}", arn, now)
                    if outcome.decision:
                        decisions.append(outcome.decision)
            known = {(a.name, arn) for a in self.d.resources.in_status(ALARM_KIND, STATE_VALUES)
                     for arn in a.request.get(STATE_ACTIONS[a.status]) or []}
            self._invoked = {k: t for k, t in self._invoked.items() if k in known}
            return decisions

    def _due(self, alarm: Resource, arn: str, now: float) -> bool:
        last = self._invoked.get((alarm.name, arn))
        entered = alarm.state.get("StateTransitionedTimestamp", alarm.creation_time)
        return last is None or last < entered or now - last >= ACTION_REPEAT_SECONDS

    def _history(self, alarm: Resource, summary: str, arn: str, now: float, ok: bool = True) -> None:
        """An ``Action`` item in the alarm's history, as CloudWatch writes one per invoked action."""
        append_history(self.d, history_item(alarm.name, "Action", summary,
                                            {"actionState": "Succeeded" if ok else "Failed",
                                             "stateUpdateTimestamp": alarm.state.get("StateUpdatedTimestamp"),
                                             "notificationResource": arn}, now))

    # -- one policy invocation ----------------------------------------------------------------------------
    def _execute(self, policy: Resource, alarm: Resource, now: float) -> Outcome:
        req = policy.request
        resource_id = req["ResourceId"]
        dimension = req.get("ScalableDimension") or DIMENSION
        target = self.d.resources.get(TARGET, target_key(resource_id, dimension))
        endpoint_name, variant = parse_resource_id(resource_id)
        endpoint = self.d.resources.get("endpoint", endpoint_name)
        if target is None or endpoint is None:
            return Outcome(True)
        if endpoint.status != "InService":
            return Outcome(endpoint.status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"))
        current = next((_capacity(v, dimension) for v in endpoint.state.get("ProductionVariants", [])
                        if v["VariantName"] == variant), None)
        if current is None:
            return Outcome(True)
        values = [p.value for p in alarm_datapoints(self.d, alarm.request, now) if p.value is not None]
        minimum, maximum = int(target.request["MinCapacity"]), int(target.request["MaxCapacity"])
        if (req.get("PolicyType") or "TargetTrackingScaling") == "TargetTrackingScaling":
            cfg = req["TargetTrackingScalingPolicyConfiguration"]
            if not values:
                return Outcome(True)
            metric, goal = values[-1], float(cfg["TargetValue"])
            desired = desired_capacity(current, metric, goal, minimum, maximum)
            high = "-AlarmHigh-" in alarm.name
            if (high and desired <= current) or (not high and (desired >= current or cfg.get("DisableScaleIn"))):
                return Outcome(True)
            cooldown = float(cfg.get("ScaleOutCooldown" if desired > current else "ScaleInCooldown",
                                     DEFAULT_COOLDOWN))
            why = f"{alarm.request.get('MetricName') or 'the metric'} = {metric:g} against a target of {goal:g}"
        else:
            cfg = req["StepScalingPolicyConfiguration"]
            threshold = float(alarm.request["Threshold"])
            aggregated = AGGREGATE[cfg.get("MetricAggregationType") or "Average"](values) if values else threshold
            wanted = step_capacity(current, aggregated - threshold, cfg)
            if wanted is None:
                return Outcome(True)
            desired = max(minimum, min(maximum, wanted))
            cooldown = float(cfg.get("Cooldown", DEFAULT_COOLDOWN))
            why = f"metric {aggregated:g} against the alarm's threshold of {threshold:g}"
        if desired == current:
            return Outcome(True)
        direction = "out" if desired > current else "in"
        suspended = target.request.get("SuspendedState") or {}
        if suspended.get("DynamicScalingOutSuspended" if direction == "out" else "DynamicScalingInSuspended"):
            return Outcome(True)
        last = self._last_scaled.get((resource_id, "out"), 0.0)
        if direction == "in":  # a scale-out also holds scale-in back for the cooldown
            last = max(last, self._last_scaled.get((resource_id, "in"), 0.0))
        if now - last < cooldown:
            return Outcome(True)
        try:
            if dimension == PC_DIMENSION:
                self.scale(endpoint_name, variant, desired, dimension=dimension)
            else:
                self.scale(endpoint_name, variant, desired)
        except ServiceError as e:
            log.info("autoscaler: %s not scaled yet: %s", resource_id, e.message)
            return Outcome(False)
        self._last_scaled[(resource_id, direction)] = now
        self._record(resource_id, dimension, desired, now,
                     f"monitor alarm {alarm.name} in state {alarm.status} triggered policy {req['PolicyName']} "
                     f"({why}) changing the desired capacity from {current} to {desired}.")
        log.info("autoscaler: %s %d -> %d (policy %s, alarm %s)", resource_id, current, desired, req["PolicyName"],
                 alarm.name)
        return Outcome(True, (endpoint_name, variant, desired))

    def _record(self, resource_id: str, dimension: str, desired: int, now: float, cause: str) -> None:
        activity_id = str(uuid.uuid4())
        what = "provisioned concurrency" if dimension == PC_DIMENSION else "instance count"
        self.d.resources.create(Resource(ACTIVITY, activity_id, f"activity/{activity_id}", "Successful", now, now, {
            "ActivityId": activity_id, "ServiceNamespace": "sagemaker", "ResourceId": resource_id,
            "ScalableDimension": dimension, "StatusCode": "Successful",
            "Description": f"Setting desired {what} to {desired}.", "Cause": cause,
        }, {}))


def _capacity(summary: dict[str, Any], dimension: str) -> int | None:
    """The variant's current capacity in the target's dimension (DescribeEndpoint's ProductionVariants item)."""
    if dimension == PC_DIMENSION:
        return (summary.get("DesiredServerlessConfig") or {}).get("ProvisionedConcurrency")
    return summary.get("DesiredInstanceCount")


def internal_scale(endpoints: Any) -> Callable[..., None]:
    """Scale through the public operation's code path (validation, status machine, reconciler)."""

    def scale(endpoint: str, variant: str, count: int, dimension: str = DIMENSION) -> None:
        item: dict[str, Any] = {"VariantName": variant, "DesiredInstanceCount": count}
        if dimension == PC_DIMENSION:
            item = {"VariantName": variant, "ServerlessUpdateConfig": {"ProvisionedConcurrency": count}}
        endpoints.update_endpoint_weights_and_capacities(None, {
            "EndpointName": endpoint, "DesiredWeightsAndCapacities": [item]})

    return scale
