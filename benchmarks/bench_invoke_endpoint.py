"""InvokeEndpoint latency and throughput vs a bare Starlette app (the floor) and ``mlflow models serve``.

One run, one model, one payload, one client, side by side:

* the model: built-in XGBoost ``binary:logistic``, ``max_depth`` 3, 20 rounds on scikit-learn's breast cancer
  set (569 x 30), saved as ``xgboost-model`` (what our training jobs write);
* the payload: its first row as one CSV line (``text/csv`` in, ``text/csv`` out);
* the client: ``http.client`` keep-alive connections, one per client thread (``TCP_NODELAY``).

Targets:

* ``platform (boto3)``: ``opensage up`` (a subprocess), CreateModel / CreateEndpointConfig / CreateEndpoint,
  then boto3 ``sagemaker-runtime`` ``invoke_endpoint`` (SigV4, botocore's parser; ``Body.read()``);
* ``platform (raw signed)``: the same endpoint, each request signed with botocore's ``SigV4Auth`` and sent
  over the keep-alive client (no boto3 client machinery);
* ``floor``: a bare Starlette app under uvicorn (one worker, a subprocess of this script) whose POST
  /invocations calls ``opensage.algorithms.xgboost.serve.predict(model, body, "text/csv", "text/csv")``;
* ``mlflow``: ``mlflow models serve --env-manager local -w 1`` (from ``.venv-bench-mlflow``, created with
  ``pip install mlflow`` on first use) of the same booster saved with ``mlflow.xgboost.save_model``, sent the
  row as ``application/json`` ``dataframe_split`` (MLflow's ``text/csv`` needs a header line; that variant
  is measured too);
* ``model server direct``: the endpoint's model server process, bypassing the control plane (breakdown).

Latency: sequential, 200 warm-up requests per target, then 2000 measured, interleaved across targets in 4
rounds of 500 (shared machine). Throughput: N client threads for ``--seconds`` per target (N = 4 and 16).
CPU seconds of the client and of each server process are read from /proc around every phase. Also
CreateEndpoint -> InService (DescribeEndpoint polled every 50 ms; median of 5, each endpoint deleted after).

    .venv/bin/python benchmarks/bench_invoke_endpoint.py [--json raw.json]

``--platform-code DIR`` also starts a second platform from another checkout (e.g. ``git worktree add
/tmp/before HEAD~1``) with the same endpoint, measured in the same run and interleaved with the rest
(targets ``platform_raw_before`` / ``platform_boto3_before``): a before/after on the same load.
``--no-mlflow`` leaves MLflow out (shorter runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_training_start as bts  # noqa: E402

REPO = bts.REPO
MLFLOW_VENV = REPO / ".venv-bench-mlflow"
ROLE = bts.ROLE
XGB_IMAGE = bts.XGB_IMAGE
ENDPOINT = "bench-invoke"
CSV = "text/csv"
Sender = Callable[[], bytes]


# ----------------------------------------------------------------------------------------- model


@dataclass
class ModelFiles:
    model_dir: Path  # holds xgboost-model
    tarball: bytes  # model.tar.gz for CreateModel
    row: list[float]
    csv_row: bytes  # the payload: one CSV line, no label
    columns: list[str]


def build_model(workdir: Path) -> ModelFiles:
    import numpy as np
    import xgboost as xgb
    from sklearn.datasets import load_breast_cancer

    from opensage.algorithms.xgboost import save_booster

    X, y = load_breast_cancer(return_X_y=True)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(X, label=y), 20)
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    save_booster(booster, model_dir / "xgboost-model")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(model_dir / "xgboost-model", arcname="xgboost-model")
    row = [float(v) for v in np.asarray(X[0])]
    csv_row = ",".join(f"{v:.6g}" for v in row).encode()
    return ModelFiles(model_dir, buf.getvalue(), row, csv_row, [f"f{i}" for i in range(len(row))])


# ----------------------------------------------------------------------------------------- processes


def proc_cpu(pid: int) -> float:
    """utime + stime of one live process, seconds (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def free_port() -> int:
    return bts.free_port()


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
                                env=env)
    try:
        yield proc
    finally:
        stop(proc)


