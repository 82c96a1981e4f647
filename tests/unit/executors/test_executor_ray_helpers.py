"""Ray executor pieces that need no cluster: which instance type a job dir asks for, handles, namespaces."""

from __future__ import annotations

import json
from pathlib import Path

from opensage.executors.ray import _split, instance_type_of, namespace_for
from opensage.runner.transform_worker import TRANSFORM_FILE


def _write(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_instance_type_of_training_dir_reads_resourceconfig(tmp_path: Path) -> None:
    _write(tmp_path / "ml/input/config/resourceconfig.json", {"current_instance_type": "ml.p3.2xlarge"})
    assert instance_type_of(tmp_path, "training") == "ml.p3.2xlarge"


def test_instance_type_of_processing_dir_reads_its_config(tmp_path: Path) -> None:
    _write(tmp_path / "ml/config/resourceconfig.json", {"current_instance_type": "ml.c5.xlarge"})
    assert instance_type_of(tmp_path, "processing") == "ml.c5.xlarge"


def test_instance_type_of_transform_dir_reads_request(tmp_path: Path) -> None:
    _write(tmp_path / TRANSFORM_FILE, {"request": {"TransformResources": {"InstanceType": "ml.g4dn.xlarge",
                                                                           "InstanceCount": 1}}})
    assert instance_type_of(tmp_path, "transform") == "ml.g4dn.xlarge"


def test_instance_type_of_no_file_kind_default(tmp_path: Path) -> None:
    assert instance_type_of(tmp_path, "processing") == "ml.m5.xlarge"


def test_split_handle_group_and_host_index() -> None:
    assert _split("ray:opensage-ab12-cd34ef-3") == ("opensage-ab12-cd34ef", 3)


def test_namespace_for_two_homes_distinct(tmp_path: Path) -> None:
    a, b = namespace_for(tmp_path / "a"), namespace_for(tmp_path / "b")
    assert a != b and a == namespace_for(tmp_path / "a")


def test_is_running_local_agent_handle_adopted_without_ray(tmp_path: Path) -> None:
    """A home switched from --executor local to ray: agents the local executor started are still watched and
    killed (pid handles), without a Ray cluster (the address below is never dialled)."""
    from opensage.executors.local import LocalExecutor
    from opensage.executors.ray import RayExecutor
    from tests.unit.executors.test_executor_local import make_job, wait_for

    jobdir = make_job(tmp_path, ["sleep", "30"])
    local = LocalExecutor()
    handle = local.submit(jobdir)
    ray_executor = RayExecutor("127.0.0.1:1", "opensage-test")
    ray_executor.adopt(handle, jobdir)
    assert ray_executor.is_running(handle)
    ray_executor.kill(handle)
    wait_for(lambda: not local.is_running(handle))
    assert not ray_executor.is_running(handle)


def test_is_running_group_unplaced_past_capacity_wait_fails_job_with_capacity_error(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    """A job Ray never places: SageMaker's capacity wording first, then (after the operator's bound) a result
    whose FailureReason begins with CapacityError, and its pending group removed so it never starts late.
    The cluster is stood in for by the group's state only (PENDING: Ray has no node that fits)."""
    import time

    from opensage.executors import ray as ray_executor_module
    from opensage.executors.ray import CAPACITY_FAILURE, CAPACITY_MESSAGE, RayExecutor, _Group
    from opensage.runner.jobspec import JobResult

    executor = RayExecutor("127.0.0.1:1", "opensage-test", capacity_notice_seconds=0.0, capacity_wait_seconds=0.3)
    removed: list[str] = []
    states = {"g1": "PENDING"}
    monkeypatch.setattr(executor, "_state", lambda group: states[group.name])
    monkeypatch.setattr(executor, "_table", lambda group: {"state": states[group.name]})

    def remove(group) -> None:
        removed.append(group.name)
        states[group.name] = "REMOVED"

    monkeypatch.setattr(executor, "_remove_group", remove)
    jobdirs = {i: tmp_path / f"host{i}" for i in range(2)}
    for d in jobdirs.values():
        (d / "logs").mkdir(parents=True)
    executor._groups["g1"] = _Group("g1", 2, "ml.p4d.24xlarge", None, "STRICT_SPREAD", jobdirs=dict(jobdirs))
    handles = [f"{ray_executor_module.HANDLE_PREFIX}g1-{i}" for i in range(2)]

    assert all(executor.is_running(h) for h in handles)  # waiting for capacity is running
    events = (jobdirs[0] / "events.jsonl").read_text()
    assert CAPACITY_MESSAGE in events and JobResult.read(jobdirs[0]) is None
    time.sleep(0.35)
    assert not executor.is_running(handles[0])
    assert not executor.is_running(handles[1])
    assert removed == ["g1"]
    for i, d in jobdirs.items():
        result = JobResult.read(d)
        assert result is not None and result.exit_code is None and result.failure_reason == CAPACITY_FAILURE
        assert result.failure_reason.startswith("CapacityError")
        assert "CapacityError" in (d / "logs" / f"algo-{i + 1}.log").read_text()


def test_is_running_capacity_wait_zero_waits_for_ever(tmp_path: Path, monkeypatch) -> None:
    from opensage.executors.ray import RayExecutor, _Group

    executor = RayExecutor("127.0.0.1:1", "opensage-test", capacity_notice_seconds=0.0, capacity_wait_seconds=0)
    monkeypatch.setattr(executor, "_state", lambda group: "PENDING")
    monkeypatch.setattr(executor, "_table", lambda group: {"state": "PENDING"})
    (tmp_path / "h" / "logs").mkdir(parents=True)
    group = _Group("g2", 1, "ml.p4d.24xlarge", None, "PACK", jobdirs={0: tmp_path / "h"})
    group.since -= 10**6
    executor._groups["g2"] = group
    assert executor.is_running("ray:g2-0")
