"""Training start latency: CreateTrainingJob -> the training code's first log line.

For each run (sequential; each job finishes before the next starts):

* ``t0`` = ``time.time()`` just before calling ``create_training_job``;
* ``t1`` = the ``timestamp`` (epoch ms, written by the job agent when it read the line from the training
  process's stdout) of the first CloudWatch log event of the job's stream that the training code printed,
  read back through the Logs API (``describe_log_streams(logStreamNamePrefix=<job>/)`` then
  ``get_log_events(startFromHead=True)``, polled every 20 ms).

Two job kinds: ``script`` (``sagemaker-scikit-learn`` image, ``sagemaker_program`` = a script whose first
line is ``print("first line", flush=True)``, shipped as ``sourcedir.tar.gz``) and ``xgboost`` (the built-in
XGBoost image on a 200-row CSV; its first log line). The breakdown comes from the job directory
(``<home>/jobs/<job>/algo-1``): ``TrainingStartTime`` (the reconciler launched the agent), ``agent.pid``'s
mtime (the agent's Python is up and its modules imported), the ``Downloading`` / ``Training`` phase events
(channels fetched; the training command is spawned right after ``Training``), the toolkit's ``Invoking
script`` line (the user's process is spawned), and the first line.

Platforms: ``up`` runs ``opensage up --home <tmp> --port <free>`` as a subprocess (SeaweedFS S3, what a user
runs); ``inproc`` runs the control plane in this process (tests/conftest.py ``start_server``, file:// object
store).

    .venv/bin/python benchmarks/bench_training_start.py --platform up --runs 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
BUCKET = "bench-data"
CODE_KEY = "start/code/sourcedir.tar.gz"
FIRST_LINE = "first line"
SCRIPT = f'print("{FIRST_LINE}", flush=True)\nimport sys\nprint("args", sys.argv[1:], flush=True)\n'
POLL_SECONDS = 0.02


# ----------------------------------------------------------------------------------------- platforms


@dataclass
class Platform:
    """A running control plane, its clients, and a way to put objects into its object store."""

    kind: str
    home: Path
    sm: Any
    logs: Any
    put: Callable[[str, str, bytes], None]
    put_file: Callable[[str, str, Path], None]
    # Where the script job's sagemaker_submit_directory points: an s3:// URI, or (file:// object store, which
    # the toolkit inside the job cannot read) the tarball's local path.
    code_uri: str = f"s3://{BUCKET}/{CODE_KEY}"
    pid: int | None = None  # the `opensage up` process (None: in-process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(service: str, url: str, access: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=access,
                        aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}))


def _s3_endpoint_from_config(home: Path) -> str:
    """The S3 endpoint ``opensage up`` wrote into ``<home>/aws/config`` (``s3 =`` / ``endpoint_url = ...``)."""
    text = (home / "aws" / "config").read_text()
    m = re.search(r"^s3 =\n\s+endpoint_url = (\S+)", text, flags=re.MULTILINE)
    if not m:
        raise RuntimeError(f"no s3 endpoint_url in {home / 'aws' / 'config'}")
    return m.group(1)


def _wait_health(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"opensage up exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/_opensage/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"opensage up did not answer in {timeout:.0f}s: {log.read_text()[-3000:]}")


def _stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop_platforms_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, a killed CI step) exit through ``finally`` blocks: by default Python dies at
    once, and an ``opensage up`` started in its own session (with its SeaweedFS and model servers) outlived
    the benchmark. Only from the main thread, and only where nobody installed a handler yet."""
    import threading

    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


@contextlib.contextmanager
def up_platform(home: Path, timeout: float = 120.0) -> Iterator[Platform]:
    """``opensage up --home <home> --port <free>`` as a subprocess (SeaweedFS S3)."""
    stop_platforms_on_sigterm()
    port = free_port()
    log = home / "up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "opensage.cli.main", "up", "--home", str(home),
                                 "--port", str(port), "--log-level", "warning"], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_health(proc, url, log, timeout)
        creds = json.loads((home / "credentials.json").read_text())
        access, secret = creds["access_key"], creds["secret_key"]
        s3 = _client("s3", _s3_endpoint_from_config(home), access, secret)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=BUCKET)
        yield Platform("up", home, _client("sagemaker", url, access, secret), _client("logs", url, access, secret),
                       lambda b, k, data: s3.put_object(Bucket=b, Key=k, Body=data),
                       lambda b, k, path: s3.upload_file(str(path), b, k), pid=proc.pid)
    finally:
        _stop_process_group(proc)


