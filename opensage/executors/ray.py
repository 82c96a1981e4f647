"""Runs job agents on a Ray cluster (the only module that imports ray; ``opensage up --executor ray``).

Each job (training, processing, batch transform) gets one placement group with one bundle per instance, sized
from its instance type (``executors/instance_types.py``): STRICT_SPREAD for multi-host training when enough
nodes can each hold an instance (hosts on different machines, as on SageMaker), PACK otherwise. The bundle
holds the instance's resources; once it is placed, the launcher actor of the bundle's node (``_NodeLauncher``,
one per node, detached, no resources of its own) starts the usual agent there
(``python -m opensage.runner.agent <jobdir>``) as its child. The agent does on that node exactly what it does
locally (fetches its own channels from S3, jobexec isolation when root, logs / events / result files), so data
never travels through Ray's object store and the control plane stays the only writer of job state. Starting
through a warm launcher instead of an actor per instance saves a Ray worker start (~1 s here) per job.

The job directory must be the same path on every node (one machine, or the home's ``jobs`` directory on a
shared filesystem): results come back through files there, as with the local executor.

Handles are ``ray:<placement group name>-<host index>``. Groups and launchers are detached and named in a
namespace per home, so a restarted control plane finds them again (``adopt``; ``agent.launched`` in the job
dir makes each start happen once). A janitor thread removes a group once every host has a result (or, for a
group no active job claims, after a grace period). A job whose group cannot be placed yet waits: the executor
writes SageMaker's "Insufficient capacity" wording into the job's events (-> SecondaryStatus) and log once,
and the job starts when the cluster has room.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage.executors.instance_types import InstanceResources, InstanceTypes

log = logging.getLogger(__name__)

HANDLE_PREFIX = "ray:"
GROUP_PREFIX = "opensage"
DEFAULT_INSTANCE_TYPE = {"training": "ml.m5.large", "processing": "ml.m5.xlarge", "transform": "ml.m5.large"}
# SageMaker's words while it waits for instances (SecondaryStatus StatusMessage of a job short of capacity).
CAPACITY_MESSAGE = "Insufficient capacity error from EC2 while launching instances, retrying!"
CAPACITY_NOTICE_SECONDS = 1.0  # a group still pending after this long is reported as short of capacity
# A job still unplaced after this long fails as SageMaker's do ("failedReason begins with CapacityError", per
# AWS Batch's guide to SageMaker jobs); SageMaker publishes no duration, so it is the operator's setting
# (OPENSAGE_RAY_CAPACITY_WAIT_SECONDS; 0 waits for ever).
CAPACITY_WAIT_SECONDS = 3600.0
CAPACITY_FAILURE = ("CapacityError: Unable to provision requested ML compute capacity. Please retry using a "
                    "different ML instance type.")
JANITOR_SECONDS = 1.0
CALL_TIMEOUT = 5.0
LAUNCH_WAIT_SECONDS = 0.5  # submit waits this long for its bundle before leaving the launch to is_running
REPLICA_GROUP_TAG = "ep-"  # endpoint replicas' placement groups: <namespace>-ep-...
UNCLAIMED_GRACE_SECONDS = 120.0  # a group no active job adopted by then belongs to a job that is over


def namespace_for(home: Path) -> str:
    """One Ray namespace per OpenSage home: two platforms on one cluster never see each other's actors."""
    return f"{GROUP_PREFIX}-{hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:10]}"


def instance_type_of(jobdir: Path, kind: str) -> str:
    """The job instance's type, from the files the reconcilers already write into the job directory."""
    for rel in ("ml/input/config/resourceconfig.json", "ml/config/resourceconfig.json"):
        try:
            return json.loads((jobdir / rel).read_text())["current_instance_type"]
        except (OSError, ValueError, KeyError):
            continue
    try:  # batch transform: the request is in the worker's file
        from opensage.runner.transform_worker import TRANSFORM_FILE

        req = json.loads((jobdir / TRANSFORM_FILE).read_text())["request"]
        return req["TransformResources"]["InstanceType"]
    except (OSError, ValueError, KeyError, ImportError):
        return DEFAULT_INSTANCE_TYPE.get(kind, "ml.m5.large")


