"""`opensage up --executor ray` against a two-node Ray cluster started here (issue 13 items 1 and 5).

The cluster is this machine twice (`ray start --head` + `ray start --address`), 2 CPUs per node and no
dashboard, with Ray's token authentication on (Ray binds its GCS and raylet ports on every interface: without
a token anyone on the network could run code there); it is stopped by the PIDs of its own processes (never
`ray stop`, which would end every Ray cluster of the machine).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.conftest import free_port
from tests.e2e.conftest import ROLE, Platform, env_for, stop_platform

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RAY = str(Path(sys.executable).parent / "ray")
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
BUCKET = "sagemaker-us-east-1-000000000000"
# Small instances so two fit a 2-CPU node; ml.m5.4xlarge keeps its table size (16 vCPU): it never fits.
INSTANCE_TYPES = {"ml.m5.large": {"cpus": 1, "memory_gib": 1}}


@dataclass
class RayCluster:
    address: str
    temp_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """What every process that talks to this cluster needs (the token, as Ray reads it)."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.temp_dir / "auth_token")}

    def pids(self) -> list[int]:
        """This cluster's processes: those naming its temp dir, and everything they started."""
        roots, parents = set(), {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents[int(entry.name)] = ppid
            if str(self.temp_dir).encode() in cmdline:
                roots.add(int(entry.name))
        found, grew = set(roots), True
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    grew = True
        return sorted(found)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while time.time() < deadline and self.pids():
                time.sleep(0.2)


def _ray_start(args: list[str], cluster: RayCluster) -> None:
    ports = [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
             f"--runtime-env-agent-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]
    out = subprocess.run([RAY, "start", *args, "--num-cpus=2", f"--memory={4 * 2**30}",
                          "--object-store-memory=80000000", "--disable-usage-stats", *ports],
                         capture_output=True, text=True, timeout=120,
                         env=cluster.env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    # Short path: Ray's unix sockets live under it (108-byte limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="osray", dir="/tmp"))
    port = free_port()
    cluster = RayCluster(f"127.0.0.1:{port}", temp_dir)
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    try:
        _ray_start(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
                    f"--dashboard-port={free_port()}", f"--temp-dir={temp_dir}"], cluster)
        _ray_start([f"--address={cluster.address}"], cluster)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def start_ray_platform(home: Path, cluster: RayCluster, timeout: float = 120.0) -> Platform:
    """`opensage up --executor ray --ray-address HOST:PORT` (the e2e conftest's start, with those flags)."""
    import httpx

    home.mkdir(parents=True, exist_ok=True)
    types = home.parent / "instance-types.json"
    types.write_text(json.dumps(INSTANCE_TYPES))
    port = free_port()
    log = home / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "opensage.cli.main", "up", "--home", str(home), "--port",
                             str(port), "--executor", "ray", "--ray-address", cluster.address,
                             "--instance-types", str(types)], env=cluster.env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"opensage up exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/_opensage/health", timeout=1).status_code == 200:
                return Platform(home, url, proc, env_for(home), log)
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"opensage up did not answer in {timeout}s: {log.read_text()[-3000:]}")


def _clients(p: Platform):
    import botocore.session

    core = botocore.session.Session()
    core.set_config_variable("config_file", p.env["AWS_CONFIG_FILE"])
    core.set_config_variable("credentials_file", p.env["AWS_SHARED_CREDENTIALS_FILE"])
    core.set_config_variable("profile", "opensage")
    session = boto3.Session(botocore_session=core)
    cfg = Config(retries={"max_attempts": 2})
    return session.client("sagemaker", config=cfg), session.client("s3", config=cfg)


def _upload_breast_cancer(s3) -> str:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    buf = io.StringIO()
    writer = csv.writer(buf)
    for x, y in zip(data.data, data.target, strict=True):
        writer.writerow([int(y), *(f"{v:.6g}" for v in x)])
    s3.put_object(Bucket=BUCKET, Key="ray/train/train.csv", Body=buf.getvalue().encode())
    return f"s3://{BUCKET}/ray/train/"


