"""ReplicaManager's liveness of the model servers it started itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from opensage.serving import replicas
from opensage.serving.replicas import Replica, ReplicaManager


def _sleeper(manager: ReplicaManager, tmp_path: Path, seconds: float, code: int = 0) -> Replica:
    """A child started the way ``start`` starts one (a Popen handle the manager keeps)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds}); raise SystemExit({code})"],
                            start_new_session=True)
    manager._children[proc.pid] = proc
    return Replica(proc.pid, 0, str(tmp_path / "server.log"))


def test_own_child_is_running_even_when_proc_cmdline_is_not_yet_readable(tmp_path, monkeypatch):
    # Right after exec /proc/<pid>/cmdline can read empty: the /proc check then says "not a model server".
    monkeypatch.setattr(replicas, "_alive", lambda pid: False)
    manager = ReplicaManager(isolate=False)
    replica = _sleeper(manager, tmp_path, 30)
    try:
        assert manager.running(replica)
    finally:
        manager.stop(replica, grace=2.0)
    assert not manager.running(replica)
    assert manager.exit_status(replica) == "killed by SIGTERM"


def test_exit_status_of_a_child_that_exited(tmp_path):
    manager = ReplicaManager(isolate=False)
    replica = _sleeper(manager, tmp_path, 0, code=3)
    manager._children[replica.pid].wait()
    assert not manager.running(replica)
    assert manager.exit_status(replica) == "exit code 3"
    assert manager.exit_status(Replica(1, 0, "")) == ""  # not ours: unknown


def _wait_healthy(manager: ReplicaManager, replica: Replica, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if manager.healthy(replica):
            return
        assert manager.running(replica), manager.log_tail(replica)
        time.sleep(0.1)
    raise AssertionError(f"not healthy after {timeout} s: {manager.log_tail(replica)}")


def test_model_server_with_token_refuses_requests_without_it(tmp_path, xgboost_model_dir, breast_cancer):
    import httpx

    manager = ReplicaManager(isolate=False)
    token = replicas.new_token()
    replica = manager.start(xgboost_model_dir, "builtin-xgboost", {}, tmp_path / "server.log", token=token)
    try:
        _wait_healthy(manager, replica)  # ping sends the replica's token
        body = ",".join(str(v) for v in breast_cancer[0][0])
        for headers in ({}, {replicas.TOKEN_HEADER: "wrong"}, {replicas.TOKEN_HEADER: token[:-1]}):
            for method, path in (("POST", "/invocations"), ("GET", "/ping"), ("GET", "/execution-parameters")):
                answer = httpx.request(method, replica.url + path, content=body if method == "POST" else None,
                                       headers={"Content-Type": "text/csv", **headers}, timeout=10)
                assert answer.status_code == 403, (method, path, headers, answer.text)
        good = httpx.post(replica.url + "/invocations", content=body,
                          headers={"Content-Type": "text/csv", replicas.TOKEN_HEADER: token}, timeout=10)
        assert good.status_code == 200 and 0.0 <= float(good.text.strip()) <= 1.0, good.text
        assert replica.to_state()["token"] == token and Replica.from_state(replica.to_state()).token == token
    finally:
        manager.stop(replica, grace=5.0)


def _unix_request(path: str, raw: bytes) -> bytes:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(raw)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("isolate", [False, True], ids=["same-user", "isolated"])
def test_local_replica_serves_on_its_unix_socket_and_refuses_requests_without_the_token_there(
        tmp_path, xgboost_model_dir, breast_cancer, isolate):
    import stat

    if isolate:
        from opensage.runner.sandbox import namespace_supported

        if not namespace_supported():
            pytest.skip("isolated replicas need root and mount namespaces")
    manager = ReplicaManager(isolate=isolate)
    token = replicas.new_token()
    replica = manager.start(xgboost_model_dir, "builtin-xgboost", {}, tmp_path / "server.log", token=token)
    try:
        _wait_healthy(manager, replica)
        assert replica.unix and stat.S_ISSOCK(os.stat(replica.unix).st_mode)
        assert stat.S_IMODE(os.stat(os.path.dirname(replica.unix)).st_mode) == 0o700  # only the platform
        assert Replica.from_state(replica.to_state()).unix == replica.unix  # adopted replicas keep it
        body = ",".join(str(v) for v in breast_cancer[0][0]).encode()
        for extra in (b"", f"{replicas.TOKEN_HEADER}: wrong\r\n".encode()):
            answer = _unix_request(replica.unix, b"POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   b"Content-Type: text/csv\r\n" + extra
                                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert answer.startswith(b"HTTP/1.1 403"), answer
        good = _unix_request(replica.unix, b"POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             + f"{replicas.TOKEN_HEADER}: {token}\r\n".encode()
                             + f"Content-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert good.startswith(b"HTTP/1.1 200"), good
        assert 0.0 <= float(good.split(b"\r\n\r\n", 1)[1].strip()) <= 1.0
    finally:
        manager.stop(replica, grace=5.0)
    assert not os.path.exists(replica.unix)


def test_model_server_off_loopback_without_token_refuses_to_start(tmp_path, xgboost_model_dir):
    import socket
    import subprocess

    try:  # an address of this machine that is not loopback
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        address = "0.0.0.0"
    if address.startswith("127."):
        address = "0.0.0.0"
    out = subprocess.run([sys.executable, "-m", replicas.SERVER_MODULE, "--model-dir", str(xgboost_model_dir),
                          "--port", "0", "--host", address, "--kind", "builtin-xgboost"],
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != replicas.TOKEN_ENV})
    assert out.returncode == 1
    assert "without a replica token" in out.stderr