class _NodeLauncher:
    """One per node and namespace (a detached Ray actor holding no resources): starts job agents there.

    A job instance's resources are held by its placement-group bundle, so starting its agent needs no Ray
    worker of its own (a fresh worker costs ~1 s; this call, milliseconds). Threaded (``max_concurrency``).
    Everything it answers is also on disk (``agent.launched``, ``agent.pid``, ``result.json``), so a restarted
    launcher or control plane sees the same truth.
    """

    def __init__(self, python: str | None = None) -> None:
        import ray

        self.python = python or sys.executable
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.gpu_ids: dict[str, list[int]] = {}
        node_id = ray.get_runtime_context().get_node_id()
        node = next((n for n in ray.nodes() if n.get("NodeID") == node_id), {})
        self.node_gpus = int(node.get("Resources", {}).get("GPU", 0))
        self._replicas: Any = None  # a ReplicaManager for the endpoint replicas of this node

    def ping(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def start(self, jobdir: str, gpus: int = 0) -> bool:
        """Start the agent of ``jobdir`` once (ever: ``agent.launched`` is created exclusively); False if an
        earlier call (or launcher) already did, or the instance was stopped before it could start."""
        from opensage.executors.local import AGENT_MODULE, agent_env

        for done in [d for d, proc in self.procs.items() if proc.poll() is not None]:  # reap finished agents
            self.procs.pop(done, None)
            self.gpu_ids.pop(done, None)
        jd = Path(jobdir)
        if jobdir in self.procs or (jd / "result.json").exists():
            return False
        try:
            os.close(os.open(jd / "agent.launched", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        # A Ray worker's environment, less what is Ray's own: the job gets no cluster address, and its
        # thread counts are the agent's business, as with the local executor.
        env = {k: v for k, v in agent_env().items()
               if not k.startswith("RAY_") and k not in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
        if gpus:
            used = {i for ids in self.gpu_ids.values() for i in ids}
            ids = [i for i in range(self.node_gpus) if i not in used][:gpus]
            self.gpu_ids[jobdir] = ids
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
        with open(jd / "agent.log", "ab") as out:
            self.procs[jobdir] = subprocess.Popen(
                [self.python, "-m", AGENT_MODULE, jobdir], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd=jobdir, env=env)
        return True

    def alive(self, jobdir: str) -> bool:
        proc = self.procs.get(jobdir)
        if proc is not None:
            if proc.poll() is None:
                return True
            self.procs.pop(jobdir, None)
            self.gpu_ids.pop(jobdir, None)
            return False
        return self._adopted_pid(jobdir) is not None

    def _adopted_pid(self, jobdir: str) -> int | None:
        """The agent of ``jobdir`` started by an earlier launcher, if it still runs (checked in /proc)."""
        from opensage.executors.local import recorded_agent

        return recorded_agent(jobdir)

    def signal(self, jobdir: str, sig: int, group: bool) -> None:
        proc = self.procs.get(jobdir)
        pid = proc.pid if proc is not None and proc.poll() is None else self._adopted_pid(jobdir)
        if pid is None:
            return
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def end_agent(self, jobdir: str) -> bool:
        """End the agent working in ``jobdir`` on this node - this launcher's child or one started by any
        other - with what it started (``LocalExecutor.end_agent_in``); False: none. A child of this launcher
        is reaped, so a later ``start`` of the dir is not refused."""
        from opensage.executors.local import LocalExecutor

        found = LocalExecutor(self.python).end_agent_in(Path(jobdir))
        proc = self.procs.pop(jobdir, None)
        self.gpu_ids.pop(jobdir, None)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("ray: the agent of %s did not end within 10 s of SIGKILL", jobdir)
        return found

    # -- endpoint replicas (executors/ray_replicas.py): the model server runs here, bound to this node's address
    def _replica_manager(self) -> Any:
        if self._replicas is None:
            from opensage.serving.replicas import ReplicaManager

            self._replicas = ReplicaManager(self.python)
        return self._replicas

    def start_replica(self, model_dir: str, kind: str, environment: dict[str, str], log_path: str,
                      token: str, gpus: int = 0) -> dict[str, Any]:
        """Start a model server on this node (listening on the node's address, token required); its state."""
        import ray

        env = dict(environment)
        if gpus:  # the node's GPUs no job agent or other replica of this launcher holds
            used = {i for ids in self.gpu_ids.values() for i in ids}
            ids = [i for i in range(self.node_gpus) if i not in used][:gpus]
            self.gpu_ids[log_path] = ids
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
        replica = self._replica_manager().start(Path(model_dir), kind, env, Path(log_path), token=token,
                                                host=ray.util.get_node_ip_address())
        return replica.to_state()

    def replica_running(self, state: dict[str, Any]) -> bool:
        from opensage.serving.replicas import Replica

        return self._replica_manager().running(Replica.from_state(state))

    def replica_exit_status(self, state: dict[str, Any]) -> str:
        from opensage.serving.replicas import Replica

        return self._replica_manager().exit_status(Replica.from_state(state))

    def stop_replica(self, state: dict[str, Any], grace: float, wait: bool = True) -> None:
        from opensage.serving.replicas import Replica

        self._replica_manager().stop(Replica.from_state(state), grace=grace, wait=wait)
        self.gpu_ids.pop(state.get("log", ""), None)

    def kill_job(self, jobdir: str) -> int:
        from opensage.executors.local import LocalExecutor

        self.signal(jobdir, signal.SIGKILL, group=True)
        self.procs.pop(jobdir, None)
        self.gpu_ids.pop(jobdir, None)
        return LocalExecutor().kill_job("0", Path(jobdir))


@dataclass
class _Group:
    """A job's placement group as this control plane knows it."""

    name: str
    count: int  # hosts; 0 for a group adopted from an earlier control plane (read from Ray when needed)
    instance_type: str = ""
    resources: InstanceResources | None = None
    strategy: str = ""
    jobdirs: dict[int, Path] = field(default_factory=dict)
    nodes: dict[int, str] = field(default_factory=dict)  # bundle index -> node id, once placed
    gpus: dict[int, int] = field(default_factory=dict)
    launched: set[int] = field(default_factory=set)
    since: float = field(default_factory=time.monotonic)
    noticed: bool = False


class RayExecutor:
    """The Executor protocol on a Ray cluster (see the module docstring)."""

    def __init__(self, address: str, namespace: str, instance_types: InstanceTypes | None = None,
                 python: str | None = None, capacity_notice_seconds: float = CAPACITY_NOTICE_SECONDS,
                 unclaimed_grace_seconds: float = UNCLAIMED_GRACE_SECONDS,
                 capacity_wait_seconds: float | None = CAPACITY_WAIT_SECONDS) -> None:
        self.address = address
        self.namespace = namespace
        self.instance_types = instance_types or InstanceTypes()
        self.python = python
        self.capacity_notice_seconds = capacity_notice_seconds
        self.unclaimed_grace_seconds = unclaimed_grace_seconds
        self.capacity_wait_seconds = capacity_wait_seconds or None  # None / 0: wait for ever
        self._groups: dict[str, _Group] = {}  # group name -> group
        self._pgs: dict[str, Any] = {}  # group name -> PlacementGroup
        self._open: dict[str, _Group] = {}  # job root dir -> the group its latest launch created
        self._launchers: dict[str, Any] = {}  # node id -> launcher actor handle
        self._lock = threading.RLock()
        self._janitor: threading.Thread | None = None
        self._closing = threading.Event()
        self._connected_at = 0.0
        self._dead_nodes: set[str] = set()  # refreshed by the janitor: agents there are gone
        self.dead_nodes_seen_at = 0.0  # when the janitor last refreshed ``_dead_nodes``
        # Jobs a local-executor platform started before this one took over the home (pid handles).
        from opensage.executors.local import LocalExecutor

        self._local = LocalExecutor(python)

    # -- connection ------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster as a driver (idempotent) and start a launcher on every node; raises with Ray's
        message if the cluster cannot be reached."""
        import ray

        with self._lock:
            if self._janitor is not None:
                return
            if not ray.is_initialized():
                ray.init(address=self.address, namespace=self.namespace, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
            self._connected_at = time.monotonic()
            launchers = [self._launcher(n["NodeID"]) for n in ray.nodes() if n.get("Alive")]
            try:  # warm before the first job (a launcher's first start is a Ray worker start, ~1 s)
                ray.get([launcher.ping.remote() for launcher in launchers], timeout=60)
            except ray.exceptions.GetTimeoutError:
                log.warning("ray: some node launchers did not answer within 60 s; jobs there start later")
            self._janitor = threading.Thread(target=self._janitor_loop, name="ray-janitor", daemon=True)
            self._janitor.start()
            global _ACTIVE
            _ACTIVE = self

    def close(self) -> None:
        """Stop the janitor after one last pass. Without it, a job that ended within the janitor's last second
        keeps its detached placement group, and so its CPUs, until a platform runs on this home again (seen:
        a two-host job's bundle left on a node, and a later endpoint could not place a replica there)."""
        self._closing.set()
        janitor = self._janitor
        if janitor is None:
            return
        janitor.join(timeout=JANITOR_SECONDS + CALL_TIMEOUT)
        try:
            self.collect_groups()
        except Exception:  # noqa: BLE001 - shutting down: the next platform on this home collects the rest
            log.warning("ray: last placement-group janitor pass failed", exc_info=True)

    def cluster_summary(self) -> str:
        import ray

        self.connect()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        return (f"{len(nodes)} node(s), {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU, "
                f"{total.get('memory', 0) / 2**30:.1f} GiB")

    # -- Executor protocol -----------------------------------------------------------------------------
    def submit(self, jobdir: Path) -> str:
        from opensage.runner.jobspec import JobSpec

        self.connect()
        jobdir = Path(jobdir).resolve()
        spec = JobSpec.read(jobdir)
        with self._lock:
            group = self._group_for(jobdir, spec)
            group.jobdirs[spec.host_index] = jobdir
        # A just-created group is usually placed within milliseconds: start the agent now rather than on
        # the next reconcile pass; a group already known to wait is not waited for again.
        waited = time.monotonic() - group.since
        self._try_launch(group, spec.host_index, wait=max(0.0, LAUNCH_WAIT_SECONDS - waited))
        return f"{HANDLE_PREFIX}{group.name}-{spec.host_index}"

    def end_agent_in(self, jobdir: Path) -> bool:
        """End an agent working in ``jobdir`` that no handle was recorded for, on whichever node runs it (every
        live node's launcher looks on its node; a local-executor platform's agent is looked for here)."""
        import ray

        jobdir = Path(jobdir).resolve()
        found = self._local.end_agent_in(jobdir)
        self.connect()
        launchers = [self._launcher(n["NodeID"]) for n in ray.nodes() if n.get("Alive")]
        for launcher in launchers:
            try:
                found = bool(ray.get(launcher.end_agent.remote(str(jobdir)), timeout=CALL_TIMEOUT + 15)) or found
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                log.warning("ray: could not look for an agent of %s on a node", jobdir)
        return found

    def adopt(self, handle: str, jobdir: Path) -> None:
        """A handle from an earlier control plane: remember its job dir."""
        if not handle.startswith(HANDLE_PREFIX):
            self._local.adopt(handle, jobdir)
            return
        group = self._group(handle)
        group.jobdirs[_split(handle)[1]] = Path(jobdir).resolve()

    def is_running(self, handle: str) -> bool:
        import ray

        if not handle.startswith(HANDLE_PREFIX):
            return self._local.is_running(handle)
        group, index = self._group(handle), _split(handle)[1]
        if index not in group.launched:
            if self._state(group) == "REMOVED":
                return False  # killed, or collected after the job ended
            if not self._try_launch(group, index):
                self._maybe_notice(group)
                if self._capacity_wait_over(group):
                    self._give_up(group)
                    return False
                return True  # waiting for capacity is running, as far as the job is concerned
        jobdir = group.jobdirs.get(index)
        if group.nodes.get(index) in self._dead_nodes:
            return False  # the node died, and the agent with it
        launcher = self._launcher(group.nodes.get(index))
        if jobdir is None or launcher is None:
            return False
        try:
            return bool(ray.get(launcher.alive.remote(str(jobdir)), timeout=CALL_TIMEOUT))
        except ray.exceptions.GetTimeoutError:
            return True  # busy: ask again next pass
        except ray.exceptions.RayError:
            self._forget_launcher(group.nodes.get(index))
            return False  # the node (or its launcher) is gone, and the agent with it

    def stop(self, handle: str) -> None:
        """SIGTERM to the agent; an instance still waiting for capacity never starts and reports stopped."""
        from opensage.runner.jobspec import JobResult

        if not handle.startswith(HANDLE_PREFIX):
            self._local.stop(handle)
            return
        group, index = self._group(handle), _split(handle)[1]
        if index in group.launched:
            self._signal(group, index, signal.SIGTERM, group_too=False)
            return
        jobdir = group.jobdirs.get(index)
        if jobdir is not None and JobResult.read(jobdir) is None:
            # Written before a late launch could start it: the launcher refuses a dir with a result.
            JobResult(exit_code=None, stopped=True).write(jobdir)
            if (jobdir / "agent.launched").exists():  # lost the race: the agent did start
                self._signal(group, index, signal.SIGTERM, group_too=False)

    def kill(self, handle: str) -> None:
        if not handle.startswith(HANDLE_PREFIX):
            self._local.kill(handle)
            return
        group, index = self._group(handle), _split(handle)[1]
        self._signal(group, index, signal.SIGKILL, group_too=True)
        self._remove_group(group)

    def kill_job(self, handle: str, jobdir: Path) -> int:
        """Kill what a dead agent left on its node (by the job's uid / marker, as the local executor does),
        and give the job's resources back."""
        import ray

        if not handle.startswith(HANDLE_PREFIX):
            return self._local.kill_job(handle, jobdir)
        group, index = self._group(handle), _split(handle)[1]
        launcher = self._launcher(group.nodes.get(index))
        killed = 0
        if launcher is not None:
            try:
                killed = int(ray.get(launcher.kill_job.remote(str(Path(jobdir).resolve())), timeout=CALL_TIMEOUT))
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                log.warning("ray: could not clean up %s on its node", jobdir)
        self._remove_group(group)
        return killed

    # -- placement -------------------------------------------------------------------------------------
    def _group_for(self, jobdir: Path, spec: Any) -> _Group:
        """The job's placement group, created with the first host's submit (the reconcilers submit every
        host of a job in one pass; the group name is new per launch, so a rerun never meets old files)."""
        key = str(jobdir.parent)
        open_group = self._open.get(key)
        if spec.host_index > 0 and open_group is not None and open_group.count == spec.host_count:
            return open_group
        from ray.util.placement_group import placement_group

        itype = instance_type_of(jobdir, spec.kind)
        res = self.instance_types.resources(itype)
        strategy = "PACK"
        if spec.kind == "training" and spec.host_count > 1 and self._nodes_fitting(res) >= spec.host_count:
            strategy = "STRICT_SPREAD"
        # Named under the namespace: the janitor only ever looks at this home's groups.
        name = f"{self.namespace}-{hashlib.sha1(key.encode()).hexdigest()[:8]}{uuid.uuid4().hex[:8]}"
        pg = placement_group([res.bundle() for _ in range(spec.host_count)], strategy=strategy, name=name,
                             lifetime="detached")
        group = _Group(name, spec.host_count, itype, res, strategy,
                       gpus={i: res.gpus for i in range(spec.host_count)})
        self._groups[name], self._pgs[name], self._open[key] = group, pg, group
        log.info("ray: job %s: placement group %s, %d x %s (%s), %s", spec.job_name, name, spec.host_count,
                 itype, res.describe(), strategy)
        return group

    def _nodes_fitting(self, res: InstanceResources) -> int:
        import ray

        need = res.bundle()
        return sum(1 for n in ray.nodes() if n.get("Alive")
                   and all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items()))

    def _group(self, handle: str) -> _Group:
        name, _ = _split(handle)
        with self._lock:
            group = self._groups.get(name)
            if group is None:
                group = self._groups[name] = _Group(name, 0)
            return group

    def _pg(self, group_name: str) -> Any:
        pg = self._pgs.get(group_name)
        if pg is None:
            from ray.util.placement_group import get_placement_group

            pg = self._pgs[group_name] = get_placement_group(group_name)
        return pg

    def _table(self, group: _Group) -> dict[str, Any]:
        from ray.util.placement_group import placement_group_table

        self.connect()
        try:
            return placement_group_table(self._pg(group.name))
        except ValueError:  # no such group (removed long ago)
            return {"state": "REMOVED"}

    def _state(self, group: _Group) -> str:
        return str(self._table(group).get("state"))

    def _try_launch(self, group: _Group, index: int, wait: float = 0.0) -> bool:
        """Start host ``index``'s agent if its bundle is placed (waiting up to ``wait`` s for that);
        True once it is launched (by this call or earlier: the launcher starts each job dir once)."""
        import ray

        deadline = time.monotonic() + wait
        while True:
            table = self._table(group)
            if table.get("state") == "CREATED":
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        node = table["bundles_to_node_id"][index]
        bundle = (table.get("bundles") or {}).get(index) or {}
        group.nodes[index] = node
        jobdir = group.jobdirs.get(index)
        launcher = self._launcher(node)
        if jobdir is None or launcher is None:
            return False
        try:
            ray.get(launcher.start.remote(str(jobdir), int(bundle.get("GPU", 0))), timeout=CALL_TIMEOUT)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            log.warning("ray: could not start %s on node %s yet", jobdir, node)
            self._forget_launcher(node)
            return False
        group.launched.add(index)
        return True

    def _maybe_notice(self, group: _Group) -> None:
        """Once per job: SecondaryStatus + a log line in SageMaker's capacity wording, saying what is missing."""
        with self._lock:
            if group.noticed or not group.jobdirs:
                return
            if time.monotonic() - group.since < self.capacity_notice_seconds:
                return
            group.noticed = True
        what = (f"{group.count} x {group.instance_type} ({group.resources.describe()} each, {group.strategy})"
                if group.count and group.resources else "the job's instances")
        message = (f"{CAPACITY_MESSAGE} The Ray cluster cannot place {what} now; the job starts when it can "
                   f"(stop it to give up).")
        now = time.time()
        first = group.jobdirs[min(group.jobdirs)]
        _append(first / "events.jsonl",
                json.dumps({"time": now, "status": "LaunchingMLInstances", "message": message}))
        for index, jobdir in group.jobdirs.items():
            _append(jobdir / "logs" / _log_name(jobdir, index), f"{int(now * 1000)} {message}")
        log.warning("ray: placement group %s waits for capacity: %s", group.name, message)

    def _capacity_wait_over(self, group: _Group) -> bool:
        return (self.capacity_wait_seconds is not None
                and time.monotonic() - group.since >= self.capacity_wait_seconds)

    def _give_up(self, group: _Group) -> None:
        """The job waited ``capacity_wait_seconds`` for its instances: every host that never started gets a
        result with SageMaker's CapacityError reason (the reconciler fails the job with it), and the pending
        group is removed so it can never start late."""
        from opensage.runner.jobspec import JobResult

        self._remove_group(group)
        waited = f"{self.capacity_wait_seconds:g} s" if self.capacity_wait_seconds else "too long"
        note = f"{CAPACITY_FAILURE} (the Ray cluster could not place the job's instances within {waited})"
        for index, jobdir in group.jobdirs.items():
            if index in group.launched or JobResult.read(jobdir) is not None:
                continue
            if (jobdir / "agent.launched").exists():  # started after all, in a race with the removal
                continue
            JobResult(exit_code=None, failure_reason=CAPACITY_FAILURE).write(jobdir)
            _append(jobdir / "logs" / _log_name(jobdir, index), f"{int(time.time() * 1000)} {note}")
        log.warning("ray: placement group %s: %s", group.name, note)

    # -- launchers -------------------------------------------------------------------------------------
    def _launcher(self, node_id: str | None) -> Any:
        """The node's launcher actor (created detached on that node if there is none)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not node_id:
            return None
        with self._lock:
            actor = self._launchers.get(node_id)
            if actor is not None:
                return actor
            name = f"{self.namespace}-launcher-{node_id[:16]}"
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                actor = ray.remote(_NodeLauncher).options(
                    name=name, namespace=self.namespace, lifetime="detached", get_if_exists=True, num_cpus=0,
                    max_concurrency=16, max_restarts=-1,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(self.python)
            self._launchers[node_id] = actor
            return actor

    def _forget_launcher(self, node_id: str | None) -> None:
        with self._lock:
            self._launchers.pop(node_id or "", None)

    def _signal(self, group: _Group, index: int, sig: int, group_too: bool) -> None:
        import ray

        jobdir = group.jobdirs.get(index)
        if index not in group.nodes and self._state(group) == "CREATED":
            group.nodes[index] = self._table(group)["bundles_to_node_id"][index]
        launcher = self._launcher(group.nodes.get(index))
        if launcher is None or jobdir is None:
            return
        try:
            ray.get(launcher.signal.remote(str(jobdir), sig, group_too), timeout=CALL_TIMEOUT)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            log.warning("ray: could not signal the agent of %s", jobdir)

    # -- janitor ---------------------------------------------------------------------------------------
    def _remove_group(self, group: _Group) -> None:
        from ray.util.placement_group import remove_placement_group

        if self._state(group) == "REMOVED":
            return
        try:
            remove_placement_group(self._pg(group.name))
        except Exception:  # noqa: BLE001 - removed meanwhile
            log.debug("ray: placement group %s already gone", group.name)

    def _janitor_loop(self) -> None:
        import ray

        while not self._closing.wait(JANITOR_SECONDS):
            try:
                self._dead_nodes = {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}
                self.dead_nodes_seen_at = time.monotonic()
                self.collect_groups()
            except Exception:  # noqa: BLE001 - a janitor pass must never end the thread
                log.exception("ray: placement-group janitor pass failed")

    def collect_groups(self) -> list[str]:
        """Give back the resources of jobs that are over: remove this namespace's placement groups whose
        every host has a result, and those no active job claimed since this control plane started (their
        job ended while no control plane ran). Returns the removed names."""
        from ray.util.placement_group import placement_group_table

        removed = []
        prefix = f"{self.namespace}-"
        unclaimed_ok = time.monotonic() - self._connected_at > self.unclaimed_grace_seconds
        for info in placement_group_table().values():
            name = info.get("name") or ""
            if (not name.startswith(prefix) or "-launcher-" in name or name.startswith(prefix + REPLICA_GROUP_TAG)
                    or info.get("state") == "REMOVED"):  # endpoint replicas' groups: ray_replicas.py removes them
                continue
            group = self._groups.get(name)
            if group is None:
                done = unclaimed_ok
            else:
                count = group.count or len(info.get("bundles") or {})
                done = len(group.jobdirs) == count and all(
                    (d / "result.json").exists() for d in group.jobdirs.values())
            if not done:
                continue
            self._remove_group(group or _Group(name, 0))
            removed.append(name)
            with self._lock:
                self._groups.pop(name, None)
                self._pgs.pop(name, None)
                self._open = {k: g for k, g in self._open.items() if g.name != name}
        return removed


_ACTIVE: RayExecutor | None = None  # the connected executor of this process (endpoint replicas share it)


def active_executor() -> RayExecutor | None:
    return _ACTIVE


def _split(handle: str) -> tuple[str, int]:
    name = handle[len(HANDLE_PREFIX):]
    group, _, index = name.rpartition("-")
    return group, int(index)


def _log_name(jobdir: Path, index: int) -> str:
    """The log file of a host's job dir that becomes its log stream (a transform's data log, else algo-N)."""
    from opensage.runner.transform_worker import DATA_LOG, TRANSFORM_FILE

    return DATA_LOG if (jobdir / TRANSFORM_FILE).exists() else f"algo-{index + 1}.log"


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
