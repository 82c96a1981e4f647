"""How script mode launches the SDK's distribution options on each host (frameworks/distributed.py)."""

from __future__ import annotations

import json

from opensage.frameworks import distributed
from opensage.frameworks.toolkit_env import load_environment


def _env(tmp_path, hps: dict[str, str], current: str = "algo-2", hosts=("algo-1", "algo-2")):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"sagemaker_program": '"train.py"', **hps}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": current, "hosts": list(hosts)}))
    return load_environment(tmp_path, {})


def test_torchrun_command_torch_distributed_node_rank_and_master(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENSAGE_JOB_MASTER_PORT", "41234")
    monkeypatch.setenv("OPENSAGE_JOB_HOSTS", "algo-1=127.0.0.9,algo-2=127.0.0.1")
    env = _env(tmp_path, {"sagemaker_torch_distributed_enabled": "true"})
    assert distributed.launcher(env) == "torchrun"
    cmd = distributed.torchrun_command(env, "/py", ["/py", "--", "train.py", "--lr", "0.1"])
    master = cmd[cmd.index("--master_addr") + 1]
    assert master in ("algo-1", "127.0.0.9")  # the name where it resolves, else the reconciler's address
    assert cmd[:3] == ["/py", "-m", "torch.distributed.run"] and cmd[-3:] == ["train.py", "--lr", "0.1"]
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--node_rank") + 1] == "1"
    assert cmd[cmd.index("--master_port") + 1] == "41234" and cmd[cmd.index("--nproc_per_node") + 1] == "1"


def test_launcher_pytorchddp_is_torchrun_and_none_without_distribution(tmp_path):
    assert distributed.launcher(_env(tmp_path / "a", {"sagemaker_distributed_dataparallel_enabled": "true"})) \
        == "torchrun"
    assert distributed.launcher(_env(tmp_path / "b", {})) is None


def test_mpi_rank_environments_global_ranks_across_hosts(tmp_path):
    env = _env(tmp_path, {"sagemaker_mpi_enabled": "true", "sagemaker_mpi_num_of_processes_per_host": "3"})
    ranks = distributed.mpi_rank_environments(env, {"OPENSAGE_JOB_MASTER_PORT": "5000"})
    assert [r["OMPI_COMM_WORLD_RANK"] for r in ranks] == ["3", "4", "5"]
    assert {r["OMPI_COMM_WORLD_SIZE"] for r in ranks} == {"6"} and {r["WORLD_SIZE"] for r in ranks} == {"6"}
    assert [r["LOCAL_RANK"] for r in ranks] == ["0", "1", "2"] and ranks[0]["MASTER_PORT"] == "5000"


def test_mpi_rank_environments_pmi_slot_per_rank_and_foreign_pmi_dropped(tmp_path):
    """MPICH finds algo-1's process manager (PMI_PORT, next to torch's master port) and its slot (PMI_ID:
    a per-job offset + the global rank); another process manager's variables never reach a rank."""
    env = _env(tmp_path, {"sagemaker_mpi_enabled": "true", "sagemaker_mpi_num_of_processes_per_host": "2",
                          "sagemaker_mpi_custom_mpi_options": '"-x NCCL_DEBUG=INFO -x KEEP --mca btl ^openib"'})
    base = {"OPENSAGE_JOB_MASTER_PORT": "5000", "OPENSAGE_JOB_HOSTS": "algo-1=127.0.0.1,algo-2=127.0.0.1",
            "OPENSAGE_JOB_SECRET": "s3cret", "PMI_FD": "7", "PMIX_NAMESPACE": "other", "KEEP": "yes"}
    ranks = distributed.mpi_rank_environments(env, base)
    assert ranks.plan is not None and not ranks.plan.is_master and ranks.plan.world == 4
    ports = {r["PMI_PORT"].rsplit(":", 1)[1] for r in ranks}
    assert ports == {"5001"}
    ids = [int(r["PMI_ID"]) for r in ranks]
    assert ids[1] == ids[0] + 1 and ids[0] - ranks.plan.id_base == 2 and ranks.plan.id_base > 0
    assert all("PMI_FD" not in r and "PMIX_NAMESPACE" not in r for r in ranks)
    assert ranks[0]["UCX_TLS"] == "self,tcp" and ranks[0]["NCCL_DEBUG"] == "INFO" and ranks[0]["KEEP"] == "yes"
    other_job = distributed.mpi_rank_environments(env, {**base, "OPENSAGE_JOB_SECRET": "other"})
    assert other_job.plan.id_base != ranks.plan.id_base
    reserved = distributed.mpi_rank_environments(env, {**base, "OPENSAGE_JOB_PMI_PORT": "6123"})
    assert reserved[0]["PMI_PORT"].endswith(":6123")


def test_master_address_name_unresolvable_falls_back_to_reconciler_address(tmp_path, monkeypatch):
    """Not root (no private /etc/hosts): launchers get algo-1's address from OPENSAGE_JOB_HOSTS."""
    import socket

    def no_such_host(*_a, **_k):
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    env = _env(tmp_path, {"sagemaker_torch_distributed_enabled": "true"})
    assert distributed.master_address(env, {"OPENSAGE_JOB_HOSTS": "algo-1=10.0.0.7,algo-2=10.0.0.8"}) == "10.0.0.7"


def test_reads_every_shard_first_party_and_old_xgboost_images_only():
    from opensage.images import ResolvedImage
    from opensage.runner.training import reads_every_shard

    def builtin(algorithm: str) -> ResolvedImage:
        return ResolvedImage(kind="builtin", repository=algorithm, framework=None, command=[],
                             algorithm=algorithm)

    assert reads_every_shard(builtin("kmeans"))
    assert reads_every_shard(builtin("xgboost"), "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.5-1")
    assert not reads_every_shard(builtin("xgboost"), "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert not reads_every_shard(ResolvedImage(kind="script", repository="pytorch-training", framework="pytorch",
                                               command=[]))
