"""Multi-instance training on one machine (issue 13 item 3): the hosts of a job find each other (algo-1 …
algo-N resolve, one rendezvous port per job), torch_distributed / mpi launches span the hosts, built-in
XGBoost trains across hosts on ShardedByS3Key data, first-party built-ins learn from every shard."""

from __future__ import annotations

import io
import json
import tarfile
import time

import numpy as np
import pytest

from tests.conftest import training_request, wait_for_status

pytestmark = pytest.mark.slow

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3-cpu-py311"

DDP_SCRIPT = '''
import json, os, socket
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
# every rank learns every other rank's host name through an all_gather over the hosts' network
names = [None] * world
dist.all_gather_object(names, socket.gethostname())
print(f"rank {rank}/{world} on {socket.gethostname()} all_reduce={t.item()}", flush=True)
if os.environ["SM_CURRENT_HOST"] == "algo-1" and rank == 0:
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w") as f:
        json.dump({"sum": t.item(), "world": world, "names": names,
                   "hosts": json.loads(os.environ["SM_HOSTS"]),
                   "resolved": [socket.gethostbyname(h) for h in json.loads(os.environ["SM_HOSTS"])]}, f)
dist.destroy_process_group()
'''

MPI_SCRIPT = '''
import json, os
import torch, torch.distributed as dist
rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
dist.init_process_group("gloo", rank=rank, world_size=world)
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
if rank == 0:
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w") as f:
        json.dump({"sum": t.item(), "world": world}, f)
dist.destroy_process_group()
'''


