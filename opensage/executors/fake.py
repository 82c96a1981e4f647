"""An in-process executor for control-plane tests: it writes the files an agent would, as scripted.

Nothing runs: ``submit`` writes ``events.jsonl``, ``logs/algo-<n>.log`` and (unless the script says to
keep running) ``result.json`` into the job directory at once, so tests are deterministic.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from opensage.objects.base import ObjectStore, split_s3_uri
from opensage.runner.archive import make_tar_gz
from opensage.runner.jobspec import JobResult, JobSpec

DEFAULT_EVENTS: tuple[tuple[str, str], ...] = (
    ("Downloading", "Downloading input data"),
    ("Training", "Training image download completed. Training in progress."),
    ("Uploading", "Uploading generated training model"),
)


@dataclass
class FakeRun:
    """What the fake agent does for a job."""

    log_lines: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_EVENTS))
    result: JobResult = field(default_factory=lambda: JobResult(exit_code=0))
    keep_running: bool = False  # True: no result until finish() / stop() / kill()
    model_files: dict[str, bytes] | None = None  # packed as model.tar.gz into spec.model_s3_uri


@dataclass
class _Job:
    jobdir: Path
    spec: JobSpec
    run: FakeRun
    running: bool = True


class FakeExecutor:
    def __init__(self, default: FakeRun | None = None, store: ObjectStore | None = None) -> None:
        self.default = default or FakeRun()
        self.store = store
        self.scripts: dict[str, FakeRun] = {}
        self.jobs: dict[str, _Job] = {}
        self.submitted: list[Path] = []
        self.stops: list[str] = []
        self._ids = itertools.count(1)

    def script(self, job_name: str, run: FakeRun) -> None:
        """Use ``run`` for the job named ``job_name`` (otherwise the default run)."""
        self.scripts[job_name] = run

    # -- Executor protocol -----------------------------------------------------------------------
    def submit(self, jobdir: Path) -> str:
        jobdir = Path(jobdir)
        spec = JobSpec.read(jobdir)
        run = self.scripts.get(spec.job_name, self.default)
        handle = f"fake-{next(self._ids)}"
        job = _Job(jobdir, spec, run)
        self.jobs[handle] = job
        self.submitted.append(jobdir)
        self._write_progress(job)
        if not run.keep_running:
            self._complete(job, replace(run.result))
        return handle

    def is_running(self, handle: str) -> bool:
        job = self.jobs.get(handle)
        return job is not None and job.running

    def stop(self, handle: str) -> None:
        self.stops.append(handle)
        job = self.jobs.get(handle)
        if job is not None and job.running:
            self._complete(job, JobResult(exit_code=143, stopped=True))

    def kill(self, handle: str) -> None:
        job = self.jobs.get(handle)
        if job is not None:
            job.running = False  # like SIGKILL: no result.json

    # -- test helpers ----------------------------------------------------------------------------
    def finish(self, handle: str, result: JobResult | None = None) -> None:
        """End a ``keep_running`` job with ``result`` (default: its scripted result)."""
        job = self.jobs[handle]
        if job.running:
            self._complete(job, replace(result or job.run.result))

    # -- files -----------------------------------------------------------------------------------
    def _write_progress(self, job: _Job) -> None:
        (job.jobdir / "logs").mkdir(parents=True, exist_ok=True)
        with open(job.jobdir / "events.jsonl", "a") as fh:
            for status, message in job.run.events:
                fh.write(json.dumps({"time": time.time(), "status": status, "message": message}) + "\n")
        log = job.jobdir / "logs" / f"algo-{job.spec.host_index + 1}.log"
        with open(log, "a") as fh:
            for line in job.run.log_lines:
                fh.write(f"{int(time.time() * 1000)} {line}\n")

    def _complete(self, job: _Job, result: JobResult) -> None:
        if job.run.model_files is not None and job.spec.model_s3_uri and self.store is not None:
            self._upload_model(job)
            result.model_uploaded = True
        result.write(job.jobdir)
        job.running = False

    def _upload_model(self, job: _Job) -> None:
        assert self.store is not None and job.spec.model_s3_uri and job.run.model_files is not None
        bucket, key = split_s3_uri(job.spec.model_s3_uri)
        if not key.endswith(".tar.gz"):
            key = key.rstrip("/") + "/model.tar.gz"
        with tempfile.TemporaryDirectory(prefix="opensage-fake-") as tmp:
            src = Path(tmp) / "model"
            for rel, data in job.run.model_files.items():
                path = src / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            make_tar_gz(src, Path(tmp) / "model.tar.gz")
            self.store.put_file(bucket, key, Path(tmp) / "model.tar.gz")
