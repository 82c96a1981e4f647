"""Rolling deployments (DeploymentConfig.RollingUpdatePolicy) for the deployment reconciler.

A rolling update replaces the old fleet batch by batch instead of starting a whole second fleet
(blue/green): start MaximumBatchSize new instances; once every one of them answers /ping, route to them
(the variant's route then holds the old instances that remain plus the new ones, so traffic moves in
proportion to the instance counts) and retire as many old instances (drained, then stopped); bake
WaitIntervalInSeconds watching the AutoRollbackConfiguration alarms; repeat. An alarm (or
MaximumExecutionTimeoutInSeconds, or a new instance that fails its health check) rolls back the same way
in the other direction: instances of the previous configuration come back RollbackMaximumBatchSize at a
time (all at once by default) and the new ones are retired; the endpoint is RollingBack, then InService
on its previous configuration with a FailureReason.

State (JSON in the endpoint's row, ``_rolling``): ``old`` / ``new`` variant dicts (their ``replicas`` are
routed), ``starting`` (the batch being started, not routed yet), ``target`` (instances of ``new`` to
reach), ``batch``, ``wait``, ``until`` (end of the current bake), ``dir`` (forward | back).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from opensage.errors import ValidationException
from opensage.states import transition
from opensage.store.resources import Resource

log = logging.getLogger(__name__)


def batch_size(size: dict[str, Any] | None, count: int, default: int | None = None) -> int:
    """A CapacitySize -> a number of instances (at least 1)."""
    if not size:
        return max(1, default if default is not None else count)
    if size.get("Type") == "INSTANCE_COUNT":
        return max(1, int(size["Value"]))
    return max(1, math.floor(count * int(size["Value"]) / 100))


def check_deployment_config(deployment: dict[str, Any], current: dict[str, Any], new: dict[str, Any]) -> None:
    """What SageMaker refuses in an UpdateEndpoint's DeploymentConfig before the update starts.

    ``current`` / ``new``: the CreateEndpointConfig requests of the endpoint's configuration and the target.
    """
    rolling = deployment.get("RollingUpdatePolicy")
    if rolling and deployment.get("BlueGreenUpdatePolicy"):
        raise ValidationException("DeploymentConfig can specify either a BlueGreenUpdatePolicy or a "
                                  "RollingUpdatePolicy, not both.")
    if not rolling:
        return
    variants = {"old": current.get("ProductionVariants") or [], "new": new.get("ProductionVariants") or []}
    for which, config in (("current", current), ("new", new)):
        if any(v.get("ServerlessConfig") for v in config.get("ProductionVariants") or []):
            raise ValidationException(f"RollingUpdatePolicy is not supported for serverless endpoints: the {which} "
                                      "endpoint configuration has a variant with a ServerlessConfig.")
        if len(config.get("ProductionVariants") or []) > 1:
            raise ValidationException(f"RollingUpdatePolicy is not supported for multi-variant endpoints: the "
                                      f"{which} endpoint configuration has more than one production variant.")
        if config.get("ShadowProductionVariants"):
            raise ValidationException(f"RollingUpdatePolicy is not supported with ShadowProductionVariants (the "
                                      f"{which} endpoint configuration has some): use a BlueGreenUpdatePolicy.")
    if variants["old"] and variants["new"] and variants["old"][0]["VariantName"] != variants["new"][0]["VariantName"]:
        raise ValidationException(
            "For a rolling deployment the new endpoint configuration must have the same variant name as the old "
            f"one: '{variants['new'][0]['VariantName']}' is not '{variants['old'][0]['VariantName']}'.")
    count = int((variants["new"] or [{}])[0].get("InitialInstanceCount") or 1)
    size = rolling["MaximumBatchSize"]
    value = int(size["Value"])
    percent = value if size["Type"] == "CAPACITY_PERCENT" else 100.0 * value / count
    if not 5 <= percent <= 50:
        raise ValidationException(
            f"RollingUpdatePolicy.MaximumBatchSize must be between 5% and 50% of the variant's total instance "
            f"count ({count}); {size['Type']} {value} is {percent:.0f}%."
            + (" A rolling deployment needs at least 2 instances." if count < 2 else ""))


class RollingMixin:
    """Methods of DeploymentReconciler (serving/deployments.py) that run a RollingUpdatePolicy."""

    # provided by DeploymentReconciler
    d: Any
    router: Any

    def _rolling_policy(self, ep: Resource) -> dict[str, Any]:
        return (self._deployment_config(ep) or {}).get("RollingUpdatePolicy") or {}

    def _start_rolling(self, ep: Resource) -> bool:
        st = ep.state
        policy = self._rolling_policy(ep)
        old_fleet = st["_fleet"]
        old = next(v for v in old_fleet["variants"] if not v.get("shadow"))
        new_fleet = self._start_fleet(ep, st["_target_config"], st["_target"], start=False)
        new = new_fleet["variants"][0]
        target = new["count"]
        st["_rolling"] = {
            "dir": "forward", "old": old, "new": {**new, "replicas": []}, "starting": [], "target": target,
            "batch": batch_size(policy["MaximumBatchSize"], target),
            "rollback_batch": batch_size(policy.get("RollbackMaximumBatchSize"), len(old["replicas"])),
            "old_count": len(old["replicas"]), "wait": float(policy.get("WaitIntervalInSeconds") or 0), "until": 0.0,
            "old_meta": {k: old_fleet.get(k) for k in ("config", "capture", "started")},
            "new_meta": {k: new_fleet.get(k) for k in ("config", "capture", "started")},
        }
        st["_fleet"] = None  # while rolling, what serves is ``old`` + ``new`` (see _mixed_fleet)
        log.info("endpoint %s: rolling update to %s, %d instance(s) per batch", ep.name, st["_target_config"],
                 st["_rolling"]["batch"])
        return self._roll(ep)

    @staticmethod
    def _mixed_fleet(roll: dict[str, Any]) -> dict[str, Any]:
        """The fleet that serves during a rolling update: one variant with old and new instances."""
        variant = {**roll["old"], "replicas": roll["old"]["replicas"] + roll["new"]["replicas"]}
        return {**roll["old_meta"], "variants": [variant]}

    def _roll(self, ep: Resource) -> bool:
        st = ep.state
        roll = st["_rolling"]
        self._finish_drain(ep)  # old instances of earlier batches stop once their requests are done
        forward = roll["dir"] == "forward"
        if forward:
            reason = self._alarm_reason(ep)
            if reason is not None:
                self._roll_back(ep, reason)
                return True
        now = self.d.clock.time()
        if roll["starting"]:
            problem = self._check_ready({"variants": [{"name": roll["new"]["name"], "replicas": roll["starting"]}]})
            if problem is not None:
                self._stop_fleet({"variants": [{"replicas": roll["starting"]}]})
                roll["starting"] = []
                if forward:
                    self._roll_back(ep, f"Rolled back: {problem}")
                else:
                    self._rollback_failed(ep, problem)
                return True
            if not all(r["ready"] for r in roll["starting"]):
                self.d.resources.save(ep, now)
                return True
            self._route_batch(ep, roll)
            roll["until"] = now + (roll["wait"] if forward else 0.0)
            self._rolling_status(ep, "Baking" if forward and roll["wait"] else "ActivatingTraffic")
            self.d.resources.save(ep, now)
            return True
        if now < roll["until"]:
            return False  # baking: the loop's idle interval re-checks the alarms
        missing = roll["target"] - len(roll["new"]["replicas"])
        if missing > 0:
            count = min(roll["batch"] if forward else roll["rollback_batch"], missing)
            first = len(roll["new"]["replicas"])
            roll["starting"] = [self._start_replica(ep.name, roll["new"], first + i) for i in range(count)]
            self._rolling_status(ep, "Creating")
            self.d.resources.save(ep, now)
            return True
        self._finish_rolling(ep)
        return True

    def _route_batch(self, ep: Resource, roll: dict[str, Any]) -> None:
        """The started batch answers /ping: route to it, then retire as many old instances."""
        old_route = self.router.get(ep.name)
        batch, roll["starting"] = roll["starting"], []
        roll["new"]["replicas"].extend(batch)
        done = len(roll["new"]["replicas"]) >= roll["target"]
        n = len(roll["old"]["replicas"]) if done else min(len(batch), len(roll["old"]["replicas"]))
        retired = [roll["old"]["replicas"].pop() for _ in range(n)]
        self._route(ep.name, self._mixed_fleet(roll))  # new requests go to the new batch from here on
        if retired:
            self._retire(ep, old_route, {"variants": [{"replicas": retired}]})
        log.info("endpoint %s: rolling %s, %d new / %d old instance(s) in service", ep.name, roll["dir"],
                 len(roll["new"]["replicas"]), len(roll["old"]["replicas"]))

    def _finish_rolling(self, ep: Resource) -> None:
        st = ep.state
        roll = st.pop("_rolling")
        old_route = self.router.get(ep.name)
        if roll["old"]["replicas"]:
            self._retire(ep, old_route, {"variants": [{"replicas": roll["old"]["replicas"]}]})
        fleet = {**roll["new_meta"], "variants": [{**roll["new"], "count": roll["target"]}]}
        st["_fleet"] = fleet
        self._route(ep.name, fleet)
        if roll["dir"] == "forward":
            st.pop("FailureReason", None)
            self._describe_fleet(st, fleet, st["_target_config"], st["_target"])
            log.info("endpoint %s: InService on %s after a rolling update", ep.name, st["EndpointConfigName"])
        else:
            previous = st.get("_previous_config")
            config = self.d.resources.get("endpoint-config", previous) if previous else None
            self._describe_fleet(st, fleet, previous or st.get("EndpointConfigName"),
                                 config.request if config is not None else {})
            st["FailureReason"] = roll["reason"][:1024]
            log.warning("endpoint %s: rolled back to %s", ep.name, previous)
        transition(self.d.resources, ep, "InService", self.d.clock.time())

    def _roll_back(self, ep: Resource, reason: str) -> None:
        """Reverse the rolling update: the previous configuration's instances come back batch by batch."""
        st = ep.state
        roll = st["_rolling"]
        if roll["starting"]:
            self._stop_fleet({"variants": [{"replicas": roll["starting"]}]})
        st["_rolling"] = {
            **roll, "dir": "back", "old": roll["new"], "new": roll["old"], "starting": [], "until": 0.0,
            "target": roll["old_count"], "reason": reason,
            "old_meta": roll["new_meta"], "new_meta": roll["old_meta"]}
        st["FailureReason"] = reason[:1024]
        transition(self.d.resources, ep, "RollingBack", self.d.clock.time())
        log.warning("endpoint %s: %s", ep.name, reason)

    def _rollback_failed(self, ep: Resource, problem: str) -> None:
        """An instance of the previous configuration did not come back: serve with what runs."""
        st = ep.state
        roll = st.pop("_rolling")
        fleet = self._mixed_fleet(roll)
        st["_fleet"] = fleet
        self._route(ep.name, fleet)
        st["FailureReason"] = f"{roll.get('reason', '')}; the rollback failed: {problem}"[:1024]
        transition(self.d.resources, ep, "UpdateRollbackFailed", self.d.clock.time())

    def _rolling_status(self, ep: Resource, status: str) -> None:
        """PendingDeploymentSummary's variant (new instances so far, and what the deployment is doing)."""
        roll = ep.state["_rolling"]
        if roll["dir"] != "forward":
            return
        fleet = {"variants": [{**roll["new"], "count": roll["target"]}]}
        self._pending_status(ep, fleet, status)
