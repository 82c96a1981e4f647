"""Automatic model tuning: Bayesian vs Random trials-to-best, and the tuning overhead.

**Trials to best** (per task, per seed): a Random tuning job of ``--trials`` trials (default 50) sets the
target, the best objective it found ("random's best-of-50"); a Bayesian tuning job with the same budget (and
seed + 1000: with one seed both would share their random first trials) is then scored by the number of trials (in creation order) it needed to reach that target (``>N`` when
it never did), and Random by the trial at which it found its own best. Both run through the platform
(CreateHyperParameterTuningJob, children are ordinary training jobs), ``--parallel`` (default 2) at a time.
Reported: the median over ``--seeds`` (default 5) seeds and the ratio Bayesian / Random (target <= 0.5).

Tasks:

* ``xgb-cancer``: built-in XGBoost (``sagemaker-xgboost:1.7-1``) on scikit-learn's breast-cancer set (350
  train / 219 validation rows), ``validation:logloss`` minimized over eta, max_depth, min_child_weight,
  subsample, gamma, lambda (``num_round`` 30 static);
* ``xgb-diabetes``: the same search on scikit-learn's diabetes regression set, ``validation:rmse``;
* ``xgb-digits``: the same search on scikit-learn's digits set (10 classes, 1,078 train / 719 validation rows,
  ``multi:softprob``), ``validation:mlogloss`` (not in the default set: added after xgb-cancer proved too
  noisy to separate the strategies, its validation log loss on 219 rows being flat around its minimum);
* ``hartmann6``: a script-mode job (``sagemaker-scikit-learn`` image) that prints the 6-D Hartmann function
  of its six hyperparameters in [0, 1] (a standard hard test function, minimum -3.32237) as
  ``objective: <value>`` (MetricDefinitions).

**Overhead**: one Random tuning job of ``--overhead-trials`` (20) trivial trials at parallelism 2
(``--overhead-kind xgboost``: built-in XGBoost, one round on 200 rows; ``script``: a script-mode job that
prints its metric): wall time CreateHyperParameterTuningJob -> Completed (DescribeHyper-
ParameterTuningJob polled every 0.2 s) vs the children's summed run time (TrainingStartTime ->
TrainingEndTime); ideal = sum / parallelism; also the median gap between a child's end and the next child's
creation (the reconciler's reaction time).

**Sampler cost**: in this process, the time of one GPSampler ``ask`` after 10/25/50 finished trials (the GP fit
runs in the control plane's tuning thread).

    .venv/bin/python benchmarks/bench_tuning.py                       # the full figure (hours on 2 cores)
    .venv/bin/python benchmarks/bench_tuning.py --tasks xgb-cancer --seeds 2 --trials 8 --overhead-trials 20
    .venv/bin/python benchmarks/bench_tuning.py --offline                       # strategies only, hartmann6

Image environments (the script-mode task's ``sagemaker-scikit-learn`` venv, built once: ~1 min, mostly uv's
bytecode compilation) are cached in the user's environment cache (``OPENSAGE_ENV_CACHE``, default
``~/.opensage/environments``) rather than in the run's throw-away platform home, so only the first run on a
machine pays for them (``--fresh-environments``: build them in the run's home, as a new platform would).

``--offline`` runs the trials-to-best protocol on hartmann6 with the platform's studies (opensage.tuning,
``parallel`` asks then their tells, as the reconciler does) but without the platform: the strategies' own
figure, minutes instead of hours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_start as common  # noqa: E402  (sibling module: platform helpers)

BUCKET = common.BUCKET
HARTMANN_SCRIPT = '''
import json, math, os
hp = json.load(open("/opt/ml/input/config/hyperparameters.json"))
x = [float(json.loads(hp[f"x{i}"]) if hp[f"x{i}"].startswith('"') else hp[f"x{i}"]) for i in range(6)]
A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
     [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
alpha = [1.0, 1.2, 3.0, 3.2]
value = -sum(alpha[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j] * 1e-4) ** 2 for j in range(6)))
             for i in range(4))
print(f"objective: {value:.6f}", flush=True)
'''
TRIVIAL_SCRIPT = 'print("objective: 1.0", flush=True)\n'
XGB_RANGES = {
    "ContinuousParameterRanges": [
        {"Name": "eta", "MinValue": "0.01", "MaxValue": "1", "ScalingType": "Logarithmic"},
        {"Name": "subsample", "MinValue": "0.5", "MaxValue": "1"},
        {"Name": "gamma", "MinValue": "0", "MaxValue": "5"},
        {"Name": "lambda", "MinValue": "0.01", "MaxValue": "10", "ScalingType": "Logarithmic"}],
    "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "10"},
                               {"Name": "min_child_weight", "MinValue": "1", "MaxValue": "10"}],
}
HARTMANN_RANGES = {"ContinuousParameterRanges": [
    {"Name": f"x{i}", "MinValue": "0", "MaxValue": "1"} for i in range(6)]}
TASKS = ("xgb-cancer", "xgb-diabetes", "hartmann6")
# Bayesian runs use another seed than the Random run they are compared with: with the same seed both start
# from the same random trials, and a target Random found among them would be "reached" for free.
BAYESIAN_SEED_OFFSET = 1000


# ----------------------------------------------------------------------------------------- inputs
def _csv(X: Any, y: Any) -> bytes:
    import numpy as np

    rows = np.column_stack([y, X])
    return ("\n".join(",".join(f"{v:.6g}" for v in row) for row in rows) + "\n").encode()


def prepare(p: common.Platform, tasks: list[str]) -> None:
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    p.put(BUCKET, "tuning/code/hartmann/sourcedir.tar.gz", common.sourcedir_tarball(HARTMANN_SCRIPT))
    p.put(BUCKET, "tuning/code/trivial/sourcedir.tar.gz", common.sourcedir_tarball(TRIVIAL_SCRIPT))
    p.put(BUCKET, "tuning/trivial/train/data.csv", common.tiny_csv())
    for task, loader in (("xgb-cancer", load_breast_cancer), ("xgb-diabetes", load_diabetes),
                         ("xgb-digits", load_digits)):
        if task not in tasks:
            continue
        X, y = loader(return_X_y=True)
        idx = np.random.default_rng(0).permutation(len(y))
        X, y = X[idx], y[idx]
        cut = int(len(y) * 0.6)
        p.put(BUCKET, f"tuning/{task}/train/data.csv", _csv(X[:cut], y[:cut]))
        p.put(BUCKET, f"tuning/{task}/validation/data.csv", _csv(X[cut:], y[cut:]))


def _code_uri(p: common.Platform, which: str) -> str:
    key = f"tuning/code/{which}/sourcedir.tar.gz"
    if p.kind == "inproc":  # file:// object store: the toolkit in the job reads the tarball's local path
        return str(Path(p.code_uri).parents[2] / key)
    return f"s3://{BUCKET}/{key}"


def definition(p: common.Platform, task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(TrainingJobDefinition, ParameterRanges, objective) for a task."""
    base: dict[str, Any] = {
        "RoleArn": common.ROLE,
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    if task.startswith("xgb-"):
        objective, static = {
            "xgb-cancer": ("validation:logloss", {"objective": "binary:logistic"}),
            "xgb-digits": ("validation:mlogloss", {"objective": "multi:softprob", "num_class": "10"}),
        }.get(task, ("validation:rmse", {"objective": "reg:squarederror"}))
        base["AlgorithmSpecification"] = {"TrainingImage": common.XGB_IMAGE, "TrainingInputMode": "File"}
        base["StaticHyperParameters"] = {"num_round": "30", **static}
        base["InputDataConfig"] = [
            {"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/tuning/{task}/{ch}"}}}
            for ch in ("train", "validation")]
        return base, XGB_RANGES, {"Type": "Minimize", "MetricName": objective}
    if task == "trivial-xgb":  # one boosting round on a 200-row CSV: a trial that does almost nothing
        base["AlgorithmSpecification"] = {"TrainingImage": common.XGB_IMAGE, "TrainingInputMode": "File"}
        base["StaticHyperParameters"] = {"num_round": "1", "objective": "binary:logistic"}
        base["InputDataConfig"] = [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/tuning/trivial/train"}}}]
        return base, {"IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "10"}]}, {
            "Type": "Minimize", "MetricName": "train:logloss"}
    which = "hartmann" if task == "hartmann6" else "trivial"
    base["AlgorithmSpecification"] = {
        "TrainingImage": common.SKLEARN_IMAGE, "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "objective", "Regex": r"objective: ([-0-9.eE]+)"}]}
    base["StaticHyperParameters"] = {"sagemaker_program": json.dumps("train.py"),
                                     "sagemaker_submit_directory": json.dumps(_code_uri(p, which)),
                                     "sagemaker_region": json.dumps("us-east-1")}
    ranges = HARTMANN_RANGES if which == "hartmann" else {
        "IntegerParameterRanges": [{"Name": "n", "MinValue": "1", "MaxValue": "1000"}]}
    return base, ranges, {"Type": "Minimize", "MetricName": "objective"}


# ----------------------------------------------------------------------------------------- runs
def run_tuning(p: common.Platform, name: str, task: str, strategy: str, trials: int, parallel: int,
               seed: int) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """Run one tuning job to its end: (describe, children in creation order, wall seconds)."""
    d, ranges, objective = definition(p, task)
    t0 = time.time()
    p.sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, TrainingJobDefinition=d,
        HyperParameterTuningJobConfig={
            "Strategy": strategy, "HyperParameterTuningJobObjective": objective, "ParameterRanges": ranges,
            "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": parallel},
            "TrainingJobEarlyStoppingType": "Off", "RandomSeed": seed})
    while True:
        desc = p.sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        if desc["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.2)
    wall = time.time() - t0
    children, token = [], None
    while True:
        page = p.sm.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, SortBy="CreationTime", MaxResults=100,
            **({"NextToken": token} if token else {}))
        children.extend(page["TrainingJobSummaries"])
        token = page.get("NextToken")
        if not token:
            break
    failed = [c for c in children if c["TrainingJobStatus"] == "Failed"]
    if failed:
        print(f"  {name}: {len(failed)} failed child job(s), e.g. {failed[0].get('FailureReason')}", flush=True)
    return desc, children, wall