# --- the floor


def floor_app(model_dir: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from opensage.algorithms.xgboost.serve import load, predict

    model = load(model_dir)

    async def invocations(request: Request) -> Response:
        body, content_type = predict(model, await request.body(), CSV, CSV)
        return Response(body, media_type=content_type)

    async def ping(request: Request) -> Response:
        return Response(b"")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])


def serve_floor(model_dir: str, port: int) -> None:
    import uvicorn

    uvicorn.run(floor_app(model_dir), host="127.0.0.1", port=port, workers=1, log_level="warning",
                access_log=False)


def start_floor(model_dir: Path, workdir: Path, stack: contextlib.ExitStack) -> Server:
    port = free_port()
    log = workdir / "floor.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = stack.enter_context(spawn([sys.executable, str(Path(__file__).resolve()), "--serve-floor",
                                      str(model_dir), "--port", str(port)], log, env))
    return Server(f"http://127.0.0.1:{port}", proc, log)


# --- MLflow

MLFLOW_SAVE = """
import sys, xgboost as xgb, mlflow.xgboost
booster = xgb.Booster(model_file=sys.argv[1])
mlflow.xgboost.save_model(booster, sys.argv[2])
"""


def mlflow_python() -> Path:
    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        import xgboost

        print(f"creating {MLFLOW_VENV} (pip install mlflow xgboost=={xgboost.__version__})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "mlflow", f"xgboost=={xgboost.__version__}"],
                       check=True)
    return python


