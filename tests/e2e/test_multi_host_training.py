"""Multi-instance training on one machine with the unmodified SDK v2 (issue 13 item 3): PyTorch
``torch_distributed`` whose two hosts all-reduce together over the loopback, and built-in XGBoost trained
across two hosts on ShardedByS3Key data with the quality of one host on the same data."""

from __future__ import annotations

import json
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

DDP_SCRIPT = textwrap.dedent('''
    import json, os, socket
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)  # different data per rank: DDP must average the gradients
    model = DDP(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        x = torch.randn(32, 4)
        torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)).backward()
        opt.step()
    weights = [torch.zeros(4) for _ in range(world)]
    dist.all_gather(weights, model.module.weight.detach()[0])  # identical on every rank after DDP steps
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    names = [None] * world
    dist.all_gather_object(names, socket.gethostname())
    print(f"rank {rank}/{world} on {socket.gethostname()}: all_reduce={total.item()}", flush=True)
    if rank == 0:
        hosts = json.loads(os.environ["SM_HOSTS"])
        json.dump({"sum": total.item(), "world": world, "names": names, "hosts": hosts,
                   "current_host": os.environ["SM_CURRENT_HOST"],
                   "same_weights": all(torch.allclose(w, weights[0]) for w in weights),
                   "resolved": [socket.gethostbyname(h) for h in hosts]},
                  open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w"))
    dist.destroy_process_group()
''')


def _model_dir(sess, s3_uri: str, dest: Path) -> Path:
    import sagemaker

    local = sagemaker.s3.S3Downloader.download(s3_uri, str(dest), sagemaker_session=sess)[0]
    with tarfile.open(local) as tar:
        tar.extractall(dest / "model", filter="data")
    return dest / "model"


def test_pytorch_torch_distributed_two_hosts_all_reduce_together(sm_session, tmp_path):
    import sagemaker
    from sagemaker.pytorch import PyTorch

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(DDP_SCRIPT)
    bucket = sm_session.default_bucket()
    # The SDK allows torch_distributed on CPU instance types only with an explicit image (it targets GPUs).
    image = sagemaker.image_uris.retrieve("pytorch", "us-east-1", version="2.3", py_version="py311",
                                          instance_type="ml.m5.xlarge", image_scope="training")
    est = PyTorch(entry_point="train.py", source_dir=str(src), role=ROLE, image_uri=image,
                  instance_count=2, instance_type="ml.m5.xlarge", sagemaker_session=sm_session,
                  output_path=f"s3://{bucket}/e2e/ddp/out",
                  distribution={"torch_distributed": {"enabled": True}})
    est.fit(logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    result = json.loads((_model_dir(sm_session, est.model_data, tmp_path) / "result.json").read_text())
    assert result["world"] == 2 and result["sum"] == 3.0 and result["same_weights"]
    assert result["hosts"] == ["algo-1", "algo-2"] and result["current_host"] == "algo-1"
    assert all(a.startswith("127.") for a in result["resolved"])
    import os

    if os.geteuid() == 0:  # each host has a UTS namespace named as in a SageMaker container
        assert result["names"] == ["algo-1", "algo-2"]


def test_builtin_xgboost_two_hosts_sharded_by_s3_key_matches_one_host(sm_session, tmp_path):
    xgboost_one_host_vs_two_sharded(sm_session, tmp_path)


def xgboost_one_host_vs_two_sharded(sm_session, tmp_path, instance_type: str = "ml.m5.large") -> None:
    """Built-in XGBoost on 1 host (FullyReplicated) and 2 hosts (ShardedByS3Key) on the same 4 CSV parts: the
    same accuracy and nearly the same predictions (also run on the Ray executor, test_ray_executor.py)."""
    import sagemaker
    import xgboost as xgb
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = X[idx], y[idx]
    bucket = sm_session.default_bucket()
    for i, rows in enumerate(np.array_split(np.column_stack([y[:450], X[:450]]), 4)):
        path = tmp_path / f"part-{i}.csv"
        np.savetxt(path, rows, delimiter=",", fmt="%.6g")
        sm_session.upload_data(str(path), bucket=bucket, key_prefix="e2e/mh-xgb/train")
    uri = f"s3://{bucket}/e2e/mh-xgb/train"
    image = sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    models = {}
    for count, distribution in ((1, "FullyReplicated"), (2, "ShardedByS3Key")):
        est = Estimator(image_uri=image, role=ROLE, instance_count=count, instance_type=instance_type,
                        output_path=f"s3://{bucket}/e2e/mh-xgb/out{count}", sagemaker_session=sm_session,
                        hyperparameters={"num_round": 30, "objective": "binary:logistic", "max_depth": 3,
                                         "tree_method": "hist"})
        est.fit({"train": TrainingInput(uri, content_type="text/csv", distribution=distribution)}, logs=False)
        booster = xgb.Booster()
        booster.load_model(str(_model_dir(sm_session, est.model_data, tmp_path / str(count)) / "xgboost-model"))
        models[count] = booster.predict(xgb.DMatrix(X[450:]))
    acc = {n: ((p > 0.5) == y[450:]).mean() for n, p in models.items()}
    assert acc[1] > 0.9 and abs(acc[1] - acc[2]) <= 0.02, acc
    assert np.abs(models[1] - models[2]).max() < 0.05  # the same trees, up to the quantile sketch