def _values(children: list[dict[str, Any]]) -> list[float]:
    return [c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
            if "FinalHyperParameterTuningJobObjectiveMetric" in c else math.inf for c in children]


def trials_to_reach(values: list[float], target: float) -> int | None:
    best = math.inf
    for i, v in enumerate(values, start=1):
        best = min(best, v)
        if best <= target + 1e-12:
            return i
    return None


def trials_to_best(p: common.Platform, task: str, seeds: int, trials: int, parallel: int) -> dict[str, Any]:
    rows = []
    for seed in range(1, seeds + 1):
        stamp = int(time.time()) % 100000
        _, rnd, _ = run_tuning(p, f"r{task[:10]}-{seed}-{stamp}", task, "Random", trials, parallel, seed)
        _, bo, _ = run_tuning(p, f"b{task[:10]}-{seed}-{stamp}", task, "Bayesian", trials, parallel,
                              seed + BAYESIAN_SEED_OFFSET)
        r_values, b_values = _values(rnd), _values(bo)
        target = min(r_values)
        rows.append({"seed": seed, "target": target, "random": trials_to_reach(r_values, target),
                     "bayesian": trials_to_reach(b_values, target), "bayesian_best": min(b_values)})
        print(f"  {task} seed {seed}: target {target:.5f}  random {rows[-1]['random']}  "
              f"bayesian {rows[-1]['bayesian']} (best {rows[-1]['bayesian_best']:.5f})", flush=True)
    never = trials + 1  # "did not reach it within the budget" counts as one more than the budget
    med_r = statistics.median(r["random"] or never for r in rows)
    med_b = statistics.median(r["bayesian"] or never for r in rows)
    return {"task": task, "seeds": seeds, "trials": trials, "rows": rows, "median_random": med_r,
            "median_bayesian": med_b, "ratio": med_b / med_r, **_best_medians(rows)}


