"""Deployment reconciler: the only writer of endpoint progress. Checkpoint the target, then act.

Creating/Updating: start a pending fleet for the target config; once every replica answers /ping, route to
it (blue/green: the old fleet keeps serving until then), then drain and stop the old fleet. A fleet that
fails to start fails a new endpoint, or leaves an updated one InService on its old fleet with a
FailureReason. InService: replace replicas that died. Deleting: unroute, stop, delete the row.
Fleets are JSON in the endpoint's row, so a restarted control plane re-routes to live replicas.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from opensage.credentials import CredentialAuthority, resource_owner
from opensage.runner.jobspec import ObjectStoreSpec
from opensage.runner.logtail import read_new_lines
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.services.endpoints import KIND
from opensage.serving.replicas import (
    STARTUP_TIMEOUT_SECONDS,
    Replica,
    ReplicaBackend,
    ReplicaManager,
    backend_for,
    new_token,
)
from opensage.serving.rolling import RollingMixin
from opensage.serving.router import EndpointRoute, Router, VariantRoute
from opensage.states import transition
from opensage.store.resources import ConcurrentUpdate, Resource

log = logging.getLogger(__name__)
STAGE_RETRY_SECONDS = 30.0  # how long staging waits out a restarting object store


class ModelDataError(ValueError):
    """The model artifact could not be staged; the message is the endpoint's FailureReason."""

DRAIN_TIMEOUT_SECONDS = 60.0
LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"


