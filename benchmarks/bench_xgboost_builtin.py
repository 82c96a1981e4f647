"""Built-in XGBoost on the platform vs the same ``xgboost.train`` in-process.

Data: ``--rows`` x ``--features`` (default 1M x 50) synthetic float features rounded to 4 decimals, binary
label from a noisy linear model (numpy, fixed seed), written once as CSV (label first, no header) and cached
under ``--cache`` (generation time is reported apart and not counted anywhere).

Hyperparameters everywhere: ``objective=binary:logistic, tree_method=hist, num_round=50``, default threads
(the algorithm uses ``os.cpu_count()``, xgboost's own default is the same), evaluation on the train set every
round (the built-in algorithm always evaluates its ``train`` channel, so the baseline does too).

Variants, run one after the other in one invocation (nothing else runs meanwhile):

* ``inproc``: this process, xgboost already imported: ``pyarrow.csv.read_csv`` (float32 columns, the same
  reader settings the algorithm uses) -> ``xgb.DMatrix`` (load), then ``xgb.train`` (train).
* ``direct``: ``python -m opensage.algorithms.xgboost.train`` as a subprocess with ``SAGEMAKER_BASE_DIR`` on a
  prepared ml root (the CSV hard-linked into ``input/data/train``): process wall time, including interpreter
  start, imports, CSV parse, DMatrix, training, eval printing and ``save_model``.
* ``job``: a CreateTrainingJob on ``opensage up`` (SeaweedFS S3): wall time create -> Completed seen by
  DescribeTrainingJob (20 ms polls), ``TrainingTimeInSeconds``, and from the agent's ``events.jsonl`` the
  channel download (Downloading -> Training), the algorithm process (Training -> Uploading: spawn to exit)
  and the model upload (Uploading -> result.json). One job per ``--input-modes`` entry (default
  ``File,FastFile``): File mode downloads the channel before the algorithm starts; FastFile streams it
  (8 ranged GETs) while the algorithm starts and parses it, so the two rows are before / after streaming.

    .venv/bin/python benchmarks/bench_xgboost_builtin.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_start as common  # noqa: E402  (sibling module: platform + job helpers)

NUM_ROUND = 50
PARAMS = {"objective": "binary:logistic", "tree_method": "hist"}
HYPERPARAMETERS = {"num_round": str(NUM_ROUND), **PARAMS}
SEED = 20240611
DATA_PREFIX = "xgb-bench/train"


# ----------------------------------------------------------------------------------------- data


def make_csv(path: Path, rows: int, features: int, seed: int = SEED, chunk: int = 200_000) -> None:
    """Write the data set (label first, no header) in chunks, atomically."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=features).astype(np.float32)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            x = np.round(rng.normal(size=(n, features)).astype(np.float32), 4)
            logit = x @ weights + rng.normal(scale=2.0, size=n).astype(np.float32)
            y = (logit > 0).astype(np.int8)
            cols = [pa.array(y)] + [pa.array(x[:, j]) for j in range(features)]
            table = pa.Table.from_arrays(cols, names=[f"c{j}" for j in range(features + 1)])
            pacsv.write_csv(table, out, write_options=pacsv.WriteOptions(include_header=False))
    os.replace(tmp, path)


