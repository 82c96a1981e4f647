"""Processing reconciler: the only writer of processing-job progress, on the shared agent runner
(``AgentJobReconciler``: adoption after a restart, stop forwarding, dead agents, shutdown).

Each host's agent (``runner/agent.py``, kind "processing") downloads the inputs to their LocalPaths, runs the
AppSpecification's command in the image's environment as the job's own uid with the job's temporary
credentials, and uploads the outputs (Continuous ones while it runs). This module launches the hosts, copies
their logs to ``/aws/sagemaker/ProcessingJobs`` and concludes the job from their result files.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from opensage.credentials import CredentialAuthority
from opensage.executors.base import Executor
from opensage.runner.agentjobs import SHUTDOWN_REASON, AgentJobReconciler
from opensage.runner.jobspec import ChannelSpec, JobResult, JobSpec, ObjectStoreSpec, OutputSpec
from opensage.runner.logtail import parse_log_line, read_new_lines
from opensage.runner.sandbox import pick_job_uid
from opensage.runner.training import AGENT_IMAGE_ENV, AGENT_IMAGE_KIND_ENV, host_name, job_venv_cache
from opensage.services.base import Deps
from opensage.services.processing import KIND, resolve_image
from opensage.states import transition
from opensage.store.resources import Resource

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
CONTINUOUS_UPLOAD_SECONDS = 2.0  # how often a Continuous output's new / changed files are uploaded


class ProcessingReconciler(AgentJobReconciler):
    KIND = KIND

    def __init__(self, deps: Deps, executor: Executor, store_spec: ObjectStoreSpec,
                 credentials: CredentialAuthority | None = None) -> None:
        super().__init__(deps, executor, store_spec, "processing-reconciler", credentials)

    # -- endings -------------------------------------------------------------------------------------
    def _stopped_before_start(self, job: Resource) -> None:
        self._finish(job, "Stopped", None, None)

    def _fail(self, job: Resource, reason: str) -> None:
        self._finish(job, "Failed", reason, None)

    def _conclude(self, job: Resource, results: list[JobResult | None], platform_shutdown: bool) -> None:
        main = results[0]
        assert main is not None
        exit_message = main.extra.get("exit_message")
        failed = next((r for r in results if r and not (r.stopped or r.max_runtime_exceeded)
                       and (r.exit_code != 0 or r.failure_reason)), None)
        if platform_shutdown and job.status != "Stopping":
            self._finish(job, "Failed", SHUTDOWN_REASON, exit_message)
        elif job.status == "Stopping" or any(r and (r.stopped or r.max_runtime_exceeded) for r in results):
            # StoppingCondition: "after the condition is met, the processing job is stopped".
            self._finish(job, "Stopped", None, exit_message)
        elif failed is not None:
            reason = failed.failure_reason or (f"AlgorithmError: the processing command exited with code "
                                               f"{failed.exit_code}.")
            self._finish(job, "Failed", reason, failed.extra.get("exit_message") or exit_message)
        else:
            self._finish(job, "Completed", None, exit_message)

    def _finish(self, job: Resource, status: str, reason: str | None, exit_message: str | None) -> None:
        now = self.d.clock.time()
        state: dict[str, Any] = {"ProcessingEndTime": now}
        if "ProcessingStartTime" not in job.state:
            state["ProcessingStartTime"] = now
        if reason:
            state["FailureReason"] = reason[:1024]
        if exit_message:
            state["ExitMessage"] = exit_message[:1024]
        transition(self.d.resources, job, status, now, **state)
        log.info("processing job %s: %s", job.name, status)

    # -- launch --------------------------------------------------------------------------------------
    def _launch(self, job: Resource) -> None:
        from opensage import environments, images

        req = job.request
        try:
            resolved = resolve_image(req)
        except images.UnsupportedImage as exc:  # accepted at Create, as SageMaker does; fails at once here
            self._fail(job, f"ClientError: {exc}")
            return
        count = int(((req.get("ProcessingResources") or {}).get("ClusterConfig") or {}).get("InstanceCount") or 1)
        root = self.d.settings.jobs_dir / f"processing-{job.name}"
        self._end_agents_left_in(root)
        if root.exists():
            shutil.rmtree(root)  # leftovers of an older job with this name (names are unique in the store)
        now = self.d.clock.time()
        store = self._job_store_spec(job)
        image_env = {environments.CACHE_ENV: str(environments.cache_root(self.d.settings.home)),
                     AGENT_IMAGE_ENV: (req.get("AppSpecification") or {}).get("ImageUri") or "",
                     AGENT_IMAGE_KIND_ENV: resolved.kind}
        jobdirs = []
        for i in range(count):
            jobdir = root / host_name(i)
            self._write_configs(jobdir / "ml", job, i, count)
            self._jobspec(job, resolved, i, count, store, image_env).write(jobdir)
            jobdirs.append(str(jobdir))
        handles = [self.executor.submit(Path(d)) for d in jobdirs]
        self._known.add(job.name)
        job.state.update({
            "_handles": handles, "_jobdirs": jobdirs, "_log_offsets": [0] * count,
            "_streams": [f"{job.name}/{host_name(i)}-{int(now)}" for i in range(count)],
            "ProcessingStartTime": now,
        })
        self.d.resources.save(job, now)
        log.info("processing job %s: launched %d host(s)", job.name, count)

    def _jobspec(self, job: Resource, resolved: Any, index: int, count: int, store: ObjectStoreSpec,
                 image_env: dict[str, str]) -> JobSpec:
        req = job.request
        channels = []
        for item in req.get("ProcessingInputs") or []:
            if item.get("AppManaged"):
                continue  # the application reads its data itself
            s3 = item["S3Input"]
            channels.append(ChannelSpec(
                name=item["InputName"], s3_uri=s3["S3Uri"], s3_data_type=s3.get("S3DataType") or "S3Prefix",
                distribution=s3.get("S3DataDistributionType") or "FullyReplicated",
                input_mode=s3.get("S3InputMode") or "File", compression=s3.get("S3CompressionType") or "None",
                local_path=s3["LocalPath"]))
        outputs = [OutputSpec(name=o["OutputName"], s3_uri=o["S3Output"]["S3Uri"],
                              local_path=o["S3Output"]["LocalPath"],
                              upload_mode=o["S3Output"].get("S3UploadMode") or "EndOfJob")
                   for o in (req.get("ProcessingOutputConfig") or {}).get("Outputs") or [] if not o.get("AppManaged")]
        s = self.d.settings
        env = {
            "OPENSAGE_VENV_CACHE": str(job_venv_cache(s)),
            # Every AWS service the job's code calls is this platform, never AWS (as training jobs).
            "AWS_ENDPOINT_URL": s.endpoint_url,
            "AWS_ENDPOINT_URL_SAGEMAKER": s.endpoint_url,
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": s.endpoint_url,
            "AWS_ENDPOINT_URL_STS": s.endpoint_url,
            "AWS_RETRY_MODE": "standard",
            "AWS_MAX_ATTEMPTS": "10",
            **image_env,
            **(req.get("Environment") or {}),
        }
        return JobSpec(
            job_name=job.name, job_arn=job.arn, kind="processing", command=list(resolved.command),
            environment=env, channels=channels, object_store=store, outputs=outputs,
            max_runtime_seconds=(req.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds"),
            stop_grace_seconds=self.d.settings.stop_grace_seconds, host_index=index, host_count=count,
            checkpoint_sync_seconds=CONTINUOUS_UPLOAD_SECONDS, run_as_uid=pick_job_uid())

    def _write_configs(self, ml: Path, job: Resource, index: int, count: int) -> None:
        """/opt/ml/config/processingjobconfig.json (the request as SageMaker writes it) and resourceconfig.json."""
        config = ml / "config"
        config.mkdir(parents=True, exist_ok=True)
        request = {k: v for k, v in job.request.items() if not k.startswith("_")}
        request.update({"ProcessingJobName": job.name, "ProcessingJobArn": job.arn})
        hosts = [host_name(i) for i in range(count)]
        instance_type = ((job.request.get("ProcessingResources") or {}).get("ClusterConfig") or {}).get(
            "InstanceType") or "ml.m5.xlarge"
        resource = {"current_host": host_name(index), "current_instance_type": instance_type,
                    "current_group_name": "homogeneousCluster", "hosts": hosts,
                    "instance_groups": [{"instance_group_name": "homogeneousCluster",
                                         "instance_type": instance_type, "hosts": hosts}],
                    "network_interface_name": "eth0"}
        (config / "processingjobconfig.json").write_text(json.dumps(request, default=str))
        (config / "resourceconfig.json").write_text(json.dumps(resource))

    # -- ingestion -----------------------------------------------------------------------------------
    def _ingest(self, job: Resource) -> Resource:
        st = job.state
        now = self.d.clock.time()
        now_ms = int(now * 1000)
        offsets = list(st["_log_offsets"])
        batches = []
        for i, d in enumerate(Path(p) for p in st["_jobdirs"]):
            lines, offsets[i] = read_new_lines(d / "logs" / f"{host_name(i)}.log", st["_log_offsets"][i])
            events = [parse_log_line(line, now_ms) for line in lines]
            if events:
                batches.append((st["_streams"][i], events))
        if not batches:
            return job
        st["_log_offsets"] = offsets
        with self.d.resources.engine.begin() as conn:
            for stream, events in batches:
                self.d.logs.append(LOG_GROUP, stream, events, now_ms, conn=conn)
            self.d.resources.save(job, now, conn=conn)
        return job
