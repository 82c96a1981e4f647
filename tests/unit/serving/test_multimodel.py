"""Multi-model endpoints: the LRU cache in process, and a multi-model server as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensage.objects.file import FileStore
from opensage.serving.handlers import ERROR_TYPE_HEADER, Request, Response
from opensage.serving.multimodel import MultiModelHandler
from opensage.serving.plan import MULTI_MODEL_ENV, OBJECT_STORE_ENV, plan_model_server
from tests.modelfiles import tar_gz, train_xgb, xgb_model_tar
from tests.unit.serving.conftest import csv_rows

XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
TARGET = "X-Amzn-SageMaker-Target-Model"


class EchoHandler:
    """A real handler over a model directory: answers with the content of its ``name`` file."""

    loads: list[str] = []

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.name = ""

    def load(self) -> None:
        self.name = (self.model_dir / "name").read_text()
        EchoHandler.loads.append(self.name)

    def invoke(self, request: Request) -> Response:
        return Response(200, self.name.encode(), "text/plain")


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "s3")
    store.ensure_bucket("bucket1")
    for name in ("a", "b", "c"):
        store.put_bytes("bucket1", f"models/{name}.tar.gz", tar_gz({"name": name.encode()}))
    EchoHandler.loads = []
    return store


def _handler(store: FileStore, tmp_path: Path, max_loaded: int) -> MultiModelHandler:
    handler = MultiModelHandler("s3://bucket1/models/", tmp_path / "cache", EchoHandler, lambda: store,
                                max_loaded=max_loaded)
    handler.load()
    return handler


def _call(handler: MultiModelHandler, target: str | None) -> Response:
    return handler.invoke(Request(b"", "text/plain", None, target_model=target))


# ------------------------------------------------------------------------------------------ in process
def test_multimodel_target_model_picks_its_archive(store, tmp_path):
    handler = _handler(store, tmp_path, 8)
    assert [_call(handler, f"{n}.tar.gz").body for n in ("a", "b", "a")] == [b"a", b"b", b"a"]
    assert EchoHandler.loads == ["a", "b"]


def test_multimodel_lru_evicts_least_recently_used(store, tmp_path):
    handler = _handler(store, tmp_path, 2)
    for target in ("a", "b", "a", "c", "a", "b"):
        assert _call(handler, f"{target}.tar.gz").body == target.encode()
    # c evicted b (a was used more recently); then b came back and evicted c.
    assert EchoHandler.loads == ["a", "b", "c", "b"]
    assert list(handler.loaded) == ["a.tar.gz", "b.tar.gz"]


def test_multimodel_cache_disabled_loads_every_time_and_deletes_it_from_disk(store, tmp_path):
    """ModelCacheSetting Disabled: SageMaker unloads the model and deletes it from disk after each invocation."""
    handler = _handler(store, tmp_path, 0)
    seen: list[Path] = []

    class Recording(EchoHandler):
        def load(self) -> None:
            seen.append(self.model_dir)
            assert (self.model_dir / "name").is_file()
            super().load()

    handler.factory = Recording
    for _ in range(3):
        assert _call(handler, "a.tar.gz").body == b"a"
    assert EchoHandler.loads == ["a", "a", "a"]
    assert not handler.loaded
    assert len(set(seen)) == 3 and not any(d.exists() for d in seen)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing cached, nothing left

    class Failing(EchoHandler):
        def invoke(self, request: Request) -> Response:
            raise RuntimeError("the model's code failed")

    handler.factory = Failing
    with pytest.raises(RuntimeError):
        _call(handler, "b.tar.gz")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_multimodel_cached_models_stay_on_disk_for_the_next_load(store, tmp_path):
    handler = _handler(store, tmp_path, 1)
    for target in ("a", "b", "a"):
        assert _call(handler, f"{target}.tar.gz").body == target.encode()
    staged = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(staged) == 2 and EchoHandler.loads == ["a", "b", "a"]


def test_multimodel_missing_target_model_is_validation_error(store, tmp_path):
    response = _call(_handler(store, tmp_path, 8), None)
    assert response.status == 400
    assert response.headers[ERROR_TYPE_HEADER] == "ValidationError"
    assert b"TargetModel" in response.body


def test_multimodel_missing_object_is_validation_error_naming_bucket_and_key(store, tmp_path):
    response = _call(_handler(store, tmp_path, 8), "nope/model.tar.gz")
    assert response.status == 400
    assert response.headers[ERROR_TYPE_HEADER] == "ValidationError"
    assert response.body.decode().startswith(
        "Failed to download model data(bucket: bucket1, key: models/nope/model.tar.gz).")


def test_multimodel_parent_path_is_refused(store, tmp_path):
    response = _call(_handler(store, tmp_path, 8), "../secret.tar.gz")
    assert response.status == 400 and b"'..'" in response.body


def test_multimodel_overwritten_archive_loads_new_model_after_restart_or_eviction(store, tmp_path):
    """The disk cache is keyed by the object's version, not its URL (issue 7 item 8): a model server that
    restarts (same cache directory) or evicts the model loads the overwritten archive, not the old copy."""
    handler = _handler(store, tmp_path, 1)
    assert _call(handler, "a.tar.gz").body == b"a"
    store.put_bytes("bucket1", "models/a.tar.gz", tar_gz({"name": b"a-retrained"}))
    assert _call(handler, "b.tar.gz").body == b"b"  # evicts a (at most one loaded)
    assert _call(handler, "a.tar.gz").body == b"a-retrained"
    restarted = _handler(store, tmp_path, 8)
    assert _call(restarted, "a.tar.gz").body == b"a-retrained"
    assert _call(restarted, "b.tar.gz").body == b"b"


def test_multimodel_unsafe_archive_refused_nothing_outside_cache(store, tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("up")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo("up/planted"), io.BytesIO(b""))
    store.put_bytes("bucket1", "models/evil.tar.gz", buf.getvalue())
    response = _call(_handler(store, tmp_path, 8), "evil.tar.gz")
    assert response.status == 500 and b"UnsafeArchiveError" in response.body and b"'up'" in response.body
    assert not (tmp_path / "planted").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_plan_multimodel_sets_prefix_and_cache_without_staging(tmp_path):
    def stage(url):
        raise AssertionError(f"a multi-model plan must not stage {url}")

    plan = plan_model_server({"PrimaryContainer": {"Image": XGB_IMAGE, "Mode": "MultiModel",
                                                   "ModelDataUrl": "s3://bucket1/models/"}},
                             stage, tmp_path / "plans", object_store_url="file:///somewhere")
    assert plan.kind == "builtin-xgboost"
    assert plan.env[MULTI_MODEL_ENV] == "s3://bucket1/models/"
    assert plan.env[OBJECT_STORE_ENV] == "file:///somewhere"
    assert plan.model_dir.is_dir() and not any(plan.model_dir.iterdir())


# ------------------------------------------------------------------------------------------ the server
def test_multimodel_server_serves_each_target_and_survives_eviction(start_server, tmp_path, breast_cancer):
    features, labels = breast_cancer
    store = FileStore(tmp_path / "s3")
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "mme/one.tar.gz", xgb_model_tar(train_xgb(features, labels, 1, max_depth=2)))
    store.put_bytes("bucket1", "mme/sub/two.tar.gz", xgb_model_tar(train_xgb(features, labels, 30, max_depth=2)))
    cache = tmp_path / "cache"
    cache.mkdir()
    server = start_server(cache, "builtin-xgboost", {MULTI_MODEL_ENV: "s3://bucket1/mme/",
                                                     OBJECT_STORE_ENV: f"file://{tmp_path / 's3'}",
                                                     "OPENSAGE_MULTI_MODEL_MAX_LOADED": "1"})
    body = csv_rows(features[:5])
    answers = {}
    for target in ("one.tar.gz", "sub/two.tar.gz", "one.tar.gz", "sub/two.tar.gz"):
        response = server.post(body, "text/csv", "text/csv", **{TARGET: target})
        assert response.status_code == 200, response.text
        answers.setdefault(target, []).append(response.text)
    assert answers["one.tar.gz"][0] == answers["one.tar.gz"][1]
    assert answers["one.tar.gz"][0] != answers["sub/two.tar.gz"][0]
    assert "unloaded one.tar.gz" in server.stderr()
    missing = server.post(body, "text/csv", "text/csv")
    assert missing.status_code == 400 and missing.headers["x-opensage-error-type"] == "ValidationError"


def test_single_model_server_refuses_target_model(start_server, xgboost_model_dir, breast_cancer):
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    response = server.post(csv_rows(breast_cancer[0][:1]), "text/csv", "text/csv", **{TARGET: "a.tar.gz"})
    assert response.status_code == 400
    assert response.headers["x-opensage-error-type"] == "ValidationError"
    assert "single model" in response.text