def dataset(cache: Path, rows: int, features: int) -> tuple[Path, float]:
    """(path of the cached CSV, seconds spent generating it now: 0 when it was cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"xgb-{rows}x{features}-seed{SEED}.csv"
    if path.exists():
        return path, 0.0
    t = time.perf_counter()
    make_csv(path, rows, features)
    return path, time.perf_counter() - t


# ----------------------------------------------------------------------------------------- variants


def run_inproc(csv: Path, features: int) -> dict[str, float]:
    """Load (CSV -> Arrow float32 -> DMatrix) and train in this process; xgboost imported beforehand."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import xgboost as xgb

    names = [f"c{j}" for j in range(features + 1)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    table = pacsv.read_csv(csv, read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
                           convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
    label = table.column(0).to_numpy()
    dtrain = xgb.DMatrix(table.drop_columns(["c0"]), label=label)
    del table
    t1 = time.perf_counter()
    booster = xgb.train(dict(PARAMS), dtrain, num_boost_round=NUM_ROUND, evals=[(dtrain, "train")],
                        verbose_eval=False)
    t2 = time.perf_counter()
    cpu = time.process_time() - cpu0
    last = float(booster.eval(dtrain, "train").split(":")[-1])
    del booster, dtrain
    gc.collect()
    return {"load": t1 - t0, "train": t2 - t1, "total": t2 - t0, "cpu": cpu, "final_eval": last}


def prepare_ml_root(root: Path, csv: Path) -> None:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {
        "ContentType": "text/csv", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None"}}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    train = root / "input" / "data" / "train"
    train.mkdir(parents=True)
    os.link(csv, train / "data.csv")
    (root / "model").mkdir()
    (root / "output").mkdir()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_direct(csv: Path) -> dict[str, Any]:
    """``python -m opensage.algorithms.xgboost.train`` on a prepared ml root, timed from outside."""
    with tempfile.TemporaryDirectory(prefix="opensage-bench-ml-") as tmp:
        root = Path(tmp)
        prepare_ml_root(root, csv)
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(root), PYTHONUNBUFFERED="1")
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "opensage.algorithms.xgboost.train"], env=env,
                              capture_output=True, text=True, cwd=common.REPO)
        wall = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
        if done.returncode != 0:
            raise RuntimeError(f"direct algorithm run failed ({done.returncode}): {done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")
        return {"total": wall, "cpu": cpu, "final_eval": final_logloss(done.stdout.splitlines())}


def final_logloss(lines: list[str]) -> float | None:
    """The train logloss of the last round from the algorithm's ``[i]\ttrain-logloss:<v>`` lines."""
    last = [line for line in lines if line.startswith(f"[{NUM_ROUND - 1}]\t")]
    return float(last[-1].split(":")[-1]) if last else None


def _events(jobdir: Path) -> dict[str, float]:
    out = {}
    for line in (jobdir / "events.jsonl").read_text().splitlines():
        ev = json.loads(line)
        out.setdefault(ev["status"], float(ev["time"]))
    return out


def run_job(p: common.Platform, home: Path, input_mode: str = "File") -> dict[str, Any]:
    """The uploaded CSV as a built-in XGBoost training job on ``opensage up``."""
    name = f"xgb-builtin-{time.time_ns()}"
    req = common.job_request(name, "xgboost")
    req["AlgorithmSpecification"]["TrainingInputMode"] = input_mode
    req["HyperParameters"] = dict(HYPERPARAMETERS)
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = f"s3://{common.BUCKET}/{DATA_PREFIX}"
    assert p.pid is not None
    others = common.child_pids(p.pid, "weed")  # SeaweedFS
    cpu0 = common.process_cpu(p.pid)
    others0 = sum(sum(common.process_cpu(pid)) for pid in others)
    t0 = time.time()
    p.sm.create_training_job(**req)
    desc = common.wait_finished(p.sm, name, timeout=900, poll=0.25)
    wall = time.time() - t0
    cpu1 = common.process_cpu(p.pid)
    others1 = sum(sum(common.process_cpu(pid)) for pid in others)
    if desc["TrainingJobStatus"] != "Completed":
        raise RuntimeError(f"job {name} ended {desc['TrainingJobStatus']}: {desc.get('FailureReason')}")
    jobdir = home / "jobs" / name / "algo-1"
    ev = _events(jobdir)
    result_at = (jobdir / "result.json").stat().st_mtime
    lines = [text for _, text in common._log_lines(jobdir / "logs" / "algo-1.log")]
    agent = int((jobdir / "agent.pid").read_text())
    try:  # the finished agent is usually an unreaped zombie whose stat still holds its (and its child's) CPU
        job_cpu = sum(common.process_cpu(agent))
    except OSError:  # already reaped: its CPU moved to `opensage up`'s children total
        job_cpu = cpu1[1] - cpu0[1]
    return {
        "wall": wall, "training_time_s": desc["TrainingTimeInSeconds"],
        "download": ev["Training"] - ev["Downloading"],
        "algorithm": ev["Uploading"] - ev["Training"],
        "model_upload": result_at - ev["Uploading"],
        "job_cpu": job_cpu,
        "control_plane_cpu": cpu1[0] - cpu0[0],
        "object_store_cpu": others1 - others0,
        "final_eval": final_logloss(lines),
    }


