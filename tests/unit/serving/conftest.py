"""Model-server fixtures: real models trained here and the server started as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    stderr_path: Path

    def post(self, body: bytes | str, content_type: str | None = "text/csv", accept: str | None = None,
             **headers: str) -> httpx.Response:
        hdrs = dict(headers)
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        if accept is not None:
            hdrs["Accept"] = accept
        return httpx.post(f"{self.url}/invocations", content=body, headers=hdrs, timeout=30)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def launch(model_dir: Path, kind: str, tmp_path: Path, env: dict[str, str] | None = None,
           *extra: str) -> ServerProcess:
    """Start ``python -m opensage.serving.model_server`` (not waiting for it)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}
    full_env.update(env or {})
    stderr_path = tmp_path / f"server-{port}.log"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opensage.serving.model_server", "--model-dir", str(model_dir),
             "--port", str(port), "--kind", kind, *extra],
            cwd=REPO_ROOT, env=full_env, stdout=err, stderr=subprocess.STDOUT)
    return ServerProcess(proc, f"http://127.0.0.1:{port}", stderr_path)


def wait_ready(server: ServerProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"model server exited with {server.proc.returncode}:\n{server.stderr()}")
        try:
            if httpx.get(f"{server.url}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"model server not ready after {timeout} s:\n{server.stderr()}")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def start(model_dir: Path, kind: str, env: dict[str, str] | None = None, *extra: str,
              ready: bool = True) -> ServerProcess:
        server = launch(model_dir, kind, tmp_path, env, *extra)
        started.append(server)
        if ready:
            wait_ready(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="session")
def breast_cancer():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)


@pytest.fixture(scope="session")
def xgboost_model_dir(tmp_path_factory, breast_cancer) -> Path:
    """A built-in XGBoost model dir (``xgboost-model``) trained on breast cancer."""
    import xgboost as xgb

    from opensage.algorithms.xgboost import save_booster

    features, labels = breast_cancer
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(features, label=labels), 10)
    model_dir = tmp_path_factory.mktemp("xgb-model")
    save_booster(booster, model_dir / "xgboost-model")
    return model_dir


def write_code(model_dir: Path, source: str, name: str = "inference.py") -> Path:
    code = model_dir / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / name).write_text(source)
    return code


def csv_rows(rows) -> str:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows)
