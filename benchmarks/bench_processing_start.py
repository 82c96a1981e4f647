"""Processing start latency: CreateProcessingJob -> the first log line of the user's Python script.

A ScriptProcessor-style request (what ``ScriptProcessor(command=["python3"]).run(code=...)`` sends):
``AppSpecification.ContainerEntrypoint = ["python3", "/opt/ml/processing/input/code/script.py"]``, the script
as the ProcessingInput ``code`` (one S3 object), a 200-row CSV as the input ``data``
(``/opt/ml/processing/input/data``) and one EndOfJob output (``/opt/ml/processing/output``). The script's first
statement is ``print("first line", flush=True)``.

For each run (sequential; each job finishes before the next starts):

* ``t0`` = ``time.time()`` just before ``create_processing_job``;
* ``t1`` = the ``timestamp`` (epoch ms, written by the job agent when it read the line from the script's
  stdout) of the first event of the job's stream in ``/aws/sagemaker/ProcessingJobs`` whose message is the
  script's first line, read back through the Logs API (polled every 20 ms).

Images (``--kinds``):

* ``sklearn``: ``sagemaker-scikit-learn:1.2-1-cpu-py3``. Its pins are not the platform's, so the first job on
  a fresh home builds the environment (``environments.ensure_environment``: minutes). That first job is
  reported on its own as ``cold (environment build)``; the measured runs then use the cached environment.
* ``pytorch``: ``pytorch-training:2.1.0-cpu-py310``: the platform's interpreter satisfies its pins
  (``environments.unsatisfied_pins`` is empty), so no environment is resolved from the cache: the fast path.
* ``xgboost``: ``sagemaker-xgboost:1.7-1`` (builds its own environment on first use, like sklearn).

Breakdown (seconds after t0), from the job directory ``<home>/jobs/processing-<job>/algo-1`` and from the
script itself: ``ProcessingStartTime`` (the reconciler launched the agent), ``agent.pid``'s mtime (the
agent's Python is up), the environment log line (``Using the cached environment ...``: image environment
resolved), ``.sagemaker-python/pyvenv.cfg`` / ``_opensage_image.pth`` mtimes (``agent.job_python_layer``
began / ended), the input files' mtimes (inputs downloaded), the script process's start time from
``/proc/self/stat`` (the command was spawned: ``unshare`` + ``jobexec.py`` exec into it, so its pid is the
one the agent forked), the script's own ``time.time()`` at its first statement (interpreter up) and the first
line's agent timestamp.

    .venv/bin/python benchmarks/bench_processing_start.py --platform up --runs 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training_start import (  # noqa: E402 - the same platforms and helpers as training start
    BUCKET,
    POLL_SECONDS,
    ROLE,
    Platform,
    _log_lines,
    open_platform,
    summarize,
    tiny_csv,
)

LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
REGISTRY = "683313688378.dkr.ecr.us-east-1.amazonaws.com"
IMAGES = {
    "sklearn": f"{REGISTRY}/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "pytorch": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1.0-cpu-py310",
    "xgboost": f"{REGISTRY}/sagemaker-xgboost:1.7-1",
}
CODE_KEY = "pstart/code/script.py"
DATA_PREFIX = "pstart/data"
FIRST_LINE = "first line"
# The first statement prints the first line; `time` is a built-in module (no import cost before it). The
# second line reports when the script began and when its process was forked (/proc/self/stat starttime is
# in clock ticks since boot, CLOCK_BOOTTIME), both as epoch seconds.
SCRIPT = f"""import time
_began = time.time()
print("{FIRST_LINE}", flush=True)
import os
_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
_age = time.clock_gettime(time.CLOCK_BOOTTIME) - _ticks / os.sysconf("SC_CLK_TCK")
print("bench-marks", _began, time.time() - _age, flush=True)
os.makedirs("/opt/ml/processing/output", exist_ok=True)
with open("/opt/ml/processing/output/rows.txt", "w") as fh:
    fh.write(str(sum(1 for _ in open("/opt/ml/processing/input/data/data.csv"))))