@pytest.fixture(scope="module")
def store(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    return store


def _sourcedir(store, key: str, script: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = script.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    store.put_bytes("bucket1", key, buf.getvalue())
    return f"s3://bucket1/{key}"


def _model_member(store, job: str, name: str) -> bytes:
    blob = store.get_bytes("bucket1", f"out/{job}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def _script_request(store, name: str, script: str, hyperparameters: dict[str, str], count: int) -> dict:
    code = _sourcedir(store, f"code/{name}/sourcedir.tar.gz", script)
    req = training_request(name)
    req["AlgorithmSpecification"]["TrainingImage"] = PYTORCH_IMAGE
    req["InputDataConfig"] = [{"ChannelName": "code", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": code.rsplit("/", 1)[0] + "/"}}}]
    req["HyperParameters"] = {"sagemaker_program": '"train.py"',
                              "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
                              **hyperparameters}
    req["ResourceConfig"]["InstanceCount"] = count
    return req


def test_create_training_job_torch_distributed_two_hosts_all_reduce_together(server, store):
    sm = server.client("sagemaker")
    sm.create_training_job(**_script_request(store, "mh-ddp", DDP_SCRIPT, {
        "sagemaker_torch_distributed_enabled": "true", "sagemaker_instance_type": '"ml.m5.xlarge"'}, 2))
    d = wait_for_status(sm, "mh-ddp", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    result = json.loads(_model_member(store, "mh-ddp", "result.json"))
    assert result["world"] == 2 and result["sum"] == 3.0  # 1 (algo-1's rank) + 2 (algo-2's rank)
    assert result["hosts"] == ["algo-1", "algo-2"]
    assert all(a.startswith("127.") for a in result["resolved"])
    import os

    if os.geteuid() == 0:  # in the job's UTS namespace, as in a SageMaker container
        assert result["names"] == ["algo-1", "algo-2"]


def test_create_training_job_mpi_two_hosts_two_ranks_each_form_one_world(server, store):
    sm = server.client("sagemaker")
    sm.create_training_job(**_script_request(store, "mh-mpi", MPI_SCRIPT, {
        "sagemaker_mpi_enabled": "true", "sagemaker_mpi_num_of_processes_per_host": "2",
        "sagemaker_mpi_custom_mpi_options": '""'}, 2))
    d = wait_for_status(sm, "mh-mpi", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    result = json.loads(_model_member(store, "mh-mpi", "result.json"))
    assert result == {"sum": 10.0, "world": 4}


def _breast_cancer(store, prefix: str, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows in ``parts`` CSV objects under ``prefix``; returns the held-out rows."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = X[idx], y[idx]
    rows = np.column_stack([y[:450], X[:450]])
    for i, chunk in enumerate(np.array_split(rows, parts)):
        buf = io.StringIO()
        np.savetxt(buf, chunk, delimiter=",", fmt="%.6g")
        store.put_bytes("bucket1", f"{prefix}/part-{i}.csv", buf.getvalue().encode())
    return X[450:], y[450:]


def _xgb_request(name: str, prefix: str, count: int, distribution: str) -> dict:
    req = training_request(name, HyperParameters={"num_round": "30", "objective": "binary:logistic",
                                                  "max_depth": "3", "tree_method": "hist"})
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
        {"S3Uri": f"s3://bucket1/{prefix}/", "S3DataDistributionType": distribution})
    req["ResourceConfig"]["InstanceCount"] = count
    return req


def _xgb_predict(store, job: str, X: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(_model_member(store, job, "xgboost-model")))
    return booster.predict(xgb.DMatrix(X))


def test_create_training_job_builtin_xgboost_two_hosts_sharded_matches_one_host(server, store):
    X_test, y_test = _breast_cancer(store, "mh/xgb", parts=4)
    sm = server.client("sagemaker")
    sm.create_training_job(**_xgb_request("mh-xgb-1", "mh/xgb", 1, "FullyReplicated"))
    sm.create_training_job(**_xgb_request("mh-xgb-2", "mh/xgb", 2, "ShardedByS3Key"))
    one, two = wait_for_status(sm, "mh-xgb-1", 300), wait_for_status(sm, "mh-xgb-2", 300)
    assert one["TrainingJobStatus"] == "Completed", one.get("FailureReason")
    assert two["TrainingJobStatus"] == "Completed", two.get("FailureReason")
    p1, p2 = _xgb_predict(store, "mh-xgb-1", X_test), _xgb_predict(store, "mh-xgb-2", X_test)
    acc1, acc2 = ((p1 > 0.5) == y_test).mean(), ((p2 > 0.5) == y_test).mean()
    assert acc1 > 0.9 and abs(acc1 - acc2) <= 0.02, (acc1, acc2)
    # Both hosts trained together: the same trees as one host on all the rows (up to the quantile sketch),
    # which a host on half of the rows would not give.
    assert np.abs(p1 - p2).max() < 0.05, np.abs(p1 - p2).max()
    final = {m["MetricName"]: m["Value"] for m in two["FinalMetricDataList"]}
    final1 = {m["MetricName"]: m["Value"] for m in one["FinalMetricDataList"]}
    assert final["train:logloss"] == pytest.approx(final1["train:logloss"], rel=0.05)
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix="mh-xgb-2/")["logStreams"]
    algo2 = next(s["logStreamName"] for s in streams if "/algo-2-" in s["logStreamName"])
    text = "\n".join(e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=algo2, startFromHead=True)["events"])
    assert "worker 1 of 2" in text, text[-2000:]


KMEANS_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"


def test_create_training_job_kmeans_two_hosts_sharded_learns_from_every_shard(server, store):
    """Each shard holds one cluster: a model fitted on algo-1's shard alone would put both centroids in it."""
    rng = np.random.default_rng(3)
    for i, centre in enumerate((0.0, 10.0)):
        buf = io.StringIO()
        np.savetxt(buf, centre + rng.normal(0, 0.3, size=(200, 2)), delimiter=",", fmt="%.5f")
        store.put_bytes("bucket1", f"mh/kmeans/part-{i}.csv", buf.getvalue().encode())
    req = training_request("mh-kmeans", HyperParameters={"k": "2", "feature_dim": "2"})
    req["AlgorithmSpecification"]["TrainingImage"] = KMEANS_IMAGE
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
        {"S3Uri": "s3://bucket1/mh/kmeans/", "S3DataDistributionType": "ShardedByS3Key"})
    req["ResourceConfig"]["InstanceCount"] = 2
    sm = server.client("sagemaker")
    sm.create_training_job(**req)
    d = wait_for_status(sm, "mh-kmeans", 300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    with np.load(io.BytesIO(_model_member(store, "mh-kmeans", "model_algo-1"))) as archive:
        centroids = np.sort(archive["centroids"][:, 0])
    assert centroids[0] == pytest.approx(0.0, abs=0.5) and centroids[1] == pytest.approx(10.0, abs=0.5)


GROUPS_SCRIPT = '''
import json, os
print("group of", os.environ["SM_CURRENT_HOST"], "=", os.environ["SM_CURRENT_INSTANCE_GROUP"], flush=True)
if os.environ["SM_CURRENT_HOST"] == "algo-1":
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "result.json"), "w") as f:
        json.dump({"resourceconfig": json.load(open("/opt/ml/input/config/resourceconfig.json")),
                   "group_hosts": json.loads(os.environ["SM_CURRENT_INSTANCE_GROUP_HOSTS"])}, f)
'''


def test_create_training_job_instance_groups_heterogeneous_cluster_hosts_per_group(server, store):
    sm = server.client("sagemaker")
    req = _script_request(store, "mh-groups", GROUPS_SCRIPT, {}, 1)
    req["ResourceConfig"] = {"VolumeSizeInGB": 10, "InstanceGroups": [
        {"InstanceGroupName": "coordinator", "InstanceType": "ml.m5.large", "InstanceCount": 1},
        {"InstanceGroupName": "workers", "InstanceType": "ml.c5.xlarge", "InstanceCount": 2}]}
    sm.create_training_job(**req)
    d = wait_for_status(sm, "mh-groups", timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    result = json.loads(_model_member(store, "mh-groups", "result.json"))
    rc = result["resourceconfig"]
    assert rc["hosts"] == ["algo-1", "algo-2", "algo-3"]
    assert (rc["current_group_name"], rc["current_instance_type"]) == ("coordinator", "ml.m5.large")
    assert rc["instance_groups"] == [
        {"instance_group_name": "coordinator", "instance_type": "ml.m5.large", "hosts": ["algo-1"]},
        {"instance_group_name": "workers", "instance_type": "ml.c5.xlarge", "hosts": ["algo-2", "algo-3"]}]
    assert result["group_hosts"] == ["algo-1"]
    streams = server.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                         logStreamNamePrefix="mh-groups/")["logStreams"]
    assert len(streams) == 3


FAILING_WORKER_SCRIPT = '''
import os, sys
import torch.distributed as dist
if os.environ["SM_CURRENT_HOST"] == "algo-2":
    sys.exit("algo-2 cannot train")
dist.init_process_group("gloo")  # waits for algo-2's ranks, which never come
'''


def test_create_training_job_one_host_fails_others_stopped_job_fails_naming_it(server, store):
    sm = server.client("sagemaker")
    sm.create_training_job(**_script_request(store, "mh-fail", FAILING_WORKER_SCRIPT, {
        "sagemaker_torch_distributed_enabled": "true"}, 2))
    started = time.time()
    d = wait_for_status(sm, "mh-fail", timeout=240)
    assert d["TrainingJobStatus"] == "Failed"
    assert "algo-2 cannot train" in d["FailureReason"] and "(host algo-2)" in d["FailureReason"]
    assert time.time() - started < 200  # not torchrun's rendezvous timeout


def test_create_training_job_builtin_xgboost_more_hosts_than_shards_trains_with_an_empty_host(server, store):
    """3 hosts, 2 objects: algo-3's shard is empty; it joins the collective with no rows (SageMaker trains
    such a job too) instead of failing, and the model still learns from both objects."""
    X_test, y_test = _breast_cancer(store, "mh/xgb3", parts=2)
    sm = server.client("sagemaker")
    sm.create_training_job(**_xgb_request("mh-xgb-3", "mh/xgb3", 3, "ShardedByS3Key"))
    d = wait_for_status(sm, "mh-xgb-3", 300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    acc = ((_xgb_predict(store, "mh-xgb-3", X_test) > 0.5) == y_test).mean()
    assert acc > 0.9, acc
