"""Target tracking for endpoint variants (SageMakerVariantInvocationsPerInstance).

Every ``interval`` seconds, for each scaling policy: invocations of the variant in the last minute ->
desired = ceil(invocations per minute / TargetValue), clamped to [MinCapacity, MaxCapacity], respecting
ScaleOutCooldown / ScaleInCooldown / DisableScaleIn. A change goes through the same path as
UpdateEndpointWeightsAndCapacities, so the deployment reconciler does the work.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from typing import Any

from opensage.errors import ServiceError
from opensage.services.autoscaling import ACTIVITY, DIMENSION, POLICY, TARGET, parse_resource_id, target_key
from opensage.services.base import Deps
from opensage.store.resources import ListQuery, Resource

log = logging.getLogger(__name__)

DEFAULT_COOLDOWN = 300.0

# (endpoint, variant, since epoch seconds) -> invocations counted since then
InvocationSource = Callable[[str, str, float], float]


def metric_store_source(deps: Deps) -> InvocationSource:
    def invocations(endpoint: str, variant: str, since: float) -> float:
        points = deps.metrics.series("AWS/SageMaker", {"EndpointName": endpoint, "VariantName": variant},
                                     "Invocations", start=since)
        return sum(v for _, v in points)

    return invocations


def desired_capacity(invocations_per_minute: float, target_value: float, minimum: int, maximum: int) -> int:
    return max(minimum, min(maximum, math.ceil(invocations_per_minute / target_value) if target_value else minimum))


class Autoscaler:
    def __init__(self, deps: Deps, scale: Callable[[str, str, int], None], source: InvocationSource | None = None,
                 interval: float = 10.0, before_read: Callable[[], None] | None = None) -> None:
        self.d = deps
        self.before_read = before_read  # flush in-memory invocation counts to the metric store
        self.scale = scale  # (endpoint, variant, count): UpdateEndpointWeightsAndCapacities
        self.source = source or metric_store_source(deps)
        self.interval = interval
        self._last_scaled: dict[str, float] = {}
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
        decisions = []
        policies, _ = self.d.resources.list(POLICY, ListQuery(limit=1000))
        for policy in policies:
            decision = self._evaluate(policy)
            if decision:
                decisions.append(decision)
        return decisions

    def _evaluate(self, policy: Resource) -> tuple[str, str, int] | None:
        req = policy.request
        resource_id = req["ResourceId"]
        target = self.d.resources.get(TARGET, target_key(resource_id, DIMENSION))
        endpoint_name, variant = parse_resource_id(resource_id)
        endpoint = self.d.resources.get("endpoint", endpoint_name)
        if target is None or endpoint is None or endpoint.status != "InService":
            return None
        if (target.request.get("SuspendedState") or {}).get("DynamicScalingOutSuspended"):
            return None
        current = next((v["DesiredInstanceCount"] for v in endpoint.state.get("ProductionVariants", [])
                        if v["VariantName"] == variant), None)
        if current is None:
            return None
        cfg = req["TargetTrackingScalingPolicyConfiguration"]
        now = self.d.clock.time()
        per_minute = self._per_minute(endpoint_name, variant, now)
        desired = desired_capacity(per_minute, float(cfg["TargetValue"]), int(target.request["MinCapacity"]),
                                   int(target.request["MaxCapacity"]))
        if desired == current:
            return None
        last = self._last_scaled.get(resource_id, 0.0)
        if desired > current:
            if now - last < float(cfg.get("ScaleOutCooldown", DEFAULT_COOLDOWN)):
                return None
        else:
            if cfg.get("DisableScaleIn") or now - last < float(cfg.get("ScaleInCooldown", DEFAULT_COOLDOWN)):
                return None
        try:
            self.scale(endpoint_name, variant, desired)
        except ServiceError as e:
            log.info("autoscaler: %s not scaled: %s", resource_id, e.message)
            return None
        self._last_scaled[resource_id] = now
        self._record(resource_id, current, desired, per_minute, float(cfg["TargetValue"]), now)
        log.info("autoscaler: %s %d -> %d (%.1f invocations/min, target %.1f per instance)", resource_id, current,
                 desired, per_minute, float(cfg["TargetValue"]))
        return endpoint_name, variant, desired

    def _per_minute(self, endpoint: str, variant: str, now: float) -> float:
        """Invocations per minute over the last complete minute and the current partial one.

        Metric points are per-minute buckets stamped at the minute's start, so a plain "last 60 s" window
        would drop the previous minute just after a boundary and undercount the load.
        """
        if self.before_read is not None:
            self.before_read()
        since = math.floor(now / 60.0) * 60.0 - 60.0
        minutes = max((now - since) / 60.0, 1.0)
        return self.source(endpoint, variant, since) / minutes

    def _record(self, resource_id: str, current: int, desired: int, per_minute: float, target: float,
                now: float) -> None:
        activity_id = str(uuid.uuid4())
        self.d.resources.create(Resource(ACTIVITY, activity_id, f"activity/{activity_id}", "Successful", now, now, {
            "ActivityId": activity_id, "ServiceNamespace": "sagemaker", "ResourceId": resource_id,
            "ScalableDimension": DIMENSION, "StatusCode": "Successful",
            "Description": f"Setting desired instance count to {desired}.",
            "Cause": f"monitor alarm: {per_minute:.1f} invocations in the last minute against a target of "
                     f"{target:g} per instance; changing the desired capacity from {current} to {desired}.",
        }, {}))


def internal_scale(endpoints: Any) -> Callable[[str, str, int], None]:
    """Scale through the public operation's code path (validation, status machine, reconciler)."""

    def scale(endpoint: str, variant: str, count: int) -> None:
        endpoints.update_endpoint_weights_and_capacities(None, {
            "EndpointName": endpoint,
            "DesiredWeightsAndCapacities": [{"VariantName": variant, "DesiredInstanceCount": count}]})

    return scale
