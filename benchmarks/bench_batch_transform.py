"""Batch transform rows/s vs in-process ``Booster.predict`` over the same CSV file.

One model, one file, one run, side by side:

* the model: built-in XGBoost ``binary:logistic``, ``hist``, ``max_depth`` 6, ``--rounds`` (50) rounds, trained
  here on 20,000 generated rows (numpy, fixed seed) and saved as ``xgboost-model`` in ``model.tar.gz``;
* the file: ``--rows`` x ``--features`` (default 500k x 50) float features rounded to 4 decimals, no label, no
  header, written once with pyarrow and cached under ``--cache``; uploaded to the platform's S3.

Variants, interleaved ``--repeats`` times (nothing else of ours runs meanwhile):

* ``inproc``: this process, xgboost imported and the booster loaded beforehand: ``pyarrow.csv.read_csv``
  (float32 columns, the reader the built-in model server uses) -> ``xgb.DMatrix`` -> ``Booster.predict`` ->
  the scores written as CSV (one float32 per line, pyarrow ``write_csv``). Timed: the whole read + predict +
  write, and predict alone.
* ``inproc-s3``: the same, but reading the *same S3 object* the jobs read: boto3 ``get_object`` of the
  platform's S3, the body streamed into ``read_csv`` (what a user would do without batch transform); the
  scores' ``put_object`` is timed apart (not in the ratio).
* ``job`` (one per ``--configs`` entry): CreateTransformJob on ``opensage up`` (SeaweedFS S3) with the built-in
  XGBoost image, ``SplitType=Line``, ``AssembleWith=Line``, ``text/csv`` in and out; ``explicit`` also sets
  ``BatchStrategy=MultiRecord`` and ``MaxPayloadInMB=6``; ``defaults`` sets nothing else (the model server's
  ``/execution-parameters`` decide: MultiRecord, 6 MB, ``MaxConcurrentTransforms`` = its default);
  ``c1`` is ``explicit`` with ``MaxConcurrentTransforms=1``; ``omp1`` is ``explicit`` with the job Environment
  ``OMP_NUM_THREADS=1`` (the model server's XGBoost on one thread); ``explicit-http`` / ``defaults-http`` are
  ``explicit`` / ``defaults`` with ``OPENSAGE_TRANSFORM_IN_PROCESS=false``: through a model server over HTTP
  (the path before built-ins predicted in the worker's process). Timed: create -> Completed seen by
  DescribeTransformJob (100 ms polls); ``TransformStartTime`` -> ``TransformEndTime``; and from the worker's
  data log (``<home>/jobs/<job>/<instance>/logs/data-log.log``, ms stamps): model server ready, the data path
  (parameters known -> the ``.out`` uploaded: the S3 read, which the worker streams so requests start with the
  first MaxPayloadInMB, every request, the assembly and the upload), when the object's last byte was read and
  what came after it. CPU seconds of the worker and of its model server are sampled from /proc while the job
  runs.

Rows/s = rows / seconds; the ratios are each job figure's rows/s over the in-process read+predict+write rows/s
of the same repeat, from local disk and from S3. The ``.out`` is downloaded once and compared with the in-process scores.

    .venv/bin/python benchmarks/bench_batch_transform.py [--rows 500000] [--repeats 3] [--json raw.json]
        [--configs explicit,explicit-http,defaults,defaults-http]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_start as common  # noqa: E402  (sibling module: platform helpers)

SEED = 20240612
ROUNDS = 50
TRAIN_ROWS = 20_000
PARAMS = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6}
INPUT_PREFIX = "transform-bench/input"
OUTPUT_PREFIX = "transform-bench/output"
MODEL_KEY = "transform-bench/model/model.tar.gz"
MODEL_NAME = "bench-transform-model"
CONFIGS: dict[str, dict[str, Any]] = {
    "explicit": {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6},
    "defaults": {},
    "c1": {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 1},
    "omp1": {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6, "Environment": {"OMP_NUM_THREADS": "1"}},
    # The model-server path (before in-process prediction): the same jobs through a model server over HTTP.
    "explicit-http": {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6,
                      "Environment": {"OPENSAGE_TRANSFORM_IN_PROCESS": "false"}},
    "defaults-http": {"Environment": {"OPENSAGE_TRANSFORM_IN_PROCESS": "false"}},
}
POLL = 0.1  # DescribeTransformJob poll (each call costs the control plane CPU, on the same 2 cores)


# ----------------------------------------------------------------------------------------- data and model


def _features(rng: Any, n: int, features: int) -> Any:
    import numpy as np

    return np.round(rng.normal(size=(n, features)).astype(np.float32), 4)


def make_csv(path: Path, rows: int, features: int, chunk: int = 200_000) -> None:
    """Features only (what a transform job gets), no header; written atomically in chunks."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(SEED + 1)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for start in range(0, rows, chunk):
            x = _features(rng, min(chunk, rows - start), features)
            table = pa.Table.from_arrays([pa.array(x[:, j]) for j in range(features)],
                                         names=[f"f{j}" for j in range(features)])
            pacsv.write_csv(table, out, write_options=pacsv.WriteOptions(include_header=False))
    os.replace(tmp, path)


