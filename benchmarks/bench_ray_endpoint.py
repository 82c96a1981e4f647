"""Endpoints and distributed training on Ray (issue 13 item 6), and the replica token's cost on the hot path.

Three measurements, each short (a 2-core machine shared with others):

* ``token``: InvokeEndpoint on ``opensage up --executor local`` (1 instance of a built-in XGBoost model, one
  CSV row): sequential latency (SigV4-signed keep-alive requests, bench_invoke_endpoint's sender) and
  throughput with N clients. ``--platform-code DIR`` runs the platform from another checkout (e.g. the
  commit before the token: ``git archive <commit> | tar -x -C DIR``) so before/after run on one machine,
  back to back;
* ``replicas``: the same endpoint on ``--executor ray`` against a two-node Ray cluster started here (both
  nodes on this machine, 2 CPUs each), InitialInstanceCount 1 vs 2 (the second lands on the other node),
  throughput with N clients;
* ``xgboost``: the built-in XGBoost trained on 1 host vs 2 hosts (ShardedByS3Key, two files) on the Ray
  cluster, the same synthetic data (sklearn ``make_classification``, generated here); training seconds and
  the validation metric each reports.

    .venv/bin/python benchmarks/bench_ray_endpoint.py token --platform-code /tmp/before
    .venv/bin/python benchmarks/bench_ray_endpoint.py replicas
    .venv/bin/python benchmarks/bench_ray_endpoint.py xgboost
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_invoke_endpoint as bie  # noqa: E402 - sibling benchmarks: model, senders, throughput
import bench_ray_start as brs  # noqa: E402 - Ray cluster and `opensage up` with flags
import bench_training_start as bts  # noqa: E402

TYPES = {"ml.m5.large": {"cpus": 1, "memory_gib": 1}}


@contextlib.contextmanager
def two_node_cluster(temp_dir: Path) -> Iterator[str]:
    """bench_ray_start's head node plus a second node joined to it."""
    with brs.ray_cluster(temp_dir) as address:
        ports = [f"--dashboard-agent-listen-port={bts.free_port()}", f"--metrics-export-port={bts.free_port()}",
                 f"--runtime-env-agent-port={bts.free_port()}", f"--dashboard-agent-grpc-port={bts.free_port()}"]
        subprocess.run([brs.RAY, "start", f"--address={address}", "--num-cpus=2", f"--memory={4 * 2**30}",
                        "--object-store-memory=80000000", "--disable-usage-stats", *ports],
                       check=True, capture_output=True, timeout=120, env=brs.ray_env(temp_dir))
        yield address


def endpoint(p: bts.Platform, files: bie.ModelFiles, name: str, count: int) -> bie.Endpoint:
    creds = json.loads((p.home / "credentials.json").read_text())
    p.put(bts.BUCKET, f"{name}/model.tar.gz", files.tarball)
    p.sm.create_model(ModelName=name, ExecutionRoleArn=bts.ROLE, PrimaryContainer={
        "Image": bts.XGB_IMAGE, "ModelDataUrl": f"s3://{bts.BUCKET}/{name}/model.tar.gz"})
    p.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": count,
        "InstanceType": "ml.m5.large"}])
    ep = bie.Endpoint(p, p.sm.meta.endpoint_url, creds["access_key"], creds["secret_key"], name)
    bie.create_and_wait(ep, name, timeout=300)
    return ep


def invoke_numbers(ep: bie.Endpoint, name: str, body: bytes, requests: int, clients: list[int],
                   seconds: float) -> dict[str, Any]:
    send = bie.signed_sender(ep, name, body)
    bie.timed(send, 100)
    lat = bie.latency_stats(bie.timed(send, requests)) if requests else {}
    target = bie.Target(name, name, "SigV4Auth + http.client", lambda: bie.signed_sender(ep, name, body),
                        {"control plane": ep.platform.pid or 0})
    thr = [bie.measure_throughput(target, n, seconds) for n in clients]
    return {"latency": lat, "throughput": thr}


def run_token(code: Path | None, requests: int, clients: list[int], seconds: float) -> dict[str, Any]:
    env = dict(os.environ)
    if code is not None:  # the platform (and its model servers) from another checkout
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="osbench", dir="/tmp") as tmp:
        root = Path(tmp)
        files = bie.build_model(root)
        (root / "home").mkdir()
        with brs.up_platform(root / "home", ["--executor", "local"], env=env) as p:
            ep = endpoint(p, files, "bench-token", 1)
            out = invoke_numbers(ep, "bench-token", files.csv_row, requests, clients, seconds)
    return {"platform_code": str(code or bts.REPO), **out}


def run_replicas(clients: list[int], seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="osbench", dir="/tmp") as tmp:
        root = Path(tmp)
        files = bie.build_model(root)
        types = root / "types.json"
        types.write_text(json.dumps(TYPES))
        (root / "home").mkdir()
        with two_node_cluster(root / "r") as address, \
                brs.up_platform(root / "home", ["--executor", "ray", "--ray-address", address,
                                                "--instance-types", str(types)], env=brs.ray_env(root / "r")) as p:
            for count in (1, 2):
                name = f"bench-replicas-{count}"
                ep = endpoint(p, files, name, count)
                results[str(count)] = invoke_numbers(ep, name, files.csv_row, 0, clients, seconds)
                bie.delete_and_wait(ep, name)
    return results


