"""Transform reconciler: the only writer of transform-job progress (same shape as the training reconciler).

Each pass moves every InProgress/Stopping job one step: launch one worker per instance (a job agent with
JobSpec kind ``transform``, see ``runner.transform_worker``), ingest the workers' data logs and their model
servers' output into ``/aws/sagemaker/TransformJobs`` (stream ``<job>/<instance-id>-<epoch>``, data log in
``<stream>/data-log``), forward a Stop, and finish the job from the workers' ``result.json``. Everything it
needs is in the job's row, so a restarted control plane adopts running workers and fails (with a reason)
those that are gone, stopping their model servers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from opensage.credentials import CredentialAuthority
from opensage.executors.base import Executor
from opensage.runner.agentjobs import SHUTDOWN_REASON, AgentJobReconciler
from opensage.runner.jobspec import JobResult, JobSpec, ObjectStoreSpec
from opensage.runner.logtail import parse_log_line, read_new_lines
from opensage.runner.sandbox import pick_job_uid
from opensage.runner.transform_worker import DATA_LOG, SERVER_FILE, SERVER_LOG, TRANSFORM_FILE
from opensage.services.base import Deps
from opensage.services.transform import KIND, resolve_model
from opensage.states import transition
from opensage.store.resources import Resource

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TransformJobs"


class TransformReconciler(AgentJobReconciler):
    KIND = KIND
    GONE_REASON = ("InternalServerError: a transform worker ended without reporting a result (it was killed, "
                   "or the host restarted while it ran). Start the job again.")

    def __init__(self, deps: Deps, executor: Executor, store_spec: ObjectStoreSpec,
                 credentials: CredentialAuthority | None = None) -> None:
        super().__init__(deps, executor, store_spec, "transform-reconciler", credentials)

    def _stopped_before_start(self, job: Resource) -> None:
        self._finish(job, "Stopped", None)

    def _fail(self, job: Resource, reason: str) -> None:
        self._finish(job, "Failed", reason)

    def _conclude(self, job: Resource, results: list[JobResult | None], platform_shutdown: bool) -> None:
        failed = next((r for r in results if r and not r.stopped and (r.failure_reason or r.exit_code != 0)),
                      None)
        if platform_shutdown and job.status != "Stopping":
            self._finish(job, "Failed", SHUTDOWN_REASON)
        elif job.status == "Stopping" or any(r and r.stopped for r in results):
            self._finish(job, "Stopped", None)
        elif failed is not None:
            self._finish(job, "Failed", failed.failure_reason or
                         f"AlgorithmError: the transform worker exited with code {failed.exit_code}.")
        else:
            self._finish(job, "Completed", None)

    def _finish(self, job: Resource, status: str, reason: str | None) -> None:
        self._stop_servers(job)
        now = self.d.clock.time()
        state: dict[str, Any] = {"TransformEndTime": now}
        if reason:
            state["FailureReason"] = reason[:1024]
        transition(self.d.resources, job, status, now, **state)
        log.info("transform job %s: %s%s", job.name, status, f" ({reason[:200]})" if reason else "")

    def _stop_servers(self, job: Resource) -> None:
        """A worker that was killed leaves its model server (own session) behind: stop it."""
        from opensage.serving.replicas import Replica, ReplicaManager

        manager = None
        for d in job.state.get("_jobdirs", []):
            path = Path(d) / SERVER_FILE
            try:
                replica = Replica.from_state(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError):
                continue
            manager = manager or ReplicaManager()
            if manager.running(replica):
                manager.stop(replica, grace=5.0, wait=False)

    # -- launch --------------------------------------------------------------------------------------
    def _launch(self, job: Resource) -> None:
        req = job.request
        model = self.d.resources.get("model", req["ModelName"])
        if model is None:
            self._finish(job, "Failed", f"ClientError: model {req['ModelName']} no longer exists.")
            return
        try:
            resolved = resolve_model(model)
        except Exception as e:  # noqa: BLE001 - the request was valid at Create; the model changed since
            self._finish(job, "Failed", f"ClientError: {e}")
            return
        count = int(req["TransformResources"].get("InstanceCount") or 1)
        root = self.d.settings.jobs_dir / job.name
        self._end_agents_left_in(root)
        if root.exists():
            shutil.rmtree(root)
        now = self.d.clock.time()
        epoch = int(now)
        store = self._job_store_spec(job)
        env = self._environment(job, store)
        jobdirs, instances = [], []
        for i in range(count):
            instance = "i-" + hashlib.sha1(f"{job.arn}/{i}/{time.time_ns()}".encode()).hexdigest()[:17]
            jobdir = root / instance
            (jobdir / "logs").mkdir(parents=True)
            (jobdir / TRANSFORM_FILE).write_text(json.dumps({
                "request": req, "model": model.request, "models_root": str(self.d.settings.home / "models"),
                "plans_root": str(self.d.settings.home / "plans"), "instance": instance,
                "start_time": now}))  # data capture labels manifests and inference ids with it
            JobSpec(job_name=job.name, job_arn=job.arn, kind="transform", command=[], environment=env,
                    channels=[], object_store=store, host_index=i, host_count=count,
                    stop_grace_seconds=self.d.settings.stop_grace_seconds, run_as_uid=pick_job_uid()).write(jobdir)
            jobdirs.append(str(jobdir))
            instances.append(instance)
        handles = [self.executor.submit(Path(d)) for d in jobdirs]
        self._known.add(job.name)
        job.state.update({
            "_handles": handles, "_jobdirs": jobdirs,
            "_streams": [f"{job.name}/{inst}-{epoch}" for inst in instances],
            "_offsets": [[0, 0] for _ in instances],
            "TransformStartTime": now,
        })
        self.d.resources.save(job, now)
        log.info("transform job %s: launched %d instance(s) (%s)", job.name, count,
                 " -> ".join(r.kind for r in resolved))

    def _environment(self, job: Resource, store: ObjectStoreSpec) -> dict[str, str]:
        """The model server's environment: the job's Environment, SAGEMAKER_BATCH and the batch parameters
        the user set (§7), and how to reach this platform's object store. The containers' own Environment
        comes from the worker's plan (serving/plan.py): under the job's for one container; over it for each
        container of a pipeline."""
        s, req = self.d.settings, job.request
        env = dict(req.get("Environment") or {})
        env.setdefault("SAGEMAKER_REGION", s.region)
        env["SAGEMAKER_BATCH"] = "true"
        env["OPENSAGE_VENV_CACHE"] = str(s.venv_cache)
        if req.get("MaxPayloadInMB") is not None:
            env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(req["MaxPayloadInMB"])
        if req.get("BatchStrategy"):
            env["SAGEMAKER_BATCH_STRATEGY"] = "SINGLE_RECORD" if req["BatchStrategy"] == "SingleRecord" \
                else "MULTI_RECORD"
        if req.get("MaxConcurrentTransforms"):
            env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(req["MaxConcurrentTransforms"])
        env["AWS_ENDPOINT_URL"] = s.endpoint_url  # any AWS call of the model's code stays on this platform
        url = store.endpoint_url or ""
        if url.startswith(("http://", "https://")):
            env.update({"AWS_ENDPOINT_URL_S3": url, "S3_ENDPOINT_URL": url})
        if store.access_key:  # the job's temporary credentials, never the platform's key pair
            env.update({"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": store.secret_key or "",
                        "AWS_SESSION_TOKEN": store.session_token or "", "AWS_DEFAULT_REGION": s.region})
        return env

    # -- logs ----------------------------------------------------------------------------------------
    def _ingest(self, job: Resource) -> Resource:
        """Model-server output -> the instance's stream; the worker's data log -> ``<stream>/data-log``."""
        st = job.state
        now = self.d.clock.time()
        now_ms = int(now * 1000)
        offsets = [list(o) for o in st["_offsets"]]
        batches: list[tuple[str, list[tuple[int, str]]]] = []
        for i, d in enumerate(st["_jobdirs"]):
            stream = st["_streams"][i]
            for slot, (fname, suffix) in enumerate(((SERVER_LOG, ""), (DATA_LOG, "/data-log"))):
                lines, offsets[i][slot] = read_new_lines(Path(d) / "logs" / fname, offsets[i][slot])
                if lines:
                    events = [parse_log_line(ln, now_ms) if suffix else (now_ms, ln) for ln in lines]
                    batches.append((stream + suffix, events))
        if not batches:
            return job
        st["_offsets"] = offsets
        with self.d.resources.engine.begin() as conn:
            for stream, events in batches:
                self.d.logs.append(LOG_GROUP, stream, events, now_ms, conn=conn)
            self.d.resources.save(job, now, conn=conn)
        return job