def _best_medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The best objective each strategy found within the budget (median over seeds): what the trials-to-best
    count hides when Random's best comes early (a lucky first trial is reached at once by anything)."""
    return {"median_random_best": statistics.median(r["target"] for r in rows),
            "median_bayesian_best": statistics.median(r["bayesian_best"] for r in rows)}


def overhead(p: common.Platform, trials: int, parallel: int, kind: str) -> dict[str, Any]:
    name = f"overhead-{int(time.time()) % 100000}"
    desc, children, wall = run_tuning(p, name, "trivial-xgb" if kind == "xgboost" else "trivial", "Random",
                                      trials, parallel, 1)
    runs, gaps = [], []
    details = [p.sm.describe_training_job(TrainingJobName=c["TrainingJobName"]) for c in children]
    for job in details:
        runs.append(job["TrainingEndTime"].timestamp() - job["TrainingStartTime"].timestamp())
    ends = sorted(j["TrainingEndTime"].timestamp() for j in details)
    starts = sorted(j["CreationTime"].timestamp() for j in details)[parallel:]
    gaps = [s - e for s, e in zip(starts, ends, strict=False)]
    summed = sum(runs)
    return {"trials": trials, "parallel": parallel, "kind": kind, "status": desc["HyperParameterTuningJobStatus"],
            "wall_s": wall, "sum_child_run_s": summed, "ideal_s": summed / parallel,
            "overhead_s": wall - summed / parallel, "ratio": wall / (summed / parallel),
            "median_child_run_s": statistics.median(runs), "median_launch_gap_s": statistics.median(gaps)}


