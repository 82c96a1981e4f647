"""Job start on Ray vs local: CreateTrainingJob -> the job's first log line (issue 13, target ≤ +0.5 s).

The same measurement as ``bench_training_start.py`` (its ``run_kind``: t0 just before create_training_job,
t1 = the first CloudWatch log event's agent timestamp, plus the breakdown from the job directory), for the
built-in XGBoost job on a 200-row CSV, with ``opensage up`` twice: ``--executor local`` and ``--executor ray``
against a one-node Ray cluster this script starts (``ray start --head``, 2 CPUs, no dashboard, stopped by the
PIDs of its own processes). The Ray run adds placement-group creation, the actor's worker start and one
``actor.run`` call before the same agent subprocess starts.

    .venv/bin/python benchmarks/bench_ray_start.py --runs 3   # ~2 min on a 2-core machine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_start as bts  # noqa: E402 - the sibling benchmark's platform and measurement code

RAY = str(Path(sys.executable).parent / "ray")


def ray_env(temp_dir: Path) -> dict[str, str]:
    """Ray's token authentication (its ports listen on every interface)."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(temp_dir / "auth_token")}


@contextlib.contextmanager
def ray_cluster(temp_dir: Path) -> Iterator[str]:
    temp_dir.mkdir(parents=True, exist_ok=True)
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = bts.free_port()
    ports = [f"--dashboard-agent-listen-port={bts.free_port()}", f"--metrics-export-port={bts.free_port()}",
             f"--runtime-env-agent-port={bts.free_port()}", f"--dashboard-agent-grpc-port={bts.free_port()}",
             f"--dashboard-port={bts.free_port()}"]
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                        f"--memory={4 * 2**30}", "--object-store-memory=80000000", "--include-dashboard=false",
                        "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports],
                       check=True, capture_output=True, timeout=120, env=ray_env(temp_dir))
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(temp_dir)


def _cluster_pids(temp_dir: Path) -> set[int]:
    roots, parents = set(), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                    roots.add(int(entry.name))
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def _stop_cluster(temp_dir: Path) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for pid in _cluster_pids(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + wait
        while time.time() < deadline and _cluster_pids(temp_dir):
            time.sleep(0.2)


@contextlib.contextmanager
def up_platform(home: Path, extra: list[str], env: dict[str, str] | None = None,
                timeout: float = 120.0) -> Iterator[bts.Platform]:
    """``opensage up`` with ``extra`` flags (bench_training_start's ``up_platform`` takes none)."""
    bts.stop_platforms_on_sigterm()
    port = bts.free_port()
    log = home / "up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "opensage.cli.main", "up", "--home", str(home), "--port",
                                 str(port), "--log-level", "warning", *extra], stdout=out, env=env,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=bts.REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        bts._wait_health(proc, url, log, timeout)
        creds = json.loads((home / "credentials.json").read_text())
        access, secret = creds["access_key"], creds["secret_key"]
        s3 = bts._client("s3", bts._s3_endpoint_from_config(home), access, secret)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bts.BUCKET)
        kind = "ray" if "ray" in extra else "local"
        yield bts.Platform(kind, home, bts._client("sagemaker", url, access, secret),
                           bts._client("logs", url, access, secret),
                           lambda b, k, data: s3.put_object(Bucket=b, Key=k, Body=data),
                           lambda b, k, path: s3.upload_file(str(path), b, k), pid=proc.pid)
    finally:
        bts._stop_process_group(proc)


def run(runs: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="osbench", dir="/tmp") as tmp:
        root = Path(tmp)
        (root / "local").mkdir()
        with up_platform(root / "local", ["--executor", "local"]) as p:
            bts.prepare_inputs(p)
            results.append(bts.run_kind(p, "xgboost", runs))
        types = root / "types.json"
        types.write_text(json.dumps({"ml.m5.large": {"cpus": 1, "memory_gib": 1}}))
        (root / "ray").mkdir()
        with ray_cluster(root / "r") as address, \
                up_platform(root / "ray", ["--executor", "ray", "--ray-address", address,
                                           "--instance-types", str(types)], env=ray_env(root / "r")) as p:
            bts.prepare_inputs(p)
            results.append(bts.run_kind(p, "xgboost", runs))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args(argv)
    results = run(args.runs)
    print(bts.markdown(results))
    local, ray = (r["first_line"]["median"] for r in results)
    print(f"\nRay - local, first line (median): {ray - local:+.3f} s (target ≤ +0.5 s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