class DeploymentReconciler(RollingMixin, ReconcileLoop):
    def __init__(self, deps: Deps, replicas: ReplicaManager, router: Router, store_spec: ObjectStoreSpec,
                 credentials: CredentialAuthority | None = None) -> None:
        self.d = deps
        # Placement hook: on ``--executor ray`` replicas go to the cluster (serving/replicas.backend_for).
        self.replicas: ReplicaBackend = backend_for(deps.settings, replicas)
        self.router = router
        self.store_spec = store_spec  # the control plane's own (staging); replicas get temporary credentials
        self.credentials = credentials
        self._init_loop("deployment-reconciler", deps.settings.reconcile_interval, 1.0)
        self._known: set[str] = set()
        self._old_routes: dict[str, tuple[EndpointRoute | None, list[dict], float]] = {}
        self._stopper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="replica-stop")
        self._next_model_collection = 0.0  # time.monotonic() of the next pass of _collect_staged_models
        # CloudWatch alarms (``firing(names) -> [(name, reason)]``) for AutoRollbackConfiguration; set by app.
        self.alarms: Any | None = None

    def shutdown(self) -> None:
        """Stop every model server (the platform is going down); endpoints are re-deployed on restart."""
        self._stop_loop()
        for ep in self.d.resources.in_status(KIND, tuple(_ALL)):
            for r in _all_replicas(ep.state):
                self.replicas.stop(Replica.from_state(r), grace=5.0, wait=False)
        for _route, fleets, _since in self._old_routes.values():  # retired fleets still draining
            for fleet in fleets:
                for v in fleet["variants"]:
                    for r in v["replicas"]:
                        self.replicas.stop(Replica.from_state(r), grace=5.0, wait=False)
        self._old_routes.clear()
        self._stopper.shutdown(wait=True)

    def run_once(self) -> bool:
        busy = False
        for ep in self.d.resources.in_status(KIND, tuple(_ALL)):
            try:
                busy |= self._reconcile(ep)
            except ConcurrentUpdate:
                busy = True
            except Exception as e:
                log.exception("endpoint %s: reconcile failed", ep.name)
                self._fail(ep, f"InternalServerError: {type(e).__name__}: {e}")
        self._collect_staged_models()
        return busy

    def _collect_staged_models(self) -> None:
        """Unpacked models nothing uses any more are deleted (serving/model_cache.py). Here, in the thread that
        stages endpoints' models, so a directory is never staged for a fleet and removed before it is saved."""
        idle = self.d.settings.model_cache_idle_seconds
        now = time.monotonic()
        if idle <= 0 or now < self._next_model_collection:
            return
        from opensage.serving import model_cache

        self._next_model_collection = now + model_cache.interval(idle)
        draining = [fleets for _route, fleets, _since in self._old_routes.values()]
        try:
            model_cache.collect(self.d.resources, self.d.settings.home, idle, extra=draining)
        except Exception:  # noqa: BLE001 - housekeeping: endpoints go on; the next pass tries again
            log.exception("removing unused staged models failed")

    # -- one endpoint --------------------------------------------------------------------------------
    def _reconcile(self, ep: Resource) -> bool:
        self._ingest_logs(ep)
        if ep.status == "Deleting":
            self._delete(ep)
            return True
        if ep.name not in self._known:
            self._known.add(ep.name)
            if ep.state.get("_fleet"):
                self._route(ep.name, self._running_only(ep.state["_fleet"]))
            elif ep.state.get("_rolling"):
                self._route(ep.name, self._running_only(self._mixed_fleet(ep.state["_rolling"])))
        if ep.status == "InService":
            return self._maintain(ep)
        if ep.status == "Updating" and "_desired" in ep.state:
            return self._scale(ep)
        if ep.status == "Updating" and ep.state.get("_scaling"):
            return self._scaling_progress(ep)
        if ep.status == "Updating" and ep.state.get("_baking"):
            return self._bake(ep)
        if ep.status in ("Updating", "RollingBack") and ep.state.get("_rolling"):
            return self._roll(ep)
        if ep.status == "RollingBack":
            return self._rolling_back(ep)
        if ep.status in ("Creating", "Updating"):
            return self._deploy(ep)
        return False

    def _deploy(self, ep: Resource) -> bool:
        st = ep.state
        pending = st.get("_pending")
        if pending is None and ep.status == "Updating" and st.get("_fleet") and self._rolling_policy(ep):
            try:
                return self._start_rolling(ep)
            except Exception as e:  # staging the model (download, bad archive) failed
                self._fail(ep, str(e) if isinstance(e, ModelDataError) else f"Failed to deploy: {e}")
                return False
        if pending is None:
            try:
                pending = self._start_fleet(ep, st["_target_config"], st["_target"])
            except Exception as e:  # staging the model (download, bad archive) failed
                self._fail(ep, str(e) if isinstance(e, ModelDataError) else f"Failed to deploy: {e}")
                return False
            st["_pending"] = pending
            self._pending_status(ep, pending, "Creating")
            self.d.resources.save(ep, self.d.clock.time())
            return True
        problem = self._check_ready(pending)
        if problem:
            self._stop_fleet(pending)
            st.pop("_pending", None)
            self._fail(ep, problem)
            return False
        if not all(r["ready"] for v in pending["variants"] for r in v["replicas"]):
            self._pending_status(ep, pending, "Creating")
            self.d.resources.save(ep, self.d.clock.time())  # readiness flags
            return True
        old_fleet = st.get("_fleet")
        if old_fleet and ep.status == "Updating":
            if self._rollback_if_alarmed(ep, pending, old_fleet):
                return True
            if self._shift_traffic(ep, pending, old_fleet):
                self._pending_status(ep, pending, "ActivatingTraffic")
                self.d.resources.save(ep, self.d.clock.time())
                return True
        old_route = self.router.get(ep.name)
        self._route(ep.name, pending)
        st["_fleet"], st["_pending"] = pending, None
        st.pop("FailureReason", None)
        self._describe_fleet(st, pending, st["_target_config"], st["_target"])
        st.pop("_pending", None)
        wait = float(self._blue_green(ep).get("TerminationWaitInSeconds") or 0)
        if old_fleet and wait > 0:
            # Baking: all traffic is on the new fleet, the old one stays up so an alarm can roll back to it.
            st["_baking"] = {"fleet": old_fleet, "until": self.d.clock.time() + wait}
            self._pending_status(ep, pending, "Baking")
            self.d.resources.save(ep, self.d.clock.time())
            log.info("endpoint %s: baking %.0f s before retiring the old fleet", ep.name, wait)
            return True
        if old_fleet:
            self._retire(ep, old_route, old_fleet)
        transition(self.d.resources, ep, "InService", self.d.clock.time())
        log.info("endpoint %s: InService on %s", ep.name, st["EndpointConfigName"])
        return True

    def _describe_fleet(self, st: dict[str, Any], fleet: dict[str, Any], config_name: str | None,
                        config: dict[str, Any]) -> None:
        """What DescribeEndpoint shows for the fleet that takes the traffic."""
        now = self.d.clock.time()
        st["EndpointConfigName"] = config_name
        st["ProductionVariants"] = _summaries(fleet, now, shadow=False)
        for key in ("DataCaptureConfig", "AsyncInferenceConfig", "ShadowProductionVariants"):
            st.pop(key, None)
            if config.get(key):
                st[key] = config[key]
        if any(v.get("shadow") for v in fleet["variants"]):
            st["ShadowProductionVariants"] = _summaries(fleet, now, shadow=True)

    def _deployment_config(self, ep: Resource) -> dict[str, Any]:
        """The DeploymentConfig of the update in progress (UpdateEndpoint's, after RetainDeploymentConfig);
        CreateEndpoint's before any update."""
        if "_deployment" in ep.state:
            return ep.state["_deployment"] or {}
        return ep.request.get("DeploymentConfig") or {}

    def _blue_green(self, ep: Resource) -> dict[str, Any]:
        return self._deployment_config(ep).get("BlueGreenUpdatePolicy") or {}

    def _pending_status(self, ep: Resource, fleet: dict[str, Any], status: str) -> None:
        """DescribeEndpoint's PendingDeploymentSummary: the new fleet's variants and what is being done."""
        pending = ep.state.get("_pending_deployment")
        if not pending:
            return
        now = self.d.clock.time()
        since = ep.state.setdefault("_pending_since", {})
        if since.get("status") != status:
            since.update({"status": status, "at": now})
        variant_status = [{"Status": status, "StartTime": since["at"]}]
        target = ep.state.get("_target") or {}
        types = {v["VariantName"]: v.get("InstanceType") for v in
                 [*(target.get("ProductionVariants") or []), *(target.get("ShadowProductionVariants") or [])]}
        for key, shadow in (("ProductionVariants", False), ("ShadowProductionVariants", True)):
            summaries = _summaries(fleet, now, shadow=shadow)
            for summary in summaries:
                if "DesiredInstanceCount" in summary:  # instances up so far (serverless variants have none)
                    summary["CurrentInstanceCount"] = sum(
                        1 for v in fleet["variants"] if v["name"] == summary["VariantName"]
                        for r in v["replicas"] if r["ready"])
                summary["VariantStatus"] = variant_status
                if types.get(summary["VariantName"]):
                    summary["InstanceType"] = types[summary["VariantName"]]
            if summaries:
                pending[key] = summaries

    def _alarm_reason(self, ep: Resource) -> str | None:
        """Why to roll back: an AutoRollbackConfiguration alarm in ALARM, or MaximumExecutionTimeout passed."""
        config = ep.state.get("_deployment") or ep.request.get("DeploymentConfig") or {}
        names = [a["AlarmName"] for a in (config.get("AutoRollbackConfiguration") or {}).get("Alarms") or []]
        if names and self.alarms is not None:
            firing = self.alarms.firing(names)
            if firing:
                name, reason = firing[0]
                return f"Rolled back: alarm {name} went into ALARM during the deployment ({reason})"
        limit = (self._blue_green(ep) or self._rolling_policy(ep)).get("MaximumExecutionTimeoutInSeconds")
        started = ep.state.get("_update_started")
        if limit and started and self.d.clock.time() - started > float(limit):
            return (f"Rolled back: the deployment did not finish within MaximumExecutionTimeoutInSeconds "
                    f"({limit} s)")
        return None

    def _rollback_if_alarmed(self, ep: Resource, new: dict[str, Any], old: dict[str, Any]) -> bool:
        reason = self._alarm_reason(ep)
        if reason is None:
            return False
        self._rollback(ep, new, old, reason)
        return True

    def _rollback(self, ep: Resource, new: dict[str, Any], old: dict[str, Any], reason: str) -> None:
        """Traffic back to the old fleet at once; the new one drains and stops (status RollingBack)."""
        st = ep.state
        new_route = self.router.get(ep.name)
        self._route(ep.name, old)
        st["_fleet"] = old
        for key in ("_pending", "_shift", "_baking"):
            st.pop(key, None)
        st["_rollback"] = {"reason": reason}
        st["FailureReason"] = reason[:1024]
        self._retire(ep, new_route, new)
        transition(self.d.resources, ep, "RollingBack", self.d.clock.time())
        log.warning("endpoint %s: %s", ep.name, reason)

    def _rolling_back(self, ep: Resource) -> bool:
        """RollingBack -> InService on the previous configuration once the new fleet has drained."""
        if self._finish_drain(ep):
            return True
        st = ep.state
        previous = st.get("_previous_config")
        config = self.d.resources.get("endpoint-config", previous) if previous else None
        self._describe_fleet(st, st["_fleet"], previous or st.get("EndpointConfigName"),
                             config.request if config is not None else {})
        st.pop("_rollback", None)
        transition(self.d.resources, ep, "InService", self.d.clock.time())
        return True

    def _bake(self, ep: Resource) -> bool:
        st = ep.state
        baking = st["_baking"]
        reason = self._alarm_reason(ep)
        if reason is not None:
            self._rollback(ep, st["_fleet"], baking["fleet"], reason)
            return True
        if self.d.clock.time() < baking["until"]:
            return False  # nothing to do until the wait ends (the loop's idle interval re-checks)
        st.pop("_baking")
        self._retire(ep, None, baking["fleet"])
        transition(self.d.resources, ep, "InService", self.d.clock.time())
        log.info("endpoint %s: InService on %s after baking", ep.name, st["EndpointConfigName"])
        return True

    def _retire(self, ep: Resource, route: EndpointRoute | None, fleet: dict[str, Any]) -> None:
        """Stop ``fleet``'s replicas once the requests in flight on ``route`` have finished.

        The fleet is also listed in the row (``_retiring``; the caller saves it), so a control plane
        restarted mid-drain still stops it.
        """
        endpoint = ep.name
        ep.state.setdefault("_retiring", []).append(fleet)
        previous = self._old_routes.get(endpoint)
        if previous is not None:
            old_route, fleets, since = previous
            routes = old_route if route is None else _merge_routes(old_route, route)
            self._old_routes[endpoint] = (routes, [*fleets, fleet], since)
        else:
            self._old_routes[endpoint] = (route, [fleet], time.monotonic())

    def _shift_traffic(self, ep: Resource, new: dict[str, Any], old: dict[str, Any]) -> bool:
        """Canary / Linear: move traffic to the new fleet in steps; True while the shift is unfinished.

        The old fleet keeps its share until the last step; then the caller routes everything to the new
        fleet and drains the old one, as for ALL_AT_ONCE.
        """
        routing = self._blue_green(ep).get("TrafficRoutingConfiguration") or {}
        steps = traffic_steps(routing, sum(v["count"] for v in new["variants"] if not v.get("shadow")))
        if not steps:
            return False
        shift = ep.state.get("_shift") or {"step": -1, "next_at": 0.0}
        ep.state["_shift"] = shift
        now = self.d.clock.time()
        if now < shift["next_at"]:
            return True
        shift["step"] += 1
        if shift["step"] >= len(steps):
            ep.state.pop("_shift", None)
            return False
        fraction = steps[shift["step"]]
        shift["next_at"] = now + float(routing.get("WaitIntervalInSeconds") or 0)
        route = self._build_route(old)
        route.shifted, route.shifted_fraction = self._build_route(new), fraction
        self.router.set(ep.name, route)
        self.d.resources.save(ep, now)
        log.info("endpoint %s: %s traffic shift, %.0f%% to the new fleet", ep.name, routing.get("Type"),
                 fraction * 100)
        return True

    def _maintain(self, ep: Resource) -> bool:
        busy = self._finish_drain(ep)
        fleet = ep.state.get("_fleet")
        if not fleet:
            return busy
        changed = False
        for variant in fleet["variants"]:
            for i, r in enumerate(variant["replicas"]):
                replica = Replica.from_state(r)
                if not self.replicas.running(replica):
                    if variant.get("serverless") and not r["ready"]:
                        reason = ("The serverless variant's model server exited while starting. Last log lines:\n"
                                  + self.replicas.log_tail(replica))
                        self.router.cold_start_failed(ep.name, variant["name"], reason)
                        variant["replicas"].pop(i)
                        variant["count"] = len(variant["replicas"])
                        changed = True
                        break
                    log.warning("endpoint %s: replica %s of %s died (%s); replacing it", ep.name, r["pid"],
                                variant["name"], self.replicas.exit_status(replica) or "exited")
                    # Placement hook: give back what the dead one held (a cluster backend's bundle, which Ray
                    # would otherwise re-place on another node after a node loss) before placing its successor.
                    self.replicas.stop(replica, grace=0.0, wait=False)
                    variant["replicas"][i] = self._start_replica(ep.name, variant, i)
                    changed = True
                elif not r["ready"] and self.replicas.healthy(replica):
                    r["ready"] = True
                    changed = True
        changed |= self._serverless(ep, fleet)
        if changed:
            self._route(ep.name, fleet)
            self.d.resources.save(ep, self.d.clock.time())
        return busy or any(not r["ready"] for v in fleet["variants"] for r in v["replicas"])

    def _serverless(self, ep: Resource, fleet: dict[str, Any]) -> bool:
        """Cold-start a serverless variant a request waits for; scale an idle one to zero."""
        demanded = self.router.take_demand(ep.name)
        changed = False
        for variant in fleet["variants"]:
            config = variant.get("serverless")
            if not config:
                continue
            if variant["name"] in demanded and not variant["replicas"]:
                log.info("endpoint %s: cold start of serverless variant %s", ep.name, variant["name"])
                variant["replicas"].append(self._start_replica(ep.name, variant, 0))
                variant["count"] = 1
                changed = True
            elif (variant["replicas"] and not config.get("ProvisionedConcurrency")
                  and all(r["ready"] for r in variant["replicas"])
                  and self.router.idle_seconds(ep.name, variant["name"]) > self.d.settings.serverless_idle_seconds):
                log.info("endpoint %s: serverless variant %s idle; scaling to zero", ep.name, variant["name"])
                self._retire(ep, self.router.get(ep.name), {"variants": [{"replicas": variant["replicas"]}]})
                variant["replicas"], variant["count"] = [], 0
                changed = True
        if changed:
            ep.state["ProductionVariants"] = _summaries(fleet, self.d.clock.time(), shadow=False)
        return changed

    def _scale(self, ep: Resource) -> bool:
        st = ep.state
        fleet = st["_fleet"]
        by_name = {v["name"]: v for v in fleet["variants"]}
        retired: list[dict] = []
        for item in st.pop("_desired"):
            variant = by_name[item["VariantName"]]
            if item.get("DesiredWeight") is not None:
                variant["weight"] = float(item["DesiredWeight"])
            count = item.get("DesiredInstanceCount")
            if count is not None:
                while len(variant["replicas"]) < count:
                    variant["replicas"].append(self._start_replica(ep.name, variant, len(variant["replicas"])))
                while len(variant["replicas"]) > count:
                    retired.append(variant["replicas"].pop())
                variant["count"] = count
            update = item.get("ServerlessUpdateConfig")
            if update and variant.get("serverless"):
                # New MaxConcurrency / ProvisionedConcurrency (Application Auto Scaling's
                # DesiredProvisionedConcurrency): DescribeEndpoint's Current/DesiredServerlessConfig show it;
                # a variant with provisioned concurrency keeps one instance warm.
                variant["serverless"] = {**variant["serverless"],
                                         **{k: v for k, v in update.items() if v is not None}}
                if variant["serverless"].get("ProvisionedConcurrency") and not variant["replicas"]:
                    variant["replicas"].append(self._start_replica(ep.name, variant, 0))
                    variant["count"] = 1
        st["_scaling"] = True
        old_route = self.router.get(ep.name)
        self._route(ep.name, fleet)
        if retired:
            self._retire(ep, old_route, {"variants": [{"replicas": retired}]})
        self.d.resources.save(ep, self.d.clock.time())
        return True

    def _scaling_progress(self, ep: Resource) -> bool:
        st = ep.state
        fleet = st["_fleet"]
        problem = self._check_ready(fleet)
        if problem is None and not all(r["ready"] for v in fleet["variants"] for r in v["replicas"]):
            self.d.resources.save(ep, self.d.clock.time())
            return True
        if problem is not None:  # keep serving on the replicas that work
            for v in fleet["variants"]:
                v["replicas"] = [r for r in v["replicas"] if r["ready"]]
            st["FailureReason"] = problem[:1024]
        self._route(ep.name, fleet)
        st.pop("_scaling", None)
        st["ProductionVariants"] = _summaries(fleet, self.d.clock.time(), shadow=False)
        transition(self.d.resources, ep, "InService", self.d.clock.time())
        return True

    def _delete(self, ep: Resource) -> None:
        self.router.remove(ep.name)
        self._old_routes.pop(ep.name, None)  # its fleets are in _all_replicas (``_retiring``)
        for r in _all_replicas(ep.state):
            self._stopper.submit(self.replicas.stop, Replica.from_state(r))
        self.d.resources.delete(KIND, ep.name)
        self.d.tags.drop_all(ep.arn)
        self._known.discard(ep.name)
        log.info("endpoint %s: deleted", ep.name)

    def _fail(self, ep: Resource, reason: str) -> None:
        fresh = self.d.resources.get(KIND, ep.name)
        if fresh is None or fresh.status not in ("Creating", "Updating"):
            return
        for key in ("_pending", "_desired", "_shift", "_baking"):
            fresh.state.pop(key, None)
        fresh.state["FailureReason"] = reason[:1024]
        roll = fresh.state.pop("_rolling", None)
        if roll:  # serve with what runs (old and new instances), as the configuration it started from
            self._stop_fleet({"variants": [{"replicas": roll["starting"]}]})
            fresh.state["_fleet"] = self._mixed_fleet({**roll, "starting": []})
            self._route(ep.name, fresh.state["_fleet"])
        # A failed update leaves the endpoint serving its previous fleet.
        target = "InService" if fresh.status == "Updating" and fresh.state.get("_fleet") else "Failed"
        transition(self.d.resources, fresh, target, self.d.clock.time())
        log.warning("endpoint %s: %s (%s)", ep.name, target, reason[:200])

    # -- fleets --------------------------------------------------------------------------------------
    def _start_fleet(self, ep: Resource, config_name: str, config: dict[str, Any],
                     start: bool = True) -> dict[str, Any]:
        """The fleet for ``config`` (each variant's model staged), its instances started unless not ``start``."""
        from opensage.serving.plan import plan_model_server

        variants = []
        shadows = {v["VariantName"] for v in config.get("ShadowProductionVariants") or []}
        for v in [*config["ProductionVariants"], *(config.get("ShadowProductionVariants") or [])]:
            model = self.d.resources.get("model", v["ModelName"])
            if model is None:
                raise ValueError(f"model {v['ModelName']} of variant {v['VariantName']} no longer exists")
            plan = plan_model_server(model.request, self._stage_model, self.d.settings.home / "plans",
                                     object_store_url=self.store_spec.endpoint_url)
            serverless = v.get("ServerlessConfig")
            # Serverless variants start without instances (cold start on the first request) unless they
            # have ProvisionedConcurrency, which keeps one warm.
            count = (1 if serverless.get("ProvisionedConcurrency") else 0) if serverless else \
                int(v.get("InitialInstanceCount") or 1)
            variant = {"name": v["VariantName"], "weight": float(v.get("InitialVariantWeight", 1.0)),
                       "count": count, "model": model.name, "image": plan.images[0], "images": plan.images,
                       "kind": plan.kind, "model_dir": str(plan.model_dir), "env": plan.env, "replicas": [],
                       "shadow": v["VariantName"] in shadows, "serverless": serverless,
                       "instance_type": v.get("InstanceType")}
            if start:
                variant["replicas"] = [self._start_replica(ep.name, variant, i) for i in range(count)]
            variants.append(variant)
        return {"config": config_name, "variants": variants, "started": self.d.clock.time(),
                "capture": config.get("DataCaptureConfig")}

    def _start_replica(self, endpoint: str, variant: dict[str, Any], index: int) -> dict[str, Any]:
        s = self.d.settings
        env = dict(variant["env"])
        env.setdefault("SAGEMAKER_REGION", s.region)
        # One-row real-time predictions: XGBoost/OpenMP worker threads spin after each request and burned
        # 5-12 ms of CPU per request (1 ms single-threaded), starving the control plane on small machines.
        # More throughput comes from more instances; a user's own setting wins.
        env.setdefault("OMP_NUM_THREADS", "1")
        env["OPENSAGE_VENV_CACHE"] = str(s.venv_cache)
        env["AWS_ENDPOINT_URL"] = s.endpoint_url  # any AWS call of the model's code stays on this platform
        url = self.store_spec.endpoint_url or ""
        if url.startswith(("http://", "https://")):
            env.update({"AWS_ENDPOINT_URL_S3": url, "S3_ENDPOINT_URL": url})
        env.update(self._replica_credentials(endpoint))
        env.setdefault("AWS_DEFAULT_REGION", s.region)
        seed = f"{endpoint}/{variant['name']}/{index}/{time.time()}".encode()
        instance = "i-" + hashlib.sha1(seed).hexdigest()[:17]
        log_path = s.home / "endpoints" / endpoint / variant["name"] / f"{instance}.log"
        # Placement hook: a cluster backend sizes the replica's bundle from the instance type and spreads a
        # variant's replicas over nodes (``group``); every replica's server requires its own token.
        replica = self.replicas.start(Path(variant["model_dir"]), variant["kind"], env, log_path,
                                      token=new_token(), instance_type=variant.get("instance_type"),
                                      group=f"{endpoint}/{variant['name']}")
        return {**replica.to_state(), "ready": False, "instance": instance, "started": time.time(),
                "offset": 0}

    def _replica_credentials(self, endpoint: str) -> dict[str, str]:
        """The endpoint's temporary credentials (valid while the endpoint exists; a deleted and recreated
        endpoint of the same name gets new ones), for the user's inference code, multi-model loads and
        SAGEMAKER_SUBMIT_DIRECTORY fetches. Never the platform's key pair."""
        if self.credentials is None:
            return {}
        ep = self.d.resources.get(KIND, endpoint)
        if ep is None:
            return {}
        return self.credentials.issue(resource_owner(KIND, endpoint, ep.creation_time)).env()

    def _check_ready(self, fleet: dict[str, Any]) -> str | None:
        """Mark replicas that answer /ping; a reason if one died or missed the startup deadline."""
        for variant in fleet["variants"]:
            for r in variant["replicas"]:
                if r["ready"]:
                    continue
                replica = Replica.from_state(r)
                if self.replicas.healthy(replica):
                    r["ready"] = True
                elif not self.replicas.running(replica):
                    return (f"The primary container for production variant {variant['name']} did not pass the "
                            f"ping health check: the model server exited. Last log lines:\n"
                            + self.replicas.log_tail(replica))
                elif time.time() - r["started"] > STARTUP_TIMEOUT_SECONDS:
                    return (f"The primary container for production variant {variant['name']} did not pass the "
                            f"ping health check within {STARTUP_TIMEOUT_SECONDS:.0f} s.")
        return None

    def _running_only(self, fleet: dict[str, Any]) -> dict[str, Any]:
        """``fleet`` without its instances that are not running, for the first route after a restart: one that
        died with (or after) the previous process is never routed to, not even until the reconcile pass
        replaces it (its row is left as it is for that). Its port may already belong to another listener,
        which could hold a request until its timeout (an asynchronous request's is up to an hour) instead of
        refusing it."""
        return {**fleet, "variants": [
            {**v, "replicas": [r for r in v["replicas"] if self.replicas.running(Replica.from_state(r))]}
            for v in fleet["variants"]]}

    def _route(self, endpoint: str, fleet: dict[str, Any]) -> None:
        self.router.set(endpoint, self._build_route(fleet))

    @staticmethod
    def _build_route(fleet: dict[str, Any]) -> EndpointRoute:
        def route(v: dict[str, Any]) -> VariantRoute:
            return VariantRoute(v["name"], v["weight"],
                                [Replica.from_state(r).routed_url() for r in v["replicas"] if r["ready"]],
                                serverless=v.get("serverless"))

        production = [route(v) for v in fleet["variants"] if not v.get("shadow")]
        shadows = [route(v) for v in fleet["variants"] if v.get("shadow")]
        # A shadow variant's weight relative to the production variant's is the share of requests copied to it.
        total = sum(v.weight for v in production) or 1.0
        for shadow in shadows:
            shadow.sample = min(1.0, shadow.weight / total)
        return EndpointRoute(production, capture=fleet.get("capture"), shadows=shadows)

    def _finish_drain(self, ep: Resource) -> bool:
        """True while retired fleets drain; then stop them (and forget them in the row)."""
        entry = self._old_routes.get(ep.name)
        if entry is None:
            if ep.state.get("_retiring"):  # listed before a restart: nothing routes to them any more
                for fleet in ep.state.pop("_retiring"):
                    self._stop_fleet(fleet)
                self.d.resources.save(ep, self.d.clock.time())
            return False
        route, fleets, since = entry
        if Router.outstanding(route) and time.monotonic() - since < DRAIN_TIMEOUT_SECONDS:
            return True
        del self._old_routes[ep.name]
        for fleet in fleets:
            self._stop_fleet(fleet)
        ep.state.pop("_retiring", None)
        self.d.resources.save(ep, self.d.clock.time())
        return False

    def _stop_fleet(self, fleet: dict[str, Any]) -> None:
        for v in fleet["variants"]:
            for r in v["replicas"]:
                self._stopper.submit(self.replicas.stop, Replica.from_state(r))

    def _stage_model(self, model_data_url: str | None) -> Path:
        """model.tar.gz -> an unpacked directory, cached per URL (the replica's /opt/ml/model).

        Failures are worded for the endpoint's FailureReason (``ModelDataError``): SageMaker's words for a
        missing object, the archive checker's for a bad archive, never botocore's raw text. Transfers wait out
        a restarting object store for a while (the reconciler thread is blocked meanwhile, so not for long)."""
        from opensage.objects import ObjectNotFound, open_store
        from opensage.runner.transfers import RetryingStore, describe_s3_error
        from opensage.serving.staging import stage_model

        store = RetryingStore(open_store(self.store_spec), deadline_seconds=STAGE_RETRY_SECONDS)
        try:
            return stage_model(store, self.d.settings.home / "models", model_data_url)
        except ObjectNotFound:
            raise ModelDataError(f"Could not find model data at {model_data_url}.") from None
        except ValueError as exc:  # a malformed URL, an unsafe or damaged archive: the message says which
            raise ModelDataError(f"Failed to extract model data archive from URL {model_data_url}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - worded for the user
            raise ModelDataError(f"Could not download model data from {model_data_url}: "
                                 f"{describe_s3_error(exc, model_data_url or '')}.") from exc

    # -- logs ----------------------------------------------------------------------------------------
    def _ingest_logs(self, ep: Resource) -> None:
        """Model-server output -> /aws/sagemaker/Endpoints/<name>, stream <variant>/<instance>."""
        now_ms = int(self.d.clock.time() * 1000)
        batches = []
        roll = ep.state.get("_rolling") or {}
        rolling = {"variants": [{**v, "replicas": v["replicas"] + (roll["starting"] if v is roll.get("new") else [])}
                                for v in (roll.get("old"), roll.get("new")) if v]}
        for fleet in (ep.state.get("_fleet"), ep.state.get("_pending"), rolling):
            for v in (fleet or {}).get("variants", []):
                for r in v["replicas"]:
                    lines, offset = read_new_lines(Path(r["log"]), r.get("offset", 0))
                    if lines:
                        r["offset"] = offset
                        batches.append((f"{v['name']}/{r['instance']}", [(now_ms, line) for line in lines]))
        if not batches:
            return
        with self.d.resources.engine.begin() as conn:
            for stream, events in batches:
                self.d.logs.append(LOG_GROUP_PREFIX + ep.name, stream, events, now_ms, conn=conn)
            self.d.resources.save(ep, self.d.clock.time(), conn=conn)


def traffic_steps(routing: dict[str, Any], new_capacity: int) -> list[float]:
    """Fractions of traffic on the new fleet, one per wait interval ([] = all at once)."""
    kind = routing.get("Type") or "ALL_AT_ONCE"

    def fraction(size: dict[str, Any] | None) -> float:
        size = size or {}
        if size.get("Type") == "INSTANCE_COUNT":
            return min(1.0, float(size.get("Value", 1)) / max(1, new_capacity))
        return min(1.0, float(size.get("Value", 10)) / 100.0)

    if kind == "CANARY":
        return [fraction(routing.get("CanarySize"))]
    if kind == "LINEAR":
        step = max(fraction(routing.get("LinearStepSize")), 0.01)
        out, f = [], step
        while f < 1.0 - 1e-9:
            out.append(round(f, 6))
            f += step
        return out
    return []


_ALL = ("Creating", "Updating", "InService", "Deleting", "SystemUpdating", "RollingBack")


def _all_replicas(state: dict[str, Any]) -> list[dict[str, Any]]:
    roll = state.get("_rolling") or {}
    rolling = {"variants": [v for v in (roll.get("old"), roll.get("new"), {"replicas": roll.get("starting") or []})
                            if v]}
    fleets = [state.get("_fleet"), state.get("_pending"), (state.get("_baking") or {}).get("fleet"), rolling,
              *(state.get("_retiring") or [])]
    return [r for fleet in fleets for v in (fleet or {}).get("variants", []) for r in v["replicas"]]


def _summaries(fleet: dict[str, Any], now: float, shadow: bool) -> list[dict[str, Any]]:
    out = []
    for v in fleet["variants"]:
        if bool(v.get("shadow")) != shadow:
            continue
        summary: dict[str, Any] = {
            "VariantName": v["name"],
            "DeployedImages": [{"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": now}
                               for image in v.get("images") or [v["image"]]],
            "CurrentWeight": v["weight"], "DesiredWeight": v["weight"],
            "CurrentInstanceCount": len(v["replicas"]), "DesiredInstanceCount": v["count"],
        }
        if v.get("serverless"):  # SageMaker shows no instance counts for serverless variants
            del summary["CurrentInstanceCount"], summary["DesiredInstanceCount"]
            summary["CurrentServerlessConfig"] = summary["DesiredServerlessConfig"] = v["serverless"]
        out.append(summary)
    return out


def _merge_routes(a: EndpointRoute | None, b: EndpointRoute | None) -> EndpointRoute | None:
    """One route whose in-flight count covers both (for draining several retired fleets at once)."""
    if a is None or b is None:
        return a or b
    return EndpointRoute(a.variants + b.variants, shadows=a.shadows + b.shadows)
