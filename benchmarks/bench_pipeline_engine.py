"""Pipeline engine overhead: a 10-step chain of trivial processing steps.

Each step is a ScriptProcessor-style processing job (``pytorch-training`` image: the platform's interpreter
satisfies its pins, so no environment is built) running ``print("step")``; step k+1 reads step k's output
(a ``Get Steps.<k>.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri`` reference), so the chain is
strictly sequential. Per execution, from the server's own times:

* ``wall`` = DescribePipelineExecution LastModifiedTime (set when it turned Succeeded) - CreationTime;
* ``steps`` = the sum over the 10 child jobs of DescribeProcessingJob ProcessingEndTime - CreationTime (the
  job's whole life: launch, agent, download, script, upload);
* ``overhead`` = wall - steps, reported in total and per step (target < 0.3 s per step); plus the gaps
  between one job's end and the next job's creation (the engine noticing and starting the next step).

    .venv/bin/python benchmarks/bench_pipeline_engine.py --runs 3 --platform inproc
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training_start import BUCKET, ROLE, Platform, open_platform, summarize  # noqa: E402

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310"
CODE_KEY = "pipeline-bench/step.py"
SCRIPT = ("import os\nos.makedirs('/opt/ml/processing/output', exist_ok=True)\n"
          "open('/opt/ml/processing/output/done.txt', 'w').write('ok')\nprint('step', flush=True)\n")


def step(i: int) -> dict[str, Any]:
    source = (f"s3://{BUCKET}/pipeline-bench/seed" if i == 0 else
              {"Get": f"Steps.Step{i - 1}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"})
    return {"Name": f"Step{i}", "Type": "Processing", "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                  "VolumeSizeInGB": 10}},
        "AppSpecification": {"ImageUri": IMAGE,
                             "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/step.py"]},
        "RoleArn": ROLE,
        "ProcessingInputs": [
            {"InputName": "code", "S3Input": {"S3Uri": f"s3://{BUCKET}/{CODE_KEY}", "S3DataType": "S3Prefix",
                                              "LocalPath": "/opt/ml/processing/input/code"}},
            {"InputName": "data", "S3Input": {"S3Uri": source, "S3DataType": "S3Prefix",
                                              "LocalPath": "/opt/ml/processing/input/data"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": {"Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/pipeline-bench/runs",
                                                         {"Get": "Execution.PipelineExecutionId"}, f"step{i}"]}},
            "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]}}}


def _epoch(value: Any) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def run_once(p: Platform, pipeline: str) -> dict[str, Any]:
    sm = p.sm
    arn = sm.start_pipeline_execution(PipelineName=pipeline)["PipelineExecutionArn"]
    deadline = time.time() + 600
    while True:
        d = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        if d["PipelineExecutionStatus"] not in ("Executing", "Stopping"):
            break
        if time.time() > deadline:
            raise RuntimeError(f"{arn} still running after 600 s")
        time.sleep(0.2)
    if d["PipelineExecutionStatus"] != "Succeeded":
        steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
        raise RuntimeError(f"{arn} ended {d['PipelineExecutionStatus']}: {json.dumps(steps, default=str)[:2000]}")
    wall = _epoch(d["LastModifiedTime"]) - _epoch(d["CreationTime"])
    jobs = []
    for s in sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]:
        job = sm.describe_processing_job(ProcessingJobName=s["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1])
        jobs.append((_epoch(job["CreationTime"]), _epoch(job["ProcessingEndTime"])))
    jobs.sort()
    own = sum(end - start for start, end in jobs)
    gaps = [jobs[k + 1][0] - jobs[k][1] for k in range(len(jobs) - 1)]
    first = jobs[0][0] - _epoch(d["CreationTime"])
    last = _epoch(d["LastModifiedTime"]) - jobs[-1][1]
    return {"wall": wall, "steps": own, "overhead": wall - own, "per_step": (wall - own) / len(jobs),
            "gap_median": sorted(gaps)[len(gaps) // 2], "gap_max": max(gaps), "start": first, "finish": last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--platform", default="inproc", choices=("inproc", "up"))
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="opensage-bench-pipeline-") as tmp, \
            open_platform(args.platform, Path(tmp)) as p:
        p.put(BUCKET, CODE_KEY, SCRIPT.encode())
        p.put(BUCKET, "pipeline-bench/seed/seed.csv", b"1,2\n")
        definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [step(i) for i in range(args.steps)]}
        p.sm.create_pipeline(PipelineName="engine-bench", RoleArn=ROLE, PipelineDefinition=json.dumps(definition))
        results = [run_once(p, "engine-bench") for _ in range(args.runs)]
    load_after = os.getloadavg()
    keys = ("wall", "steps", "overhead", "per_step", "gap_median", "gap_max", "start", "finish")
    print(f"pipeline engine overhead, {args.steps}-step processing chain, {args.runs} runs, platform "
          f"{args.platform}; load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print("| seconds | median | min | max |\n|---|---|---|---|")
    for key in keys:
        s = summarize([r[key] for r in results])
        print(f"| {key} | {s['median']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