def mlflow_version() -> str:
    out = subprocess.run([str(mlflow_python()), "-c", "import mlflow; print(mlflow.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start_mlflow(model_dir: Path, workdir: Path, stack: contextlib.ExitStack) -> Server:
    python = mlflow_python()
    saved = workdir / "mlflow-model"
    subprocess.run([str(python), "-c", MLFLOW_SAVE, str(model_dir / "xgboost-model"), str(saved)], check=True,
                   capture_output=True)
    port = free_port()
    log = workdir / "mlflow.log"
    env = dict(os.environ, PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MLFLOW_TRACKING_URI=f"file://{workdir / 'mlruns'}")
    proc = stack.enter_context(spawn([str(python.parent / "mlflow"), "models", "serve", "-m", str(saved),
                                      "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                     log, env))
    return Server(f"http://127.0.0.1:{port}", proc, log)


# --- the platform


@dataclass
class Endpoint:
    platform: bts.Platform
    url: str  # control plane
    access: str
    secret: str
    config: str
    model_server: str = ""  # the endpoint's model server, http://127.0.0.1:PORT
    model_server_pid: int = 0
    model_server_token: str = ""  # every replica refuses requests without X-OpenSage-Replica-Token


def deploy(p: bts.Platform, files: ModelFiles) -> Endpoint:
    creds = json.loads((p.home / "credentials.json").read_text())
    p.put(bts.BUCKET, "invoke/model.tar.gz", files.tarball)
    p.sm.create_model(ModelName="bench-invoke-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": f"s3://{bts.BUCKET}/invoke/model.tar.gz"})
    p.sm.create_endpoint_config(EndpointConfigName="bench-invoke-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "bench-invoke-model", "InitialVariantWeight": 1.0,
        "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    return Endpoint(p, p.sm.meta.endpoint_url, creds["access_key"], creds["secret_key"], "bench-invoke-config")


def create_and_wait(ep: Endpoint, name: str, poll: float = 0.05, timeout: float = 120.0) -> float:
    """CreateEndpoint -> InService seen by DescribeEndpoint (polled every ``poll`` s); seconds."""
    sm = ep.platform.sm
    t0 = time.perf_counter()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=ep.config)
    while time.perf_counter() - t0 < timeout:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] != "Creating":
            elapsed = time.perf_counter() - t0
            if d["EndpointStatus"] != "InService":
                raise RuntimeError(f"endpoint {name}: {d['EndpointStatus']}: {d.get('FailureReason')}")
            return elapsed
        time.sleep(poll)
    raise TimeoutError(f"endpoint {name} not InService after {timeout:.0f}s")


def delete_and_wait(ep: Endpoint, name: str, timeout: float = 60.0) -> None:
    sm = ep.platform.sm
    sm.delete_endpoint(EndpointName=name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            sm.describe_endpoint(EndpointName=name)
        except sm.exceptions.ClientError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"endpoint {name} still there {timeout:.0f}s after DeleteEndpoint")


def find_model_server(ep: Endpoint, name: str) -> None:
    """The endpoint's model server URL and pid, from its log ("[model-server PID] listening on HOST:PORT")."""
    logs = sorted((ep.platform.home / "endpoints" / name).rglob("*.log"))
    for log in logs:
        m = re.search(r"\[model-server (\d+)\] listening on ([\d.]+):(\d+)", log.read_text(errors="replace"))
        if m:
            ep.model_server_pid, ep.model_server = int(m.group(1)), f"http://{m.group(2)}:{m.group(3)}"
            ep.model_server_token = replica_token(ep, name)
            return
    raise RuntimeError(f"no model server log under {ep.platform.home / 'endpoints' / name}")


def replica_token(ep: Endpoint, name: str) -> str:
    """The replica's token, from the endpoint's row (the router sends it; a direct client must too)."""
    from opensage.settings import Settings
    from opensage.store.db import make_engine
    from opensage.store.resources import ResourceRepository

    settings = Settings.build(ep.platform.home)
    row = ResourceRepository(make_engine(settings.database_url)).get("endpoint", name)
    assert row is not None, name
    return row.state["_fleet"]["variants"][0]["replicas"][0]["token"]


# ----------------------------------------------------------------------------------------- clients


class KeepAlive:
    """One keep-alive HTTP/1.1 connection (``http.client``, TCP_NODELAY); reconnects if the server closed it."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        return conn

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        conn = self.conn or self._connect()
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            conn = self._connect()
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path} -> {response.status}: {data[:300]!r}")
        return data


def raw_sender(url: str, path: str, body: bytes, content_type: str, accept: str | None = CSV,
               extra: dict[str, str] | None = None) -> Sender:
    client = KeepAlive(url)
    headers = {"Content-Type": content_type, **(extra or {})}
    if accept:
        headers["Accept"] = accept
    return lambda: client.post(path, body, headers)


def token_header(ep: Endpoint) -> dict[str, str]:
    return {"X-OpenSage-Replica-Token": ep.model_server_token}


def signed_sender(ep: Endpoint, name: str, body: bytes) -> Sender:
    """InvokeEndpoint as boto3 sends it on the wire, signed per request with botocore's SigV4Auth."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signer = SigV4Auth(Credentials(ep.access, ep.secret), "sagemaker", "us-east-1")
    path = f"/endpoints/{name}/invocations"
    url = ep.url + path
    client = KeepAlive(ep.url)

    def send() -> bytes:
        request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": CSV, "Accept": CSV})
        signer.add_auth(request)
        return client.post(path, body, dict(request.headers.items()))

    return send


def boto3_sender(ep: Endpoint, name: str, body: bytes) -> Sender:
    import boto3
    from botocore.config import Config

    client = boto3.Session().client(
        "sagemaker-runtime", endpoint_url=ep.url, region_name="us-east-1", aws_access_key_id=ep.access,
        aws_secret_access_key=ep.secret, config=Config(retries={"max_attempts": 1}, tcp_keepalive=True))
    return lambda: client.invoke_endpoint(EndpointName=name, ContentType=CSV, Accept=CSV, Body=body)["Body"].read()


@dataclass
class Target:
    key: str
    label: str  # what is measured, for the table
    client: str  # how requests are sent
    make_sender: Callable[[], Sender]
    pids: dict[str, int] = field(default_factory=dict)  # server processes whose CPU is counted, by role


# ----------------------------------------------------------------------------------------- measuring


def role_pids(pids: dict[str, int]) -> dict[str, set[int]]:
    """Each role's process tree, less the trees of the other roles inside it (the control plane's model
    servers are its children: counted as "model server", not twice)."""
    trees = {role: set(descendants(pid)) for role, pid in pids.items() if pid}
    out = {}
    for role, tree in trees.items():
        inner = [t for r, t in trees.items() if r != role and pids[r] in tree]
        out[role] = tree.difference(*inner)
    return out


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    out = {"client": time.process_time()}
    for role, members in role_pids(pids).items():
        out[role] = sum(proc_cpu(p) for p in members)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request, by role."""
    return {k: (after[k] - before[k]) * 1000.0 / max(1, requests) for k in before}


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"n": len(ordered), "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": percentile(ordered, 0.99) * 1000, "mean_ms": statistics.fmean(ordered) * 1000,
            "min_ms": ordered[0] * 1000}


def timed(send: Sender, n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        send()
        out.append(clock() - t)
    return out


def measure_latency(targets: list[Target], warmup: int, requests: int, rounds: int = 4) -> dict[str, Any]:
    """Sequential requests; ``rounds`` interleaved chunks per target so drift on a shared box hits all."""
    senders = {t.key: t.make_sender() for t in targets}
    for t in targets:
        timed(senders[t.key], warmup)
    samples: dict[str, list[float]] = {t.key: [] for t in targets}
    cpu: dict[str, dict[str, float]] = {t.key: {} for t in targets}
    chunk = max(1, requests // rounds)
    for _ in range(rounds):
        for t in targets:
            before = cpu_snapshot(t.pids)
            samples[t.key] += timed(senders[t.key], chunk)
            for role, ms in cpu_delta(before, cpu_snapshot(t.pids), chunk).items():
                cpu[t.key][role] = cpu[t.key].get(role, 0.0) + ms / rounds
    return {t.key: {**latency_stats(samples[t.key]), "cpu_ms": cpu[t.key]} for t in targets}


def measure_throughput(target: Target, clients: int, seconds: float) -> dict[str, Any]:
    senders = [target.make_sender() for _ in range(clients)]
    for s in senders:
        timed(s, 5)
    counts = [0] * clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def work(i: int) -> None:
        send, lat, clock = senders[i], latencies[i], time.perf_counter
        start.wait()
        try:
            while (t := clock()) < stop_at[0]:
                send()
                lat.append(clock() - t)
        except Exception as exc:  # noqa: BLE001 - any failure is reported
            errors.append(repr(exc))
        counts[i] = len(lat)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    for th in threads:
        th.start()
    before = cpu_snapshot(target.pids)
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for th in threads:
        th.join()
    wall = time.perf_counter() - began
    total = sum(counts)
    if errors:
        raise RuntimeError(f"{target.label}: {len(errors)} failed client(s): {errors[:3]}")
    flat = sorted(x for lat in latencies for x in lat)
    return {"clients": clients, "requests": total, "seconds": wall, "rps": total / wall,
            "p50_ms": statistics.median(flat) * 1000, "p99_ms": percentile(flat, 0.99) * 1000,
            "cpu_ms": cpu_delta(before, cpu_snapshot(target.pids), total)}


# ----------------------------------------------------------------------------------------- breakdown


def inprocess_breakdown(files: ModelFiles, ep: Endpoint, n: int = 2000) -> dict[str, float]:
    """Microseconds per call of the pieces of one InvokeEndpoint, timed in this process."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from opensage.algorithms.xgboost.serve import load, predict
    from opensage.api import auth, parser, serializer

    def per_call(fn: Callable[[], Any]) -> float:
        for _ in range(100):
            fn()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n * 1e6

    model = load(files.model_dir)
    body = files.csv_row
    path = f"/endpoints/{ENDPOINT}/invocations"
    signer = SigV4Auth(Credentials(ep.access, ep.secret), "sagemaker", "us-east-1")

    def sign() -> dict[str, str]:
        req = AWSRequest(method="POST", url=ep.url + path, data=body, headers={"Content-Type": CSV, "Accept": CSV})
        signer.add_auth(req)
        return dict(req.headers.items())

    headers = sign()
    headers["host"] = urlsplit(ep.url).netloc
    creds = {ep.access: ep.secret}
    parsed = parser.parse_rest_json("sagemaker-runtime", "POST", path, "", headers, body)
    result = {"Body": b"0.99\n", "InvokedProductionVariant": "AllTraffic", "ContentType": CSV}
    out = {
        "predict() (parse CSV, DMatrix, predict, encode)": per_call(lambda: predict(model, body, CSV, CSV)),
        "client: botocore SigV4Auth.add_auth (raw signed path)": per_call(sign),
        "control plane: auth.verify (SigV4 check)": per_call(
            lambda: auth.verify("POST", path, "", headers, body, creds)),
        "control plane: parser.parse_rest_json": per_call(
            lambda: parser.parse_rest_json("sagemaker-runtime", "POST", path, "", headers, body)),
        "control plane: serializer.rest_json_response": per_call(
            lambda: serializer.rest_json_response(parsed.operation, result)),
    }
    out.update(httpx_hop(ep.model_server, body, n, token_header(ep)))
    return out


def httpx_hop(url: str, body: bytes, n: int, extra: dict[str, str]) -> dict[str, float]:
    """Sequential POSTs to the model server from this process, three ways: httpx.AsyncClient (what the
    control plane's proxy uses), a minimal asyncio keep-alive client, and http.client. Wall and client CPU
    microseconds per request."""
    import httpx

    headers = {"Content-Type": CSV, "Accept": CSV, **extra}
    parts = urlsplit(url)

    async def via_httpx() -> tuple[float, float]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def one() -> None:
                (await client.post(url + "/invocations", content=body, headers=headers)).raise_for_status()
            return await _loop_timed(one, n)

    async def via_streams() -> tuple[float, float]:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        request = (f"POST /invocations HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {CSV}\r\n"
                   f"Accept: {CSV}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                   + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

        async def one() -> None:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)

        try:
            return await _loop_timed(one, n)
        finally:
            writer.close()

    send = raw_sender(url, "/invocations", body, CSV, extra=extra)
    timed(send, 100)
    cpu = time.process_time()
    wall = statistics.fmean(timed(send, n)) * 1e6
    raw_cpu = (time.process_time() - cpu) / n * 1e6
    hx_wall, hx_cpu = asyncio.run(via_httpx())
    st_wall, st_cpu = asyncio.run(via_streams())
    return {"model server round trip via httpx.AsyncClient (the proxy's client)": hx_wall,
            "  of which client CPU (httpx)": hx_cpu,
            "model server round trip via asyncio streams (minimal keep-alive client)": st_wall,
            "  of which client CPU (asyncio streams)": st_cpu,
            "model server round trip via http.client": wall,
            "  of which client CPU (http.client)": raw_cpu}


async def _loop_timed(one: Callable[[], Any], n: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per awaited call, after 100 unmeasured."""
    for _ in range(100):
        await one()
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await one()
    return (time.perf_counter() - t) / n * 1e6, (time.process_time() - cpu) / n * 1e6


# ----------------------------------------------------------------------------------------- run


def seaweed_pid(up_pid: int) -> int:
    found = bts.child_pids(up_pid, "weed")
    return found[0] if found else 0


def mlflow_json(files: ModelFiles) -> bytes:
    return json.dumps({"dataframe_split": {"columns": files.columns, "data": [files.row]}}).encode()


def build_targets(files: ModelFiles, ep: Endpoint, floor: Server, mlflow: Server | None, up_pid: int,
                  before: Endpoint | None = None) -> list[Target]:
    body = files.csv_row
    csv_with_header = ",".join(files.columns).encode() + b"\n" + body
    plat = {"control plane": up_pid, "model server": ep.model_server_pid, "SeaweedFS": seaweed_pid(up_pid)}
    targets = [
        Target("floor", "floor: bare Starlette/uvicorn + predict()", "http.client", lambda: raw_sender(
            floor.url, "/invocations", body, CSV), {"server": floor.proc.pid}),
        Target("platform_raw", "platform InvokeEndpoint", "SigV4Auth + http.client",
               lambda: signed_sender(ep, ENDPOINT, body), plat),
        Target("platform_boto3", "platform InvokeEndpoint", "boto3 invoke_endpoint",
               lambda: boto3_sender(ep, ENDPOINT, body), plat),
        Target("model_server", "platform model server direct (no control plane)", "http.client",
               lambda: raw_sender(ep.model_server, "/invocations", body, CSV, extra=token_header(ep)),
               {"model server": ep.model_server_pid}),
    ]
    if before is not None:
        bpid = before.platform.pid or 0
        bplat = {"control plane": bpid, "model server": before.model_server_pid, "SeaweedFS": seaweed_pid(bpid)}
        targets += [
            Target("platform_raw_before", "platform InvokeEndpoint, before (--platform-code)",
                   "SigV4Auth + http.client", lambda: signed_sender(before, ENDPOINT, body), bplat),
            Target("platform_boto3_before", "platform InvokeEndpoint, before (--platform-code)",
                   "boto3 invoke_endpoint", lambda: boto3_sender(before, ENDPOINT, body), bplat),
        ]
    if mlflow is not None:
        targets += [
            Target("mlflow", "mlflow models serve (JSON dataframe_split)", "http.client", lambda: raw_sender(
                mlflow.url, "/invocations", mlflow_json(files), "application/json", None),
                {"server": mlflow.proc.pid}),
            Target("mlflow_csv", "mlflow models serve (CSV with header line)", "http.client", lambda: raw_sender(
                mlflow.url, "/invocations", csv_with_header, CSV, None), {"server": mlflow.proc.pid}),
        ]
    return targets


@contextlib.contextmanager
def platform_from(home: Path, code: Path | None) -> Iterator[bts.Platform]:
    """``opensage up`` from this checkout, or from ``code`` (its model servers too: they import the package
    the control plane was started from)."""
    if code is None:
        with bts.up_platform(home) as p:
            yield p
        return
    saved = bts.REPO
    bts.REPO = code.resolve()  # up_platform starts ``python -m opensage.cli.main`` with cwd=REPO
    try:
        cm = bts.up_platform(home)
        p = cm.__enter__()
    finally:
        bts.REPO = saved
    try:
        yield p
    finally:
        cm.__exit__(None, None, None)


def check_answers(targets: list[Target]) -> dict[str, str]:
    """Every target must return the same score for the row."""
    answers = {t.key: t.make_sender()().decode().strip() for t in targets}
    scores = {k: float(re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?", v)[0]) for k, v in answers.items()}
    ref = scores["floor"]
    bad = {k: v for k, v in scores.items() if abs(v - ref) > 1e-5}
    if bad:
        raise RuntimeError(f"targets disagree with the floor's score {ref}: {answers}")
    return answers


def run(requests: int = 2000, warmup: int = 200, seconds: float = 10.0, clients: tuple[int, ...] = (4, 16),
        create_runs: int = 5, platform_code: Path | None = None, with_mlflow: bool = True) -> dict[str, Any]:
    raw: dict[str, Any] = {"loadavg_before": os.getloadavg(), "requests": requests, "warmup": warmup,
                           "seconds": seconds, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="opensage-bench-invoke-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        files = build_model(work)
        raw["payload"] = files.csv_row.decode()
        floor = start_floor(files.model_dir, work, stack)
        mlflow = start_mlflow(files.model_dir, work, stack) if with_mlflow else None
        home = work / "home"
        home.mkdir()
        p = stack.enter_context(bts.up_platform(home))
        ep = deploy(p, files)
        before = None
        if platform_code is not None:
            raw["platform_code_before"] = str(platform_code)
            (work / "home-before").mkdir()
            before = deploy(stack.enter_context(platform_from(work / "home-before", platform_code)), files)
        wait_http(floor.url + "/ping", floor.proc, floor.log, 60)
        if mlflow is not None:
            wait_http(mlflow.url + "/ping", mlflow.proc, mlflow.log, 120)
            raw["mlflow_version"] = mlflow_version()
        # CreateEndpoint -> InService, first (nothing else running), then the endpoint the load goes to.
        create = []
        for i in range(create_runs):
            create.append(create_and_wait(ep, f"bench-create-{i}"))
            delete_and_wait(ep, f"bench-create-{i}")
        raw["create_to_inservice_s"] = create
        raw["main_create_s"] = create_and_wait(ep, ENDPOINT)
        find_model_server(ep, ENDPOINT)
        if before is not None:
            create_and_wait(before, ENDPOINT)
            find_model_server(before, ENDPOINT)
        targets = build_targets(files, ep, floor, mlflow, p.pid or 0, before)
        raw["answers"] = check_answers(targets)
        raw["labels"] = {t.key: {"label": t.label, "client": t.client} for t in targets}
        raw["latency"] = measure_latency(targets, warmup, requests)
        raw["throughput"] = {t.key: [measure_throughput(t, n, seconds) for n in clients]
                             for t in targets if t.key != "mlflow_csv"}
        raw["breakdown_us"] = inprocess_breakdown(files, ep)
        raw["idle_cpu"] = idle_cpu({"control plane": p.pid or 0, "model server": ep.model_server_pid,
                                    "SeaweedFS": seaweed_pid(p.pid or 0), "floor": floor.proc.pid,
                                    **({"mlflow": mlflow.proc.pid} if mlflow else {})})
    raw["loadavg_after"] = os.getloadavg()
    raw["wall_s"] = time.time() - began
    return raw


def idle_cpu(pids: dict[str, int], seconds: float = 2.0) -> dict[str, float]:
    """CPU % of each server tree while no request is sent (background loops)."""
    members = role_pids(pids)
    before = {k: sum(proc_cpu(p) for p in v) for k, v in members.items()}
    time.sleep(seconds)
    return {k: (sum(proc_cpu(p) for p in v) - before[k]) / seconds * 100 for k, v in members.items()}


# ----------------------------------------------------------------------------------------- report


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


def markdown(raw: dict[str, Any]) -> str:
    lat, thr, labels = raw["latency"], raw["throughput"], raw["labels"]
    floor_p50 = lat["floor"]["p50_ms"]
    floor_rps = {r["clients"]: r["rps"] for r in thr["floor"]}
    ns = [r["clients"] for r in thr["floor"]]
    head = ("| target | client | p50 ms | p99 ms | mean ms | p50 ÷ floor | " +
            " | ".join(f"req/s N={n} | ÷ floor" for n in ns) + " | CPU ms/request, sequential |")
    rows = [head, "|" + "---|" * (7 + 2 * len(ns))]
    for key, stats in lat.items():
        cells = [labels[key]["label"], labels[key]["client"], f"{stats['p50_ms']:.3f}", f"{stats['p99_ms']:.3f}",
                 f"{stats['mean_ms']:.3f}", f"{stats['p50_ms'] / floor_p50:.2f}×"]
        for n in ns:
            r = next((r for r in thr.get(key, []) if r["clients"] == n), None)
            cells += [f"{r['rps']:.0f}", f"{r['rps'] / floor_rps[n]:.2f}×"] if r else ["–", "–"]
        cells.append(_cpu_text(stats["cpu_ms"]))
        rows.append("| " + " | ".join(cells) + " |")
    rows += ["", "Under load (per N: p50 / p99 ms of each request, CPU ms per request by process):", ""]
    for key, runs in thr.items():
        parts = [f"N={r['clients']}: {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms, {_cpu_text(r['cpu_ms'])}"
                 for r in runs]
        rows.append(f"- {labels[key]['label']} ({labels[key]['client']}): " + "; ".join(parts))
    create = raw["create_to_inservice_s"]
    rows += ["", f"CreateEndpoint → InService (DescribeEndpoint every 50 ms): median "
             f"{statistics.median(create):.2f} s over {len(create)} (each: "
             f"{', '.join(f'{c:.2f}' for c in create)}); the measured endpoint itself {raw['main_create_s']:.2f} s."
             if create else f"CreateEndpoint → InService: the measured endpoint {raw['main_create_s']:.2f} s.",
             "", "In-process pieces (µs per call, mean of 2000):", ""]
    rows += [f"{'  ' if k.startswith('  ') else ''}- {k.strip()}: {v:.0f} µs" for k, v in raw["breakdown_us"].items()]
    idle = ", ".join(f"{k} {v:.1f}%" for k, v in raw["idle_cpu"].items())
    load = " / ".join(" ".join(f"{x:.2f}" for x in raw[k]) for k in ("loadavg_before", "loadavg_after"))
    rows += ["", f"Idle CPU of each server (2 s, no requests): {idle}. MLflow {raw.get('mlflow_version')}. "
             f"OMP_NUM_THREADS={raw.get('omp_num_threads') or 'unset'}. Payload: one CSV row of 30 features ({len(raw['payload'])} bytes). Wall {raw['wall_s']:.0f} s; "
             f"load average (1/5/15 min) before / after: {load}."]
    return "\n".join(rows)


def verdict(raw: dict[str, Any]) -> str:
    lat, thr = raw["latency"], raw["throughput"]
    floor = lat["floor"]["p50_ms"]
    mlf = lat["mlflow"]["p50_ms"] if "mlflow" in lat else None
    rows = ["| target | measured | met? |", "|---|---|---|"]
    for key in ("platform_raw", "platform_boto3", "platform_raw_before", "platform_boto3_before"):
        if key not in lat:
            continue
        label = raw["labels"][key]["client"] + (", before" if key.endswith("_before") else "")
        p50 = lat[key]["p50_ms"]
        rows.append(f"| p50 ≤ 1.2× floor ({label}) | {p50:.3f} ms = {p50 / floor:.2f}× of {floor:.3f} ms | "
                    f"{'yes' if p50 <= 1.2 * floor else 'no'} |")
        if mlf is not None:
            rows.append(f"| p50 ahead of MLflow ({label}) | {p50:.3f} vs {mlf:.3f} ms | "
                        f"{'yes' if p50 < mlf else 'no'} |")
        for r, f in zip(thr[key], thr["floor"], strict=True):
            ratio = r["rps"] / f["rps"]
            rows.append(f"| throughput ≥ 1.0× floor, N={r['clients']} ({label}) | {r['rps']:.0f} vs "
                        f"{f['rps']:.0f} req/s = {ratio:.2f}× | {'yes' if ratio >= 1.0 else 'no'} |")
    if raw["create_to_inservice_s"]:
        med = statistics.median(raw["create_to_inservice_s"])
        rows.append(f"| CreateEndpoint → InService ≤ 3 s | median {med:.2f} s | {'yes' if med <= 3 else 'no'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="sequential measured requests per target")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0, help="throughput phase length per target and N")
    ap.add_argument("--clients", default="4,16", help="comma-separated concurrent clients for throughput")
    ap.add_argument("--create-runs", type=int, default=5)
    ap.add_argument("--omp-num-threads", type=int, help="set OMP_NUM_THREADS for every server (diagnosis)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--platform-code", type=Path, help="also measure a platform run from this checkout (before)")
    ap.add_argument("--no-mlflow", action="store_true", help="leave MLflow out")
    ap.add_argument("--serve-floor", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor, args.port)
        return 0
    if args.omp_num_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.omp_num_threads)  # inherited by every server process
    raw = run(args.requests, args.warmup, args.seconds, tuple(int(x) for x in args.clients.split(",") if x),
              args.create_runs, args.platform_code, not args.no_mlflow)
    print(markdown(raw))
    print()
    print(verdict(raw))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
