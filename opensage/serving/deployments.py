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

from opensage.runner.jobspec import ObjectStoreSpec
from opensage.runner.logtail import read_new_lines
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.services.endpoints import KIND
from opensage.serving.replicas import Replica, ReplicaManager
from opensage.serving.router import EndpointRoute, Router, VariantRoute
from opensage.states import transition
from opensage.store.resources import ConcurrentUpdate, Resource

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SECONDS = 600.0  # SAGEMAKER_STARTUP_TIMEOUT's default
DRAIN_TIMEOUT_SECONDS = 60.0
LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"


class DeploymentReconciler(ReconcileLoop):
    def __init__(self, deps: Deps, replicas: ReplicaManager, router: Router, store_spec: ObjectStoreSpec) -> None:
        self.d = deps
        self.replicas = replicas
        self.router = router
        self.store_spec = store_spec
        self._init_loop("deployment-reconciler", deps.settings.reconcile_interval, 1.0)
        self._known: set[str] = set()
        self._old_routes: dict[str, tuple[EndpointRoute | None, list[dict], float]] = {}
        self._stopper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="replica-stop")

    def shutdown(self) -> None:
        """Stop every model server (the platform is going down); endpoints are re-deployed on restart."""
        self._stop_loop()
        for ep in self.d.resources.in_status(KIND, tuple(_ALL)):
            for r in _all_replicas(ep.state):
                self.replicas.stop(Replica.from_state(r), grace=5.0, wait=False)
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
        return busy

    # -- one endpoint --------------------------------------------------------------------------------
    def _reconcile(self, ep: Resource) -> bool:
        self._ingest_logs(ep)
        if ep.status == "Deleting":
            self._delete(ep)
            return True
        if ep.name not in self._known:
            self._known.add(ep.name)
            if ep.state.get("_fleet"):
                self._route(ep.name, ep.state["_fleet"])
        if ep.status == "InService":
            return self._maintain(ep)
        if ep.status == "Updating" and "_desired" in ep.state:
            return self._scale(ep)
        if ep.status == "Updating" and ep.state.get("_scaling"):
            return self._scaling_progress(ep)
        if ep.status in ("Creating", "Updating"):
            return self._deploy(ep)
        return False

    def _deploy(self, ep: Resource) -> bool:
        st = ep.state
        pending = st.get("_pending")
        if pending is None:
            try:
                pending = self._start_fleet(ep, st["_target_config"], st["_target"])
            except Exception as e:  # staging the model (download, bad archive) failed
                self._fail(ep, f"Failed to deploy: {e}")
                return False
            st["_pending"] = pending
            self.d.resources.save(ep, self.d.clock.time())
            return True
        problem = self._check_ready(pending)
        if problem:
            self._stop_fleet(pending)
            st.pop("_pending", None)
            self._fail(ep, problem)
            return False
        if not all(r["ready"] for v in pending["variants"] for r in v["replicas"]):
            self.d.resources.save(ep, self.d.clock.time())  # readiness flags
            return True
        old_fleet = st.get("_fleet")
        if old_fleet and ep.status == "Updating" and self._shift_traffic(ep, pending, old_fleet):
            return True
        old_route = self.router.get(ep.name)
        self._route(ep.name, pending)
        st["_fleet"], st["_pending"] = pending, None
        st.pop("FailureReason", None)
        st["EndpointConfigName"] = st["_target_config"]
        st["ProductionVariants"] = _summaries(pending, self.d.clock.time())
        for key in ("DataCaptureConfig", "AsyncInferenceConfig", "ShadowProductionVariants"):
            if st["_target"].get(key):
                st[key] = st["_target"][key]
        st.pop("_pending", None)
        transition(self.d.resources, ep, "InService", self.d.clock.time())
        if old_fleet:
            self._old_routes[ep.name] = (old_route, [old_fleet], time.monotonic())
        log.info("endpoint %s: InService on %s", ep.name, st["EndpointConfigName"])
        return True

    def _shift_traffic(self, ep: Resource, new: dict[str, Any], old: dict[str, Any]) -> bool:
        """Canary / Linear: move traffic to the new fleet in steps; True while the shift is unfinished.

        The old fleet keeps its share until the last step; then the caller routes everything to the new
        fleet and drains the old one, as for ALL_AT_ONCE.
        """
        config = ep.state.get("_deployment") or ep.request.get("DeploymentConfig") or {}
        policy = config.get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {}
        steps = traffic_steps(routing, sum(v["count"] for v in new["variants"]))
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
        busy = self._finish_drain(ep.name)
        fleet = ep.state.get("_fleet")
        if not fleet:
            return busy
        changed = False
        for variant in fleet["variants"]:
            for i, r in enumerate(variant["replicas"]):
                replica = Replica.from_state(r)
                if not self.replicas.running(replica):
                    log.warning("endpoint %s: replica %s of %s died; replacing it", ep.name, r["pid"],
                                variant["name"])
                    variant["replicas"][i] = self._start_replica(ep.name, variant, i)
                    changed = True
                elif not r["ready"] and self.replicas.healthy(replica):
                    r["ready"] = True
                    changed = True
        if changed:
            self._route(ep.name, fleet)
            self.d.resources.save(ep, self.d.clock.time())
        return busy or any(not r["ready"] for v in fleet["variants"] for r in v["replicas"])

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
        st["_scaling"] = True
        old_route = self.router.get(ep.name)
        self._route(ep.name, fleet)
        if retired:
            self._old_routes[ep.name] = (old_route, [{"variants": [{"replicas": retired}]}], time.monotonic())
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
        st["ProductionVariants"] = _summaries(fleet, self.d.clock.time())
        transition(self.d.resources, ep, "InService", self.d.clock.time())
        return True

    def _delete(self, ep: Resource) -> None:
        self.router.remove(ep.name)
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
        for key in ("_pending", "_desired", "_shift"):
            fresh.state.pop(key, None)
        fresh.state["FailureReason"] = reason[:1024]
        # A failed update leaves the endpoint serving its previous fleet.
        target = "InService" if fresh.status == "Updating" and fresh.state.get("_fleet") else "Failed"
        transition(self.d.resources, fresh, target, self.d.clock.time())
        log.warning("endpoint %s: %s (%s)", ep.name, target, reason[:200])

    # -- fleets --------------------------------------------------------------------------------------
    def _start_fleet(self, ep: Resource, config_name: str, config: dict[str, Any]) -> dict[str, Any]:
        from opensage.serving.plan import plan_model_server

        variants = []
        for v in config["ProductionVariants"]:
            model = self.d.resources.get("model", v["ModelName"])
            if model is None:
                raise ValueError(f"model {v['ModelName']} of variant {v['VariantName']} no longer exists")
            plan = plan_model_server(model.request, self._stage_model, self.d.settings.home / "plans")
            count = int(v.get("InitialInstanceCount") or 1)
            variant = {"name": v["VariantName"], "weight": float(v.get("InitialVariantWeight", 1.0)),
                       "count": count, "model": model.name, "image": plan.images[0], "images": plan.images,
                       "kind": plan.kind, "model_dir": str(plan.model_dir), "env": plan.env, "replicas": []}
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
        url = self.store_spec.endpoint_url or ""
        if url.startswith(("http://", "https://")):
            env.update({"AWS_ENDPOINT_URL_S3": url, "S3_ENDPOINT_URL": url})
        if self.store_spec.access_key:
            env.update({"AWS_ACCESS_KEY_ID": self.store_spec.access_key,
                        "AWS_SECRET_ACCESS_KEY": self.store_spec.secret_key or "",
                        "AWS_DEFAULT_REGION": s.region})
        seed = f"{endpoint}/{variant['name']}/{index}/{time.time()}".encode()
        instance = "i-" + hashlib.sha1(seed).hexdigest()[:17]
        log_path = s.home / "endpoints" / endpoint / variant["name"] / f"{instance}.log"
        replica = self.replicas.start(Path(variant["model_dir"]), variant["kind"], env, log_path)
        return {**replica.to_state(), "ready": False, "instance": instance, "started": time.time(),
                "offset": 0}

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

    def _route(self, endpoint: str, fleet: dict[str, Any]) -> None:
        self.router.set(endpoint, self._build_route(fleet))

    @staticmethod
    def _build_route(fleet: dict[str, Any]) -> EndpointRoute:
        return EndpointRoute([
            VariantRoute(v["name"], v["weight"], [Replica.from_state(r).url for r in v["replicas"] if r["ready"]])
            for v in fleet["variants"]], capture=fleet.get("capture"))

    def _finish_drain(self, endpoint: str) -> bool:
        entry = self._old_routes.get(endpoint)
        if entry is None:
            return False
        route, fleets, since = entry
        if Router.outstanding(route) and time.monotonic() - since < DRAIN_TIMEOUT_SECONDS:
            return True
        del self._old_routes[endpoint]
        for fleet in fleets:
            self._stop_fleet(fleet)
        return False

    def _stop_fleet(self, fleet: dict[str, Any]) -> None:
        for v in fleet["variants"]:
            for r in v["replicas"]:
                self._stopper.submit(self.replicas.stop, Replica.from_state(r))

    def _stage_model(self, model_data_url: str | None) -> Path:
        """model.tar.gz -> an unpacked directory, cached per URL (the replica's /opt/ml/model)."""
        from opensage.objects import open_store
        from opensage.serving.staging import stage_model

        return stage_model(open_store(self.store_spec), self.d.settings.home / "models", model_data_url)

    # -- logs ----------------------------------------------------------------------------------------
    def _ingest_logs(self, ep: Resource) -> None:
        """Model-server output -> /aws/sagemaker/Endpoints/<name>, stream <variant>/<instance>."""
        now_ms = int(self.d.clock.time() * 1000)
        batches = []
        for fleet in (ep.state.get("_fleet"), ep.state.get("_pending")):
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
    return [r for key in ("_fleet", "_pending") for v in (state.get(key) or {}).get("variants", [])
            for r in v["replicas"]]


def _summaries(fleet: dict[str, Any], now: float) -> list[dict[str, Any]]:
    return [{
        "VariantName": v["name"],
        "DeployedImages": [{"SpecifiedImage": image, "ResolvedImage": image, "ResolutionTime": now}
                           for image in v.get("images") or [v["image"]]],
        "CurrentWeight": v["weight"], "DesiredWeight": v["weight"],
        "CurrentInstanceCount": len(v["replicas"]), "DesiredInstanceCount": v["count"],
    } for v in fleet["variants"]]