def run(rows: int, features: int, cache: Path, repeats: int,
        input_modes: tuple[str, ...] = ("File",)) -> dict[str, Any]:
    """``repeats`` rounds of (in-process, direct, job), interleaved so that machine noise hits all three."""
    import xgboost  # noqa: F401  (imported before timing: the in-process baseline excludes import time)

    csv, generated = dataset(cache, rows, features)
    out: dict[str, Any] = {"rows": rows, "features": features, "csv_mb": csv.stat().st_size / 1e6,
                           "generate": generated, "inproc": [], "direct": [], "job": [],
                           **{f"job_{m}": [] for m in input_modes[1:]}, "input_modes": list(input_modes),
                           "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="opensage-bench-xgb-") as tmp, \
            common.open_platform("up", Path(tmp)) as p:
        t = time.perf_counter()
        p.put_file(common.BUCKET, f"{DATA_PREFIX}/data.csv", csv)
        out["upload_data"] = time.perf_counter() - t
        for _ in range(repeats):
            out["inproc"].append(run_inproc(csv, features))
            out["direct"].append(run_direct(csv))
            out["job"].append(run_job(p, Path(tmp), input_modes[0]))
            for mode in input_modes[1:]:
                out[f"job_{mode}"].append(run_job(p, Path(tmp), mode))
    out["loadavg_after"] = os.getloadavg()
    return out


# ----------------------------------------------------------------------------------------- channel read


class _RangedStream:
    """A file-like over one S3 object read by ``workers`` parallel ranged GETs of ``part`` bytes, handed
    out in order (what a FastFile channel read while it streams would need to beat File mode's download)."""

    def __init__(self, s3: Any, key: str, size: int, part: int = 16 << 20, workers: int = 8) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(workers)
        ranges = [(o, min(o + part, size) - 1) for o in range(0, size, part)]

        def get(r: tuple[int, int]) -> bytes:
            return s3.get_object(Bucket=common.BUCKET, Key=key, Range=f"bytes={r[0]}-{r[1]}")["Body"].read()

        self.pending = deque(ranges)
        self.futures: Any = deque()
        self.get, self.workers = get, workers
        self.buf, self.closed = memoryview(b""), False

    def _fill(self) -> None:
        while self.pending and len(self.futures) < self.workers * 2:
            self.futures.append(self.pool.submit(self.get, self.pending.popleft()))

    def read(self, n: int = -1) -> bytes:
        self._fill()
        if not self.buf and self.futures:
            self.buf = memoryview(self.futures.popleft().result())
            self._fill()
        out, self.buf = bytes(self.buf[:n] if n >= 0 else self.buf), self.buf[n:] if n >= 0 else memoryview(b"")
        return out

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)


