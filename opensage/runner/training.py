"""Training reconciler: the only writer of training-job progress.

Each pass looks at every InProgress/Stopping job and moves it one step: launch its hosts' agents, ingest
their logs / phase events / metrics, forward a stop, and finish it from the agents' result files. All it
knows about a running job is in the job's row (handles, file offsets), so a restarted control plane adopts
running agents, and fails (with a reason) those whose process is gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from opensage.credentials import CredentialAuthority
from opensage.executors.base import Executor
from opensage.runner.agentjobs import SHUTDOWN_REASON, AgentJobReconciler
from opensage.runner.interruptions import InterruptionsMixin, billable_seconds, remaining_runtime
from opensage.runner.jobspec import ChannelSpec, JobResult, JobSpec, ObjectStoreSpec
from opensage.runner.logtail import MetricMatcher, parse_log_line, read_events, read_new_lines
from opensage.runner.sandbox import pick_job_uid
from opensage.services.base import Deps
from opensage.services.training import KIND, close_transition, resolve_image
from opensage.settings import Settings
from opensage.states import transition
from opensage.store.resources import Resource

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"


def host_name(index: int) -> str:
    return f"algo-{index + 1}"


def cluster_layout(req: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host, instance group, instance type) of every host: ``ResourceConfig.InstanceGroups`` (heterogeneous
    clusters; hosts numbered across the groups in order) or InstanceCount hosts of ``homogeneousCluster``."""
    rc = req.get("ResourceConfig") or {}
    groups = [(g["InstanceGroupName"], g["InstanceType"], int(g.get("InstanceCount") or 0))
              for g in rc.get("InstanceGroups") or []]
    if not groups:
        groups = [("homogeneousCluster", rc.get("InstanceType") or "ml.m5.large", int(rc.get("InstanceCount") or 1))]
    flat = [(name, itype) for name, itype, n in groups for _ in range(n)] or [(groups[0][0], groups[0][1])]
    return [(host_name(i), name, itype) for i, (name, itype) in enumerate(flat)]


def reads_every_shard(resolved: Any, image: str = "") -> bool:
    """First-party built-ins (linear-learner, kmeans, pca, ...) have no reduction across hosts here: algo-1,
    whose model is the job's, reads every shard of a ShardedByS3Key channel and trains on all the data (the
    other hosts end at once: ``algorithms/hosts.py``). Built-in XGBoost trains across hosts instead, from
    image 1.7-1 (xgboost's collective API); older images' xgboost is handled like a first-party built-in."""
    if resolved.kind != "builtin":
        return False
    if (resolved.algorithm or "") != "xgboost":
        return True
    from opensage.algorithms.xgboost import versions

    return versions.ContainerVersion(versions.version_from_image(image)).before("1.7-1")


# Read by runner/jobexec.py (/etc/hosts, the host's name) and frameworks/distributed.py (rendezvous).
HOSTS_ENV = "OPENSAGE_JOB_HOSTS"
CURRENT_HOST_ENV = "OPENSAGE_JOB_CURRENT_HOST"
MASTER_PORT_ENV = "OPENSAGE_JOB_MASTER_PORT"
PMI_PORT_ENV = "OPENSAGE_JOB_PMI_PORT"  # = frameworks.mpi.PMI_PORT_ENV (not imported: the toolkit's module)
JOB_SECRET_ENV = "OPENSAGE_JOB_SECRET"  # = frameworks.mpi.SECRET_ENV


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_venv_cache(settings: Settings) -> Path:
    """Where training jobs build their requirements venvs. With a root platform, jobs run as users of their
    own: their cache is theirs (``job-venvs``), apart from the one model servers (root) run code from, so no
    root process ever runs a venv a job's code wrote."""
    return settings.home / "job-venvs" if os.geteuid() == 0 else settings.venv_cache


def _image_environment(req: dict[str, Any], resolved: Any, settings: Settings) -> dict[str, str]:
    """What the agent needs to run the job in its image's environment (``images.environment_for_image``;
    the agent builds it when missing), and the image's version for built-in algorithm processes."""
    from opensage import environments, images

    image = (req.get("AlgorithmSpecification") or {}).get("TrainingImage") or ""
    env = {environments.CACHE_ENV: str(environments.cache_root(settings.home))}
    if image:
        env[AGENT_IMAGE_ENV] = image
        env[AGENT_IMAGE_KIND_ENV] = resolved.kind
    if resolved.kind == "builtin":
        env[images.IMAGE_VERSION_ENV] = images.image_version(image) if image else ""
    return env


