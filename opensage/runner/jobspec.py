"""What the control plane hands to a job's agent process, and what the agent hands back.

The reconciler writes ``<jobdir>/jobspec.json``; the agent (``python -m opensage.runner.agent <jobdir>``)
does everything a SageMaker instance does for one host: fetch channels, run the container command with
``/opt/ml`` = ``<jobdir>/ml``, capture logs, upload artifacts. It reports through files only, so it can
outlive (and be adopted by) a restarted control plane, and can run on another machine (Ray):

* ``<jobdir>/logs/algo-<n>.log``  one line per output line: ``<epoch-ms> <text>`` (first space splits)
* ``<jobdir>/events.jsonl``       ``{"time": epoch-seconds, "status": <SecondaryStatus>, "message": str}``
* ``<jobdir>/result.json``        written last, atomically: see ``JobResult``
* ``<jobdir>/agent.pid``          pid of the agent (process-group leader)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an older tmp file may have had wider permissions
        fh.write(text)
    os.replace(tmp, path)


@dataclass
class ChannelSpec:
    name: str
    s3_uri: str
    s3_data_type: str = "S3Prefix"  # S3Prefix | ManifestFile | AugmentedManifestFile
    distribution: str = "FullyReplicated"  # FullyReplicated | ShardedByS3Key
    input_mode: str = "File"  # File | Pipe | FastFile (FastFile is served as File)
    content_type: str | None = None
    compression: str = "None"  # None | Gzip
    record_wrapper: str = "None"  # None | RecordIO
    attribute_names: list[str] | None = None
    shuffle_seed: int | None = None
    # Processing inputs: the container path (under /opt/ml/processing) the objects go to, instead of
    # input/data/<name>.
    local_path: str | None = None


@dataclass
class OutputSpec:
    """A processing output: ``local_path`` (under /opt/ml/processing) mirrored to ``s3_uri``."""

    name: str
    s3_uri: str
    local_path: str
    upload_mode: str = "EndOfJob"  # EndOfJob | Continuous


@dataclass
class ObjectStoreSpec:
    """How the agent reaches object storage (an S3-compatible endpoint, or file:// for tests)."""

    endpoint_url: str | None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    session_token: str | None = None  # with a job's temporary credentials (opensage.credentials)


@dataclass
class JobSpec:
    job_name: str
    job_arn: str
    kind: str  # "training" | "processing" | "transform"
    command: list[str]  # argv; may reference /opt/ml (the agent maps it to ml_root)
    environment: dict[str, str]  # extra environment for the user process
    channels: list[ChannelSpec]
    object_store: ObjectStoreSpec
    model_s3_uri: str | None = None  # where model/ goes as model.tar.gz
    output_s3_uri: str | None = None  # where output/data goes as output.tar.gz
    checkpoint_s3_uri: str | None = None
    checkpoint_local_path: str = "/opt/ml/checkpoints"
    max_runtime_seconds: int | None = None
    stop_grace_seconds: int = 120
    host_index: int = 0  # algo-(host_index+1)
    host_count: int = 1
    checkpoint_sync_seconds: float = 10.0  # how often new/changed checkpoint files are uploaded
    sandbox: str = "auto"  # auto | namespace (bind /opt/ml; root on Linux) | plain (SAGEMAKER_BASE_DIR)
    # The unprivileged uid the user command runs as when the agent is root (None: the agent picks one).
    # One per host, so "every process of this uid" is exactly this host's user processes.
    run_as_uid: int | None = None
    outputs: list[OutputSpec] = field(default_factory=list)  # processing outputs

    def write(self, jobdir: Path) -> None:
        # It carries the job's (temporary) credentials: owner-only, like every file of the platform's home.
        write_private(jobdir / "jobspec.json", json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, jobdir: Path) -> JobSpec:
        raw: dict[str, Any] = json.loads((jobdir / "jobspec.json").read_text())
        raw["channels"] = [ChannelSpec(**c) for c in raw["channels"]]
        raw["object_store"] = ObjectStoreSpec(**raw["object_store"])
        raw["outputs"] = [OutputSpec(**o) for o in raw.get("outputs") or []]
        return cls(**raw)


@dataclass
class JobResult:
    exit_code: int | None  # None if the user process never started
    failure_reason: str | None = None  # first 1024 chars of output/failure, or the agent's own reason
    stopped: bool = False  # StopTrainingJob (SIGTERM) was honoured
    max_runtime_exceeded: bool = False
    model_uploaded: bool = False
    output_uploaded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, jobdir: Path) -> None:
        write_private(jobdir / "result.json", json.dumps(asdict(self)))

    @classmethod
    def read(cls, jobdir: Path) -> JobResult | None:
        path = jobdir / "result.json"
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))