def _create_xgboost(sm, name: str, train_uri: str, instance_type: str = "ml.m5.large", rounds: int = 20,
                    count: int = 1) -> None:
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"objective": "binary:logistic", "num_round": str(rounds), "max_depth": "3"},
        InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": train_uri,
                             "S3DataDistributionType": "FullyReplicated"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/ray/out"},
        ResourceConfig={"InstanceType": instance_type, "InstanceCount": count, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600})


def _wait(sm, name: str, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.5)
    raise AssertionError(f"{name} did not finish")


def _placement_groups(cluster: RayCluster, home: Path) -> list[dict]:
    """This platform's placement groups as Ray records them (removed ones included), read by a driver of
    its own in a subprocess (this test process stays out of Ray)."""
    code = ("import json, ray, sys\n"
            "from ray.util.placement_group import placement_group_table\n"
            "ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)\n"
            "rows = [dict(name=v['name'], state=v['state'], strategy=v['strategy'],\n"
            "        bundles=list(v['bundles'].values()), nodes=list(v['bundles_to_node_id'].values()))\n"
            "        for v in placement_group_table().values() if v['name'].startswith(sys.argv[2])]\n"
            "print(json.dumps(rows))\n")
    from opensage.executors.ray import namespace_for

    out = _ray_driver(cluster, code, namespace_for(home), check=True)
    # Ray may print its own notices on stdout too (e.g. about a node that just died): the JSON line is ours.
    return json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("[")))


def _cluster_usage(cluster: RayCluster) -> str:
    """What holds the cluster's resources (for a failure message): free resources per node and every placement
    group not removed, of any platform."""
    code = ("import json, ray, sys\n"
            "from ray.util.placement_group import placement_group_table\n"
            "from ray._private.state import available_resources_per_node\n"
            "ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)\n"
            "pgs = [(v['name'], v['state'], list(v['bundles_to_node_id'].values()))\n"
            "       for v in placement_group_table().values() if v['state'] != 'REMOVED']\n"
            "print(json.dumps({'free': available_resources_per_node(), 'groups': pgs}))\n")
    out = _ray_driver(cluster, code)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]