ZYGOTE_DIR_ENV = "OPENSAGE_ZYGOTE_DIR"  # read (and removed) by the agent: runner/agent.py


def zygotes_enabled() -> bool:
    """Fork servers for training jobs (runner/zygote.py); ``OPENSAGE_ZYGOTES=0`` turns them off."""
    return os.environ.get("OPENSAGE_ZYGOTES", "1").lower() not in ("0", "false", "no", "off")


def _zygote_pool(settings: Settings) -> Any:
    if not zygotes_enabled():
        return None
    from opensage.executors.local import agent_env
    from opensage.runner.sandbox import inherited_env
    from opensage.runner.zygote import ZygotePool

    # What every job inherits (no OPENSAGE_* setting, no platform key pair or profile), nothing more.
    return ZygotePool(settings.home / "zygotes", inherited_env(agent_env()))


# Read (and removed from the job's environment) by the agent: runner/agent.py ``prepare_environment``.
AGENT_IMAGE_ENV = "OPENSAGE_JOB_IMAGE"
AGENT_IMAGE_KIND_ENV = "OPENSAGE_JOB_IMAGE_KIND"


class TrainingReconciler(InterruptionsMixin, AgentJobReconciler):
    KIND = KIND

    def __init__(self, deps: Deps, executor: Executor, store_spec: ObjectStoreSpec,
                 credentials: CredentialAuthority | None = None) -> None:
        super().__init__(deps, executor, store_spec, "training-reconciler", credentials)
        self.zygotes = _zygote_pool(deps.settings)

    # -- fork servers (runner/zygote.py): started when an agent asked for one, stopped with the platform --
    def run_once(self) -> bool:
        if self.zygotes is not None:
            try:
                self.zygotes.start_wanted()
            except Exception:  # a job without a zygote runs the usual way
                log.exception("could not start a zygote")
        return super().run_once()

    def shutdown(self, stop_jobs: bool = True, wait_seconds: float = 10.0) -> None:
        super().shutdown(stop_jobs, wait_seconds)
        if self.zygotes is not None:
            self.zygotes.shutdown()

    def _stopped_before_start(self, job: Resource) -> None:
        self._finish(job, "Stopped", "Stopped", "Training job stopped before it started.", None)

    def _fail(self, job: Resource, reason: str) -> None:
        self._finish(job, "Failed", "Failed", reason, None)

    def _conclude(self, job: Resource, results: list[JobResult | None], platform_shutdown: bool) -> None:
        main = results[0]
        assert main is not None
        # exit_code is the user process's; a failure_reason alone (e.g. the upload after exit 0 failed, or
        # the command never started: exit_code None) also fails the job.
        failed = next((r for r in results if r and not (r.stopped or r.max_runtime_exceeded)
                       and (r.exit_code != 0 or r.failure_reason)), None)
        model = job.state["_model_uri"] if main.model_uploaded else None
        if not platform_shutdown and self._retry_after_result(job, results):
            return
        if platform_shutdown and job.status != "Stopping":
            self._finish(job, "Failed", "Failed", SHUTDOWN_REASON, model)
        elif job.state.get("_max_wait_exceeded") and job.status != "Stopping":
            self._finish(job, "Stopped", "MaxWaitTimeExceeded",
                         "Training job reached its MaxWaitTimeInSeconds and was stopped.", model)
        elif job.state.get("_peers_stopped") and failed is not None and job.status != "Stopping":
            self._finish(job, "Failed", "Failed", self._failure_reason(failed, results), model)
        elif any(r and r.max_runtime_exceeded for r in results):
            self._finish(job, "Stopped", "MaxRuntimeExceeded",
                         "Training job reached its MaxRuntimeInSeconds and was stopped.", model)
        elif job.status == "Stopping" or any(r and r.stopped for r in results):
            self._finish(job, "Stopped", "Stopped", "Training job stopped.", model)
        elif failed is not None:
            self._finish(job, "Failed", "Failed", self._failure_reason(failed, results), model)
        else:
            self._finish(job, "Completed", "Completed", "Training job completed", model)

    @staticmethod
    def _failure_reason(failed: JobResult, results: list[JobResult | None]) -> str:
        reason = failed.failure_reason or f"AlgorithmError: the training process exited with code " \
                                          f"{failed.exit_code}."
        if len(results) > 1 and not reason.startswith(("ClientError", "InternalServerError")):
            reason = f"{reason.rstrip()} (host {host_name(results.index(failed))})"
        return reason

    def _finish(self, job: Resource, status: str, secondary: str, message: str, model_uri: str | None) -> None:
        now = self.d.clock.time()
        transitions = close_transition(job.state.get("SecondaryStatusTransitions", []), now)
        transitions.append({"Status": secondary, "StartTime": now, "EndTime": now, "StatusMessage": message})
        state: dict[str, Any] = {"SecondaryStatus": secondary, "SecondaryStatusTransitions": transitions,
                                 "TrainingEndTime": now}
        start = job.state.get("TrainingStartTime")
        if start:
            seconds = max(1, int(round(now - start)))
            state["TrainingTimeInSeconds"] = seconds
            # The hosts' running time (every attempt's, not the gaps of interruptions): runner/interruptions.py
            ran = billable_seconds(job.state, now) if "_billable" in job.state or "_attempt_started" in job.state \
                else seconds  # a row launched before attempts were counted
            state["BillableTimeInSeconds"] = min(seconds, max(1, int(round(ran))))
            job.state.pop("_attempt_started", None)
        if status == "Failed":
            state["FailureReason"] = message[:1024]
        if model_uri:
            state["ModelArtifacts"] = {"S3ModelArtifacts": model_uri}
        transition(self.d.resources, job, status, now, **state)
        log.info("training job %s: %s (%s)", job.name, status, secondary)
        for hook in self.d.on_job_end.get(KIND, ()):  # who waits on this job (Deps.on_job_end) goes on now
            try:
                hook(job)
            except Exception:
                log.exception("training job %s: an on_job_end hook failed", job.name)

    # -- launch --------------------------------------------------------------------------------------
    def _launch(self, job: Resource) -> None:
        from opensage import images

        req = job.request
        try:
            resolved = resolve_image(req)
        except images.UnsupportedImage as exc:  # accepted at Create, as SageMaker does; fails at once here
            self._fail(job, f"ClientError: {exc}")
            return
        root = self.d.settings.jobs_dir / job.name
        self._end_agents_left_in(root)
        if root.exists():
            shutil.rmtree(root)  # leftovers of an older job with this name (names are unique in the store)
        self._start_hosts(job, resolved, first=True)

    def _start_hosts(self, job: Resource, resolved: Any, first: bool) -> None:
        """Write every host's job directory and submit its agent: the job's start, or its restart after an
        interruption / a retry (``runner/interruptions.py``; the hosts resume from their checkpoints). The
        log streams stay the same across restarts (the SDK tails InstanceCount streams)."""
        req = job.request
        count = len(cluster_layout(req))
        root = self.d.settings.jobs_dir / job.name
        output_prefix = req["OutputDataConfig"]["S3OutputPath"].rstrip("/") + f"/{job.name}/output"
        now = self.d.clock.time()
        epoch = int(now)
        jobdirs, handles = [], []
        store = self._job_store_spec(job)
        if not first:  # a new placement: new addresses and rendezvous port (the old one may linger)
            job.state.pop("_host_addresses", None)
            job.state.pop("_master_port", None)
        for i in range(count):
            jobdir = root / host_name(i)
            if jobdir.exists():
                shutil.rmtree(jobdir)
            self._write_configs(jobdir / "ml", req, i, count)
            spec = self._jobspec(job, resolved, i, count, output_prefix, store)
            spec.write(jobdir)
            jobdirs.append(str(jobdir))
        for d in jobdirs:
            handles.append(self.executor.submit(Path(d)))
        self._known.add(job.name)
        state: dict[str, Any] = {"_handles": handles, "_jobdirs": jobdirs, "_log_offsets": [0] * count,
                                 "_event_offset": 0, "_attempt_started": now}
        if first:
            definitions = list(resolved.metric_definitions or []) + list(
                (req.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or [])
            state.update({"_model_uri": f"{output_prefix}/model.tar.gz",
                          "_streams": [f"{job.name}/{host_name(i)}-{epoch}" for i in range(count)],
                          "_metric_definitions": definitions, "TrainingStartTime": now})
        job.state.update(state)
        job.state.pop("_stop_sent", None)
        job.state.pop("_peers_stopped", None)
        self.d.resources.save(job, now)
        log.info("training job %s: %s %d host(s) (%s)", job.name, "launched" if first else "restarted", count,
                 resolved.kind)

    def _jobspec(self, job: Resource, resolved: Any, index: int, count: int, output_prefix: str,
                 store: ObjectStoreSpec) -> JobSpec:
        req = job.request
        mode = (req.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"
        channels = []
        for ch in req.get("InputDataConfig") or []:
            s3 = ch["DataSource"]["S3DataSource"]
            channels.append(ChannelSpec(
                name=ch["ChannelName"], s3_uri=s3["S3Uri"], s3_data_type=s3.get("S3DataType", "S3Prefix"),
                distribution=s3.get("S3DataDistributionType") or "FullyReplicated",
                input_mode=ch.get("InputMode") or mode, content_type=ch.get("ContentType"),
                compression=ch.get("CompressionType") or "None",
                record_wrapper=ch.get("RecordWrapperType") or "None",
                attribute_names=s3.get("AttributeNames"),
                shuffle_seed=(ch.get("ShuffleConfig") or {}).get("Seed")))
        image = (req.get("AlgorithmSpecification") or {}).get("TrainingImage") or ""
        if index == 0 and count > 1 and reads_every_shard(resolved, image):
            channels = [dataclasses.replace(c, distribution="FullyReplicated") for c in channels]
        ckpt = req.get("CheckpointConfig") or {}
        main = index == 0
        return JobSpec(
            job_name=job.name, job_arn=job.arn, kind="training", command=list(resolved.command),
            environment=self._environment(job, resolved, index, count), channels=channels,
            object_store=store,
            model_s3_uri=f"{output_prefix}/model.tar.gz" if main else None,
            output_s3_uri=f"{output_prefix}/output.tar.gz" if main else None,
            checkpoint_s3_uri=ckpt.get("S3Uri"),
            checkpoint_local_path=ckpt.get("LocalPath") or "/opt/ml/checkpoints",
            max_runtime_seconds=remaining_runtime(req, job.state),
            stop_grace_seconds=self.d.settings.stop_grace_seconds, host_index=index, host_count=count,
            run_as_uid=pick_job_uid())

    def _environment(self, job: Resource, resolved: Any, index: int, count: int) -> dict[str, str]:
        s = self.d.settings
        env = {
            "TRAINING_JOB_NAME": job.name,
            "TRAINING_JOB_ARN": job.arn,
            "OPENSAGE_VENV_CACHE": str(job_venv_cache(s)),
            # Every AWS service the job's code calls is this platform (S3: AWS_ENDPOINT_URL_S3), never AWS.
            "AWS_ENDPOINT_URL": s.endpoint_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": s.endpoint_url,
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": s.endpoint_url,
            "AWS_ENDPOINT_URL_STS": s.endpoint_url,
            # The local S3 gateway can answer 500/503 for a moment while it starts or is busy; retry like
            # a production client would instead of failing the job.
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "10",
        }
        env.update(_image_environment(job.request, resolved, s))
        env.update(job.request.get("Environment") or {})
        env.update(self._cluster_environment(job, index, count))  # after the user's: the platform's to set
        env.pop(ZYGOTE_DIR_ENV, None)  # never the user's to point at: the agent (root) trusts what answers
        if self.zygotes is not None and self.zygotes.enabled:
            env[ZYGOTE_DIR_ENV] = str(self.zygotes.directory)
        return env

    def _cluster_environment(self, job: Resource, index: int, count: int) -> dict[str, str]:
        """How the job's hosts find each other: every host's address (jobexec writes them into the host's
        private /etc/hosts and names the host), this host's name, and the job's rendezvous port (torchrun's
        master, XGBoost's tracker) — one per job, free when the job started, as every host of every job
        shares the loopback on one machine. Addresses: the executor's (``host_addresses``, a cluster
        executor that placed the hosts on nodes), else the loopback."""
        addresses = job.state.get("_host_addresses")
        if not addresses or len(addresses) != count:
            placed = getattr(self.executor, "host_addresses", None)
            addresses = list(placed(job.name, count)) if placed is not None else None
            if not addresses or len(addresses) != count:
                addresses = ["127.0.0.1"] * count
            job.state["_host_addresses"] = addresses
        if "_master_port" not in job.state:
            job.state["_master_port"] = free_port()
        if "_pmi_port" not in job.state:  # the mpi distribution's process manager (frameworks/mpi.py) on algo-1
            job.state["_pmi_port"] = free_port()
        if "_job_secret" not in job.state:  # shared by the job's hosts only: MPI rank ids nobody else can guess
            job.state["_job_secret"] = secrets.token_hex(16)
        return {HOSTS_ENV: ",".join(f"{host_name(i)}={a}" for i, a in enumerate(addresses)),
                CURRENT_HOST_ENV: host_name(index), MASTER_PORT_ENV: str(job.state["_master_port"]),
                PMI_PORT_ENV: str(job.state["_pmi_port"]), JOB_SECRET_ENV: job.state["_job_secret"]}

    def _write_configs(self, ml: Path, req: dict[str, Any], index: int, count: int) -> None:
        config = ml / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        mode = (req.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"
        channels = {}
        for ch in req.get("InputDataConfig") or []:
            s3 = ch["DataSource"]["S3DataSource"]
            entry = {"TrainingInputMode": ch.get("InputMode") or mode,
                     "S3DistributionType": s3.get("S3DataDistributionType") or "FullyReplicated",
                     "RecordWrapperType": ch.get("RecordWrapperType") or "None"}
            if ch.get("ContentType"):
                entry["ContentType"] = ch["ContentType"]
            channels[ch["ChannelName"]] = entry
        layout = cluster_layout(req)
        hosts = [host for host, _, _ in layout]
        groups: dict[str, dict[str, Any]] = {}
        for host, group, instance_type in layout:
            groups.setdefault(group, {"instance_group_name": group, "instance_type": instance_type,
                                      "hosts": []})["hosts"].append(host)
        _, current_group, current_type = layout[index]
        resource = {"current_host": host_name(index), "current_instance_type": current_type,
                    "current_group_name": current_group, "hosts": hosts,
                    "instance_groups": list(groups.values()), "network_interface_name": "eth0"}
        files = {"hyperparameters.json": req.get("HyperParameters") or {},
                 "inputdataconfig.json": channels, "resourceconfig.json": resource}
        ckpt = req.get("CheckpointConfig")
        if ckpt:
            files["checkpointconfig.json"] = {"LocalPath": ckpt.get("LocalPath") or "/opt/ml/checkpoints",
                                              "S3Uri": ckpt["S3Uri"]}
        for fname, content in files.items():
            (config / fname).write_text(json.dumps(content))

    # -- ingestion -----------------------------------------------------------------------------------
    def _ingest(self, job: Resource) -> Resource:
        st = job.state
        jobdirs = [Path(p) for p in st["_jobdirs"]]
        now = self.d.clock.time()
        now_ms = int(now * 1000)
        new_offsets = list(st["_log_offsets"])
        batches: list[tuple[str, list[tuple[int, str]]]] = []
        matcher = MetricMatcher.build(st.get("_metric_definitions") or [])
        points: list[tuple[str, float, float]] = []
        for i, d in enumerate(jobdirs):
            lines, new_offsets[i] = read_new_lines(d / "logs" / f"{host_name(i)}.log", st["_log_offsets"][i])
            events = [parse_log_line(line, now_ms) for line in lines]
            if events:
                batches.append((st["_streams"][i], events))
            if i == 0:
                for ts, text in events:
                    points.extend((name, ts / 1000.0, value) for name, value in matcher.match(text))
        phase_events, event_offset = read_events(jobdirs[0] / "events.jsonl", st["_event_offset"])
        if not batches and not phase_events:
            return job
        st["_log_offsets"], st["_event_offset"] = new_offsets, event_offset
        if points:
            final = {m["MetricName"]: m for m in st.get("FinalMetricDataList", [])}
            for name, ts, value in points:
                final[name] = {"MetricName": name, "Value": value, "Timestamp": ts}
            st["FinalMetricDataList"] = list(final.values())
        for ev in phase_events:
            status = ev.get("status")
            if not status or status == st.get("SecondaryStatus"):
                continue
            t = float(ev.get("time") or now)
            transitions = close_transition(st.get("SecondaryStatusTransitions", []), t)
            transitions.append({"Status": status, "StartTime": t, "StatusMessage": ev.get("message", "")})
            st["SecondaryStatusTransitions"], st["SecondaryStatus"] = transitions, status
        with self.d.resources.engine.begin() as conn:
            for stream, events in batches:
                self.d.logs.append(LOG_GROUP, stream, events, now_ms, conn=conn)
            self.d.metrics.put(METRICS_NAMESPACE, {"TrainingJobName": job.name}, points, conn=conn)
            self.d.resources.save(job, now, conn=conn)
        return job
