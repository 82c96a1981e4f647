"""serving/model_cache.py: which staged model directories are in use (endpoints' saved fleets in any status,
inference-pipeline plans, fleets still draining, running transform jobs' models), and removing the rest."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from opensage.serving import model_cache
from opensage.store.db import make_engine, migrate
from opensage.store.resources import Resource, ResourceRepository

BUCKET_URL = "s3://bucket1/models"


@pytest.fixture
def resources(tmp_path: Path) -> ResourceRepository:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    return ResourceRepository(engine)


def _staged(home: Path, name: str, url: str) -> Path:
    """A staged directory as serving/staging.py leaves it, last handed out an hour ago."""
    target = home / "models" / name
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(b"m")
    source = home / "models" / f"{name}.source.json"
    source.write_text(json.dumps({"url": url, "version": "etag", "staged_at": 0}))
    old = time.time() - 3600
    os.utime(source, (old, old))
    return target


def _add(resources: ResourceRepository, kind: str, name: str, status: str, request: dict | None = None,
         state: dict | None = None) -> None:
    resources.create(Resource(kind=kind, name=name, arn=f"arn:{kind}/{name}", status=status, creation_time=0,
                              last_modified_time=0, request=request or {}, state=state or {}))


def test_in_use_covers_endpoint_states_pipeline_plans_draining_fleets_and_running_transforms(
        resources: ResourceRepository, tmp_path: Path) -> None:
    home = tmp_path / "home"
    names = {n: _staged(home, n, f"{BUCKET_URL}/{n}.tar.gz") for n in (
        "served", "failed-update-old", "pipeline-a", "pipeline-b", "draining", "transform", "transform-gone-model",
        "finished-transform", "deleted-endpoint")}
    plan = home / "plans" / "pipelines" / "abc"
    plan.mkdir(parents=True)
    (plan / "pipeline.json").write_text(json.dumps({"mode": "Serial", "containers": [
        {"model_dir": str(names["pipeline-a"])}, {"model_dir": str(names["pipeline-b"])}]}))
    _add(resources, "endpoint", "live", "InService", state={"_fleet": {"variants": [
        {"model_dir": str(names["served"]), "replicas": []}, {"model_dir": str(plan), "replicas": []}]}})
    # A failed endpoint, a rolling one: whatever its status, what its state names stays.
    _add(resources, "endpoint", "broken", "Failed", state={"_rolling": {"old": {
        "model_dir": str(names["failed-update-old"])}}})
    draining = [{"variants": [{"model_dir": str(names["draining"]), "replicas": []}]}]
    # A running transform job: its model's URL (the model row, and the job's own copy when the row is gone).
    _add(resources, "model", "m1", "Created", request={"PrimaryContainer": {
        "Image": "x", "ModelDataUrl": f"{BUCKET_URL}/transform.tar.gz"}})
    _add(resources, "transform-job", "t1", "InProgress", request={"ModelName": "m1"})
    jobdir = tmp_path / "jobs" / "t2" / "i-1"
    jobdir.mkdir(parents=True)
    (jobdir / "transform.json").write_text(json.dumps({"model": {"Containers": [
        {"ModelDataUrl": f"{BUCKET_URL}/transform-gone-model.tar.gz"}]}}))
    _add(resources, "transform-job", "t2", "Stopping", request={"ModelName": "deleted"},
         state={"_jobdirs": [str(jobdir)]})
    _add(resources, "model", "m3", "Created", request={"PrimaryContainer": {
        "Image": "x", "ModelDataUrl": f"{BUCKET_URL}/finished-transform.tar.gz"}})
    _add(resources, "transform-job", "t3", "Completed", request={"ModelName": "m3"})

    in_use, urls = model_cache.in_use_by(resources, home, extra=draining)
    assert in_use == {names[n] for n in ("served", "failed-update-old", "pipeline-a", "pipeline-b", "draining")}
    assert {u for u in urls if u.startswith(BUCKET_URL)} == {
        f"{BUCKET_URL}/transform.tar.gz", f"{BUCKET_URL}/transform-gone-model.tar.gz"}

    removed = model_cache.collect(resources, home, idle_seconds=60, extra=draining)
    assert sorted(p.name for p in removed) == ["deleted-endpoint", "finished-transform"]
    assert sorted(p.name for p in home.joinpath("models").iterdir() if p.is_dir()) == sorted(
        set(names) - {"deleted-endpoint", "finished-transform"})
    assert model_cache.collect(resources, tmp_path / "no-home", idle_seconds=60) == []


def test_interval_is_a_tenth_of_the_idle_time_within_bounds() -> None:
    assert model_cache.interval(3600) == 360
    assert model_cache.interval(2) == 1
    assert model_cache.interval(86400) == 600


def test_multi_model_caches_removed_whole_only_when_nothing_serves_their_prefix_and_idle(
        resources: ResourceRepository, tmp_path: Path) -> None:
    """A multi-model endpoint stages its TargetModels into one cache per prefix: kept while an endpoint names
    it, a running transform serves its prefix, or one of its models was handed out lately; else removed whole.
    Inside a cache still in use nothing is touched (its servers hold the models they loaded)."""
    from opensage.serving.plan import multi_model_cache_dir

    home = tmp_path / "home"
    plans = home / "plans"

    def cache(prefix: str, used_ago: float) -> Path:
        root = multi_model_cache_dir(plans, prefix)
        model = root / ("0" * 32)
        model.mkdir(parents=True)
        (root / f"{model.name}.source.json").write_text("{}")
        when = time.time() - used_ago
        for path in (root, root / f"{model.name}.source.json"):
            os.utime(path, (when, when))
        return root

    served = cache("s3://bucket1/mme/served/", 3600)
    transformed = cache("s3://bucket1/mme/transform/", 3600)
    recent = cache("s3://bucket1/mme/recent/", 5)
    gone = cache("s3://bucket1/mme/gone/", 3600)
    _add(resources, "endpoint", "mme", "InService", state={"_fleet": {"variants": [
        {"model_dir": str(served), "replicas": []}]}})
    _add(resources, "model", "mm", "Created", request={"PrimaryContainer": {
        "Image": "x", "Mode": "MultiModel", "ModelDataUrl": "s3://bucket1/mme/transform/"}})
    _add(resources, "transform-job", "t", "InProgress", request={"ModelName": "mm"})

    removed = model_cache.collect(resources, home, idle_seconds=60)
    assert removed == [gone]
    assert not gone.exists() and served.is_dir() and transformed.is_dir() and recent.is_dir()
    assert (served / ("0" * 32)).is_dir()  # a served cache's idle model stays
    assert sorted(p.name for p in (plans / "multi-model").iterdir()) == sorted(
        p.name for p in (served, transformed, recent))  # no trash left