def dataset(cache: Path, rows: int, features: int) -> tuple[Path, float]:
    """(path of the cached CSV, seconds spent generating it now: 0 when it was cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"transform-{rows}x{features}-seed{SEED}.csv"
    if path.exists():
        return path, 0.0
    t = time.perf_counter()
    make_csv(path, rows, features)
    return path, time.perf_counter() - t


def train_model(workdir: Path, features: int, rounds: int) -> tuple[Path, bytes]:
    """(path of xgboost-model, model.tar.gz bytes) trained on generated rows with a noisy linear label."""
    import numpy as np
    import xgboost as xgb

    from opensage.algorithms.xgboost import save_booster

    rng = np.random.default_rng(SEED)
    weights = rng.normal(size=features).astype(np.float32)
    x = _features(rng, TRAIN_ROWS, features)
    y = (x @ weights + rng.normal(scale=2.0, size=TRAIN_ROWS) > 0).astype(np.float32)
    booster = xgb.train(dict(PARAMS), xgb.DMatrix(x, label=y), num_boost_round=rounds)
    path = workdir / "xgboost-model"
    save_booster(booster, path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname="xgboost-model")
    return path, buf.getvalue()


# ----------------------------------------------------------------------------------------- in-process


def run_inproc(csv: Path, model_path: Path, features: int, out_path: Path) -> dict[str, Any]:
    """Read + DMatrix + predict + write CSV in this process (booster loaded before the clock starts)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import xgboost as xgb

    from opensage.algorithms.xgboost import load_booster

    booster = load_booster(model_path)
    names = [f"f{j}" for j in range(features)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    table = pacsv.read_csv(csv, read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
                           convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
    dmatrix = xgb.DMatrix(table)
    t1 = time.perf_counter()
    scores = booster.predict(dmatrix, validate_features=False)
    t2 = time.perf_counter()
    pacsv.write_csv(pa.table({"score": pa.array(scores, type=pa.float32())}), out_path,
                    write_options=pacsv.WriteOptions(include_header=False))
    t3 = time.perf_counter()
    cpu = time.process_time() - cpu0
    rows = len(scores)
    del table, dmatrix
    gc.collect()
    return {"rows": rows, "load": t1 - t0, "predict": t2 - t1, "write": t3 - t2, "total": t3 - t0, "cpu": cpu,
            "scores": scores}


def run_inproc_s3(s3: Any, key: str, model_path: Path, features: int, out_path: Path) -> dict[str, Any]:
    """What a user would do without batch transform: boto3 ``get_object`` of the same S3 object, parse
    (the body streamed into pyarrow's CSV reader), predict, write the scores CSV locally; then, timed apart,
    ``put_object`` of the scores (the job uploads its .out too)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import xgboost as xgb

    from opensage.algorithms.xgboost import load_booster

    booster = load_booster(model_path)
    names = [f"f{j}" for j in range(features)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    body = s3.get_object(Bucket=common.BUCKET, Key=key)["Body"]
    table = pacsv.read_csv(pa.PythonFile(body, mode="r"),
                           read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
                           convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
    dmatrix = xgb.DMatrix(table)
    t1 = time.perf_counter()
    scores = booster.predict(dmatrix, validate_features=False)
    t2 = time.perf_counter()
    pacsv.write_csv(pa.table({"score": pa.array(scores, type=pa.float32())}), out_path,
                    write_options=pacsv.WriteOptions(include_header=False))
    t3 = time.perf_counter()
    cpu = time.process_time() - cpu0
    s3.put_object(Bucket=common.BUCKET, Key=f"{OUTPUT_PREFIX}/inproc-s3.out", Body=out_path.read_bytes())
    t4 = time.perf_counter()
    rows = len(scores)
    del table, dmatrix
    gc.collect()
    return {"rows": rows, "load": t1 - t0, "predict": t2 - t1, "write": t3 - t2, "total": t3 - t0, "cpu": cpu,
            "upload": t4 - t3}


# ----------------------------------------------------------------------------------------- platform job


def _proc_cpu(pid: int, children: bool) -> float | None:
    """utime + stime (+ its reaped children's) of a live or zombie process; None once it is gone."""
    try:
        own, reaped = common.process_cpu(pid)
    except (OSError, ValueError, IndexError):
        return None
    return own + reaped if children else own


class CpuSampler:
    """Last seen CPU seconds of the job's worker (agent.pid) and model server (model_server.json)."""

    def __init__(self, jobs_dir: Path, job: str) -> None:
        self.root = jobs_dir / job
        self.pids: dict[str, int] = {}
        self.cpu: dict[str, float] = {}

    def _find(self) -> None:
        for inst in self.root.glob("i-*"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                if "worker" not in self.pids and (inst / "agent.pid").exists():
                    self.pids["worker"] = int((inst / "agent.pid").read_text())
                if "model_server" not in self.pids and (inst / "model_server.json").exists():
                    self.pids["model_server"] = int(json.loads((inst / "model_server.json").read_text())["pid"])

    def sample(self) -> None:
        if len(self.pids) < 2:
            self._find()
        for name, pid in self.pids.items():
            value = _proc_cpu(pid, children=name != "worker")  # the worker's child is the model server
            if value is not None:
                self.cpu[name] = max(value, self.cpu.get(name, 0.0))


def job_request(name: str, config: str) -> dict[str, Any]:
    return {
        "TransformJobName": name,
        "ModelName": MODEL_NAME,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                            "S3Uri": f"s3://{common.BUCKET}/{INPUT_PREFIX}"}},
            "ContentType": "text/csv", "SplitType": "Line", "CompressionType": "None"},
        "TransformOutput": {"S3OutputPath": f"s3://{common.BUCKET}/{OUTPUT_PREFIX}/{name}",
                            "Accept": "text/csv", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
        **CONFIGS[config],
    }


def _data_log_marks(jobdir: Path) -> dict[str, float]:
    """Epoch seconds of the worker's data-log milestones (first occurrence of each)."""
    marks: dict[str, float] = {}
    for stamp, text in common._log_lines(jobdir / "logs" / "data-log.log"):
        text = text.removeprefix("[sagemaker logs]: ")
        key = ("ready" if text.startswith(("Model server is ready", "Model loaded in this process")) else
               "params" if text.startswith("MaxConcurrentTransforms=") else
               "read" if text.startswith("s3://") and text.endswith("bytes") else
               "wrote" if text.startswith("Wrote ") else
               "done" if text.startswith("Transformed ") else None)
        if key:
            marks.setdefault(key, stamp)
            if key == "params":
                marks["_params_text"] = text  # type: ignore[assignment]
    return marks


def run_job(p: common.Platform, config: str, rows: int) -> dict[str, Any]:
    name = f"bt-{config}-{time.time_ns()}"
    sampler = CpuSampler(p.home / "jobs", name)
    assert p.pid is not None
    cp0 = common.process_cpu(p.pid)[0]
    weed = common.child_pids(p.pid, "weed")
    weed0 = sum(sum(common.process_cpu(pid)) for pid in weed)
    t0 = time.time()
    p.sm.create_transform_job(**job_request(name, config))
    deadline = t0 + 600
    while True:
        sampler.sample()
        desc = p.sm.describe_transform_job(TransformJobName=name)
        if desc["TransformJobStatus"] not in ("InProgress", "Stopping"):
            break
        if time.time() > deadline:
            raise TimeoutError(f"transform job {name} still running after 600 s")
        time.sleep(POLL)
    wall = time.time() - t0
    cp = common.process_cpu(p.pid)[0] - cp0
    weed_cpu = sum(sum(common.process_cpu(pid)) for pid in weed) - weed0
    if desc["TransformJobStatus"] != "Completed":
        raise RuntimeError(f"transform job {name} ended {desc['TransformJobStatus']}: {desc.get('FailureReason')}")
    jobdir = next((p.home / "jobs" / name).glob("i-*"))
    m = _data_log_marks(jobdir)
    start, end = desc["TransformStartTime"].timestamp(), desc["TransformEndTime"].timestamp()
    return {
        "config": config, "job": name, "rows": rows, "wall": wall,
        "start_to_end": end - start,
        "server_ready": m["ready"] - t0,
        "read": m["read"] - m["params"],  # the object's last byte read (requests run meanwhile)
        "data_path": m["wrote"] - m["params"],  # read object, split, post every batch, assemble, upload .out
        "tail": m["wrote"] - m["read"],  # last byte read -> .out uploaded
        "params": m.get("_params_text", ""),
        "worker_cpu": sampler.cpu.get("worker", float("nan")),
        "server_cpu": sampler.cpu.get("model_server", 0.0),  # 0: predicted in the worker (no server)
        "control_plane_cpu": cp, "object_store_cpu": weed_cpu,
    }


def check_output(p: common.Platform, job: str, scores: Any) -> str:
    """Compare the job's ``.out`` with the in-process scores; a one-line verdict."""
    import boto3  # noqa: F401  (the platform's s3 client is boto3)
    import numpy as np

    s3 = common._client("s3", common._s3_endpoint_from_config(p.home), *_creds(p.home))
    body = s3.get_object(Bucket=common.BUCKET, Key=f"{OUTPUT_PREFIX}/{job}/data.csv.out")["Body"].read()
    got = np.array(body.split(), dtype=np.float32)
    if got.shape != scores.shape:
        raise RuntimeError(f"{job}: .out has {got.shape[0]} scores, in-process {scores.shape[0]}")
    diff = float(np.max(np.abs(got - scores)))
    if diff > 1e-5:
        raise RuntimeError(f"{job}: .out differs from in-process predictions by up to {diff}")
    return f"{got.shape[0]:,} scores, max |diff| vs in-process {diff:.1e}"


def _creds(home: Path) -> tuple[str, str]:
    creds = json.loads((home / "credentials.json").read_text())
    return creds["access_key"], creds["secret_key"]


# ----------------------------------------------------------------------------------------- run


def run(rows: int = 500_000, features: int = 50, cache: Path = Path("/tmp/opensage-bench-data"),
        repeats: int = 3, configs: tuple[str, ...] = ("explicit", "defaults"),
        rounds: int = ROUNDS) -> dict[str, Any]:
    import xgboost  # noqa: F401  (imported before timing)

    csv, generated = dataset(cache, rows, features)
    out: dict[str, Any] = {"rows": rows, "features": features, "rounds": rounds, "csv_mb": csv.stat().st_size / 1e6,
                           "generate": generated, "inproc": [], "inproc_s3": [], "jobs": [],
                           "configs": list(configs),
                           "loadavg_before": os.getloadavg(), "uptime_before": _uptime()}
    with tempfile.TemporaryDirectory(prefix="opensage-bench-bt-") as tmp, \
            common.open_platform("up", Path(tmp)) as p:
        model_path, tarball = train_model(Path(tmp), features, rounds)
        t = time.perf_counter()
        p.put_file(common.BUCKET, f"{INPUT_PREFIX}/data.csv", csv)
        out["upload_data"] = time.perf_counter() - t
        p.put(common.BUCKET, MODEL_KEY, tarball)
        p.sm.create_model(ModelName=MODEL_NAME, ExecutionRoleArn=common.ROLE, PrimaryContainer={
            "Image": common.XGB_IMAGE, "ModelDataUrl": f"s3://{common.BUCKET}/{MODEL_KEY}"})
        run_job(p, configs[0], rows)  # warm-up (page cache, first imports): not counted
        s3 = common._client("s3", common._s3_endpoint_from_config(p.home), *_creds(p.home))
        scores = None
        for _ in range(repeats):
            result = run_inproc(csv, model_path, features, Path(tmp) / "inproc.out")
            scores = result.pop("scores")
            out["inproc"].append(result)
            out["inproc_s3"].append(run_inproc_s3(s3, f"{INPUT_PREFIX}/data.csv", model_path, features,
                                                  Path(tmp) / "inproc-s3.out"))
            for config in configs:
                out["jobs"].append(run_job(p, config, rows))
        out["check"] = check_output(p, out["jobs"][-1]["job"], scores)
    out["loadavg_after"] = os.getloadavg()
    out["uptime_after"] = _uptime()
    return out


def _uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ----------------------------------------------------------------------------------------- model-server stages


def server_stages(csv: Path, features: int, rounds: int, payload_mb: int = 6) -> str:
    """CPU seconds per stage of the built-in server's ``serve.predict`` over every MaxPayloadInMB batch of the
    file, in this process (no HTTP), next to cheaper alternatives for the same output; and the wall time of
    all batches on one thread (the server's single predict thread) vs two."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import xgboost as xgb

    from opensage.algorithms import content
    from opensage.algorithms.xgboost import serve
    from opensage.runner.transform_data import line_batches

    with tempfile.TemporaryDirectory(prefix="opensage-bench-bt-") as tmp:
        train_model(Path(tmp), features, rounds)
        model = serve.load(tmp)
    bodies = [b.body for b in line_batches(csv.read_bytes(), payload_mb << 20)]
    names = [f"c{i}" for i in range(features)]
    read_opts = pacsv.ReadOptions(column_names=names)
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32()))
    cpu: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.process_time()
        out = fn()
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - t
        return out

    for body in bodies:
        timed("serve.predict (all of it)", lambda body=body: serve.predict(model, body, "text/csv", "text/csv"))
        feats = timed("parse_payload", lambda body=body: content.parse_payload(body, "text/csv"))
        timed("of which pyarrow read_csv on the bytes", lambda body=body: pacsv.read_csv(
            pa.BufferReader(body), read_options=read_opts, convert_options=convert))
        dm = timed("xgb.DMatrix(numpy)", lambda feats=feats: xgb.DMatrix(feats, missing=np.nan))
        scores = timed("Booster.predict(DMatrix)", lambda dm=dm: model.booster.predict(dm, validate_features=False))
        timed("encode text/csv", lambda scores=scores: serve.encode(scores, "text/csv"))
        same = timed("alternative: Booster.inplace_predict(numpy), no DMatrix", lambda feats=feats:
                     model.booster.inplace_predict(feats, missing=np.nan, validate_features=False))
        if not np.array_equal(same, scores):
            raise RuntimeError("inplace_predict differs from predict(DMatrix)")

    def wall(threads: int) -> float:
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda body: serve.predict(model, body, "text/csv", "text/csv"), bodies))
        return time.perf_counter() - t

    walls = {n: min(wall(n) for _ in range(3)) for n in (1, 2)}
    rows = sum(b.count(b"\n") for b in bodies)
    lines = [f"Model-server stages over {len(bodies)} requests of {payload_mb} MB ({rows:,} rows), "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}:", "",
             "| stage | CPU seconds |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in cpu.items()]
    lines += ["", f"All requests through serve.predict, best of 3: one thread {walls[1]:.2f} s "
                  f"({rows / walls[1]:,.0f} rows/s), two threads {walls[2]:.2f} s ({rows / walls[2]:,.0f} rows/s)."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- report


def _each(values: list[float], fmt: str = "{:.2f}") -> str:
    med = fmt.format(statistics.median(values))
    return med if len(values) == 1 else f"{med} ({', '.join(fmt.format(v) for v in values)})"


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("nan")


def markdown(r: dict[str, Any]) -> str:
    rows, inproc, inproc_s3 = r["rows"], r["inproc"], r.get("inproc_s3") or []
    base = [_rate(rows, x["total"]) for x in inproc]  # per repeat
    base_s3 = [_rate(rows, x["total"]) for x in inproc_s3]
    lines = [
        f"Data: {rows:,} rows × {r['features']} features CSV ({r['csv_mb']:.0f} MB, no label); model: "
        f"binary:logistic, hist, max_depth 6, {r['rounds']} rounds; {len(inproc)} interleaved repeat(s): "
        "median (each run). Ratios = the job figure's rows/s ÷ the in-process read+predict+write rows/s of the "
        "same repeat (median of the per-repeat ratios), reading the CSV from local disk, and reading the same "
        "S3 object with boto3.",
        "",
        "| variant | what the time includes | seconds, median (each) | rows/s (median) | ÷ in-process, disk "
        "(median, each) | ÷ in-process, S3 (median, each) |",
        "|---|---|---|---|---|---|",
    ]

    def cells(secs: list[float], against: list[float]) -> str:
        if not against:
            return ""
        return _each([_rate(rows, s) / b for s, b in zip(secs, against, strict=False)], "{:.2f}×")

    def row(variant: str, what: str, secs: list[float], ratio: bool) -> None:
        rates = [_rate(rows, s) for s in secs]
        disk, s3 = (cells(secs, base), cells(secs, base_s3)) if ratio else ("", "")
        lines.append(f"| {variant} | {what} | {_each(secs)} | {statistics.median(rates):,.0f} | {disk} | {s3} |")

    row("in-process (disk)", "read CSV→Arrow→DMatrix + predict + write CSV", [x["total"] for x in inproc], True)
    row("in-process (disk)", "read CSV→Arrow→DMatrix", [x["load"] for x in inproc], False)
    row("in-process (disk)", "Booster.predict only", [x["predict"] for x in inproc], False)
    row("in-process (disk)", "write scores CSV", [x["write"] for x in inproc], False)
    lines.append(f"| in-process (disk) | CPU seconds of read+predict+write (all threads) | "
                 f"{_each([x['cpu'] for x in inproc])} | | | |")
    if inproc_s3:
        row("in-process (S3)", "boto3 get_object streamed into read CSV→Arrow→DMatrix + predict + write CSV",
            [x["total"] for x in inproc_s3], True)
        row("in-process (S3)", "get_object + read CSV→Arrow→DMatrix", [x["load"] for x in inproc_s3], False)
        lines.append(f"| in-process (S3) | CPU seconds of the above (this process; SeaweedFS not counted) | "
                     f"{_each([x['cpu'] for x in inproc_s3])} | | | |")
        lines.append(f"| in-process (S3) | then put_object of the scores (not in the ratio) | "
                     f"{_each([x['upload'] for x in inproc_s3])} | | | |")
    for config in r["configs"]:
        jobs = [j for j in r["jobs"] if j["config"] == config]
        what = json.dumps(CONFIGS[config]) if CONFIGS[config] else "SplitType=Line only"
        label = f"job `{config}`"
        row(label, f"create_transform_job → Completed seen ({what})", [j["wall"] for j in jobs], True)
        row(label, "TransformStartTime → TransformEndTime", [j["start_to_end"] for j in jobs], True)
        row(label, "worker data path: stream the object from S3, split, all requests, assemble, upload .out",
            [j["data_path"] for j in jobs], True)
        lines.append(f"| {label} | create → model ready (server /ping, or loaded in the worker) | "
                     f"{_each([j['server_ready'] for j in jobs])} | | | |")
        lines.append(f"| {label} | data path: the object's last byte read from S3 (streamed; requests run "
                     f"meanwhile) | {_each([j['read'] for j in jobs])} | | | |")
        lines.append(f"| {label} | data path: last byte read → .out uploaded | {_each([j['tail'] for j in jobs])} "
                     "| | | |")
        lines.append(f"| {label} | CPU s: worker / model server / control plane / SeaweedFS | "
                     f"{_each([j['worker_cpu'] for j in jobs])} / {_each([j['server_cpu'] for j in jobs])} / "
                     f"{_each([j['control_plane_cpu'] for j in jobs])} / "
                     f"{_each([j['object_store_cpu'] for j in jobs])} | | | |")
        totals = [j["worker_cpu"] + j["server_cpu"] + j["control_plane_cpu"] + j["object_store_cpu"] for j in jobs]
        lines.append(f"| {label} | CPU s of all four (÷ in-process disk CPU s: median of per-repeat ratios) | "
                     f"{_each(totals)} | | {_each([t / x['cpu'] for t, x in zip(totals, inproc, strict=False)], '{:.2f}×')}"
                     " | |")
    params = sorted({j["params"] for j in r["jobs"]})
    lines += [
        "",
        f"Worker parameters seen: {'; '.join(params)}. Output check: {r.get('check', 'n/a')}. Not counted: data "
        f"generation {r['generate']:.1f} s (0 = cached), CSV upload {r['upload_data']:.2f} s, one warm-up job. "
        f"`uptime` before: `{r['uptime_before']}`; after: `{r['uptime_after']}`.",
    ]
    return "\n".join(lines)


def verdict(r: dict[str, Any], target: float = 0.8) -> str:
    """Median of the per-repeat ratios (the verdict), and best job ÷ best in-process run (less load-sensitive),
    against both in-process baselines."""
    rows = r["rows"]
    out = ["| target | baseline | measured: median of per-repeat ratios (best ÷ best) | met? |", "|---|---|---|---|"]
    for name, runs in (("in-process, S3", r.get("inproc_s3") or []), ("in-process, disk", r["inproc"])):
        if not runs:
            continue
        base = [_rate(rows, x["total"]) for x in runs]
        best = min(x["total"] for x in runs)
        for config in r["configs"]:
            jobs = [j for j in r["jobs"] if j["config"] == config]
            for key, what in (("wall", "create→Completed"), ("data_path", "worker data path")):
                ratio = statistics.median(_rate(rows, j[key]) / b for j, b in zip(jobs, base, strict=False))
                out.append(f"| rows/s ≥ {target}× (`{config}`, {what}) | {name} | {ratio:.2f}× "
                           f"({best / min(j[key] for j in jobs):.2f}×) | {'yes' if ratio >= target else 'no'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="explicit,defaults,explicit-http,defaults-http",
                    help=f"comma-separated job configurations out of {', '.join(CONFIGS)}")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "opensage-bench-data")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--stages", action="store_true",
                    help="only the model-server stage breakdown (in this process, no platform)")
    args = ap.parse_args(argv)
    if args.stages:
        print(server_stages(dataset(args.cache, args.rows, args.features)[0], args.features, args.rounds))
        return 0
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip())
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}; choose from {', '.join(CONFIGS)}")
    result = run(args.rows, args.features, args.cache, args.repeats, configs, args.rounds)
    print(markdown(result) + "\n\n" + verdict(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