def channel_read(p: common.Platform, csv: Path, features: int, tmp: Path) -> dict[str, float]:
    """Seconds to have the channel as a DMatrix, four ways, on the same platform S3 object: File mode as
    the agent does it (s3transfer download, then the disk parse), one streamed GET parsed as it arrives,
    parallel ranged GETs parsed in order as they arrive, and the disk parse alone (the in-process load)."""
    import boto3.s3.transfer as s3transfer
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import xgboost as xgb

    creds = json.loads((p.home / "credentials.json").read_text())
    s3 = common._client("s3", common._s3_endpoint_from_config(p.home), creds["access_key"], creds["secret_key"])
    key = f"{DATA_PREFIX}/data.csv"
    names = [f"c{j}" for j in range(features + 1)]

    def parse(source: Any) -> float:
        table = pacsv.read_csv(source, read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
                               convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
        xgb.DMatrix(table.drop_columns(["c0"]), label=table.column(0).to_numpy())
        return time.perf_counter()

    out: dict[str, float] = {}

    def note(name: str, value: float) -> float:
        print(f"channel read: {name} {value:.2f} s (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        return value

    t = time.perf_counter()
    dest = tmp / "downloaded.csv"
    s3transfer.S3Transfer(s3).download_file(common.BUCKET, key, str(dest))
    out["file_download"] = note("file_download", time.perf_counter() - t)
    out["file_mode"] = note("file_mode", parse(dest) - t)
    dest.unlink()
    gc.collect()
    t = time.perf_counter()
    out["disk_parse"] = note("disk_parse", parse(csv) - t)
    gc.collect()
    t = time.perf_counter()
    body = s3.get_object(Bucket=common.BUCKET, Key=key)["Body"]
    out["one_stream"] = note("one_stream", parse(pa.PythonFile(body, mode="r")) - t)
    gc.collect()
    t = time.perf_counter()
    stream = _RangedStream(s3, key, csv.stat().st_size)
    out["ranged_stream"] = note("ranged_stream", parse(pa.PythonFile(stream, mode="r")) - t)
    stream.close()
    gc.collect()
    return out


def run_channel_read(rows: int, features: int, cache: Path, repeats: int) -> str:
    csv, _ = dataset(cache, rows, features)
    before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    runs = []
    with tempfile.TemporaryDirectory(prefix="opensage-bench-xgb-") as tmp, \
            common.open_platform("up", Path(tmp)) as p:
        t = time.perf_counter()
        p.put_file(common.BUCKET, f"{DATA_PREFIX}/data.csv", csv)
        print(f"uploaded in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
        for _ in range(repeats):
            runs.append(channel_read(p, csv, features, Path(tmp)))
    after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    labels = {"disk_parse": "disk parse only (the in-process load)",
              "file_mode": "File mode: s3transfer download, then disk parse (what the job does)",
              "file_download": "… of which the download",
              "one_stream": "one GET, parsed as it streams (FastFile-style, one connection)",
              "ranged_stream": "8 parallel 16 MB ranged GETs, parsed in order as they arrive"}
    lines = [f"Channel read floor: {csv.stat().st_size / 1e6:.0f} MB CSV ({rows:,} × {features} + label) from the "
             f"platform's S3 to a DMatrix, {repeats} repeat(s): median (each run).", "",
             "| how | seconds, median (each) | min |", "|---|---|---|"]
    for k, label in labels.items():
        lines.append(f"| {label} | {_cell(runs, k)} |")
    lines += ["", f"`uptime` before: `{before}`; after: `{after}`."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- report


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def _cell(runs: list[dict[str, Any]], key: str, fmt: str = "{:.2f}") -> str:
    """Median | min, with every run in brackets when there is more than one."""
    med = fmt.format(_median(runs, key))
    if len(runs) == 1:
        return f"{med} | {med}"
    low = fmt.format(min(float(r[key]) for r in runs))
    return f"{med} ({', '.join(fmt.format(float(r[key])) for r in runs)}) | {low}"


def markdown(r: dict[str, Any]) -> str:
    inproc, direct, job = r["inproc"], r["direct"], r["job"]
    base = _median(inproc, "total")

    base_min = min(float(x["total"]) for x in inproc)

    def ratio(runs: list[dict[str, Any]], key: str) -> str:
        low = min(float(x[key]) for x in runs)
        return f"{_median(runs, key) / base:.2f}× / {low / base_min:.2f}×"

    rows = [
        f"Data: {r['rows']:,} rows × {r['features']} features CSV ({r['csv_mb']:.0f} MB), num_round={NUM_ROUND}, "
        f"binary:logistic, hist, default threads; {len(inproc)} interleaved repeat(s): median (each run), min.",
        "",
        "| variant | what the time includes | median seconds (each run) | min | ÷ in-process load+train "
        "(median / min) |",
        "|---|---|---|---|---|",
        f"| in-process | CSV→Arrow→DMatrix (load) | {_cell(inproc, 'load')} | |",
        f"| in-process | xgb.train, 50 rounds, train eval each round | {_cell(inproc, 'train')} | |",
        f"| in-process | load + train | {_cell(inproc, 'total')} | 1.00× |",
        f"| in-process | CPU seconds of load + train (all threads) | {_cell(inproc, 'cpu')} | |",
        f"| direct subprocess | `python -m opensage.algorithms.xgboost.train`: interpreter, imports, load, "
        f"train, save_model | {_cell(direct, 'total')} | {ratio(direct, 'total')} |",
        f"| direct subprocess | CPU seconds of that process (all threads) | {_cell(direct, 'cpu')} | |",
        f"| platform job | the algorithm process inside the job (events Training→Uploading) | "
        f"{_cell(job, 'algorithm')} | {ratio(job, 'algorithm')} |",
        f"| platform job | CPU seconds of the job's processes (agent + algorithm, all threads) | "
        f"{_cell(job, 'job_cpu')} | |",
        f"| platform job | CPU seconds of the control plane (API, reconciler) during the job | "
        f"{_cell(job, 'control_plane_cpu')} | |",
        f"| platform job | CPU seconds of SeaweedFS during the job | {_cell(job, 'object_store_cpu')} | |",
        f"| platform job | channel download from S3 (Downloading→Training) | {_cell(job, 'download')} | |",
        f"| platform job | model.tar.gz upload (Uploading→result.json) | {_cell(job, 'model_upload')} | |",
        f"| platform job | TrainingTimeInSeconds (whole seconds) | {_cell(job, 'training_time_s', '{:.0f}')} | "
        f"{ratio(job, 'training_time_s')} |",
        f"| platform job | wall: create_training_job → Completed seen | {_cell(job, 'wall')} | "
        f"{ratio(job, 'wall')} |",
        *[line for mode in r.get("input_modes", ["File"])[1:] for line in (
            f"| platform job, {mode} | the algorithm process inside the job (events Training→Uploading) | "
            f"{_cell(r[f'job_{mode}'], 'algorithm')} | {ratio(r[f'job_{mode}'], 'algorithm')} |",
            f"| platform job, {mode} | channel download before the algorithm starts (Downloading→Training) | "
            f"{_cell(r[f'job_{mode}'], 'download')} | |",
            f"| platform job, {mode} | CPU seconds of the job's processes | {_cell(r[f'job_{mode}'], 'job_cpu')} | |",
            f"| platform job, {mode} | wall: create_training_job → Completed seen | "
            f"{_cell(r[f'job_{mode}'], 'wall')} | {ratio(r[f'job_{mode}'], 'wall')} |")],
        "",
        f"Not counted: data generation {r['generate']:.1f} s (0 = cached), CSV upload to S3 "
        f"{r['upload_data']:.2f} s. Final train logloss: in-process {inproc[-1]['final_eval']:.5f}, "
        f"direct {direct[-1]['final_eval']}, job {job[-1]['final_eval']}"
        + "".join(f", {m} job {r[f'job_{m}'][-1]['final_eval']}" for m in r.get("input_modes", ["File"])[1:])
        + f" (the first job row is {r.get('input_modes', ['File'])[0]} mode). Load average before/after: "
        f"{' '.join(f'{x:.1f}' for x in r['loadavg_before'])} / {' '.join(f'{x:.1f}' for x in r['loadavg_after'])}.",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "opensage-bench-data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--input-modes", default="File,FastFile",
                    help="comma-separated TrainingInputMode of the job variant, one job each per repeat")
    ap.add_argument("--channel-read", action="store_true",
                    help="only how fast the channel becomes a DMatrix: File-mode download vs parsing while it streams")
    args = ap.parse_args(argv)
    if args.channel_read:
        print(run_channel_read(args.rows, args.features, args.cache, args.repeats))
        return 0
    result = run(args.rows, args.features, args.cache, args.repeats, tuple(args.input_modes.split(",")))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
