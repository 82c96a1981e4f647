"""``distribution={"mpi": ...}`` with the unmodified SDK v2 (issue 13 item 3): a real MPI world across two hosts
on one machine, with no ssh and no mpirun. Each host's agent starts its ranks; algo-1's PMI server
(frameworks/mpi.py) lets MPICH wire them up, so an mpi4py script's COMM_WORLD spans both hosts."""

from __future__ import annotations

import json
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MPI_SCRIPT = textwrap.dedent('''
    import json, os
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    total = comm.allreduce(rank + 1, op=MPI.SUM)
    hosts = comm.allgather(os.environ["SM_CURRENT_HOST"])
    if rank == size - 1:  # the last rank is on the other host than rank 0
        comm.send({"from": rank, "host": os.environ["SM_CURRENT_HOST"]}, dest=0, tag=11)
    if rank == 0:
        got = comm.recv(source=size - 1, tag=11)
        json.dump({"sum": total, "size": size, "hosts": hosts, "got": got,
                   "flag": os.environ.get("MY_FLAG"), "local_size": int(os.environ["OMPI_COMM_WORLD_LOCAL_SIZE"])},
                  open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w"))
    print(f"rank {rank}/{size} on {os.environ['SM_CURRENT_HOST']}: allreduce={total}", flush=True)
''')

FAILING_SCRIPT = textwrap.dedent('''
    import os
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 3:
        raise ValueError("rank three cannot go on")
    comm.Barrier()  # the other ranks wait here for rank 3 until the job ends them
''')


def _estimator(sm_session, src: Path, name: str):
    import sagemaker
    from sagemaker.pytorch import PyTorch

    image = sagemaker.image_uris.retrieve("pytorch", "us-east-1", version="2.3", py_version="py311",
                                          instance_type="ml.m5.xlarge", image_scope="training")
    return PyTorch(entry_point="train.py", source_dir=str(src), role=ROLE, image_uri=image,
                   instance_count=2, instance_type="ml.m5.xlarge", sagemaker_session=sm_session,
                   output_path=f"s3://{sm_session.default_bucket()}/e2e/{name}/out",
                   distribution={"mpi": {"enabled": True, "processes_per_host": 2,
                                         "custom_mpi_options": "-x MY_FLAG=on"}})


def test_pytorch_mpi_two_hosts_mpi4py_allreduce_across_hosts(sm_session, tmp_path):
    import sagemaker

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(MPI_SCRIPT)
    est = _estimator(sm_session, src, "mpi")
    est.fit(logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    local = sagemaker.s3.S3Downloader.download(est.model_data, str(tmp_path), sagemaker_session=sm_session)[0]
    with tarfile.open(local) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    result = json.loads((tmp_path / "model" / "result.json").read_text())
    assert result["size"] == 4 and result["sum"] == 1 + 2 + 3 + 4
    assert result["hosts"] == ["algo-1", "algo-1", "algo-2", "algo-2"] and result["local_size"] == 2
    assert result["got"] == {"from": 3, "host": "algo-2"} and result["flag"] == "on"


def test_pytorch_mpi_rank_fails_on_second_host_job_fails_naming_it(sm_session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(FAILING_SCRIPT)
    est = _estimator(sm_session, src, "mpi-fail")
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises UnexpectedStatusException
        est.fit(logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Failed"
    assert "rank three cannot go on" in desc["FailureReason"] and "algo-2" in desc["FailureReason"]
