"""RayReplicaManager decisions that need no cluster: a lost node's replica, replicas it never placed."""

from __future__ import annotations

from pathlib import Path

from opensage.executors.ray_replicas import RayReplicaManager
from opensage.serving.replicas import Replica, ReplicaManager


class _Local(ReplicaManager):
    def __init__(self) -> None:
        super().__init__(isolate=False)
        self.asked: list[str] = []

    def running(self, replica: Replica) -> bool:
        self.asked.append("running")
        return True

    def stop(self, replica: Replica, grace: float = 30.0, wait: bool = True) -> None:
        self.asked.append("stop")


def test_running_replica_on_dead_node_is_not_running_without_asking_ray(tmp_path: Path, monkeypatch) -> None:
    manager = RayReplicaManager("127.0.0.1:1", tmp_path, local=_Local())
    monkeypatch.setattr(manager, "_alive_nodes", lambda: {"node-a": True, "node-b": False})
    monkeypatch.setattr(manager, "executor", lambda: (_ for _ in ()).throw(AssertionError("no Ray call")))
    lost = Replica(1234, 8080, str(tmp_path / "r.log"), host="10.0.0.2", token="t",
                   placement={"group": "g", "node": "node-b"})
    assert not manager.running(lost)
    assert "died" in manager.exit_status(lost)


def test_running_unplaced_replica_is_not_running_and_never_healthy(tmp_path: Path) -> None:
    manager = RayReplicaManager("127.0.0.1:1", tmp_path, local=_Local())
    unplaced = Replica(0, 0, str(tmp_path / "r.log"), token="t", placement={"group": "g", "unplaced": True})
    assert not manager.running(unplaced) and not manager.healthy(unplaced)
    assert manager.exit_status(unplaced) == "never placed"


def test_replica_without_placement_is_handled_locally(tmp_path: Path) -> None:
    """Replicas a local-executor platform started on this home (before it moved to Ray) stay manageable."""
    local = _Local()
    manager = RayReplicaManager("127.0.0.1:1", tmp_path, local=local)
    old = Replica(1234, 8080, str(tmp_path / "r.log"))
    assert manager.running(old)
    manager.stop(old, grace=0.0, wait=False)
    assert local.asked == ["running", "stop"]


def test_replica_state_round_trip_keeps_host_token_and_placement() -> None:
    r = Replica(5, 9000, "/x.log", host="10.1.2.3", token="secret", placement={"group": "g", "node": "n"})
    back = Replica.from_state(r.to_state())
    assert (back.host, back.token, back.placement, back.url) == ("10.1.2.3", "secret", {"group": "g", "node": "n"},
                                                                 "http://10.1.2.3:9000")
    assert "host" not in Replica(5, 9000, "/x.log").to_state()  # rows of loopback replicas unchanged
