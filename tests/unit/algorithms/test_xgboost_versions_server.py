"""/ping per container version, through the real model server process (``python -m opensage.serving.model_server``).

0.90-1 ... 1.2-1 answer /ping without the model and load it on the first invocation, so a broken artifact is an
endpoint that is InService and answers 500 (ModelError, Invocation5XXErrors: what deployment guardrails roll back
on); from 1.2-2 the model is loaded for /ping, so the same artifact never passes the health check.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.unit.serving.conftest import launch, wait_ready


@pytest.fixture
def broken_model_dir(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "xgboost-model").write_bytes(b"\x80\x04not really a pickle")
    return model_dir


@pytest.mark.parametrize("tag", ["0.90-2", "1.2-1"])
def test_ping_legacy_version_broken_model_200_invocations_500(tmp_path, broken_model_dir, tag):
    server = launch(broken_model_dir, "builtin-xgboost", tmp_path, {"OPENSAGE_IMAGE_VERSION": tag})
    try:
        wait_ready(server)
        for _ in range(2):
            response = server.post("0.5,0.5,0.5\n", "text/csv")
            assert response.status_code == 500
            assert response.text.startswith("Unable to load model: ")
        assert httpx.get(f"{server.url}/ping", timeout=5).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize("tag", ["1.2-2", "1.7-1"])
def test_ping_current_version_broken_model_never_healthy(tmp_path, broken_model_dir, tag):
    server = launch(broken_model_dir, "builtin-xgboost", tmp_path, {"OPENSAGE_IMAGE_VERSION": tag})
    try:
        deadline = time.monotonic() + 30
        while server.proc.poll() is None and time.monotonic() < deadline:
            try:
                assert httpx.get(f"{server.url}/ping", timeout=2).status_code != 200
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert server.proc.poll() not in (None, 0), server.stderr()
        assert "could not load the model" in server.stderr()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
