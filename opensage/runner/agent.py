"""The job agent: ``python -m opensage.runner.agent <jobdir>`` does for one host what a SageMaker instance does.

It reads ``<jobdir>/jobspec.json``, builds ``<jobdir>/ml`` (the ``/opt/ml`` tree), fetches channels and
checkpoints, runs the command, uploads ``model.tar.gz`` / ``output.tar.gz`` / checkpoints, and reports
through files only (see ``opensage.runner.jobspec``): ``events.jsonl`` as it goes, ``result.json`` last.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from opensage.objects.base import ObjectNotFound, ObjectStore, split_s3_uri
from opensage.runner import channels, sandbox
from opensage.runner.archive import ArchiveError, make_tar_gz
from opensage.runner.jobspec import JobResult, JobSpec
from opensage.runner.transfers import RetryingStore, describe_s3_error

ML_DIRS = (
    "input/config",
    "input/data",
    "model",
    "output",
    "output/data",
    "output/intermediate",
    "checkpoints",
    "code",
)
FAILURE_REASON_MAX = 1024


class JobInterrupted(Exception):
    """Stop requested or MaxRuntimeInSeconds reached before the command started."""


class AgentError(Exception):
    """A failure of the agent's own work; the message is the job's FailureReason."""


# ----------------------------------------------------------------------------------------- small pieces


def make_layout(ml_root: Path) -> None:
    for rel in ML_DIRS:
        (ml_root / rel).mkdir(parents=True, exist_ok=True)


def local_path(ml_root: Path, path: str, what: str = "CheckpointConfig.LocalPath") -> Path:
    """Map a container path (``/opt/ml/...``) to the job's ml root.

    Anything else is refused: the agent may run as root, and a path of the host would have it write into
    (and upload from) any directory. CreateTrainingJob refuses such paths already; this is the backstop
    for rows written before that check.
    """
    parts = path.split("/")
    if path.startswith(sandbox.OPT_ML) and ".." not in parts and (
            path == sandbox.OPT_ML or path.startswith(sandbox.OPT_ML + "/")):
        return ml_root / path[len(sandbox.OPT_ML):].lstrip("/")
    raise AgentError(f"ClientError: {what} '{path}' is not a path under {sandbox.OPT_ML}; "
                     f"use a path inside the job's container directory, e.g. {sandbox.OPT_ML}/checkpoints.")


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, status: str, message: str) -> None:
        line = json.dumps({"time": time.time(), "status": status, "message": message})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")


def _join_key(prefix: str, rel: str) -> str:
    if not prefix:
        return rel
    return prefix.rstrip("/") + "/" + rel


def artifact_uri(uri: str, filename: str) -> tuple[str, str]:
    """``s3://b/p/model.tar.gz`` is used as is; ``s3://b/p`` gets ``/model.tar.gz`` appended."""
    bucket, key = split_s3_uri(uri)
    if not key.endswith(".tar.gz"):
        key = _join_key(key, filename)
    return bucket, key


def upload_dir_as_tar(store: ObjectStore, src: Path, uri: str, filename: str, within: Path | None = None) -> str:
    """Pack ``src`` (see ``make_tar_gz``: ``within`` is the job's /opt/ml, which the job cannot replace) and
    upload it."""
    bucket, key = artifact_uri(uri, filename)
    with tempfile.TemporaryDirectory(prefix="opensage-tar-") as tmp:
        tar_path = Path(tmp) / filename
        try:
            make_tar_gz(src, tar_path, within)
        except ArchiveError as exc:
            raise AgentError(f"ClientError: could not pack {filename}: {exc}.") from exc
        try:
            store.put_file(bucket, key, tar_path)  # a RetryingStore waits out a restarting object store
        except Exception as exc:  # noqa: BLE001 - any store error is the job's FailureReason
            raise AgentError(
                f"ClientError: could not upload {filename} to s3://{bucket}/{key}: "
                f"{describe_s3_error(exc, f's3://{bucket}/{key}')}. Check that the bucket of S3OutputPath exists."
            ) from exc
    return f"s3://{bucket}/{key}"