def _ray_driver(cluster: RayCluster, code: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``code`` as a Ray driver of its own in a subprocess (this test process stays out of Ray); argv[1]
    is the cluster's address, then ``args``."""
    return subprocess.run([sys.executable, "-c", code, cluster.address, *args], capture_output=True, text=True,
                          timeout=120, check=check, env=cluster.env)


def _assert_no_groups_left(cluster: RayCluster, home: Path) -> None:
    """After the platform of ``home`` stopped: none of its placement groups outlives it (a finished job's would
    hold its CPUs on the cluster for ever; the node-loss test could then not place a replacement replica)."""
    left = [g for g in _placement_groups(cluster, home) if g["state"] != "REMOVED"]
    assert left == [], left


def test_create_training_job_on_ray_executor_placed_completed_and_adopted_after_restart(ray_cluster, tmp_path):
    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        sm, s3 = _clients(p)
        train = _upload_breast_cancer(s3)
        _create_xgboost(sm, "ray-xgb", train)
        done = _wait(sm, "ray-xgb")
        assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
        key = done["ModelArtifacts"]["S3ModelArtifacts"].split(f"{BUCKET}/", 1)[1]
        assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0
        assert any(m["MetricName"] == "train:logloss" for m in done.get("FinalMetricDataList", []))
        groups = _placement_groups(ray_cluster, home)
        # One bundle sized from the operator's ml.m5.large row (1 CPU, 1 GiB), removed once the job ended.
        assert len(groups) == 1, groups
        assert groups[0]["bundles"] == [{"CPU": 1.0, "memory": float(2**30)}]
        assert groups[0]["strategy"] == "PACK"
        deadline = time.time() + 30
        while _placement_groups(ray_cluster, home)[0]["state"] != "REMOVED":
            assert time.time() < deadline, "the finished job's placement group was never removed"
            time.sleep(1)

        # Adoption: the control plane dies while a job runs on Ray; the next `up` finds its actor again.
        _create_xgboost(sm, "ray-adopt", train, rounds=3000)
        jobdir = home / "jobs" / "ray-adopt" / "algo-1"
        deadline = time.time() + 120
        while not (jobdir / "agent.pid").exists():
            assert time.time() < deadline, "the agent never started on Ray"
            time.sleep(0.2)
        os.kill(p.proc.pid, signal.SIGKILL)
        p.proc.wait()
    finally:
        stop_platform(p)
    p2 = start_ray_platform(home, ray_cluster)
    try:
        sm, _ = _clients(p2)
        adopted = _wait(sm, "ray-adopt")
        assert adopted["TrainingJobStatus"] == "Completed", adopted.get("FailureReason")
        assert "ModelArtifacts" in adopted
    finally:
        stop_platform(p2)


_UNRECORDED_LAUNCH = r"""
import json, os, sys, time
from pathlib import Path
from opensage.executors.instance_types import InstanceTypes
from opensage.executors.ray import RayExecutor
from opensage.runner.jobspec import JobSpec, ObjectStoreSpec

address, root, types = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
jobdir = root / "unrecorded" / "algo-1"
(jobdir / "ml" / "input" / "config").mkdir(parents=True)
(root / "store" / "bkt").mkdir(parents=True)
JobSpec(job_name="unrecorded", job_arn="arn:aws:sagemaker:us-east-1:000000000000:training-job/unrecorded",
        kind="training", command=[sys.executable, "-c", "import time; print('started', flush=True); time.sleep(300)"],
        environment={}, channels=[], object_store=ObjectStoreSpec(f"file://{root / 'store'}"),
        model_s3_uri="s3://bkt/out/model.tar.gz", output_s3_uri="s3://bkt/out/output.tar.gz").write(jobdir)
namespace = "osr-unrecorded"
first = RayExecutor(address, namespace, InstanceTypes.load(types))
handle = first.submit(jobdir)  # the control plane that submits this dies before saving the handle
log = jobdir / "logs" / "algo-1.log"
deadline = time.time() + 90
while not (log.exists() and b"started" in log.read_bytes()):
    assert time.time() < deadline, "the job never started"
    time.sleep(0.1)
pid = int((jobdir / "agent.pid").read_text().split()[0])
second = RayExecutor(address, namespace, InstanceTypes.load(types))  # the next control plane: no handle
ended = second.end_agent_in(jobdir)
gone = not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
print(json.dumps({"ended": ended, "agent_gone": gone, "running": first.is_running(handle),
                  "again": second.end_agent_in(jobdir)}))
first.kill(handle)
"""


def test_agent_of_a_launch_no_handle_was_recorded_for_is_ended_on_its_ray_node(ray_cluster, tmp_path):
    """A control plane killed between submitting a job's agent to Ray and saving its handle: the next one, about
    to launch the job again, asks every node's launcher to end that agent first (without it, the relaunch
    deleted the job's files under the running agent, and the launcher refused to start a second one for the
    same directory, so the old agent's result concluded the new launch)."""
    types = tmp_path / "instance-types.json"
    types.write_text(json.dumps(INSTANCE_TYPES))
    out = _ray_driver(ray_cluster, _UNRECORDED_LAUNCH, str(tmp_path), str(types))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"ended": True, "agent_gone": True, "running": False, "again": False}, result


def test_create_training_job_larger_than_cluster_waits_with_insufficient_capacity_then_stops(ray_cluster,
                                                                                           tmp_path):
    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        sm, s3 = _clients(p)
        train = _upload_breast_cancer(s3)
        _create_xgboost(sm, "ray-too-big", train, instance_type="ml.m5.4xlarge")  # 16 vCPU: no node has it
        deadline = time.time() + 60
        while True:
            d = sm.describe_training_job(TrainingJobName="ray-too-big")
            messages = [t.get("StatusMessage", "") for t in d.get("SecondaryStatusTransitions", [])]
            if any("Insufficient capacity" in m for m in messages):
                break
            assert time.time() < deadline, f"no capacity message: {d.get('SecondaryStatusTransitions')}"
            time.sleep(0.5)
        assert d["TrainingJobStatus"] == "InProgress"
        assert d["SecondaryStatus"] == "LaunchingMLInstances"
        assert "ml.m5.4xlarge" in d["SecondaryStatusTransitions"][-1]["StatusMessage"]
        assert not (home / "jobs" / "ray-too-big" / "algo-1" / "agent.pid").exists()  # never started
        sm.stop_training_job(TrainingJobName="ray-too-big")
        stopped = _wait(sm, "ray-too-big", timeout=60)
        assert stopped["TrainingJobStatus"] == "Stopped"
    finally:
        stop_platform(p)


