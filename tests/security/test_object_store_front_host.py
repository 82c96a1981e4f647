"""Issue 13 item 2: `opensage up --host <a non-loopback address>` serves S3 on that address (so Ray nodes on
other machines fetch their channels) with SigV4 on every request, and nothing else the platform starts
listens unauthenticated there: weed's master, volume and filer ports stay on loopback / in their namespace."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import boto3
import psutil
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from opensage.cli.clientconfig import config_paths
from tests.unit.objects.test_seaweed_front import non_loopback_ipv4

IP = non_loopback_ipv4()
pytestmark = [pytest.mark.e2e, pytest.mark.slow,
              pytest.mark.skipif(IP is None, reason="this machine has no non-loopback IPv4 address")]
BUCKET = "front-host-channels"


@dataclass
class Up:
    home: Path
    proc: subprocess.Popen
    port: int
    s3_url: str
    key: tuple[str, str]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    assert IP is not None
    home = tmp_path_factory.mktemp("front-home")
    port = _free_port(IP)
    log = home / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSAGE_", "AWS_"))}
    proc = subprocess.Popen([sys.executable, "-m", "opensage.cli.main", "up", "--home", str(home), "--host", IP,
                             "--port", str(port)], stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"opensage up exited: {log.read_text()[-3000:]}")
            try:
                if requests.get(f"http://{IP}:{port}/_opensage/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"opensage up did not answer: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        config = config_paths(home)["config"].read_text()
        s3_url = re.search(r"^s3 =\n  endpoint_url = (\S+)$", config, re.M).group(1)
        creds = json.loads((home / "credentials.json").read_text())
        yield Up(home, proc, port, s3_url, (creds["access_key"], creds["secret_key"]))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _s3(url: str, key: tuple[str, str]):  # noqa: ANN202
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_up_host_serves_s3_with_sigv4_on_that_address(up: Up) -> None:
    assert urlparse(up.s3_url).hostname == IP  # what clients and jobs on other nodes are handed
    s3 = _s3(up.s3_url, up.key)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="train/data.csv", Body=b"0,1\n1,0\n")
    assert s3.get_object(Bucket=BUCKET, Key="train/data.csv")["Body"].read() == b"0,1\n1,0\n"


def test_up_host_s3_refuses_anonymous_and_wrongly_signed_requests(up: Up) -> None:
    s3 = _s3(up.s3_url, up.key)
    s3.create_bucket(Bucket=BUCKET + "-anon")
    s3.put_object(Bucket=BUCKET + "-anon", Key="secret", Body=b"only signed")
    assert requests.get(f"{up.s3_url}/{BUCKET}-anon/secret", timeout=10).status_code == 403
    assert requests.get(f"{up.s3_url}/", timeout=10).status_code == 403
    assert requests.put(f"{up.s3_url}/{BUCKET}-anon/planted", data=b"x", timeout=10).status_code == 403
    with pytest.raises(ClientError) as refused:
        _s3(up.s3_url, (up.key[0], "not-the-secret")).get_object(Bucket=BUCKET + "-anon", Key="secret")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET + "-anon", Key="planted")


def test_up_host_weed_internal_ports_unreachable_on_that_address(up: Up) -> None:
    ports = json.loads(next(up.home.rglob("ports.json")).read_text())
    s3_port = urlparse(up.s3_url).port
    assert ports["s3"] == s3_port and _accepts(IP, s3_port)
    open_internal = {name: p for name, p in ports.items() if name != "s3" and p and _accepts(IP, p)}
    assert open_internal == {}, f"weed's own ports answer on {IP}: {open_internal}"


def test_up_host_listens_on_that_address_only_with_signed_services(up: Up) -> None:
    """Every listener the platform's process tree has off loopback is the control plane or the S3 proxy,
    both SigV4-checked (an unsigned control-plane call is refused too)."""
    s3_port = urlparse(up.s3_url).port
    tree = [psutil.Process(up.proc.pid), *psutil.Process(up.proc.pid).children(recursive=True)]
    exposed = set()
    for proc in tree:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN and not c.laddr.ip.startswith(("127.", "::1")):
                exposed.add(c.laddr.port)
    assert exposed == {up.port, s3_port}
    unsigned = requests.post(f"http://{IP}:{up.port}/", headers={"X-Amz-Target": "SageMaker.ListTrainingJobs",
                                                                "Content-Type": "application/x-amz-json-1.1"},
                             data=b"{}", timeout=10)
    assert unsigned.status_code in (400, 403) and "ListTrainingJobs" not in unsigned.text