def hartmann6(x: list[float]) -> float:
    """The 6-D Hartmann function (minimum -3.32237), as the hartmann6 task's script computes it."""
    A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
    P = [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
    alpha = [1.0, 1.2, 3.0, 3.2]
    return -sum(alpha[i] * math.exp(-sum(A[i][j] * (x[j] - P[i][j] * 1e-4) ** 2 for j in range(6)))
                for i in range(4))


def offline_trials_to_best(seeds: int, trials: int, parallel: int) -> dict[str, Any]:
    """The trials-to-best protocol on hartmann6 with the platform's own studies (opensage.tuning) but no
    platform: ``parallel`` asks, then their tells, as the reconciler does. Measures the strategies alone."""
    from opensage.tuning.jobs import Definition
    from opensage.tuning.ranges import parse_ranges
    from opensage.tuning.strategies import new_study

    space = parse_ranges(HARTMANN_RANGES)
    definitions = [Definition(None, {}, {"Type": "Minimize", "MetricName": "objective"}, space)]

    def run(strategy: str, seed: int) -> list[float]:
        config = {"Strategy": strategy, "RandomSeed": seed,
                  "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": parallel}}
        study = new_study(f"{strategy}-{seed}", config, definitions, "Minimize", trials)
        values: list[float] = []
        while len(values) < trials:
            batch = [study.ask() for _ in range(min(parallel, trials - len(values)))]
            for number, _, tuned in batch:
                value = hartmann6([float(tuned[f"x{i}"]) for i in range(6)])
                study.study.tell(number, value)
                values.append(value)
        return values

    rows = []
    for seed in range(1, seeds + 1):
        r_values, b_values = run("Random", seed), run("Bayesian", seed + BAYESIAN_SEED_OFFSET)
        target = min(r_values)
        rows.append({"seed": seed, "target": target, "random": trials_to_reach(r_values, target),
                     "bayesian": trials_to_reach(b_values, target), "bayesian_best": min(b_values)})
        print(f"  hartmann6 (offline) seed {seed}: target {target:.5f}  random {rows[-1]['random']}  "
              f"bayesian {rows[-1]['bayesian']} (best {rows[-1]['bayesian_best']:.5f})", flush=True)
    never = trials + 1
    med_r = statistics.median(r["random"] or never for r in rows)
    med_b = statistics.median(r["bayesian"] or never for r in rows)
    return {"task": "hartmann6 (offline: studies only)", "seeds": seeds, "trials": trials, "rows": rows,
            "median_random": med_r, "median_bayesian": med_b, "ratio": med_b / med_r, **_best_medians(rows)}


