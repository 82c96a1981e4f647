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
