"""Runs job agents on a Ray cluster (the only module that imports ray; ``opensage up --executor ray``).

Each job (training, processing, batch transform) gets one placement group with one bundle per instance, sized
from its instance type (``executors/instance_types.py``): STRICT_SPREAD for multi-host training when enough
nodes can each hold an instance (hosts on different machines, as on SageMaker), PACK otherwise. Each instance
is a detached named actor (``_AgentHost``) on its bundle that starts the usual agent
(``python -m opensage.runner.agent <jobdir>``) on its node as a subprocess: the agent does there exactly what it
does locally (fetches its own channels from S3, jobexec isolation when root, logs / events / result files), so
data never travels through Ray's object store and the control plane stays the only writer of job state.

The job directory must be the same path on every node (one machine, or the home's ``jobs`` directory on a
shared filesystem): results come back through files there, as with the local executor.

Handles are ``ray:<actor name>``; the actors and placement groups are detached and named in a namespace of
their own per home, so a restarted control plane finds them again (``adopt``). An actor ends itself when its
agent exits; a placement group none of whose actors is left is removed by a janitor thread. A job whose group
cannot be placed yet waits: the executor writes SageMaker's "Insufficient capacity" wording into the job's
events (-> SecondaryStatus) and log once, and the job starts when the cluster has room.
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
JANITOR_SECONDS = 2.0
CALL_TIMEOUT = 10.0


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


class _AgentHost:
    """One job instance on a Ray node: starts the agent there and answers for it (a Ray actor).

    Threaded (``max_concurrency``): ``run`` blocks until the agent exits while ``alive`` / ``signal`` answer.
    """

    def __init__(self, jobdir: str, python: str | None = None) -> None:
        self.jobdir = jobdir
        self.python = python or sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.cancelled = False

    def run(self) -> int | None:
        import ray

        from opensage.executors.local import AGENT_MODULE, agent_env

        if not self.cancelled:
            env = {k: v for k, v in agent_env().items() if not k.startswith("RAY_")}  # jobs get no cluster address
            with open(Path(self.jobdir) / "agent.log", "ab") as out:
                self.proc = subprocess.Popen(
                    [self.python, "-m", AGENT_MODULE, self.jobdir], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd=self.jobdir, env=env)
            code = self.proc.wait()
        else:
            code = None
        ray.actor.exit_actor()  # frees the bundle; the janitor removes the group once every host is done
        return code

    def alive(self) -> bool:
        return not self.cancelled and (self.proc is None or self.proc.poll() is None)

    def node(self) -> str:
        import ray

        return ray.util.get_node_ip_address()

    def signal(self, sig: int, group: bool) -> None:
        if self.proc is None:
            self.cancelled = sig in (signal.SIGTERM, signal.SIGKILL)  # not started yet: never start
            return
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig) if group else os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill_job(self) -> int:
        from opensage.executors.local import LocalExecutor

        handle = str(self.proc.pid) if self.proc is not None else "0"
        return LocalExecutor().kill_job(handle, Path(self.jobdir))


@dataclass
class _Group:
    """A job's placement group as this control plane knows it."""

    name: str
    count: int
    instance_type: str
    resources: InstanceResources
    strategy: str
    jobdirs: dict[int, Path] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)
    noticed: bool = False
    placed: bool = False


