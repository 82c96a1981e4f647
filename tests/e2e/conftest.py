"""End-to-end: a real `opensage up` (SeaweedFS, SQLite, uvicorn) in a temp home, driven by the SDKs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.conftest import free_port

ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"


@dataclass
class Platform:
    home: Path
    url: str
    proc: subprocess.Popen
    env: dict[str, str]
    log: Path

    def client(self, service: str):
        return boto3.Session().client(service)


def env_for(home: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "opensage.cli.main", "env", "--home", str(home)],
                         check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


def start_platform(home: Path, port: int | None = None, timeout: float = 120.0) -> Platform:
    port = port or free_port()
    log = home / "up.log"
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "opensage.cli.main", "up", "--home", str(home), "--port",
                             str(port)], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    import httpx

    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"opensage up exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/_opensage/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError(f"opensage up did not answer in {timeout}s: {log.read_text()[-3000:]}")
    return Platform(home, url, proc, env_for(home), log)


def stop_platform(p: Platform, sig: int = signal.SIGTERM) -> None:
    if p.proc.poll() is None:
        p.proc.send_signal(sig)
        try:
            p.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


# One platform per test process, however many conftests import the fixture (tests/examples does): each import
# registers a separate session fixture, and a second platform would repoint os.environ mid-session -- a
# `sagemaker.Session()` made later then talks to another platform than the session made earlier.
_SHARED: dict[str, object] = {"users": 0}


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Iterator[Platform]:
    if _SHARED["users"]:
        _SHARED["users"] += 1
        try:
            yield _SHARED["platform"]
        finally:
            _SHARED["users"] -= 1
        return
    p = start_platform(tmp_path_factory.mktemp("opensage-home"))
    _SHARED.update(platform=p, users=1)
    saved = {k: os.environ.get(k) for k in p.env}
    os.environ.update(p.env)
    os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
    # boto3 caches a default session (and the SDK reuses boto3.DEFAULT_SESSION): one made before the env
    # pointed at this platform would keep reading the old config files.
    boto3.DEFAULT_SESSION = None
    try:
        yield p
    finally:
        _SHARED["users"] -= 1  # session teardown runs in reverse: sharers have finished before the creator
        stop_platform(p)
        _SHARED.update(users=0, platform=None)
        boto3.DEFAULT_SESSION = None
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def sm_session(platform):
    import sagemaker

    return sagemaker.Session()
