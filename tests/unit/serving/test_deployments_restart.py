"""A restarted deployment reconciler reading a fleet back from the store: what it routes before it repairs.

The replica backend is written here (the reconciler's boundary: processes); the endpoint row lives in a real
SQLite store and the routes in a real Router.
"""

from __future__ import annotations

import time
from pathlib import Path

from opensage.arns import ArnBuilder
from opensage.clock import FakeClock
from opensage.runner.jobspec import ObjectStoreSpec
from opensage.services.base import Deps
from opensage.serving.deployments import DeploymentReconciler
from opensage.serving.replicas import Replica
from opensage.serving.router import EndpointRoute, Router
from opensage.settings import Settings
from opensage.store.db import make_engine, migrate
from opensage.store.logs import LogRepository
from opensage.store.metrics import MetricRepository
from opensage.store.resources import Resource, ResourceRepository
from opensage.store.tags import TagRepository


class Replicas:
    """Processes by pid: ``alive`` run; started ones get new pids and never become healthy here."""

    def __init__(self, alive: set[int]) -> None:
        self.alive = alive
        self.started: list[Replica] = []

    def start(self, model_dir: Path, kind: str, environment: dict[str, str], log_path: Path, python=None,
              token=None, instance_type=None, group=None, host: str = "127.0.0.1") -> Replica:
        replica = Replica(90000 + len(self.started), 20000 + len(self.started), str(log_path), token=token)
        self.alive.add(replica.pid)
        self.started.append(replica)
        return replica

    def running(self, replica: Replica) -> bool:
        return replica.pid in self.alive

    def healthy(self, replica: Replica, timeout: float = 2.0) -> bool:
        return False

    def stop(self, replica: Replica, grace: float = 0.0, wait: bool = True) -> None:
        self.alive.discard(replica.pid)

    def exit_status(self, replica: Replica) -> str:
        return ""

    def log_tail(self, replica: Replica, lines: int = 15) -> str:
        return ""


class RecordingRouter(Router):
    def __init__(self) -> None:
        super().__init__()
        self.routed: list[list[str]] = []  # per set(): the production replicas' URLs

    def set(self, endpoint: str, route: EndpointRoute) -> None:
        self.routed.append([url for v in route.variants for url in v.replicas])
        super().set(endpoint, route)


def test_restarted_reconciler_never_routes_an_instance_that_died_with_the_previous_process(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    settings = Settings.build(tmp_path / "home")
    now = time.time()
    deps = Deps(settings=settings, clock=FakeClock(now), arns=ArnBuilder("us-east-1", "000000000000"),
                resources=ResourceRepository(engine), tags=TagRepository(engine), logs=LogRepository(engine),
                metrics=MetricRepository(engine))
    log = str(tmp_path / "replica.log")
    dead = {**Replica(4242, 30001, log).to_state(), "ready": True, "instance": "i-dead", "offset": 0}
    alive = {**Replica(4343, 30002, log).to_state(), "ready": True, "instance": "i-alive", "offset": 0}
    fleet = {"variants": [{"name": "AllTraffic", "weight": 1.0, "count": 2, "env": {}, "kind": "xgboost",
                           "model_dir": str(tmp_path), "replicas": [dead, alive]}]}
    deps.resources.create(Resource(kind="endpoint", name="ep", arn=deps.arns.sagemaker("endpoint", "ep"),
                                   status="InService", creation_time=now, last_modified_time=now, request={},
                                   state={"_fleet": fleet}))
    replicas, router = Replicas(alive={4343}), RecordingRouter()
    reconciler = DeploymentReconciler(deps, replicas, router, ObjectStoreSpec(f"file://{tmp_path}"))

    reconciler.run_once()

    # Every route it ever set leaves the dead instance out (its port may belong to another listener by now).
    assert router.routed and all("http://127.0.0.1:30001" not in urls for urls in router.routed)
    assert router.routed[0] == ["http://127.0.0.1:30002"]
    # ... and the same pass replaced it; the replacement is routed once healthy, not before.
    assert len(replicas.started) == 1
    saved = deps.resources.get("endpoint", "ep").state["_fleet"]["variants"][0]["replicas"]
    assert [r["pid"] for r in saved] == [replicas.started[0].pid, 4343]
    assert [r["ready"] for r in saved] == [False, True]
    assert router.get("ep").variants[0].replicas == ["http://127.0.0.1:30002"]
