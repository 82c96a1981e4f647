"""ReplicaManager's liveness of the model servers it started itself."""

from __future__ import annotations

import sys
from pathlib import Path

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
