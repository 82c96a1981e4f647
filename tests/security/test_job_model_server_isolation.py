"""Issue 7 item 3 (b): model servers (endpoints, batch transform) run the user's inference code as a user of
its own, which cannot read the platform's home or signal the platform, and cannot change the staged model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from opensage.runner.sandbox import JOB_UID_MIN, namespace_supported
from opensage.serving.replicas import ReplicaManager
from opensage.settings import Settings

INFERENCE = """
import json, os

def model_fn(model_dir):
    return model_dir

def transform_fn(model_dir, body, content_type, accept):
    home, pid = json.loads(body)
    out = {"uid": os.getuid()}
    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except OSError as exc:
            out[name] = type(exc).__name__
    attempt("credentials", lambda: open(os.path.join(home, "credentials.json")).read())
    attempt("list_home", lambda: out.setdefault("home_entries", sorted(os.listdir(home))))
    attempt("signal", lambda: os.kill(pid, 0))
    attempt("write_model", lambda: open(os.path.join(model_dir, "planted.py"), "w").write("x"))
    attempt("read_model", lambda: open(os.path.join(model_dir, "weights.bin"), "rb").read())
    return json.dumps(out)
"""


@pytest.mark.skipif(not namespace_supported(), reason="needs root and mount namespaces (Linux)")
def test_model_server_user_code_cannot_read_home_signal_or_modify_model(tmp_path: Path) -> None:
    settings = Settings.build(tmp_path / "home")
    model_dir = settings.home / "models" / "abc"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(INFERENCE)
    (model_dir / "weights.bin").write_bytes(b"w")
    os.chmod(model_dir / "weights.bin", 0o600)  # as a model.tar.gz may carry it
    manager = ReplicaManager()
    replica = manager.start(model_dir, "sklearn", {"SAGEMAKER_PROGRAM": "inference.py"},
                            settings.home / "endpoints" / "ep" / "r.log")
    try:
        deadline = time.monotonic() + 60
        while not manager.healthy(replica):
            assert manager.running(replica), manager.log_tail(replica)
            assert time.monotonic() < deadline, "model server never became healthy"
            time.sleep(0.1)
        answer = httpx.post(f"{replica.url}/invocations", content=json.dumps([str(settings.home), os.getpid()]),
                            headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == 200, answer.text
        probe = json.loads(answer.text)
    finally:
        manager.stop(replica, grace=5)
    assert probe["uid"] >= JOB_UID_MIN, probe
    assert probe["credentials"] in ("PermissionError", "FileNotFoundError"), probe
    # Either not visible, or only the empty skeleton leading to the model directory (a tmpfs).
    assert probe["list_home"] in ("PermissionError", "FileNotFoundError") or probe["home_entries"] == ["models"]
    assert probe["signal"] == "PermissionError", probe
    assert probe["write_model"] in ("PermissionError", "OSError"), probe  # read-only mount (EROFS)
    assert probe["read_model"] == "ok", probe
    assert not (model_dir / "planted.py").exists()
