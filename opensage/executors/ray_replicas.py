"""Endpoint replicas on a Ray cluster (``opensage up --executor ray``): the ``ReplicaBackend`` of that mode.

Each replica gets a placement group of one bundle sized from the variant's instance type
(``executors/instance_types.py``), aimed at the alive node that fits it and holds the fewest replicas of the
same variant (a soft target: Ray places it elsewhere when that node is full), so a variant with two instances
lands on two nodes when the cluster has room. Once the bundle is placed, the node's launcher
(``executors/ray.py``'s ``_NodeLauncher``, shared with job agents) starts the model server there with the
ordinary ``ReplicaManager``, listening on the node's address and requiring the replica's token. The router
reaches it by that address; the control plane pings it directly (no Ray call on the health-check or request
path). As with jobs, model and log paths must be the same on every node (one machine, or a shared home).

A replica is running while its node is alive and its launcher says its server process is: the deployment
reconciler replaces one whose node died (it already replaces dead replicas), and the router, which retries
a request on another instance of the variant when a replica refuses the connection, loses no request while
the variant has another instance.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from opensage.executors.instance_types import InstanceTypes
from opensage.executors.ray import (
    CALL_TIMEOUT,
    CAPACITY_MESSAGE,
    REPLICA_GROUP_TAG,
    RayExecutor,
    active_executor,
    namespace_for,
)
from opensage.serving.replicas import STOP_GRACE_SECONDS, Replica, ReplicaManager, new_token, ping

log = logging.getLogger(__name__)

DEFAULT_INSTANCE_TYPE = "ml.m5.large"  # a serverless variant has none
PLACEMENT_WAIT_SECONDS = 60.0  # a replica's bundle not placed by then: the replica fails, its log says why
NODES_REFRESH_SECONDS = 0.5
SUSPECT_SECONDS = 60.0  # a node whose launcher did not answer gets no new replica for this long


class RayReplicaManager:
    """Places endpoint replicas on the Ray cluster; replicas it did not place (no ``placement``: started by
    a platform without Ray on this home) are handled by the local ``ReplicaManager``."""

    def __init__(self, address: str | None, home: Path, instance_types: InstanceTypes | None = None,
                 local: ReplicaManager | None = None, placement_wait: float = PLACEMENT_WAIT_SECONDS) -> None:
        self.address = address or "auto"
        self.namespace = namespace_for(home)
        self.instance_types = instance_types
        self.local = local or ReplicaManager()
        self.placement_wait = placement_wait
        self._executor: RayExecutor | None = None
        self._nodes: dict[str, bool] = {}  # node id -> alive
        self._nodes_at = 0.0
        # Nodes whose launcher failed to answer: Ray takes ~15-30 s to declare a lost node dead, and a
        # replacement aimed there meanwhile would wait for it.
        self._suspect: dict[str, float] = {}

    # -- the cluster ---------------------------------------------------------------------------------
    def executor(self) -> RayExecutor:
        """The process's connected RayExecutor (``opensage up`` made it), else one of our own."""
        if self._executor is None:
            self._executor = active_executor() or RayExecutor(self.address, self.namespace, self.instance_types)
            self._executor.connect()
        return self._executor

    def _alive_nodes(self) -> dict[str, bool]:
        import ray

        now = time.monotonic()
        if now - self._nodes_at > NODES_REFRESH_SECONDS:
            self._nodes = {n["NodeID"]: bool(n.get("Alive")) for n in ray.nodes()}
            self._nodes_at = now
        return self._nodes

    def _prefix(self, group: str | None) -> str:
        """Placement-group names of one variant's replicas share this prefix (found again after a restart)."""
        digest = hashlib.sha1((group or "").encode()).hexdigest()[:8]
        return f"{self.namespace}-{REPLICA_GROUP_TAG}{digest}-"

    def _target_node(self, bundle: dict[str, float], group: str | None) -> str | None:
        """The alive node fitting ``bundle`` with the fewest replicas of ``group`` (then the most free CPU)."""
        import ray
        from ray.util.placement_group import placement_group_table

        prefix = self._prefix(group)
        counts: dict[str, int] = {}
        for info in placement_group_table().values():
            if (info.get("name") or "").startswith(prefix) and info.get("state") == "CREATED":
                for node in (info.get("bundles_to_node_id") or {}).values():
                    counts[node] = counts.get(node, 0) + 1
        try:  # a tie-break only (a private Ray helper: never let it fail a start)
            from ray._private.state import available_resources_per_node

            free = available_resources_per_node()
        except Exception:  # noqa: BLE001
            free = {}
        fitting = [n["NodeID"] for n in ray.nodes() if n.get("Alive")
                   and all(n.get("Resources", {}).get(k, 0) >= v for k, v in bundle.items())]
        now = time.monotonic()
        trusted = [n for n in fitting if now - self._suspect.get(n, -SUSPECT_SECONDS) >= SUSPECT_SECONDS]
        fitting = trusted or fitting
        if not fitting:
            return None
        return min(fitting, key=lambda n: (counts.get(n, 0), -free.get(n, {}).get("CPU", 0)))

    # -- ReplicaBackend ------------------------------------------------------------------------------
    def start(self, model_dir: Path, kind: str, environment: dict[str, str], log_path: Path,
              python: str | None = None, token: str | None = None, instance_type: str | None = None,
              group: str | None = None) -> Replica:
        """Place one bundle for the replica, then start its model server on that node. Waits for the bundle
        (up to ``placement_wait``); a replica that cannot be placed is returned dead, its log saying why."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        ex = self.executor()
        itype = instance_type or DEFAULT_INSTANCE_TYPE
        res = ex.instance_types.resources(itype)
        bundle = res.bundle()
        token = token or new_token()  # off loopback a token is mandatory
        name = f"{self._prefix(group)}{uuid.uuid4().hex[:12]}"
        target = self._target_node(bundle, group)
        pg = placement_group([bundle], strategy="STRICT_PACK", name=name, lifetime="detached",
                             _soft_target_node_id=target)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            ray.get(pg.ready(), timeout=self.placement_wait)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(pg)
            message = (f"{CAPACITY_MESSAGE} The Ray cluster could not place 1 x {itype} ({res.describe()}) for "
                       f"this endpoint instance within {self.placement_wait:.0f} s.")
            with open(log_path, "a") as fh:
                fh.write(message + "\n")
            log.warning("ray: endpoint replica %s: %s", group, message)
            return Replica(0, 0, str(log_path), token=token, placement={"group": name, "unplaced": True})
        from ray.util.placement_group import placement_group_table

        node = placement_group_table(pg)["bundles_to_node_id"][0]
        launcher = ex._launcher(node)
        try:
            state = ray.get(launcher.start_replica.remote(str(model_dir), kind, environment, str(log_path), token,
                                                          int(res.gpus)), timeout=120)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
            remove_placement_group(pg)
            with open(log_path, "a") as fh:
                fh.write(f"could not start the model server on Ray node {node}: {exc}\n")
            return Replica(0, 0, str(log_path), token=token, placement={"group": name, "unplaced": True})
        replica = Replica.from_state(state)
        replica.placement = {"group": name, "node": node, "instance_type": itype}
        log.info("ray: endpoint replica %s on node %s (%s:%d), %s (%s)", group, node[:12], replica.host,
                 replica.port, itype, res.describe())
        return replica

    def running(self, replica: Replica) -> bool:
        import ray

        placement = replica.placement
        if placement is None:
            return self.local.running(replica)
        if placement.get("unplaced") or not replica.pid:
            return False
        node = placement.get("node")
        if not self._alive_nodes().get(node, False):
            return False  # the node died, and the model server with it
        if ping(replica.host, replica.port, 2.0, replica.token):
            return True  # answering: no Ray call needed (this runs for every replica on every pass)
        try:
            launcher = self.executor()._launcher(node)
            return bool(ray.get(launcher.replica_running.remote(_server_state(replica)), timeout=CALL_TIMEOUT))
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
            # The launcher is busy, or its node is going: the server's own answer decides.
            self._suspect[node] = time.monotonic()
            self.executor()._forget_launcher(node)
            return ping(replica.host, replica.port, 2.0, replica.token)

    def healthy(self, replica: Replica, timeout: float = 2.0) -> bool:
        if replica.placement is not None and not replica.pid:
            return False
        return ping(replica.host, replica.port, timeout, replica.token)

    def stop(self, replica: Replica, grace: float = STOP_GRACE_SECONDS, wait: bool = True) -> None:
        import ray
        from ray.util.placement_group import get_placement_group, remove_placement_group

        placement = replica.placement
        if placement is None:
            self.local.stop(replica, grace=grace, wait=wait)
            return
        node = placement.get("node")
        if replica.pid and node and self._alive_nodes().get(node, False):
            try:
                # Waited for even when not ``wait`` (the launcher then only sends SIGTERM): a call merely
                # submitted can be lost when this process exits right after (platform shutdown).
                ref = self.executor()._launcher(node).stop_replica.remote(_server_state(replica), grace, wait)
                ray.get(ref, timeout=(grace if wait else 0.0) + CALL_TIMEOUT)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                log.warning("ray: could not stop the endpoint replica on node %s", node)
        if placement.get("group"):  # give the instance's resources back
            try:
                remove_placement_group(get_placement_group(placement["group"]))
            except Exception:  # noqa: BLE001 - removed already, or never placed
                pass

    def exit_status(self, replica: Replica) -> str:
        import ray

        placement = replica.placement
        if placement is None:
            return self.local.exit_status(replica)
        node = placement.get("node")
        if placement.get("unplaced"):
            return "never placed"
        if node and not self._alive_nodes().get(node, False):
            return f"its Ray node {node[:12]} died"
        if time.monotonic() - self._suspect.get(node, -SUSPECT_SECONDS) < SUSPECT_SECONDS:
            # its launcher did not answer just now: do not wait for it again
            return f"its Ray node {node[:12]} does not answer"
        try:
            return str(ray.get(self.executor()._launcher(node).replica_exit_status.remote(_server_state(replica)),
                               timeout=CALL_TIMEOUT))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return ""

    def log_tail(self, replica: Replica, lines: int = 15) -> str:
        return self.local.log_tail(replica, lines)  # the log is on the shared path


def _server_state(replica: Replica) -> dict[str, Any]:
    """What the node's ReplicaManager knows the server by (not the token)."""
    state = replica.to_state()
    state.pop("token", None)
    state.pop("placement", None)
    return state
