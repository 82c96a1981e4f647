"""Helpers for tuning API tests: a scripted executor whose training jobs log an objective computed from
their hyperparameters (as built-in XGBoost prints its eval log), and request builders."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from opensage.executors.fake import FakeExecutor, FakeRun
from opensage.runner.jobspec import JobResult, JobSpec
from tests.conftest import ROLE, XGB_IMAGE

BUCKET = "bucket1"


def objective(hps: dict[str, str]) -> float:
    """The 'validation:rmse' a child reaches: best at eta=0.3, max_depth=6, booster=gbtree."""
    eta = float(hps.get("eta", "0.3"))
    depth = int(hps.get("max_depth", "6"))
    return (eta - 0.3) ** 2 + (depth - 6) ** 2 / 100 + {"dart": 0.05}.get(hps.get("booster", "gbtree"), 0.0)


def curve(hps: dict[str, str]) -> list[float]:
    """Per-round values: improving towards the final objective."""
    rounds = int(hps.get("num_round", "8"))
    final = objective(hps)
    return [final + 1.0 / (r + 1) - 1.0 / rounds for r in range(rounds)]


def eval_line(r: int, value: float) -> str:
    return f"[{r}]\ttrain-rmse:{value:.6f}\tvalidation-rmse:{value:.6f}\tvalidation-r2:{1 - value:.6f}"


class TuningExecutor(FakeExecutor):
    """Jobs log ``curve(hyperparameters)``; booster=gblinear fails; ``round_seconds`` > 0 writes one round
    at a time (so early stopping can act); ``fail_first`` names hyperparameter values whose first run fails."""

    def __init__(self, round_seconds: float = 0.0) -> None:
        super().__init__()
        self.round_seconds = round_seconds
        self.fail_first: set[str] = set()
        self._failed_once: set[str] = set()
        self._lock = threading.Lock()
        self.hyperparameters: dict[str, dict[str, str]] = {}

    def submit(self, jobdir: Path) -> str:
        jobdir = Path(jobdir)
        spec = JobSpec.read(jobdir)
        hps = json.loads((jobdir / "ml" / "input" / "config" / "hyperparameters.json").read_text())
        self.hyperparameters[spec.job_name] = hps
        fail = hps.get("booster") == "gblinear"
        key = json.dumps({k: v for k, v in hps.items() if k in self.fail_first}, sort_keys=True)
        if self.fail_first and key not in self._failed_once:
            self._failed_once.add(key)
            fail = True
        result = JobResult(exit_code=1, failure_reason="AlgorithmError: scripted failure") if fail \
            else JobResult(exit_code=0)
        values = [] if fail else curve(hps)
        if self.round_seconds <= 0 or fail:
            self.script(spec.job_name, FakeRun(log_lines=[eval_line(r, v) for r, v in enumerate(values)],
                                               result=result))
            return super().submit(jobdir)
        self.script(spec.job_name, FakeRun(keep_running=True, result=result))
        handle = super().submit(jobdir)
        threading.Thread(target=self._rounds, args=(handle, jobdir, values), daemon=True).start()
        return handle

    def _rounds(self, handle: str, jobdir: Path, values: list[float]) -> None:
        log = jobdir / "logs" / "algo-1.log"
        for r, v in enumerate(values):
            time.sleep(self.round_seconds)
            with self._lock:
                if not self.jobs[handle].running:
                    return
                with open(log, "a") as fh:
                    fh.write(f"{int(time.time() * 1000)} {eval_line(r, v)}\n")
        with self._lock:
            if self.jobs[handle].running:
                self.finish(handle)

    def stop(self, handle: str) -> None:
        with self._lock:
            super().stop(handle)


def definition(**overrides) -> dict:
    d = {
        "StaticHyperParameters": {"num_round": "8", "objective": "reg:squarederror"},
        "AlgorithmSpecification": {"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/train"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning-out"},
        # What SDK v2's HyperparameterTuner sends (not ResourceConfig).
        "HyperParameterTuningResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                                               "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    d.update(overrides)
    return d


RANGES = {
    "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.01", "MaxValue": "1.0",
                                   "ScalingType": "Logarithmic"}],
    "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "10", "ScalingType": "Auto"}],
    "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart"]}],
}


def tuning_request(name: str, strategy: str = "Random", max_jobs: int = 6, parallel: int = 2,
                   ranges: dict | None = None, definition_overrides: dict | None = None, **config) -> dict:
    cfg = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": max_jobs, "MaxParallelTrainingJobs": parallel},
        "ParameterRanges": ranges if ranges is not None else RANGES,
        "TrainingJobEarlyStoppingType": "Off",
    }
    cfg.update(config)
    return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": cfg,
            "TrainingJobDefinition": definition(**(definition_overrides or {}))}


def wait_tuning(sm, name: str, timeout: float = 90.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if d["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.3)
    raise AssertionError(f"tuning job {name} still {d['HyperParameterTuningJobStatus']} after {timeout}s: "
                         f"{d['TrainingJobStatusCounters']}")


def all_children(sm, name: str, **kw) -> list[dict]:
    out, token = [], None
    while True:
        page = sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, MaxResults=100, **({"NextToken": token} if token else {}), **kw)
        out.extend(page["TrainingJobSummaries"])
        token = page.get("NextToken")
        if not token:
            return out
