"""Issue 13 item 2: on a multi-machine cluster only the SigV4-checking S3 proxy faces the network (the front
host), weed's own ports stay on loopback / in their namespace, and the URL jobs get names the advertised host."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
import requests
from botocore.config import Config

from opensage.app import object_store_spec
from opensage.objects.seaweed import SeaweedServer
from opensage.settings import Settings

ACCESS_KEY = "OPENSAGEFRONTKEY"
SECRET_KEY = "opensage-front-secret-0123456789"


def non_loopback_ipv4() -> str | None:
    """This machine's first non-loopback IPv4 address (``hostname -I``), or None."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for addr in out.split():
        if "." in addr and not addr.startswith("127."):
            return addr
    return None


IP = non_loopback_ipv4()
needs_ip = pytest.mark.skipif(IP is None, reason="this machine has no non-loopback IPv4 address")


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    assert IP is not None
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-front"), 0, ACCESS_KEY, SECRET_KEY,
                           host="127.0.0.1", front_host=IP, advertise_host=IP)
    try:
        server.start()
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop(grace_seconds=2)


@needs_ip
def test_seaweed_front_host_proxy_binds_there_and_serves_sigv4(front: SeaweedServer) -> None:
    assert urlparse(front.endpoint_url).hostname == IP
    s3 = boto3.client("s3", endpoint_url=front.endpoint_url, aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    s3.create_bucket(Bucket="front-host")
    s3.put_object(Bucket="front-host", Key="channel/train.csv", Body=b"1,2,3\n")
    assert s3.get_object(Bucket="front-host", Key="channel/train.csv")["Body"].read() == b"1,2,3\n"
    anonymous = requests.get(f"{front.endpoint_url}/front-host/channel/train.csv", timeout=10)
    assert anonymous.status_code == 403


@needs_ip
def test_seaweed_front_host_weed_internal_ports_stay_on_loopback(front: SeaweedServer) -> None:
    assert front.ports is not None and front.pid is not None
    argv = Path(f"/proc/{front.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-ip=127.0.0.1" in argv and b"-ip.bind=127.0.0.1" in argv
    internal = {name: port for name, port in asdict(front.ports).items() if name != "s3" and port}
    reachable = [name for name, port in internal.items() if _accepts(IP, port)]
    assert reachable == [], f"weed's own ports answer on {IP}: {reachable}"
    assert _accepts(IP, front.ports.s3)


def test_seaweed_front_host_loopback_bind_hands_out_loopback(tmp_path: Path) -> None:
    settings = Settings.build(tmp_path / "home", host="127.0.0.1", advertise_host="10.9.8.7")
    assert settings.object_store_public_host is None
    server = SeaweedServer(tmp_path / "s3", 0, ACCESS_KEY, SECRET_KEY, front_host=settings.host,
                           advertise_host=settings.object_store_public_host)
    server.data_dir.mkdir(parents=True)
    server.ports = server._choose_ports()  # addresses only: nothing is started
    assert urlparse(server.endpoint_url).hostname == "127.0.0.1"


@needs_ip
def test_job_object_store_spec_wildcard_bind_names_advertised_host(tmp_path: Path) -> None:
    """What `opensage up --host 0.0.0.0` hands jobs: the proxy on every interface, the advertised host in
    the job's ObjectStoreSpec (not 0.0.0.0 / 127.0.0.1, which other Ray nodes cannot reach)."""
    assert IP is not None
    settings = Settings.build(tmp_path / "home", host="0.0.0.0", advertise_host=IP)
    server = SeaweedServer(tmp_path / "s3", 0, ACCESS_KEY, SECRET_KEY, host="127.0.0.1",
                           front_host=settings.host, advertise_host=settings.object_store_public_host)
    try:
        server.start()
        server.wait_ready(timeout=60)
        settings = replace(settings, s3_endpoint=server.endpoint_url)
        spec = object_store_spec(settings)
        assert urlparse(spec.endpoint_url).hostname == IP
        assert urlparse(spec.endpoint_url).port == server.ports.s3
        # ...and it answers there, signed (what a job on another node does first).
        boto3.client("s3", endpoint_url=spec.endpoint_url, aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"})).list_buckets()
    finally:
        server.stop(grace_seconds=2)
