"""SDK v3 (sagemaker-core resources, in .venv-sdk3) against `opensage up`: ModelPackageGroup / ModelPackage get,
update (approval) with the refresh that follows, and get_all over a group's versions."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import boto3
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SDK3_PYTHON = Path(__file__).resolve().parents[2] / ".venv-sdk3" / "bin" / "python"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"

SCRIPT = textwrap.dedent('''
    import sys
    from sagemaker.core.resources import ModelPackage, ModelPackageGroup
    group, first = sys.argv[1], sys.argv[2]
    package = ModelPackage.get(model_package_name=first)
    package.update(model_approval_status="Approved", approval_description="passed evaluation")
    package.refresh()
    print("APPROVAL", package.model_approval_status, package.approval_description)
    print("GROUP", ModelPackageGroup.get(model_package_group_name=group).model_package_group_status)
    for p in ModelPackage.get_all(model_package_group_name=group, sort_by="CreationTime", sort_order="Descending"):
        print("VERSION", p.model_package_version, p.model_approval_status)
''')


def test_sdk_v3_model_package_update_refresh_and_get_all(platform, tmp_path):
    assert SDK3_PYTHON.exists(), "SDK v3 venv missing: run `make install` (it builds .venv-sdk3)"
    sm = boto3.client("sagemaker")
    group = "sdk3-registry-group"
    sm.create_model_package_group(ModelPackageGroupName=group)
    spec = {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://sagemaker-us-east-1-000000000000/m/model.tar.gz"}]}
    first = sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=spec)["ModelPackageArn"]
    sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=spec)
    (tmp_path / "run.py").write_text(SCRIPT)
    out = subprocess.run([str(SDK3_PYTHON), str(tmp_path / "run.py"), group, first], env=dict(os.environ),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [x for x in out.stdout.splitlines() if x.split(" ", 1)[0] in ("APPROVAL", "GROUP", "VERSION")]
    assert lines == ["APPROVAL Approved passed evaluation", "GROUP Completed",
                     "VERSION 2 PendingManualApproval", "VERSION 1 Approved"]