@contextlib.contextmanager
def inproc_platform(home: Path) -> Iterator[Platform]:
    """The control plane in this process (uvicorn thread), file:// object store, real agent processes."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.conftest import start_server

    gen = start_server(home)
    server = next(gen)
    try:
        store = server.store()
        store.ensure_bucket(BUCKET)
        yield Platform("inproc", home, server.client("sagemaker"), server.client("logs"), store.put_bytes,
                       store.put_file, code_uri=INPROC_CODE_URI)
    finally:
        gen.close()


def open_platform(kind: str, home: Path) -> contextlib.AbstractContextManager[Platform]:
    if kind == "up":
        return up_platform(home)
    if kind == "inproc":
        return inproc_platform(home)
    raise ValueError(f"unknown platform {kind!r}: use 'up' or 'inproc'")


# ----------------------------------------------------------------------------------------- jobs


def sourcedir_tarball(script: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tiny_csv(rows: int = 200, features: int = 5) -> bytes:
    lines = []
    for i in range(rows):
        values = [(i * 7 + j * 13) % 97 / 97.0 for j in range(features)]
        lines.append(",".join([str(int(values[0] > 0.5))] + [f"{v:.4f}" for v in values]))
    return ("\n".join(lines) + "\n").encode()


def prepare_inputs(p: Platform) -> None:
    p.put(BUCKET, CODE_KEY, sourcedir_tarball(SCRIPT))
    p.put(BUCKET, "start/train/data.csv", tiny_csv())


# In-process the object store is file:// (no S3 endpoint for the toolkit), and the toolkit refuses a host path
# outside the job's /opt/ml: the code travels as a channel and sagemaker_submit_directory names it there.
INPROC_CODE_URI = f"/opt/ml/input/data/code/{CODE_KEY.rsplit('/', 1)[-1]}"


def job_request(name: str, kind: str, code_uri: str = f"s3://{BUCKET}/{CODE_KEY}") -> dict[str, Any]:
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/start/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    if kind == "script":
        req["AlgorithmSpecification"] = {"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"}
        req["HyperParameters"] = {
            "sagemaker_program": json.dumps("train.py"),
            "sagemaker_submit_directory": json.dumps(code_uri),
            "sagemaker_region": json.dumps("us-east-1"),
        }
        if code_uri.startswith("/opt/ml/"):
            req["InputDataConfig"] = [{"ChannelName": "code", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{CODE_KEY.rsplit('/', 1)[0]}"}}}]
    elif kind == "xgboost":
        req["AlgorithmSpecification"] = {"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"}
        req["HyperParameters"] = {"num_round": "5", "objective": "binary:logistic"}
        req["InputDataConfig"] = [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/start/train"}}}]
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    return req


def first_event(p: Platform, job: str, match: Callable[[str], bool], timeout: float,
                poll: float = POLL_SECONDS) -> dict[str, Any]:
    """Poll the Logs API until the job's stream has an event that ``match``es; return that event.

    Fails at once (with the job's FailureReason) if the job ends without such an event.
    """
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
            events = p.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                                           startFromHead=True)["events"]
            for ev in events:
                if match(ev["message"]):
                    return ev
        if ended is not None:  # the reconciler ingests every line before it ends a job: none will come
            raise RuntimeError(f"training job {job} ended {ended['TrainingJobStatus']} without the expected "
                               f"log line: {ended.get('FailureReason')}")
        if time.time() - last_check > 0.5:
            last_check = time.time()
            d = p.sm.describe_training_job(TrainingJobName=job)
            if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
                ended = d  # read the events once more, then give up
                stream = None
                continue
        time.sleep(poll)
    raise TimeoutError(f"training job {job}: no matching log event within {timeout:.0f}s")


def wait_finished(sm: Any, name: str, timeout: float = 600.0, poll: float = 0.05,
                  result_file: Path | None = None) -> dict[str, Any]:
    """DescribeTrainingJob every ``poll`` seconds until the job ends. With ``result_file`` (the agent's
    result.json), only a stat every 10 ms (and a Describe every second) until that file exists: 20 Describes a
    second on 2 cores slowed the job being measured by 0.15-0.2 s (a user's SDK polls every few seconds)."""
    deadline = time.time() + timeout
    last = 0.0
    while result_file is not None and not result_file.exists() and time.time() < deadline:
        if time.time() - last >= 1.0:
            last = time.time()
            if sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] not in ("InProgress", "Stopping"):
                break
        time.sleep(0.01)
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(poll)
    raise TimeoutError(f"training job {name} still running after {timeout:.0f}s")


# ----------------------------------------------------------------------------------------- breakdown


def process_cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of ``pid`` itself, CPU seconds of its reaped descendants) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