class RayExecutor:
    """The Executor protocol on a Ray cluster (see the module docstring)."""

    def __init__(self, address: str, namespace: str, instance_types: InstanceTypes | None = None,
                 python: str | None = None, capacity_notice_seconds: float = CAPACITY_NOTICE_SECONDS) -> None:
        self.address = address
        self.namespace = namespace
        self.instance_types = instance_types or InstanceTypes()
        self.python = python
        self.capacity_notice_seconds = capacity_notice_seconds
        self._groups: dict[str, _Group] = {}  # group name -> group
        self._pgs: dict[str, Any] = {}  # group name -> PlacementGroup
        self._open: dict[str, _Group] = {}  # job root dir -> the group its latest launch created
        self._lock = threading.RLock()
        self._janitor: threading.Thread | None = None
        self._closing = threading.Event()
        self._empty_seen: set[str] = set()

    # -- connection ------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster as a driver (idempotent); raises with Ray's message if it cannot be reached."""
        import ray

        with self._lock:
            if not ray.is_initialized():
                ray.init(address=self.address, namespace=self.namespace, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
            if self._janitor is None:
                self._janitor = threading.Thread(target=self._janitor_loop, name="ray-janitor", daemon=True)
                self._janitor.start()

    def close(self) -> None:
        self._closing.set()

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
            index = spec.host_index
            group.jobdirs[index] = jobdir
            name = f"{group.name}-{index}"
            actor = self._actor_class().options(
                name=name, namespace=self.namespace, lifetime="detached", max_concurrency=4, max_restarts=0,
                scheduling_strategy=self._strategy(group.name, index), **self._actor_resources(group.resources),
            ).remote(str(jobdir), self.python)
            actor.run.remote()  # queued until the bundle is placed; the actor ends itself after the agent
        return HANDLE_PREFIX + name

    def adopt(self, handle: str, jobdir: Path) -> None:
        """A handle from an earlier control plane: remember its job dir (for the capacity notice)."""
        group_name, index = _split(handle)
        with self._lock:
            group = self._groups.get(group_name)
            if group is None:
                group = self._groups[group_name] = _Group(group_name, 0, "", InstanceResources(0, 0), "")
            group.jobdirs[index] = Path(jobdir).resolve()

    def is_running(self, handle: str) -> bool:
        import ray

        actor = self._actor(handle)
        if actor is None:
            return False  # its agent exited (the actor ends itself), or its node died
        group_name, _ = _split(handle)
        if not self._placed(group_name):
            self._maybe_notice(group_name)
            return True  # waiting for capacity is running as far as the job is concerned
        try:
            return bool(ray.get(actor.alive.remote(), timeout=CALL_TIMEOUT))
        except ray.exceptions.GetTimeoutError:
            return True  # busy (e.g. the worker still starting): ask again next pass
        except ray.exceptions.RayActorError:
            return False

    def stop(self, handle: str) -> None:
        """SIGTERM to the agent; a job still waiting for capacity never starts and reports itself stopped."""
        group_name, index = _split(handle)
        if not self._placed(group_name):
            self._cancel(handle, group_name, index)
            return
        self._signal(handle, signal.SIGTERM, group=False)

    def kill(self, handle: str) -> None:
        import ray

        self._signal(handle, signal.SIGKILL, group=True)
        actor = self._actor(handle)
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def kill_job(self, handle: str, jobdir: Path) -> int:
        """Kill what a dead agent left on its node (by the job's uid / marker, as the local executor does)."""
        import ray

        actor = self._actor(handle)
        if actor is None:
            return 0
        try:
            killed = int(ray.get(actor.kill_job.remote(), timeout=CALL_TIMEOUT))
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            killed = 0
        self.kill(handle)
        return killed

    # -- placement -------------------------------------------------------------------------------------
    def _group_for(self, jobdir: Path, spec: Any) -> _Group:
        """The job's placement group, created with the first host's submit (the reconcilers submit every
        host of a job in one pass; the group name is new per launch, so a rerun never meets old actors)."""
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
        group = _Group(name, spec.host_count, itype, res, strategy)
        self._groups[name], self._pgs[name], self._open[key] = group, pg, group
        log.info("ray: job %s: placement group %s, %d x %s (%s), %s", spec.job_name, name, spec.host_count,
                 itype, res.describe(), strategy)
        return group

    def _nodes_fitting(self, res: InstanceResources) -> int:
        import ray

        need = res.bundle()
        return sum(1 for n in ray.nodes() if n.get("Alive")
                   and all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items()))

    def _strategy(self, group_name: str, index: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return PlacementGroupSchedulingStrategy(placement_group=self._pg(group_name),
                                                placement_group_bundle_index=index)

    @staticmethod
    def _actor_resources(res: InstanceResources) -> dict[str, Any]:
        bundle = res.bundle()
        out: dict[str, Any] = {"num_cpus": bundle.pop("CPU"), "memory": bundle.pop("memory")}
        if "GPU" in bundle:
            out["num_gpus"] = bundle.pop("GPU")
        if bundle:
            out["resources"] = bundle
        return out

    def _actor_class(self) -> Any:
        import ray

        cls = getattr(self, "_remote_cls", None)
        if cls is None:
            cls = self._remote_cls = ray.remote(_AgentHost)
        return cls

    def _pg(self, group_name: str) -> Any:
        pg = self._pgs.get(group_name)
        if pg is None:
            from ray.util.placement_group import get_placement_group

            pg = self._pgs[group_name] = get_placement_group(group_name)
        return pg

    def _placed(self, group_name: str) -> bool:
        group = self._groups.get(group_name)
        if group is not None and group.placed:
            return True
        from ray.util.placement_group import placement_group_table

        try:
            state = placement_group_table(self._pg(group_name)).get("state")
        except (ValueError, KeyError):
            return True  # the group is gone: the actor's own answer decides
        placed = state == "CREATED"
        if placed and group is not None:
            group.placed = True
        return placed

    def _maybe_notice(self, group_name: str) -> None:
        """Once per job: SecondaryStatus + a log line in SageMaker's capacity wording, saying what is missing."""
        with self._lock:
            group = self._groups.get(group_name)
            if group is None or group.noticed or not group.jobdirs:
                return
            if time.monotonic() - group.since < self.capacity_notice_seconds:
                return
            group.noticed = True
        what = (f"{group.count} x {group.instance_type} ({group.resources.describe()} each, {group.strategy})"
                if group.count else "the job's instances")
        message = (f"{CAPACITY_MESSAGE} The Ray cluster cannot place {what} now; the job starts when it can "
                   f"(stop it to give up).")
        now = time.time()
        first = group.jobdirs[min(group.jobdirs)]
        _append(first / "events.jsonl",
                json.dumps({"time": now, "status": "LaunchingMLInstances", "message": message}))
        for index, jobdir in group.jobdirs.items():
            log_name = f"algo-{index + 1}.log"
            from opensage.runner.transform_worker import DATA_LOG, TRANSFORM_FILE

            if (jobdir / TRANSFORM_FILE).exists():
                log_name = DATA_LOG
            _append(jobdir / "logs" / log_name, f"{int(now * 1000)} {message}")
        log.warning("ray: placement group %s waits for capacity: %s", group_name, message)

    # -- actors ----------------------------------------------------------------------------------------
    def _actor(self, handle: str) -> Any:
        import ray

        if not handle.startswith(HANDLE_PREFIX):
            return None
        self.connect()
        try:
            return ray.get_actor(handle[len(HANDLE_PREFIX):], namespace=self.namespace)
        except ValueError:
            return None

    def _signal(self, handle: str, sig: int, group: bool) -> None:
        import ray

        actor = self._actor(handle)
        if actor is None:
            return
        try:
            ray.get(actor.signal.remote(sig, group), timeout=CALL_TIMEOUT)
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            log.warning("ray: could not signal %s", handle)

    def _cancel(self, handle: str, group_name: str, index: int) -> None:
        """Stop a job instance that never started: its result says stopped, and its actor goes."""
        import ray

        from opensage.runner.jobspec import JobResult

        group = self._groups.get(group_name)
        jobdir = group.jobdirs.get(index) if group else None
        if jobdir is not None and JobResult.read(jobdir) is None:
            JobResult(exit_code=None, stopped=True,
                      failure_reason=None).write(jobdir)
        actor = self._actor(handle)
        if actor is not None:
            ray.kill(actor, no_restart=True)

    # -- janitor ---------------------------------------------------------------------------------------
    def _janitor_loop(self) -> None:
        while not self._closing.wait(JANITOR_SECONDS):
            try:
                self.collect_groups()
            except Exception:  # noqa: BLE001 - a janitor pass must never end the thread
                log.exception("ray: placement-group janitor pass failed")

    def collect_groups(self) -> list[str]:
        """Remove this namespace's placement groups with no actor left (seen so on two passes in a row, so a
        group between its creation and its actors' is never taken). Returns the removed names."""
        import ray
        from ray.util.placement_group import placement_group_table, remove_placement_group

        removed = []
        empty_now = set()
        prefix = f"{self.namespace}-"
        for info in placement_group_table().values():
            name = info.get("name") or ""
            if not name.startswith(prefix) or info.get("state") == "REMOVED":
                continue
            count = len(info.get("bundles") or {})
            alive = False
            for i in range(count):
                try:
                    ray.get_actor(f"{name}-{i}", namespace=self.namespace)
                    alive = True
                    break
                except ValueError:
                    continue
            if alive:
                continue
            empty_now.add(name)
            if name in self._empty_seen:
                try:
                    remove_placement_group(self._pg(name))
                except Exception:  # noqa: BLE001
                    log.exception("ray: could not remove placement group %s", name)
                    continue
                removed.append(name)
                with self._lock:
                    group = self._groups.pop(name, None)
                    self._pgs.pop(name, None)
                    self._open = {k: g for k, g in self._open.items() if g is not group}
        self._empty_seen = empty_now - set(removed)
        return removed


def _split(handle: str) -> tuple[str, int]:
    name = handle[len(HANDLE_PREFIX):]
    group, _, index = name.rpartition("-")
    return group, int(index)


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