def has_files(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() for p in path.rglob("*"))


# ----------------------------------------------------------------------------------------- checkpoints


class CheckpointSync:
    """Mirrors the local checkpoint dir with CheckpointConfig.S3Uri: download at start, upload changes."""

    def __init__(self, store: ObjectStore, uri: str, local_dir: Path, interval: float,
                 what: str = "checkpoints", within: Path | None = None) -> None:
        self.what = what  # how failures name it: "checkpoints", "processing output 'train'"
        self.store = store
        self.bucket, self.prefix = split_s3_uri(uri)
        self.local_dir = local_dir
        # Uploaded files must really lie inside this directory: the job's /opt/ml, which the job cannot
        # replace. Not local_dir: the job owns it and can swap it for a link to a host directory (the check
        # would then follow the link and pass, and the agent - root - upload the platform's secrets).
        self.within = within if within is not None else local_dir
        self.interval = interval
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.error: str | None = None

    def download(self) -> int:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        list_prefix = self.prefix.rstrip("/") + "/" if self.prefix else ""
        count = 0
        uri = f"s3://{self.bucket}/{self.prefix}"
        try:
            infos = list(self.store.list(self.bucket, list_prefix))
        except ObjectNotFound as exc:
            raise AgentError(
                f"ClientError: the bucket of CheckpointConfig.S3Uri {uri} does not exist."
            ) from exc
        except Exception as exc:  # noqa: BLE001 - worded for the user
            raise AgentError(f"ClientError: could not list the checkpoints at CheckpointConfig.S3Uri: "
                             f"{describe_s3_error(exc, uri)}.") from exc
        for info in infos:
            rel = info.key[len(list_prefix):]
            if not rel or rel.endswith("/") or ".." in rel.split("/"):
                continue
            dest = self.local_dir.joinpath(*rel.split("/"))
            try:
                self.store.get_to_file(self.bucket, info.key, dest)
            except Exception as exc:  # noqa: BLE001 - worded for the user
                raise AgentError(f"ClientError: could not download checkpoint "
                                 f"{describe_s3_error(exc, f's3://{self.bucket}/{info.key}')}.") from exc
            self._seen[rel] = self._signature(dest)
            count += 1
        return count

    @staticmethod
    def _signature(path: Path) -> tuple[int, int]:
        st = path.stat()
        return (st.st_size, st.st_mtime_ns)

    def upload_changes(self) -> int:
        with self._lock:
            count = 0
            if not self.local_dir.is_dir():
                return 0
            for path in sorted(self.local_dir.rglob("*")):
                if not path.is_file() or path.is_symlink():
                    continue
                rel = path.relative_to(self.local_dir).as_posix()
                try:
                    sig = self._signature(path)
                except FileNotFoundError:
                    continue
                if self._seen.get(rel) == sig:
                    continue
                # The job writes here while we read: open it safely (no link, inside the dir), upload that.
                fd = sandbox.open_job_file(path, self.within)
                if fd is None:
                    continue
                try:
                    self.store.put_file(self.bucket, _join_key(self.prefix, rel), Path(f"/proc/self/fd/{fd}"))
                finally:
                    os.close(fd)
                self._seen[rel] = sig
                count += 1
            return count

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="checkpoints", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.upload_changes()
            except Exception as exc:  # noqa: BLE001 - retried next round; the final upload reports
                self.error = str(exc)

    def finish(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.upload_changes()
        except Exception as exc:  # noqa: BLE001 - worded for the user
            uri = f"s3://{self.bucket}/{self.prefix}"
            raise AgentError(f"ClientError: could not upload {self.what}: {describe_s3_error(exc, uri)}") from exc


# ----------------------------------------------------------------------------------------- failure text


def _truncate(text: str) -> str:
    return text[:FAILURE_REASON_MAX]


def failure_reason(outcome: sandbox.Outcome, ml_root: Path, what: str = "training") -> str | None:
    if outcome.exit_code == 0 or outcome.stopped:
        return None
    if outcome.max_runtime_exceeded:
        return None
    # Written by the job's code: never followed through a link (it could point at the platform's secrets).
    text = (sandbox.read_job_text(ml_root / "output" / "failure", ml_root) or "").strip()
    if text:
        return _truncate(text)
    head = f"AlgorithmError: the {what} command exited with exit code {outcome.exit_code}."
    if not outcome.tail:
        return _truncate(head + " It printed nothing.")
    budget = FAILURE_REASON_MAX - len(head) - len(" Last log lines:\n")
    lines: list[str] = []
    for line in reversed(outcome.tail):
        cost = len(line) + 1
        if cost > budget:
            if not lines:
                lines.append("..." + line[-(budget - 4):])
            break
        lines.insert(0, line)
        budget -= cost
    return _truncate(head + " Last log lines:\n" + "\n".join(lines))


# ----------------------------------------------------------------------------------------- environment


def job_log_writer(log_path: Path):
    """Lines into the job's log (``<epoch-ms> <text>``, as the log pump writes them): CloudWatch shows them."""
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def write(text: str) -> None:
        with open(log_path, "a", encoding="utf-8", errors="replace") as fh:
            for line in text.splitlines() or [""]:
                fh.write(f"{int(time.time() * 1000)} {line}\n")
    return write


def prepare_environment(spec: JobSpec, log_path: Path, events: EventLog) -> str | None:
    """Run the job in its image's environment (``images.environment_for_image``): built now when missing,
    as SageMaker pulls an image (SecondaryStatus Downloading, "Downloading the training image", with
    progress lines in the log). The command's interpreter becomes the environment's, which is returned
    (None: the platform's own)."""
    image = spec.environment.pop("OPENSAGE_JOB_IMAGE", None)
    kind = spec.environment.pop("OPENSAGE_JOB_IMAGE_KIND", None) or ""
    cache = spec.environment.pop("OPENSAGE_ENV_CACHE", None)
    if not image:
        return None
    from opensage import environments, images

    env_spec = images.environment_for_image(image, kind)
    if env_spec is None:
        return None
    write = job_log_writer(log_path)
    root = Path(cache) if cache else environments.cache_root()
    try:
        env = environments.ensure_environment(
            env_spec, root, log=write,
            on_build=lambda: events.append("Downloading", "Downloading the training image"))
    except environments.EnvironmentError as exc:
        raise AgentError(str(exc)) from exc
    if env.directory is None:
        return None
    if spec.command and (spec.command[0] == sys.executable or os.path.basename(spec.command[0]).startswith("python")):
        spec.command[0] = env.python
    spec.environment[sandbox.IMAGE_ENV_DIR] = str(env.directory)
    return str(env.python)


JOB_PYTHON_DIR = ".sagemaker-python"  # under /opt/ml: the processing job's own Python layer


def job_python_layer(ml_root: Path, python: str) -> str:
    """A virtual environment of the job's own over the image's (``python``): ``python``/``python3``/``pip``
    in its bin dir (returned as a container path, /opt/ml/...), the image's packages visible through a .pth.

    A processing container is writable and its user root: FrameworkProcessor's runproc.sh runs ``pip
    uninstall --yes typing`` and ``pip install -r requirements.txt``. Here the image's environment is shared
    and read-only to the job's uid; in this layer pip leaves what is outside it alone ("outside environment")
    and installs what is missing into the layer, as the container would into itself."""
    layer = ml_root / JOB_PYTHON_DIR
    bin_dir = layer / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    real = os.path.realpath(python)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    (layer / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(real)}\ninclude-system-site-packages = false\nversion = {version}\n")
    for name in ("python", "python3", f"python{version}"):
        link = bin_dir / name
        if not link.is_symlink():
            link.symlink_to(real)
    pip = bin_dir / "pip"
    pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n')
    pip.chmod(0o755)
    for name in ("pip3", f"pip{version}"):
        link = bin_dir / name
        if not link.is_symlink():
            link.symlink_to("pip")
    site = layer / "lib" / f"python{version}" / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    import subprocess

    paths = subprocess.run([python, "-c", "import site, sys; print('\\n'.join(site.getsitepackages()))"],
                           capture_output=True, text=True, timeout=60, check=False).stdout.split()
    # addsitedir, not a bare path: the image's own .pth files (its platform link, patches) apply too.
    (site / "_opensage_image.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in paths))
    return f"{sandbox.OPT_ML}/{JOB_PYTHON_DIR}/bin"


# ----------------------------------------------------------------------------------------- the job

ZYGOTE_DIR_ENV = "OPENSAGE_ZYGOTE_DIR"  # runner/zygote.py: where the reconciler's fork servers listen


def platform_dir(path: str | None) -> Path | None:
    """``path`` if it is a directory only this agent's user can use (root's fork servers: the agent signals
    the pids they name), else None."""
    if not path:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    import stat as stat_mod

    if not stat_mod.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return Path(path)



class Agent:
    def __init__(self, jobdir: Path, control: sandbox.Control) -> None:
        self.jobdir = jobdir
        self.control = control
        self.ml_root = jobdir / "ml"
        self.events = EventLog(jobdir / "events.jsonl")
        self.spec: JobSpec | None = None
        self.store: ObjectStore | None = None

    def check(self) -> None:
        if self.control.stop_requested or self.control.deadline_passed():
            raise JobInterrupted()

    def run(self) -> JobResult:
        self.spec = spec = JobSpec.read(self.jobdir)
        if spec.max_runtime_seconds:
            self.control.deadline = self.control.started + spec.max_runtime_seconds
        make_layout(self.ml_root)
        zygotes = platform_dir(spec.environment.pop(ZYGOTE_DIR_ENV, None))
        from opensage.objects import open_store

        # Every transfer of the job waits out a restart of the platform's object store.
        self.store = store = RetryingStore(open_store(spec.object_store))
        _warm_client(store)
        log_path = self.jobdir / "logs" / f"algo-{spec.host_index + 1}.log"
        python = prepare_environment(spec, log_path, self.events)
        self.check()
        if spec.kind == "processing":
            return self._run_processing(log_path, python)
        self.events.append("Downloading", "Downloading input data")
        feeders = channels.prepare_channels(
            store, spec.channels, self.ml_root / "input" / "data", spec.host_index, spec.host_count,
            self.check, stream_fastfile=" ".join(spec.command[1:3]).startswith("-m opensage.algorithms."),
        )
        ckpt = self._checkpoints()
        self.check()
        self.events.append("Training", "Training image download completed. Training in progress.")

        def on_start() -> None:
            for feeder in feeders:
                feeder.start()
            if ckpt is not None:
                ckpt.start()

        try:
            outcome = sandbox.run_command(spec, self.ml_root, log_path, self.control, on_start,
                                          zygote_dir=zygotes)
            if outcome.exit_code == 0 and not outcome.stopped:
                self._await_file_mode_streams(feeders)
        finally:
            for feeder in feeders:
                feeder.stop()
        return self._finish(outcome, feeders, ckpt)

    def _await_file_mode_streams(self, feeders: list[Any]) -> None:
        """File mode promises the whole channel: a built-in that streamed a File-mode channel (runner.fastfile)
        and exited 0 without reading all of it (files it skips, the idle host of a replicated channel) still
        fails if the rest of the download fails, as it would have before the algorithm started."""
        for feeder in filter(_streams_file_mode, feeders):
            while feeder.is_alive() and not (self.control.stop_requested or self.control.deadline_passed()):
                feeder.join(0.2)

    # -- processing jobs ---------------------------------------------------------------------------
    def _run_processing(self, log_path: Path, python: str | None) -> JobResult:
        """A processing container: inputs to their LocalPaths, the command (``python``/``pip`` on PATH are
        the image environment's), outputs uploaded while it runs (Continuous) and at the end."""
        spec = self.spec
        assert spec is not None and self.store is not None
        bin_dir = job_python_layer(self.ml_root, python or sys.executable)
        if spec.command and os.path.basename(spec.command[0]).startswith("python"):
            spec.command[0] = f"{bin_dir}/python"
        spec.environment["PATH"] = os.environ.get("PATH", os.defpath)
        sandbox.prepend_path(spec.environment, bin_dir)
        destinations = {ch.name: local_path(self.ml_root, ch.local_path, f"ProcessingInput '{ch.name}' LocalPath")
                        for ch in spec.channels if ch.local_path}
        # File inputs are downloaded to their LocalPath; Pipe ones stream through the FIFO <LocalPath>_0.
        feeders = channels.prepare_channels(self.store, spec.channels, self.ml_root / "input" / "data",
                                            spec.host_index, spec.host_count, self.check, destinations)
        syncs: list[tuple[Any, CheckpointSync]] = []
        for out in spec.outputs:
            local = local_path(self.ml_root, out.local_path, f"ProcessingOutput '{out.name}' LocalPath")
            local.mkdir(parents=True, exist_ok=True)
            syncs.append((out, CheckpointSync(self.store, out.s3_uri, local, spec.checkpoint_sync_seconds,
                                              what=f"processing output '{out.name}' to {out.s3_uri}",
                                              within=self.ml_root)))
        self.check()

        def on_start() -> None:
            for feeder in feeders:
                feeder.start()
            for out, sync in syncs:
                if out.upload_mode == "Continuous":
                    sync.start()

        try:
            outcome = sandbox.run_command(spec, self.ml_root, log_path, self.control, on_start)
        finally:
            for feeder in feeders:
                feeder.stop()
        result = JobResult(exit_code=outcome.exit_code, stopped=outcome.stopped,
                           max_runtime_exceeded=outcome.max_runtime_exceeded)
        if outcome.start_error is not None:
            result.failure_reason = _truncate(f"AlgorithmError: {outcome.start_error}")
        else:
            result.failure_reason = failure_reason(outcome, self.ml_root, "processing")
            # A broken stream fails the job even when the script exited 0: it read truncated data.
            pipe_errors = [f.error for f in feeders if f.error]
            if pipe_errors and not (outcome.stopped or outcome.max_runtime_exceeded):
                result.failure_reason = _truncate(pipe_errors[0])
        message = sandbox.read_job_text(self.ml_root / "output" / "message", self.ml_root, FAILURE_REASON_MAX)
        if message:
            result.extra["exit_message"] = message[:FAILURE_REASON_MAX]
        # Continuous outputs keep what was written, however the job ended; EndOfJob ones only on success.
        succeeded = outcome.exit_code == 0 and outcome.start_error is None and result.failure_reason is None
        errors: list[str] = []
        for out, sync in syncs:
            if out.upload_mode != "Continuous" and not succeeded:
                continue
            try:
                sync.finish()
            except AgentError as exc:
                errors.append(str(exc))
        if errors and result.failure_reason is None:
            result.failure_reason = _truncate(errors[0])
        return result

    def _checkpoints(self) -> CheckpointSync | None:
        spec = self.spec
        assert spec is not None and self.store is not None
        if not spec.checkpoint_s3_uri:
            return None
        local = local_path(self.ml_root, spec.checkpoint_local_path)
        ckpt = CheckpointSync(self.store, spec.checkpoint_s3_uri, local, spec.checkpoint_sync_seconds,
                              within=self.ml_root)
        ckpt.download()
        return ckpt

    def _finish(
        self, outcome: sandbox.Outcome, feeders: list[channels.PipeFeeder], ckpt: CheckpointSync | None
    ) -> JobResult:
        spec = self.spec
        assert spec is not None and self.store is not None
        result = JobResult(
            exit_code=outcome.exit_code,
            stopped=outcome.stopped,
            max_runtime_exceeded=outcome.max_runtime_exceeded,
        )
        if outcome.start_error is not None:
            result.failure_reason = _truncate(f"AlgorithmError: {outcome.start_error}")
        else:
            result.failure_reason = failure_reason(outcome, self.ml_root)
            pipe_errors = [f.error for f in feeders if f.error]
            if pipe_errors and outcome.exit_code != 0 and not outcome.stopped:
                result.failure_reason = _truncate(pipe_errors[0])
            file_mode_errors = [f.error for f in feeders if f.error and _streams_file_mode(f)]
            if file_mode_errors and outcome.exit_code == 0 and not outcome.stopped:
                result.exit_code = 1  # the data File mode promised never arrived: the job fails with its reason
                result.failure_reason = _truncate(file_mode_errors[0])
        self.events.append("Uploading", "Uploading generated training model")
        errors: list[str] = []
        self._upload_artifacts(result, outcome, errors)
        if ckpt is not None:
            try:
                ckpt.finish()
            except AgentError as exc:
                errors.append(str(exc))
        if errors and result.failure_reason is None:
            result.failure_reason = _truncate(errors[0])
        return result

    def _upload_artifacts(self, result: JobResult, outcome: sandbox.Outcome, errors: list[str]) -> None:
        spec = self.spec
        assert spec is not None and self.store is not None
        model_dir = self.ml_root / "model"
        started = outcome.start_error is None
        ended_well = outcome.exit_code == 0 or outcome.stopped or outcome.max_runtime_exceeded
        if spec.model_s3_uri and started and (ended_well or has_files(model_dir)):
            try:
                uri = upload_dir_as_tar(self.store, model_dir, spec.model_s3_uri, "model.tar.gz", self.ml_root)
                result.model_uploaded = True
                result.extra["model_artifacts"] = uri
            except AgentError as exc:
                errors.append(str(exc))
        out_dir = self.ml_root / "output" / "data"
        if spec.output_s3_uri and has_files(out_dir):
            try:
                uri = upload_dir_as_tar(self.store, out_dir, spec.output_s3_uri, "output.tar.gz", self.ml_root)
                result.output_uploaded = True
                result.extra["output_artifacts"] = uri
            except AgentError as exc:
                errors.append(str(exc))


def _warm_client(store: Any) -> None:
    """Build the S3 client (import boto3, parse botocore's data: ~0.3 s in a fresh agent) on a thread while
    the agent prepares the job's environment; the first transfer takes it from there (S3Store.client locks)."""
    from opensage.objects.s3 import S3Store

    inner = getattr(store, "inner", store)
    if not isinstance(inner, S3Store):
        return

    def warm() -> None:
        try:
            _ = inner.client
        except Exception:  # noqa: BLE001 - the first transfer builds it again and reports the error
            pass

    threading.Thread(target=warm, name="warm-s3-client", daemon=True).start()


# ----------------------------------------------------------------------------------------- entry point


def _become_group_leader() -> None:
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    except OSError:
        pass  # a session leader already leads its group


def _streams_file_mode(feeder: Any) -> bool:
    channel = getattr(getattr(feeder, "plan", None), "channel", None)
    return channel is not None and channel.input_mode == "File"


def run_agent(jobdir: Path) -> JobResult:
    """Run the job in ``jobdir`` and write ``result.json``; never raises (except on SIGKILL, nothing does)."""
    control = sandbox.Control(None)
    signal.signal(signal.SIGTERM, control.request_stop)
    signal.signal(signal.SIGINT, control.request_stop)
    agent = Agent(jobdir, control)
    try:
        result = agent.run()
    except JobInterrupted:
        result = JobResult(
            exit_code=None,
            stopped=control.stop_requested,
            max_runtime_exceeded=not control.stop_requested,
        )
    except (channels.ChannelError, AgentError) as exc:
        result = JobResult(exit_code=None, failure_reason=_truncate(str(exc)))
    except Exception as exc:  # noqa: BLE001 - the agent must always leave a result
        traceback.print_exc()
        result = JobResult(
            exit_code=None,
            failure_reason=_truncate(f"InternalServerError: the job agent failed: {type(exc).__name__}: {exc}"),
        )
    result.write(jobdir)
    return result


def _job_kind(jobdir: Path) -> str:
    try:
        return str(json.loads((jobdir / "jobspec.json").read_text()).get("kind") or "training")
    except (OSError, ValueError):
        return "training"  # run_agent reports the unreadable spec


def _wait_as_spare() -> Path | None:
    """A spare agent (executors/local.py): import what every agent needs, then wait for a job directory on
    stdin; work in it and log to its agent.log as a fresh agent would. None: stdin closed, no job came.

    The imports run on a thread so that a job given early is taken at once: the working directory is what
    identifies this process as the job's agent (``process_alive``) until it writes agent.pid. Until then it
    runs at SCHED_IDLE where it can leave it (the executor put its main thread there too): it uses only CPU
    that no job wants."""
    from opensage.executors.local import can_leave_idle_priority, set_scheduling

    if can_leave_idle_priority():
        set_scheduling(0, idle=True)

    def preload() -> None:
        try:
            import boto3  # noqa: F401 - what the job's transfers need, loaded before the job exists
            import botocore.client  # noqa: F401

            # What run() imports on its way to the algorithm: ~45 ms more of every job's start (measured in
            # a job: its image's environment lookup took 70-130 ms, most of it importing these).
            import opensage.environments  # noqa: F401
            import opensage.images  # noqa: F401
            import opensage.runner.fastfile  # noqa: F401
            import opensage.runner.zygote  # noqa: F401
            from opensage.objects.s3 import warm_client_session

            warm_client_session()
        except Exception:  # noqa: BLE001 - the job imports them itself and reports what fails
            pass

    loading = threading.Thread(target=preload, name="spare-preload", daemon=True)
    loading.start()
    line = sys.stdin.buffer.readline()
    if not line.endswith(b"\n"):
        return None
    jobdir = Path(os.fsdecode(line[:-1])).resolve()
    os.chdir(jobdir)
    # back to normal scheduling before anything of the job: what this thread starts inherits its class
    restored = True
    for tid in (0, loading.native_id if loading.is_alive() else None):
        try:
            if tid is not None and os.sched_getscheduler(tid) == os.SCHED_IDLE:
                restored = set_scheduling(tid, idle=False) and restored
        except (OSError, AttributeError):  # the thread ended meanwhile; no SCHED_IDLE on this platform
            pass
    loading.join()
    log_fd = os.open(jobdir / "agent.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((null_fd, 0), (log_fd, 1), (log_fd, 2)):
        os.dup2(fd, target)
    os.close(log_fd)
    os.close(null_fd)
    if not restored:
        print("job agent: could not leave SCHED_IDLE; the job runs at idle priority", file=sys.stderr)
    return jobdir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--spare"]:
        spare_jobdir = _wait_as_spare()
        if spare_jobdir is None:
            return 0
        args = [str(spare_jobdir)]
    if len(args) != 1:
        print("usage: python -m opensage.runner.agent <jobdir>", file=sys.stderr)
        return 2
    jobdir = Path(args[0]).resolve()
    _become_group_leader()
    pid_tmp = jobdir / "agent.pid.tmp"  # atomic: a reader must never see an empty pid file
    pid_tmp.write_text(str(os.getpid()))
    os.replace(pid_tmp, jobdir / "agent.pid")
    if _job_kind(jobdir) == "transform":
        from opensage.runner.transform_worker import run_worker

        result = run_worker(jobdir)
    else:
        result = run_agent(jobdir)
    print(f"job agent done: {json.dumps(result.__dict__)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    code = main()
    # result.json is written and every transfer has ended: skip the interpreter's teardown (joining idle
    # transfer pools' threads, module cleanup: 20-100 ms measured), so the control plane, woken by this exit
    # (LocalExecutor.on_agent_exit), sees the job's end that much sooner.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