def _shards(rows: int, features: int, seed: int = 7) -> tuple[list[bytes], bytes]:
    """Two training shards and a validation file (label first, no header), generated offline."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows + rows // 5, n_features=features, n_informative=features // 2,
                               random_state=seed)

    def csv(xs: Any, ys: Any) -> bytes:
        buf = io.StringIO()
        for x, label in zip(xs, ys, strict=True):
            buf.write(f"{int(label)}," + ",".join(f"{v:.5g}" for v in x) + "\n")
        return buf.getvalue().encode()

    half = rows // 2
    return [csv(X[:half], y[:half]), csv(X[half:rows], y[half:rows])], csv(X[rows:], y[rows:])


def run_xgboost(rows: int, rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="osbench", dir="/tmp") as tmp:
        root = Path(tmp)
        types = root / "types.json"
        types.write_text(json.dumps(TYPES))
        (root / "home").mkdir()
        shards, validation = _shards(rows, 20)
        with two_node_cluster(root / "r") as address, \
                brs.up_platform(root / "home", ["--executor", "ray", "--ray-address", address,
                                                "--instance-types", str(types)], env=brs.ray_env(root / "r")) as p:
            for i, shard in enumerate(shards):
                p.put(bts.BUCKET, f"xgbdist/train/part-{i}.csv", shard)
            p.put(bts.BUCKET, "xgbdist/validation/validation.csv", validation)
            for hosts in (1, 2):
                name = f"bench-xgb-{hosts}host"
                t0 = time.perf_counter()
                p.sm.create_training_job(**_xgb_request(name, hosts, rounds))
                d = bts.wait_finished(p.sm, name, timeout=900, poll=0.5)
                wall = time.perf_counter() - t0
                if d["TrainingJobStatus"] != "Completed":
                    raise RuntimeError(f"{name}: {d['TrainingJobStatus']}: {d.get('FailureReason')}")
                metrics = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
                results[str(hosts)] = {"wall_s": wall, "training_s": d.get("TrainingTimeInSeconds"),
                                       "billable_s": d.get("BillableTimeInSeconds"), "metrics": metrics,
                                       "log_seconds": _train_seconds(p, name)}
    return {"rows": rows, "rounds": rounds, "results": results}


def _xgb_request(name: str, hosts: int, rounds: int) -> dict[str, Any]:
    def channel(cname: str, prefix: str, distribution: str) -> dict[str, Any]:
        return {"ChannelName": cname, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bts.BUCKET}/{prefix}", "S3DataDistributionType": distribution}}}

    return {"TrainingJobName": name, "RoleArn": bts.ROLE,
            "AlgorithmSpecification": {"TrainingImage": bts.XGB_IMAGE, "TrainingInputMode": "File"},
            "HyperParameters": {"objective": "binary:logistic", "num_round": str(rounds), "max_depth": "6",
                                "eval_metric": "logloss"},
            "InputDataConfig": [channel("train", "xgbdist/train/", "ShardedByS3Key"),
                                channel("validation", "xgbdist/validation/", "FullyReplicated")],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bts.BUCKET}/xgbdist/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": hosts, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 900}}


def _train_seconds(p: bts.Platform, name: str) -> float | None:
    """First to last log event of algo-1 (the training itself, without placement and upload)."""
    streams = p.logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                          logStreamNamePrefix=name)["logStreams"]
    stream = next((s["logStreamName"] for s in streams if "algo-1" in s["logStreamName"]), None)
    if stream is None:
        return None
    events = p.logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                                   startFromHead=True)["events"]
    rounds = [e["timestamp"] for e in events if re.search(r"\[\d+\]\s+(train|validation)", e["message"])]
    if len(rounds) < 2:
        return None
    return (rounds[-1] - rounds[0]) / 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["token", "replicas", "xgboost"])
    ap.add_argument("--platform-code", type=Path, help="token: run the platform from this checkout")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", default="4")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args(argv)
    clients = [int(x) for x in args.clients.split(",") if x]
    load_before = os.getloadavg()
    if args.what == "token":
        out = run_token(args.platform_code, args.requests, clients, args.seconds)
    elif args.what == "replicas":
        out = run_replicas(clients, args.seconds)
    else:
        out = run_xgboost(args.rows, args.rounds)
    out = {"what": args.what, "loadavg_before": load_before, "loadavg_after": os.getloadavg(), **out}
    print(json.dumps(out, indent=2, default=str))
    if args.what == "token":
        lat = out["latency"]
        print(f"p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms; "
              + ", ".join(f"N={t['clients']}: {t['rps']:.0f} req/s" for t in out["throughput"]))
    elif args.what == "replicas":
        for count, r in out.items():
            if count.isdigit():
                print(f"{count} instance(s): " + ", ".join(f"N={t['clients']}: {t['rps']:.0f} req/s"
                                                          for t in r["throughput"]))
    else:
        for hosts, r in out["results"].items():
            print(f"{hosts} host(s): wall {r['wall_s']:.1f} s, TrainingTimeInSeconds {r['training_s']}, "
                  f"rounds {r['log_seconds']} s, {r['metrics']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
