"""The ml.* instance-type table that sizes Ray placement-group bundles (issue 13 item 1)."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest

from opensage.executors.instance_types import InstanceResources, InstanceTypes, builtin_resources

JOB_ENUMS = ("TrainingInstanceType", "ProcessingInstanceType", "TransformInstanceType",
             "ProductionVariantInstanceType")


def _sdk_instance_types() -> set[str]:
    """Every ml.* instance type in botocore's SageMaker model (accelerator add-ons aside)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    out: set[str] = set()
    for name in model.shape_names:
        shape = model.shape_for(name)
        if "Accelerator" in name or not getattr(shape, "enum", None):
            continue
        out.update(v for v in shape.enum if v.startswith("ml."))
    return out


def test_builtin_resources_every_sdk_instance_type_sized() -> None:
    types = _sdk_instance_types()
    assert len(types) > 300  # the model really was read
    for t in sorted(types):
        res = builtin_resources(t)
        assert res.cpus >= 1 and res.memory_gib >= 0.5, t
        assert res.bundle()["CPU"] == res.cpus


def test_builtin_resources_job_enums_covered() -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    for enum in JOB_ENUMS:
        for t in model.shape_for(enum).enum:
            builtin_resources(t)  # raises UnknownInstanceType when a job type is missing


@pytest.mark.parametrize(("instance_type", "expected"), [
    ("ml.m5.large", InstanceResources(2, 8)),
    ("ml.c5.9xlarge", InstanceResources(36, 72)),
    ("ml.r5.xlarge", InstanceResources(4, 32)),
    ("ml.t3.medium", InstanceResources(2, 4)),
    ("ml.p3.2xlarge", InstanceResources(8, 61, gpus=1)),
    ("ml.p4d.24xlarge", InstanceResources(96, 1152, gpus=8)),
    ("ml.g5.12xlarge", InstanceResources(48, 192, gpus=4)),
    ("ml.inf2.xlarge", InstanceResources(4, 16, neuron_cores=2)),
    ("ml.trn1.32xlarge", InstanceResources(128, 512, neuron_cores=32)),
])
def test_builtin_resources_known_types_match_ec2_specs(instance_type: str, expected: InstanceResources) -> None:
    assert builtin_resources(instance_type) == expected


def test_bundle_gpu_instance_ray_resource_names() -> None:
    bundle = builtin_resources("ml.g4dn.xlarge").bundle()
    assert bundle == {"CPU": 4, "memory": 16 * 2**30, "GPU": 1}
    assert "GPU" not in builtin_resources("ml.m5.large").bundle()
    assert builtin_resources("ml.inf1.xlarge").bundle()["neuron_cores"] == 4


def test_load_operator_override_file_replaces_row(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"ml.m5.large": {"cpus": 1, "memory_gib": 1},
                                "ml.custom.big": {"cpus": 3, "memory_gib": 6, "gpus": 2}}))
    types = InstanceTypes.load(path)
    assert types.resources("ml.m5.large") == InstanceResources(1, 1)
    assert types.resources("ml.custom.big").bundle() == {"CPU": 3, "memory": 6 * 2**30, "GPU": 2}
    assert types.resources("ml.m5.xlarge") == InstanceResources(4, 16)  # not overridden: the table


def test_load_override_file_unknown_field_names_it(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text(json.dumps({"ml.m5.large": {"vcpus": 1}}))
    with pytest.raises(ValueError, match="ml.m5.large"):
        InstanceTypes.load(path)


def test_load_missing_file_table_only(tmp_path: Path) -> None:
    assert InstanceTypes.load(tmp_path / "absent.json").resources("ml.m5.large") == InstanceResources(2, 8)