def child_pids(pid: int, comm: str) -> list[int]:
    """Live children of ``pid`` whose command name is ``comm`` (e.g. ``weed``)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                head, tail = (entry / "stat").read_text().rsplit(")", 1)
                if int(tail.split()[1]) == pid and head.split("(", 1)[1] == comm:
                    out.append(int(entry.name))
    return out


def _log_lines(path: Path) -> list[tuple[float, str]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stamp, _, text = line.partition(" ")
        if stamp.isdigit():
            out.append((int(stamp) / 1000.0, text))
    return out


def breakdown(jobdir: Path, t0: float, launched: float, kind: str) -> dict[str, float]:
    """Seconds after t0 at which each step of the start path happened (from the agent's own files)."""
    marks: dict[str, float] = {"launched": launched - t0}
    pid_file = jobdir / "agent.pid"
    if pid_file.exists():
        marks["agent_up"] = pid_file.stat().st_mtime - t0
    for line in (jobdir / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        key = {"Downloading": "agent_running", "Training": "command_spawned"}.get(ev["status"])
        if key:
            marks[key] = float(ev["time"]) - t0
    lines = _log_lines(jobdir / "logs" / "algo-1.log")
    if lines:
        marks["first_output"] = lines[0][0] - t0
    if kind == "script":
        invoking = next((t for t, text in lines if text.startswith("Invoking script")), None)
        if invoking is not None:
            marks["user_spawned"] = invoking - t0
    return marks


# ----------------------------------------------------------------------------------------- runs


@dataclass
class Sample:
    job: str
    latency: float  # t1 - t0, seconds
    seen: float  # when the poller saw the event - t0 (adds the log ingestion delay)
    completed: float  # create -> terminal status observed
    status: str
    marks: dict[str, float] = field(default_factory=dict)


def matcher(kind: str) -> Callable[[str], bool]:
    if kind == "script":
        return lambda message: message == FIRST_LINE
    return lambda message: True  # built-in XGBoost: its first log line of any kind


def run_one(p: Platform, name: str, kind: str) -> Sample:
    req = job_request(name, kind, p.code_uri)
    t0 = time.time()
    p.sm.create_training_job(**req)
    ev = first_event(p, name, matcher(kind), timeout=120)
    seen = time.time() - t0
    desc = wait_finished(p.sm, name)
    completed = time.time() - t0
    launched = desc["TrainingStartTime"].timestamp()
    marks = breakdown(p.home / "jobs" / name / "algo-1", t0, launched, kind)
    return Sample(name, ev["timestamp"] / 1000.0 - t0, seen, completed, desc["TrainingJobStatus"], marks)


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, int(round(0.9 * len(ordered))) - 1))]
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0], "max": ordered[-1]}


def run_kind(p: Platform, kind: str, runs: int, warmup: int = 1) -> dict[str, Any]:
    """``warmup`` unmeasured jobs first (page cache, venv cache), then ``runs`` measured ones."""
    stamp = int(time.time())
    for i in range(warmup):
        run_one(p, f"warm-{kind}-{stamp}-{i}", kind)
    return summarize_kind(p, kind, [run_one(p, f"start-{kind}-{stamp}-{i}", kind) for i in range(runs)])


def summarize_kind(p: Platform, kind: str, samples: list[Sample], variant: str = "") -> dict[str, Any]:
    bad = [s for s in samples if s.status != "Completed"]
    if bad:
        raise RuntimeError(f"{len(bad)} {kind} job(s) did not complete: {[(s.job, s.status) for s in bad]}")
    mark_names = sorted({k for s in samples for k in s.marks}, key=lambda k: statistics.median(
        [s.marks[k] for s in samples if k in s.marks]))
    return {
        "platform": p.kind, "kind": kind, "runs": len(samples), "variant": variant,
        "first_line": summarize([s.latency for s in samples]),
        "seen_via_api": summarize([s.seen for s in samples]),
        "completed": summarize([s.completed for s in samples]),
        "marks": {k: statistics.median([s.marks[k] for s in samples if k in s.marks]) for k in mark_names},
    }


ZYGOTE_MODULES = {"script": "opensage.frameworks.training", "xgboost": "opensage.algorithms.xgboost.train"}


def warm_zygote(p: Platform, kind: str, timeout: float = 120.0) -> None:
    """Untimed jobs until the platform's zygote for ``kind``'s module is ready (it starts once a second job
    asks for it: runner/zygote.py START_AFTER_JOBS)."""
    from opensage.runner import zygote

    stamp = int(time.time())
    for i in range(zygote.START_AFTER_JOBS):
        run_one(p, f"warmz-{kind}-{stamp}-{i}", kind)
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ready in (p.home / "zygotes").glob("*.json"):
            if json.loads(ready.read_text()).get("module") == ZYGOTE_MODULES[kind]:
                return
        time.sleep(0.2)
    raise RuntimeError(f"no zygote for {kind} became ready")