def sampler_cost() -> dict[str, float]:
    """Seconds of one GPSampler ask after n finished trials (6 continuous parameters)."""
    from opensage.tuning.jobs import Definition
    from opensage.tuning.ranges import parse_ranges
    from opensage.tuning.strategies import new_study

    space = parse_ranges(HARTMANN_RANGES)
    config = {"Strategy": "Bayesian", "RandomSeed": 1,
              "ResourceLimits": {"MaxNumberOfTrainingJobs": 60, "MaxParallelTrainingJobs": 1}}
    study = new_study("cost", config, [Definition(None, {}, {"Type": "Minimize", "MetricName": "f"}, space)],
                      "Minimize", 60)
    out = {}
    for n in range(51):
        t0 = time.perf_counter()
        number, _, tuned = study.ask()
        elapsed = time.perf_counter() - t0
        if n == 10:  # the first model-guided ask: it also imports torch and warms the GP code up
            out["first_gp_ask_after_10_s"] = elapsed
        elif n in (11, 25, 50):
            out[f"ask_after_{n}_s"] = elapsed
        study.study.tell(number, sum((float(v) - 0.3) ** 2 for v in tuned.values()))
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = ["| task | seeds | trials | median trials to random's best: Random | Bayesian | ratio "
             "| median best: Random | Bayesian |", "|---|---|---|---|---|---|---|---|"]
    for r in results["trials_to_best"]:
        lines.append(f"| {r['task']} | {r['seeds']} | {r['trials']} | {r['median_random']} | "
                     f"{r['median_bayesian']} | {r['ratio']:.2f} | {r['median_random_best']:.4g} | "
                     f"{r['median_bayesian_best']:.4g} |")
    o = results.get("overhead")
    if o:
        lines += ["", f"| overhead ({o['kind']}): trials @ parallel | wall s | Σ child run s | ideal s | ratio | "
                      "median child s | median launch gap s |", "|---|---|---|---|---|---|---|",
                  f"| {o['trials']} @ {o['parallel']} | {o['wall_s']:.1f} | {o['sum_child_run_s']:.1f} | "
                  f"{o['ideal_s']:.1f} | {o['ratio']:.2f} | {o['median_child_run_s']:.2f} | "
                  f"{o['median_launch_gap_s']:.2f} |"]
    c = results.get("sampler_cost")
    if c:
        lines += ["", "GPSampler ask: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in c.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--platform", default="up", choices=("up", "inproc"))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--overhead-trials", type=int, default=20)
    ap.add_argument("--overhead-kind", default="xgboost", choices=("xgboost", "script"),
                    help="trivial trial: built-in XGBoost, 1 round on 200 rows; or a script-mode print")
    ap.add_argument("--offline", action="store_true",
                    help="only the strategies: trials-to-best on hartmann6 with opensage.tuning studies, no platform")
    ap.add_argument("--fresh-environments", action="store_true",
                    help="build image environments in this run's platform home instead of the user's cache")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.offline:
        results = {"trials_to_best": [offline_trials_to_best(args.seeds, args.trials, args.parallel)]}
        print(markdown(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        return 0
    tasks = [t for t in args.tasks.split(",") if t]
    if not args.fresh_environments:
        import os

        from opensage import environments

        # Inherited by `opensage up`: its jobs reuse (or build once) the user's environments.
        os.environ.setdefault(environments.CACHE_ENV, str(environments.cache_root()))
    results: dict[str, Any] = {"trials_to_best": [], "load_before": list(__import__("os").getloadavg())}
    results["sampler_cost"] = sampler_cost()
    with tempfile.TemporaryDirectory(prefix="opensage-bench-tuning-") as tmp, contextlib.ExitStack() as stack:
        p = stack.enter_context(common.open_platform(args.platform, Path(tmp)))
        prepare(p, tasks)
        if args.overhead_trials:
            results["overhead"] = overhead(p, args.overhead_trials, 2, args.overhead_kind)
            print(f"overhead: {results['overhead']}", flush=True)
        for task in tasks:
            results["trials_to_best"].append(trials_to_best(p, task, args.seeds, args.trials, args.parallel))
    results["load_after"] = list(__import__("os").getloadavg())
    print(markdown(results))
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