"""


def prepare_inputs(p: Platform) -> None:
    p.put(BUCKET, CODE_KEY, SCRIPT.encode())
    p.put(BUCKET, f"{DATA_PREFIX}/data.csv", tiny_csv())


def job_request(name: str, kind: str) -> dict[str, Any]:
    """What SDK v2's ScriptProcessor(command=["python3"]).run(code=..., inputs=[...], outputs=[...]) sends."""
    return {
        "ProcessingJobName": name,
        "RoleArn": ROLE,
        "AppSpecification": {"ImageUri": IMAGES[kind],
                             "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/script.py"]},
        "ProcessingInputs": [
            {"InputName": "data", "AppManaged": False, "S3Input": {
                "S3Uri": f"s3://{BUCKET}/{DATA_PREFIX}", "LocalPath": "/opt/ml/processing/input/data",
                "S3DataType": "S3Prefix", "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated",
                "S3CompressionType": "None"}},
            {"InputName": "code", "AppManaged": False, "S3Input": {
                "S3Uri": f"s3://{BUCKET}/{CODE_KEY}", "LocalPath": "/opt/ml/processing/input/code",
                "S3DataType": "S3Prefix", "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated",
                "S3CompressionType": "None"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "output", "AppManaged": False, "S3Output": {
            "S3Uri": f"s3://{BUCKET}/pstart/out/{name}", "LocalPath": "/opt/ml/processing/output",
            "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                  "VolumeSizeInGB": 10}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


def first_event(p: Platform, job: str, match: Callable[[str], bool], timeout: float) -> dict[str, Any]:
    """Poll the Logs API until the job's stream has an event that ``match``es (fails at once if the job ends
    without one, with its FailureReason)."""
    deadline = time.time() + timeout
    stream = None
    last_check = time.time()
    ended: dict[str, Any] | None = None
    while time.time() < deadline:
        if stream is None:
            try:
                found = p.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/")
            except p.logs.exceptions.ResourceNotFoundException:  # the group appears with the first event
                found = {}
            streams = found.get("logStreams") or []
            stream = streams[0]["logStreamName"] if streams else None
        if stream is not None:
            for ev in p.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                                            startFromHead=True)["events"]:
                if match(ev["message"]):
                    return ev
        if ended is not None:  # the reconciler ingests every line before it ends a job: none will come
            raise RuntimeError(f"processing job {job} ended {ended['ProcessingJobStatus']} without the "
                               f"expected log line: {ended.get('FailureReason')}")
        if time.time() - last_check > 0.5:
            last_check = time.time()
            d = p.sm.describe_processing_job(ProcessingJobName=job)
            if d["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
                ended = d
                stream = None
                continue
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"processing job {job}: no '{FIRST_LINE}' log event within {timeout:.0f}s")


def wait_finished(sm: Any, name: str, timeout: float = 1800.0, poll: float = 0.05) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_processing_job(ProcessingJobName=name)
        if d["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(poll)
    raise TimeoutError(f"processing job {name} still running after {timeout:.0f}s")


# ----------------------------------------------------------------------------------------- breakdown


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def breakdown(jobdir: Path, t0: float, launched: float) -> dict[str, float]:
    """Seconds after t0 at which each step of the start path happened (the agent's files, the script's line)."""
    marks: dict[str, float] = {"launched": launched - t0}
    ml = jobdir / "ml"
    layer = ml / ".sagemaker-python"
    stamps = {
        "agent_up": _mtime(jobdir / "agent.pid"),
        "layer_began": _mtime(layer / "pyvenv.cfg"),
        "layer_built": next((_mtime(p) for p in layer.glob("lib/python*/site-packages/_opensage_image.pth")), None),
        "data_downloaded": _mtime(ml / "processing" / "input" / "data" / "data.csv"),
        "code_downloaded": _mtime(ml / "processing" / "input" / "code" / "script.py"),
    }
    marks.update({k: v - t0 for k, v in stamps.items() if v is not None})
    for line in (jobdir / "events.jsonl").read_text().splitlines() if (jobdir / "events.jsonl").exists() else []:
        ev = json.loads(line)
        if ev["status"] == "Downloading":  # written only when the image's environment is built now
            marks["env_build_began"] = float(ev["time"]) - t0
    lines = _log_lines(jobdir / "logs" / "algo-1.log")
    env_line = next((t for t, text in lines if text.startswith(("Using the cached environment",
                                                                 "Using the environment for image"))), None)
    if env_line is None:  # a build: its last line before the script's (the environment is ready)
        env_line = next((prev for (prev, _), (_, text) in zip(lines, lines[1:], strict=False) if text == FIRST_LINE), None)
    if env_line is not None:
        marks["env_ready"] = env_line - t0
    for _, text in lines:
        if text.startswith("bench-marks "):
            began, spawned = (float(x) for x in text.split()[1:3])
            marks["command_spawned"] = spawned - t0
            marks["script_began"] = began - t0
    return marks


# ----------------------------------------------------------------------------------------- runs


@dataclass
class Sample:
    job: str
    latency: float  # t1 - t0, seconds
    seen: float  # when the poller saw the event - t0
    completed: float  # create -> terminal status observed
    status: str
    marks: dict[str, float] = field(default_factory=dict)


def run_one(p: Platform, name: str, kind: str) -> Sample:
    req = job_request(name, kind)
    t0 = time.time()
    p.sm.create_processing_job(**req)
    ev = first_event(p, name, lambda message: message == FIRST_LINE, timeout=1800)
    seen = time.time() - t0
    desc = wait_finished(p.sm, name)
    completed = time.time() - t0
    if desc["ProcessingJobStatus"] != "Completed":
        raise RuntimeError(f"processing job {name}: {desc['ProcessingJobStatus']}: {desc.get('FailureReason')}")
    marks = breakdown(p.home / "jobs" / f"processing-{name}" / "algo-1", t0,
                      desc["ProcessingStartTime"].timestamp())
    return Sample(name, ev["timestamp"] / 1000.0 - t0, seen, completed, desc["ProcessingJobStatus"], marks)


def _result(p: Platform, kind: str, label: str, samples: list[Sample]) -> dict[str, Any]:
    mark_names = sorted({k for s in samples for k in s.marks}, key=lambda k: statistics.median(
        [s.marks[k] for s in samples if k in s.marks]))
    return {
        "platform": p.kind, "kind": kind, "image": IMAGES[kind], "label": label, "runs": len(samples),
        "first_line": summarize([s.latency for s in samples]),
        "seen_via_api": summarize([s.seen for s in samples]),
        "completed": summarize([s.completed for s in samples]),
        "marks": {k: statistics.median([s.marks[k] for s in samples if k in s.marks]) for k in mark_names},
    }


def run_kind(p: Platform, kind: str, runs: int) -> list[dict[str, Any]]:
    """The first job on this home (cold: the image's environment is built or the page cache is cold), reported
    on its own, then ``runs`` measured warm ones."""
    stamp = int(time.time())
    cold = run_one(p, f"pcold-{kind}-{stamp}", kind)
    label = "cold (environment build)" if "env_build_began" in cold.marks else "cold (first job)"
    warm = [run_one(p, f"pstart-{kind}-{stamp}-{i}", kind) for i in range(runs)]
    return [_result(p, kind, label, [cold]), _result(p, kind, "warm", warm)]


def run(platform: str, runs: int, kinds: tuple[str, ...] = ("pytorch", "sklearn")) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="opensage-bench-pstart-") as tmp, \
            open_platform(platform, Path(tmp)) as p:
        prepare_inputs(p)
        return [r for kind in kinds for r in run_kind(p, kind, runs)]


# ----------------------------------------------------------------------------------------- report

MARK_LABELS = {
    "launched": "reconciler launched agent (ProcessingStartTime)",
    "agent_up": "agent process up (agent.pid)",
    "env_build_began": "environment build began",
    "env_ready": "image environment resolved (its log line)",
    "layer_began": "job Python layer began",
    "layer_built": "layer built (image site query done)",
    "data_downloaded": "input 'data' downloaded",
    "code_downloaded": "input 'code' downloaded",
    "command_spawned": "command forked (script's pid start)",
    "script_began": "script's first statement",
}


def markdown(results: list[dict[str, Any]]) -> str:
    rows = ["| platform | image | runs | first line median | p90 | min | max | seen via API (median) | "
            "create→Completed (median) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["first_line"]
        what = f"{r['kind']} {r['label']}"
        rows.append(f"| {r['platform']} | {what} | {r['runs']} | {f['median']:.3f} s | {f['p90']:.3f} s | "
                    f"{f['min']:.3f} s | {f['max']:.3f} s | {r['seen_via_api']['median']:.3f} s | "
                    f"{r['completed']['median']:.3f} s |")
    rows += ["", "Breakdown (median seconds after t0 = just before create_processing_job):", ""]
    for r in results:
        steps = [f"{MARK_LABELS.get(k, k)} {v:.3f}" for k, v in r["marks"].items()]
        steps.append(f"script's first line (agent timestamp) {r['first_line']['median']:.3f}")
        rows.append(f"- {r['platform']} / {r['kind']} {r['label']}: " + " → ".join(steps))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", choices=("up", "inproc", "both"), default="up")
    ap.add_argument("--runs", type=int, default=7, help="measured warm jobs per image")
    ap.add_argument("--kinds", default="pytorch,sklearn", help="comma-separated: pytorch,sklearn,xgboost")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    platforms = ("up", "inproc") if args.platform == "both" else (args.platform,)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = [k for k in kinds if k not in IMAGES]
    if unknown:
        ap.error(f"unknown kinds {unknown}: use {', '.join(IMAGES)}")
    results = [r for plat in platforms for r in run(plat, args.runs, kinds)]
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
