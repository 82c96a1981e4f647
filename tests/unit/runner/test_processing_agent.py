"""The agent's processing pieces in process: inputs to their LocalPaths (sharded, gzip), the job's own
Python layer over an image environment, and the processing image resolution."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from opensage import images
from opensage.objects import open_store
from opensage.runner.agent import job_python_layer
from opensage.runner.channels import ChannelError, prepare_channels
from opensage.runner.jobspec import ChannelSpec, JobSpec, ObjectStoreSpec, OutputSpec

BUCKET = "bkt"


@pytest.fixture()
def store(tmp_path: Path):
    root = tmp_path / "store"
    for key, data in {"raw/a.csv": b"1\n", "raw/b.csv": b"2\n", "raw/c.csv": b"3\n",
                      "gz/part.csv": gzip.compress(b"x,y\n"), "bad/part.csv": b"not gzip"}.items():
        path = root / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return open_store(ObjectStoreSpec(endpoint_url=f"file://{root}"))


def test_prepare_channels_local_path_destination_sharded_by_key_gets_host_share(store, tmp_path):
    spec = ChannelSpec(name="data", s3_uri=f"s3://{BUCKET}/raw", distribution="ShardedByS3Key",
                       local_path="/opt/ml/processing/input")
    dest = tmp_path / "ml" / "processing" / "input"
    prepare_channels(store, [spec], tmp_path / "ml" / "input" / "data", 1, 2, None, {"data": dest})
    assert sorted(p.name for p in dest.iterdir()) == ["b.csv"]
    assert not (tmp_path / "ml" / "input" / "data" / "data").exists()


def test_prepare_channels_gzip_input_is_decompressed(store, tmp_path):
    spec = ChannelSpec(name="data", s3_uri=f"s3://{BUCKET}/gz", compression="Gzip")
    prepare_channels(store, [spec], tmp_path, 0, 1, None, {"data": tmp_path / "in"})
    assert (tmp_path / "in" / "part.csv").read_bytes() == b"x,y\n"


def test_prepare_channels_gzip_input_not_gzip_fails_naming_object(store, tmp_path):
    spec = ChannelSpec(name="data", s3_uri=f"s3://{BUCKET}/bad", compression="Gzip")
    with pytest.raises(ChannelError, match=f"s3://{BUCKET}/bad/part.csv"):
        prepare_channels(store, [spec], tmp_path, 0, 1, None, {"data": tmp_path / "in"})


def test_prepare_channels_pipe_input_with_local_path_streams_through_local_path_fifo(store, tmp_path):
    spec = ChannelSpec(name="data", s3_uri=f"s3://{BUCKET}/raw", input_mode="Pipe", distribution="ShardedByS3Key",
                       local_path="/opt/ml/processing/input/data")
    dest = tmp_path / "ml" / "processing" / "input" / "data"
    (feeder,) = prepare_channels(store, [spec], tmp_path / "ml" / "input" / "data", 0, 2, None, {"data": dest})
    fifo = dest.with_name("data_0")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and not dest.exists()
    feeder.start()
    try:
        assert fifo.read_bytes() == b"1\n3\n"  # this host's share (hosts 0 of 2: a.csv, c.csv), key order
    finally:
        feeder.stop()


def test_jobspec_outputs_round_trip(tmp_path):
    spec = JobSpec(job_name="j", job_arn="arn", kind="processing", command=["python3"], environment={},
                   channels=[ChannelSpec(name="c", s3_uri="s3://b/k", local_path="/opt/ml/processing/c")],
                   object_store=ObjectStoreSpec(endpoint_url=None),
                   outputs=[OutputSpec(name="o", s3_uri="s3://b/o", local_path="/opt/ml/processing/o",
                                       upload_mode="Continuous")])
    spec.write(tmp_path)
    again = JobSpec.read(tmp_path)
    assert again.outputs == spec.outputs and again.channels[0].local_path == "/opt/ml/processing/c"


def test_job_python_layer_pip_leaves_image_packages_alone_and_sees_them(tmp_path):
    ml = tmp_path / "ml"
    bin_dir = job_python_layer(ml, sys.executable)
    assert bin_dir == "/opt/ml/.sagemaker-python/bin"
    layer = ml / ".sagemaker-python"
    # A package of "the image" (a throwaway site dir, so a broken layer never uninstalls a real one).
    image_site = tmp_path / "image-site"
    dist = image_site / "fakepkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (image_site / "fakepkg.py").write_text("VALUE = 1\n")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    (dist / "RECORD").write_text("fakepkg.py,,\nfakepkg-1.0.dist-info/METADATA,,\nfakepkg-1.0.dist-info/RECORD,,\n")
    (dist / "INSTALLER").write_text("pip\n")
    pth = next(layer.glob("lib/python*/site-packages/_opensage_image.pth"))
    pth.write_text(pth.read_text() + f"import site; site.addsitedir({str(image_site)!r})\n")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    seen = subprocess.run([str(layer / "bin" / "python"), "-c", "import sys, botocore, fakepkg; print(sys.prefix)"],
                          capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert seen == str(layer)
    # As runproc.sh does: a package of the image's environment is outside this one, and stays installed.
    done = subprocess.run([str(layer / "bin" / "pip"), "uninstall", "--yes", "fakepkg"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "outside environment" in done.stdout + done.stderr
    assert (image_site / "fakepkg.py").exists()


def test_resolve_processing_image_entrypoint_and_arguments_are_the_command():
    resolved = images.resolve_processing_image(
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        ["python3", "/opt/ml/processing/input/code/p.py"], ["--ratio", "0.2"])
    assert resolved.command == ["python3", "/opt/ml/processing/input/code/p.py", "--ratio", "0.2"]
    assert resolved.kind == "command" and resolved.framework == "sklearn"


def test_resolve_processing_image_unknown_image_names_it_and_what_runs():
    with pytest.raises(images.UnsupportedImage, match="my-own.*sagemaker-scikit-learn"):
        images.resolve_processing_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own:1", ["python3"], [])