def test_create_training_job_two_hosts_on_two_nodes_strict_spread(ray_cluster, tmp_path):
    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        sm, s3 = _clients(p)
        train = _upload_breast_cancer(s3)
        _create_xgboost(sm, "ray-two-hosts", train, count=2, rounds=2000)
        deadline = time.time() + 60
        while True:
            groups = [g for g in _placement_groups(ray_cluster, home) if g["state"] == "CREATED"]
            if groups:
                break
            assert time.time() < deadline, "the two-host job was never placed"
            time.sleep(0.5)
        # One bundle per host, each on its own node (both nodes could hold both: PACK would share one).
        assert groups[0]["strategy"] == "STRICT_SPREAD"
        assert len(groups[0]["bundles"]) == 2 and len(set(groups[0]["nodes"])) == 2
        sm.stop_training_job(TrainingJobName="ray-two-hosts")
        # The job's outcome is multi-host training's business (issue 13 item 3); here: it ends, and its
        # placement group goes with it.
        _wait(sm, "ray-two-hosts", timeout=120)
        deadline = time.time() + 30
        while _placement_groups(ray_cluster, home)[0]["state"] != "REMOVED":
            assert time.time() < deadline, "the ended job's placement group was never removed"
            time.sleep(1)
    finally:
        stop_platform(p)


SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def test_create_processing_job_on_ray_executor_runs_and_uploads_output(ray_cluster, tmp_path):
    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        sm, s3 = _clients(p)
        script = ("import os\n"
                  "os.makedirs('/opt/ml/processing/output', exist_ok=True)\n"
                  "ray = sorted(k for k in os.environ if k.startswith('RAY_'))\n"
                  "open('/opt/ml/processing/output/where.txt', 'w').write(','.join(ray) or 'none')\n")
        s3.put_object(Bucket=BUCKET, Key="ray/proc/code/proc.py", Body=script.encode())
        sm.create_processing_job(
            ProcessingJobName="ray-proc", RoleArn=ROLE,
            AppSpecification={"ImageUri": SKLEARN_IMAGE,
                              "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/proc.py"]},
            ProcessingInputs=[{"InputName": "code", "S3Input": {
                "S3Uri": f"s3://{BUCKET}/ray/proc/code", "LocalPath": "/opt/ml/processing/input/code",
                "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
            ProcessingOutputConfig={"Outputs": [{"OutputName": "out", "S3Output": {
                "S3Uri": f"s3://{BUCKET}/ray/proc/out", "LocalPath": "/opt/ml/processing/output",
                "S3UploadMode": "EndOfJob"}}]},
            ProcessingResources={"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                   "VolumeSizeInGB": 10}},
            StoppingCondition={"MaxRuntimeInSeconds": 600})
        deadline = time.time() + 240
        while (d := sm.describe_processing_job(ProcessingJobName="ray-proc"))["ProcessingJobStatus"] in (
                "InProgress", "Stopping"):
            assert time.time() < deadline, "processing job did not finish"
            time.sleep(0.5)
        assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
        body = s3.get_object(Bucket=BUCKET, Key="ray/proc/out/where.txt")["Body"].read()
        assert body == b"none"  # the job's code gets none of Ray's settings (address, token path)
        groups = _placement_groups(ray_cluster, home)
        assert [g["bundles"] for g in groups] == [[{"CPU": 1.0, "memory": float(2**30)}]]
    finally:
        stop_platform(p)


def test_create_transform_job_on_ray_executor_scores_every_record(ray_cluster, tmp_path):
    from tests.modelfiles import breast_cancer_xgb

    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        sm, s3 = _clients(p)
        model_tar, X, _, _ = breast_cancer_xgb(rounds=10)
        s3.put_object(Bucket=BUCKET, Key="ray/tf/model.tar.gz", Body=model_tar)
        rows = "\n".join(",".join(f"{v:.6g}" for v in x) for x in X[:50]) + "\n"
        s3.put_object(Bucket=BUCKET, Key="ray/tf/in/data.csv", Body=rows.encode())
        sm.create_model(ModelName="ray-xgb-model", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/ray/tf/model.tar.gz"})
        sm.create_transform_job(
            TransformJobName="ray-tf", ModelName="ray-xgb-model",
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                            "S3Uri": f"s3://{BUCKET}/ray/tf/in"}},
                            "ContentType": "text/csv", "SplitType": "Line"},
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/ray/tf/out", "AssembleWith": "Line"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
        deadline = time.time() + 240
        while (d := sm.describe_transform_job(TransformJobName="ray-tf"))["TransformJobStatus"] in (
                "InProgress", "Stopping"):
            assert time.time() < deadline, "transform job did not finish"
            time.sleep(0.5)
        assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
        out = s3.get_object(Bucket=BUCKET, Key="ray/tf/out/data.csv.out")["Body"].read().decode()
        scores = [float(v) for v in out.split()]
        assert len(scores) == 50 and all(0.0 <= v <= 1.0 for v in scores)
        groups = _placement_groups(ray_cluster, home)
        assert [g["bundles"] for g in groups] == [[{"CPU": 1.0, "memory": float(2**30)}]]
    finally:
        stop_platform(p)


def _runtime(p: Platform):
    """sagemaker-runtime without client retries: a request the platform failed must count as failed."""
    import botocore.session

    core = botocore.session.Session()
    core.set_config_variable("config_file", p.env["AWS_CONFIG_FILE"])
    core.set_config_variable("credentials_file", p.env["AWS_SHARED_CREDENTIALS_FILE"])
    core.set_config_variable("profile", "opensage")
    return boto3.Session(botocore_session=core).client(
        "sagemaker-runtime", config=Config(retries={"total_max_attempts": 1}, read_timeout=30))


def _raylet(cluster: RayCluster, node_id: str) -> tuple[int, bool]:
    """The pid of node ``node_id``'s raylet, and whether it is the head node's."""
    for pid in cluster.pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg == f"--node_id={node_id}".encode() for arg in cmdline) and b"raylet" in cmdline[0]:
            return pid, b"--head" in cmdline
    raise AssertionError(f"no raylet of node {node_id}")


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


def _subtree(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grew = {root}, True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


def _model_servers_under(pids: list[int], model_marker: str) -> list[int]:
    out = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"opensage.serving.model_server" in cmdline and model_marker.encode() in cmdline:
            out.append(pid)
    return out


def test_sdk_pytorch_torch_distributed_two_hosts_on_two_nodes_all_reduce_together(ray_cluster, tmp_path,
                                                                                   monkeypatch):
    """Issue 13 item 5: the unmodified SDK's PyTorch(instance_count=2, torch_distributed) on the Ray executor:
    the two hosts are placed on the two nodes and their ranks all-reduce together (gloo over the nodes'
    addresses), DDP keeping the replicas' weights identical."""
    import sagemaker
    from sagemaker.pytorch import PyTorch

    from tests.e2e.test_multi_host_training import DDP_SCRIPT, _model_dir

    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        session = _sdk_session(p, monkeypatch)
        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text(DDP_SCRIPT)
        image = sagemaker.image_uris.retrieve("pytorch", "us-east-1", version="2.3", py_version="py311",
                                              instance_type="ml.m5.large", image_scope="training")
        est = PyTorch(entry_point="train.py", source_dir=str(src), role=ROLE, image_uri=image,
                      instance_count=2, instance_type="ml.m5.large", sagemaker_session=session,
                      output_path=f"s3://{BUCKET}/ray/ddp/out",
                      distribution={"torch_distributed": {"enabled": True}})
        est.fit(wait=False)
        deadline = time.time() + 120
        while True:  # placed while it runs: one bundle per host, each host on its own node
            groups = [g for g in _placement_groups(ray_cluster, home) if g["state"] == "CREATED"]
            if groups:
                break
            assert time.time() < deadline, "the two-host job was never placed"
            time.sleep(0.5)
        assert groups[0]["strategy"] == "STRICT_SPREAD" and len(set(groups[0]["nodes"])) == 2, groups
        desc = _wait(session.sagemaker_client, est.latest_training_job.name, timeout=900)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        result = json.loads((_model_dir(session, desc["ModelArtifacts"]["S3ModelArtifacts"], tmp_path)
                             / "result.json").read_text())
        assert result["world"] == 2 and result["sum"] == 3.0 and result["same_weights"]
        assert result["hosts"] == ["algo-1", "algo-2"]
    finally:
        stop_platform(p)
    _assert_no_groups_left(ray_cluster, home)  # stopped within a second of the job's end (seen)


def test_sdk_builtin_xgboost_two_hosts_on_two_nodes_sharded_matches_one_host(ray_cluster, tmp_path, monkeypatch):
    """Issue 13 item 5: distributed built-in XGBoost (ShardedByS3Key, the Rabit tracker on algo-1) across the
    two Ray nodes, with the model quality of one host on the same data."""

    from tests.e2e.test_multi_host_training import xgboost_one_host_vs_two_sharded

    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        session = _sdk_session(p, monkeypatch)
        xgboost_one_host_vs_two_sharded(session, tmp_path)
    finally:
        stop_platform(p)
    _assert_no_groups_left(ray_cluster, home)  # stopped within a second of its last job's end


def test_sdk_spot_job_on_ray_host_lost_twice_completes_from_checkpoints(ray_cluster, tmp_path, monkeypatch):
    """Issue 13 items 4/5 on the Ray executor: a managed-spot job whose host is lost twice (its agent and the
    user's process killed on their node: what a node's death does to them) is Interrupted → Restarting, placed
    again and completes from its last S3 checkpoint; BillableTimeInSeconds ≤ TrainingTimeInSeconds."""
    import sagemaker
    from sagemaker.pytorch import PyTorch

    from tests.e2e.test_spot_interruptions import SCRIPT, _checkpoint_epoch

    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    try:
        session = _sdk_session(p, monkeypatch)
        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text(SCRIPT)
        checkpoints = f"s3://{BUCKET}/ray/spot/checkpoints"
        est = PyTorch(entry_point="train.py", source_dir=str(src), role=ROLE, framework_version="2.3",
                      py_version="py311", instance_count=1, instance_type="ml.m5.large",
                      sagemaker_session=session, output_path=f"s3://{BUCKET}/ray/spot/out",
                      hyperparameters={"epochs": 40}, use_spot_instances=True, max_run=900, max_wait=1800,
                      checkpoint_s3_uri=checkpoints)
        est.fit(wait=False)
        name = est.latest_training_job.name
        agent_pid = home / "jobs" / name / "algo-1" / "agent.pid"
        seen = 0
        for lost in (1, 2):
            deadline = time.time() + 600  # the first start builds the PyTorch environment
            while (epoch := _checkpoint_epoch(session, checkpoints)) <= seen and time.time() < deadline:
                time.sleep(1)
            assert epoch > seen, "no new checkpoint reached S3"
            seen = epoch
            agent = int(agent_pid.read_text().split()[0])
            for pid in _subtree(agent):  # the host is gone: its agent and everything it started
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 180
            while True:
                desc = est.latest_training_job.describe()
                statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
                if statuses.count("Restarting") >= lost and desc["SecondaryStatus"] == "Training":
                    break
                assert desc["TrainingJobStatus"] == "InProgress", desc.get("FailureReason")
                assert time.time() < deadline, f"not restarted after host loss {lost}: {statuses}"
                time.sleep(1)
        desc = _wait(session.sagemaker_client, name, timeout=600)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
        assert statuses.count("Interrupted") == 2 and statuses.count("Restarting") == 2, statuses
        assert 1 <= desc["BillableTimeInSeconds"] <= desc["TrainingTimeInSeconds"]
        local = sagemaker.s3.S3Downloader.download(desc["ModelArtifacts"]["S3ModelArtifacts"], str(tmp_path),
                                                   sagemaker_session=session)[0]
        with tarfile.open(local) as tar:
            state = json.load(tar.extractfile("state.json"))
        assert state["epoch"] == 40 and len(state["starts"]) == 3 and state["starts"][0] == 0, state
        assert 0 < state["starts"][1] < state["starts"][2] < 40, state
    finally:
        stop_platform(p)


def test_invoke_endpoint_two_replicas_on_two_nodes_survives_node_loss_and_replica_is_replaced(ray_cluster,
                                                                                               tmp_path):
    """Last in this file: it kills a node (and starts a fresh one for whatever runs next)."""
    import threading

    from tests.modelfiles import breast_cancer_xgb

    home = tmp_path / "home"
    p = start_ray_platform(home, ray_cluster)
    stop = threading.Event()
    try:
        sm, s3 = _clients(p)
        runtime = _runtime(p)
        model_tar, X, _, _ = breast_cancer_xgb(rounds=10)
        s3.put_object(Bucket=BUCKET, Key="ray/ep/model.tar.gz", Body=model_tar)
        sm.create_model(ModelName="ray-ep-model", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/ray/ep/model.tar.gz"})
        sm.create_endpoint_config(EndpointConfigName="ray-ep-config", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "ray-ep-model", "InitialInstanceCount": 2,
            "InstanceType": "ml.m5.large"}])
        sm.create_endpoint(EndpointName="ray-ep", EndpointConfigName="ray-ep-config")
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ray-ep",
                                                  WaiterConfig={"Delay": 1, "MaxAttempts": 240})
        row = ",".join(f"{v:.6g}" for v in X[0])
        answer = runtime.invoke_endpoint(EndpointName="ray-ep", ContentType="text/csv", Body=row)
        assert 0.0 <= float(answer["Body"].read()) <= 1.0

        # One bundle per replica, sized from ml.m5.large, on two different nodes.
        groups = [g for g in _placement_groups(ray_cluster, home) if g["state"] == "CREATED"]
        assert len(groups) == 2 and all(g["bundles"] == [{"CPU": 1.0, "memory": float(2**30)}] for g in groups)
        nodes = {g["nodes"][0] for g in groups}
        assert len(nodes) == 2, groups

        ok, failures = [0], []

        def load() -> None:
            while not stop.is_set():
                try:
                    body = runtime.invoke_endpoint(EndpointName="ray-ep", ContentType="text/csv", Body=row)["Body"]
                    float(body.read())
                    ok[0] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is the test's business
                    failures.append(repr(exc))

        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(2)
        # The node loss: the worker node's raylet and everything under it (its Ray workers, the model server
        # there). Not the head: the platform's driver is attached to the head node's raylet.
        raylets = {n: _raylet(ray_cluster, n) for n in nodes}
        victim = next(n for n, (_, head) in raylets.items() if not head)
        survivor = next(n for n in nodes if n != victim)
        doomed = _subtree(raylets[victim][0])
        assert _model_servers_under(doomed, "--model-dir"), "the victim node runs no model server"
        before = ok[0]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Replaced elsewhere: two placed replica groups again, both on the surviving node.
        deadline = time.time() + 180
        while True:
            groups = _placement_groups(ray_cluster, home)
            live = [g for g in groups if g["state"] == "CREATED"]
            if len(live) == 2 and all(g["nodes"][0] == survivor for g in live):
                break
            assert time.time() < deadline, (f"replica not replaced; survivor {survivor}, groups {groups}; "
                                            f"cluster: {_cluster_usage(ray_cluster)}; "
                                            f"platform log:\n{_tail(home / 'up.log', 40)}")
            time.sleep(2)
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ray-ep",
                                                  WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        time.sleep(5)  # load keeps flowing over the new replica too
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert failures == [], failures[:5]
        assert ok[0] > before + 10
        d = sm.describe_endpoint(EndpointName="ray-ep")
        assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 2
        sm.delete_endpoint(EndpointName="ray-ep")
    finally:
        stop.set()
        stop_platform(p)
        _ray_start([f"--address={ray_cluster.address}"], ray_cluster)  # the lost node's stand-in


def _sdk_session(p: Platform, monkeypatch):
    """A SageMaker SDK session the way a user gets one: the environment `opensage env` prints (the profile and
    the client guard that answers any AWS endpoint the SDK names itself, e.g. STS's regional one, locally)."""
    import sagemaker

    for key, value in p.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return sagemaker.Session()