def run(platform: str, runs: int, kinds: tuple[str, ...] = ("script", "xgboost"),
        zygotes: str = "off") -> list[dict[str, Any]]:
    """``zygotes``: off / on (OPENSAGE_ZYGOTES for the platform), or compare: one platform of each open at
    once, their jobs interleaved (before = off: a fresh process per job; after = on, its zygote warm)."""
    flags = {"compare": ("0", "1"), "on": ("1",), "off": ("0",)}[zygotes]
    with tempfile.TemporaryDirectory(prefix="opensage-bench-start-") as tmp, contextlib.ExitStack() as stack:
        plats: dict[str, Platform] = {}
        for flag in flags:
            os.environ["OPENSAGE_ZYGOTES"] = flag  # read when the platform's training reconciler starts
            (Path(tmp) / f"zygotes-{flag}").mkdir()
            plats[flag] = stack.enter_context(open_platform(platform, Path(tmp) / f"zygotes-{flag}"))
            prepare_inputs(plats[flag])
        os.environ.pop("OPENSAGE_ZYGOTES", None)
        results = []
        for kind in kinds:
            stamp = int(time.time())
            for flag, p in plats.items():
                if flag == "1":
                    warm_zygote(p, kind)
                else:  # the same untimed jobs as the other side
                    for i in range(3):
                        run_one(p, f"warm-{kind}-{stamp}-{i}", kind)
            samples: dict[str, list[Sample]] = {flag: [] for flag in plats}
            order = list(plats)
            for i in range(runs):  # alternate which platform goes first
                for flag in order[i % len(order):] + order[:i % len(order)]:
                    samples[flag].append(run_one(plats[flag], f"start-{kind}-{flag}-{stamp}-{i}", kind))
            for flag, p in plats.items():
                variant = ("before (fresh process)" if flag == "0" else "after (zygote)") if zygotes == "compare" \
                    else ""
                results.append(summarize_kind(p, kind, samples[flag], variant))
        return results


# ----------------------------------------------------------------------------------------- report

MARK_LABELS = {
    "launched": "reconciler launched agent (TrainingStartTime)",
    "agent_up": "agent process up (agent.pid written)",
    "agent_running": "agent read spec, opened store (Downloading)",
    "command_spawned": "channels ready, command spawned (Training)",
    "user_spawned": "toolkit spawned user script (Invoking script)",
    "first_output": "first line of any output",
}


def markdown(results: list[dict[str, Any]]) -> str:
    rows = ["| platform | job | runs | first line median | p90 | min | max | seen via API (median) | "
            "create→Completed (median) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["first_line"]
        job = f"{r['kind']} {r['variant']}".strip() if r.get("variant") else r["kind"]
        rows.append(f"| {r['platform']} | {job} | {r['runs']} | {f['median']:.3f} s | {f['p90']:.3f} s | "
                    f"{f['min']:.3f} s | {f['max']:.3f} s | {r['seen_via_api']['median']:.3f} s | "
                    f"{r['completed']['median']:.3f} s |")
    rows += ["", "Breakdown (median seconds after t0 = just before create_training_job):", ""]
    for r in results:
        steps = [f"{MARK_LABELS.get(k, k)} {v:.3f}" for k, v in r["marks"].items()]
        steps.append(f"training code's first line {r['first_line']['median']:.3f}")
        job = f"{r['kind']} {r['variant']}".strip() if r.get("variant") else r["kind"]
        rows.append(f"- {r['platform']} / {job}: " + " → ".join(steps))
    return "\n".join(rows)


def load_and_command(load_before: tuple[float, ...], script: str, argv: list[str] | None) -> str:
    """The footer of a report: load averages before / after and the command that produced it."""
    args = " ".join(argv if argv is not None else sys.argv[1:])
    return (f"Load average (1/5/15 min) before / after: {' '.join(f'{x:.2f}' for x in load_before)} / "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}. Command: `.venv/bin/python benchmarks/{script} {args}`")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", choices=("up", "inproc", "both"), default="up")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kinds", default="script,xgboost", help="comma-separated: script,xgboost")
    ap.add_argument("--zygotes", choices=("compare", "on", "off"), default="compare",
                    help="compare: a platform with zygotes off (before) and one with them on (after), interleaved")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    platforms = ("up", "inproc") if args.platform == "both" else (args.platform,)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    load_before = os.getloadavg()
    results = [r for plat in platforms for r in run(plat, args.runs, kinds, args.zygotes)]
    print(f"Load average (1/5/15 min) before / after: {' '.join(f'{x:.2f}' for x in load_before)} / "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
