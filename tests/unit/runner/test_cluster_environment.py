"""The control plane's per-job cluster settings (runner/training.py ``_cluster_environment``): what every host
of a job shares (addresses, rendezvous ports, the MPI secret) and what differs between jobs."""

from __future__ import annotations

from opensage.frameworks import mpi
from opensage.runner import training
from opensage.store.resources import Resource


def _job(name: str) -> Resource:
    return Resource(kind="training-job", name=name, arn=f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
                    status="InProgress", creation_time=0.0, last_modified_time=0.0, request={})


def _reconciler() -> training.TrainingReconciler:
    reconciler = object.__new__(training.TrainingReconciler)
    reconciler.executor = object()  # no host_addresses: every host on the loopback
    return reconciler


def test_cluster_environment_hosts_of_one_job_share_pmi_port_and_secret_other_jobs_differ():
    r = _reconciler()
    job, other = _job("a"), _job("b")
    one, two = r._cluster_environment(job, 0, 2), r._cluster_environment(job, 1, 2)
    assert one[mpi.PMI_PORT_ENV] == two[mpi.PMI_PORT_ENV] and int(one[mpi.PMI_PORT_ENV]) > 0
    assert one[mpi.SECRET_ENV] == two[mpi.SECRET_ENV] and len(one[mpi.SECRET_ENV]) == 32
    assert one[training.CURRENT_HOST_ENV] == "algo-1" and two[training.CURRENT_HOST_ENV] == "algo-2"
    assert r._cluster_environment(other, 0, 2)[mpi.SECRET_ENV] != one[mpi.SECRET_ENV]
    # the secret makes the MPI rank ids unguessable (not 0, as without one)
    assert mpi.id_base(one[mpi.SECRET_ENV], 4, 2) != 0
