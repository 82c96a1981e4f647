"""SeaweedServer: a real ``weed`` on pinned loopback ports, requiring our credentials, keeping data."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from opensage.objects import s3 as s3_module
from opensage.objects.s3 import S3Store
from opensage.objects.seaweed import (
    PROBE_BUCKET,
    SeaweedError,
    SeaweedPorts,
    SeaweedServer,
    find_weed_binary,
    free_ports,
)

ACCESS_KEY = "RESTARTTESTKEY"
SECRET_KEY = "restart-test-secret-abcdef"


def _client(server: SeaweedServer, access_key: str, secret_key: str, **config: object):
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


def test_seaweed_wrong_secret_is_refused(seaweed: SeaweedServer) -> None:
    with pytest.raises(ClientError) as info:
        _client(seaweed, seaweed.access_key, "not-the-secret").list_buckets()
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert _client(seaweed, seaweed.access_key, seaweed.secret_key).list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_seaweed_unknown_access_key_is_refused(seaweed: SeaweedServer) -> None:
    with pytest.raises(ClientError) as info:
        _client(seaweed, "SOMEONEELSE", seaweed.secret_key).list_buckets()
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_seaweed_anonymous_write_is_refused(seaweed: SeaweedServer) -> None:
    S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key).ensure_bucket("anon-check")
    anonymous = _client(seaweed, seaweed.access_key, seaweed.secret_key, signature_version=UNSIGNED)
    with pytest.raises(ClientError) as info:
        anonymous.put_object(Bucket="anon-check", Key="k", Body=b"x")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] in (401, 403)
    with pytest.raises(ClientError):
        anonymous.list_objects_v2(Bucket="anon-check")


def test_seaweed_listens_only_on_its_pinned_loopback_ports(seaweed: SeaweedServer) -> None:
    assert seaweed.ports is not None and seaweed.pid is not None
    listening = _listening_tcp(seaweed.pid)
    assert listening, "weed has no listening TCP socket"
    assert {host for host, _ in listening} == {"127.0.0.1"}
    assert {port for _, port in listening} <= set(seaweed.ports.all())
    assert 8080 not in seaweed.ports.all()
    assert len(set(seaweed.ports.all())) == 9
    assert seaweed.ports.s3 not in {port for _, port in listening}  # clients reach weed through the proxy


def test_seaweed_put_file_above_threshold_is_uploaded_in_parts(
    seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(s3_module, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)
    store = S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key)
    store.ensure_bucket("multipart-check")
    src = tmp_path / "big"
    src.write_bytes(os.urandom(11 * 1024 * 1024))
    store.put_file("multipart-check", "big", src)
    etag = store.client.head_object(Bucket="multipart-check", Key="big")["ETag"]
    assert etag.strip('"').endswith("-3")


def test_seaweed_put_object_sse_kms_without_key_id_round_trips(seaweed: SeaweedServer) -> None:
    """What SDK v2 sends for sourcedir.tar.gz: aws:kms and no key id (AWS's default aws/s3 key)."""
    client = _client(seaweed, seaweed.access_key, seaweed.secret_key)
    S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key).ensure_bucket("sse-kms")
    client.put_object(Bucket="sse-kms", Key="code/sourcedir.tar.gz", Body=b"tarball", ServerSideEncryption="aws:kms")
    assert client.get_object(Bucket="sse-kms", Key="code/sourcedir.tar.gz")["Body"].read() == b"tarball"
    client.put_object(Bucket="sse-kms", Key="with-key", Body=b"keyed", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    assert client.get_object(Bucket="sse-kms", Key="with-key")["Body"].read() == b"keyed"


def test_seaweed_upload_file_sse_kms_multipart_round_trips(seaweed: SeaweedServer, tmp_path: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    client = _client(seaweed, seaweed.access_key, seaweed.secret_key)
    S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key).ensure_bucket("sse-kms-parts")
    src = tmp_path / "model.tar.gz"
    src.write_bytes(os.urandom(11 * 1024 * 1024))
    parts = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    client.upload_file(str(src), "sse-kms-parts", "model.tar.gz",
                       ExtraArgs={"ServerSideEncryption": "aws:kms"}, Config=parts)
    assert client.head_object(Bucket="sse-kms-parts", Key="model.tar.gz")["ETag"].strip('"').endswith("-3")
    got = client.get_object(Bucket="sse-kms-parts", Key="model.tar.gz")["Body"].read()
    assert got == src.read_bytes()


def test_seaweed_put_object_sse_s3_is_encrypted_and_round_trips(seaweed: SeaweedServer) -> None:
    client = _client(seaweed, seaweed.access_key, seaweed.secret_key)
    S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key).ensure_bucket("sse-s3")
    client.put_object(Bucket="sse-s3", Key="k", Body=b"secret bytes", ServerSideEncryption="AES256")
    got = client.get_object(Bucket="sse-s3", Key="k")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"secret bytes"
    assert (seaweed.sse_key_path.stat().st_mode & 0o777) == 0o600


def test_seaweed_fresh_start_is_ready_for_objects_and_ignores_env_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # weed would turn these into an extra admin identity if it inherited them
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEYFROMCONTROLPLANE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-from-control-plane")
    server = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY)
    try:
        server.start()
        server.wait_ready(timeout=60)
        client = _client(server, ACCESS_KEY, SECRET_KEY)
        with pytest.raises(ClientError) as missing:  # at once: no warm-up, no 500
            client.head_object(Bucket=PROBE_BUCKET, Key="never-written")
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        with pytest.raises(ClientError) as env_identity:
            _client(server, "ENVKEYFROMCONTROLPLANE", "env-secret-from-control-plane").list_buckets()
        assert env_identity.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    finally:
        server.stop(grace_seconds=1)


@pytest.mark.slow  # two weed startups: ~9 s alone, up to ~17 s on a busy 2-core machine
def test_seaweed_restart_same_data_dir_keeps_objects_and_endpoint(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY)
    try:
        server.start()
        first_startup = server.wait_ready(timeout=60)
        endpoint = server.endpoint_url
        store = S3Store(endpoint, ACCESS_KEY, SECRET_KEY)
        store.ensure_bucket("durable")
        store.put_bytes("durable", "models/m.tar.gz", b"weights")
        server.stop(grace_seconds=1)  # kill after 1 s: what a crash leaves must be enough
        assert not server.is_running()
        server.start()
        second_startup = server.wait_ready(timeout=60)
        assert server.endpoint_url == endpoint
        assert store.get_bytes("durable", "models/m.tar.gz") == b"weights"
        store.put_bytes("durable", "after-restart", b"ok")
        assert [o.key for o in store.list("durable", "")] == ["after-restart", "models/m.tar.gz"]
    finally:
        server.stop(grace_seconds=1)
    assert first_startup < 60 and second_startup < 60
    assert not (tmp_path / "sw" / "weed.pid").exists()


def test_seaweed_stale_weed_on_same_data_dir_is_reaped_on_start(tmp_path: Path) -> None:
    crashed_owner = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY)
    successor = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY)
    try:
        crashed_owner.start()
        stale_pid = crashed_owner.pid
        successor.start()  # must stop the stale weed first, or both would write the same files
        assert crashed_owner._proc is not None and crashed_owner._proc.poll() is not None
        assert successor.pid != stale_pid
        successor.wait_ready(timeout=60)
        crashed_owner.stop(grace_seconds=1)  # same ports: its cleanup must not break the successor
        client = _client(successor, ACCESS_KEY, SECRET_KEY)
        client.put_object(Bucket=PROBE_BUCKET, Key="after-cleanup", Body=b"ok")
        assert client.get_object(Bucket=PROBE_BUCKET, Key="after-cleanup")["Body"].read() == b"ok"
    finally:
        crashed_owner.stop(grace_seconds=1)
        successor.stop(grace_seconds=1)


def test_seaweed_socket_cleanup_removes_only_sockets_nobody_listens_on(tmp_path: Path) -> None:
    import tempfile

    server = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY)
    server.ports = SeaweedPorts(*free_ports(9))
    tmp = Path(tempfile.gettempdir())
    live_path = tmp / f"seaweedfs-filer-grpc-{server.ports.filer_grpc}.sock"
    dead_path = tmp / f"seaweedfs-master-grpc-{server.ports.master_grpc}.sock"
    live, dead = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        live.bind(str(live_path))
        live.listen()  # another weed that now holds this gRPC port
        dead.bind(str(dead_path))  # a leftover of ours: bound, never listening
        server._remove_sockets()
        assert live_path.is_socket() and not dead_path.exists()
    finally:
        live.close()
        dead.close()
        live_path.unlink(missing_ok=True)
        dead_path.unlink(missing_ok=True)


def test_seaweed_s3_port_in_use_raises_seaweed_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = SeaweedServer(tmp_path / "sw", port, ACCESS_KEY, SECRET_KEY)
        try:
            with pytest.raises(SeaweedError, match=f"S3 port {port}"):
                server.start()
            assert not server.is_running()
        finally:
            server.stop(grace_seconds=1)


def test_seaweed_endpoint_url_before_start_raises_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = SeaweedServer(tmp_path, 0, ACCESS_KEY, SECRET_KEY).endpoint_url


def test_find_weed_binary_returns_an_executable() -> None:
    binary = find_weed_binary()
    assert binary.name == "weed" and os.access(binary, os.X_OK)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def _listening_tcp(pid: int) -> set[tuple[str, int]]:
    """(host, port) of every TCP socket in LISTEN state owned by ``pid`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                found.add((_proc_host(local.split(":")[0]), int(local.split(":")[1], 16)))
    return found


def _proc_host(hex_addr: str) -> str:
    if len(hex_addr) == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_addr)[::-1])
    return "ipv6:" + hex_addr


_ORPHANING_OWNER = """
import os, sys
from pathlib import Path
from opensage.objects.seaweed import SeaweedServer
server = SeaweedServer(Path(sys.argv[1]), 0, "AK", "SK", die_with_parent=True)
server.start()
print(server.pid, flush=True)
os._exit(0)  # a crashed owner: no stop()
"""


def test_seaweed_die_with_parent_gets_sigterm_when_owner_dies(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    owner = subprocess.run(
        [sys.executable, "-c", _ORPHANING_OWNER, str(tmp_path / "sw")],
        capture_output=True, text=True, timeout=60, check=True,
    )
    pid = int(owner.stdout.strip())
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            log = (tmp_path / "sw" / "weed.log").read_text(errors="replace")
            if not _pid_alive(pid) or "Gracefully stopping" in log or "received signal" in log.lower():
                break
            time.sleep(0.2)
        log = (tmp_path / "sw" / "weed.log").read_text(errors="replace")
        assert not _pid_alive(pid) or "Gracefully stopping" in log, log[-2000:]
    finally:
        if _pid_alive(pid):
            os.kill(pid, 9)


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_seaweed_weed_that_keeps_dying_is_reported_down_and_stop_is_prompt(tmp_path: Path) -> None:
    import time

    crashing = tmp_path / "weed"
    crashing.write_text("#!/bin/sh\nexit 3\n")
    crashing.chmod(0o755)
    server = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY, binary=crashing)
    try:
        server.start()
        deadline = time.monotonic() + 30
        while not server.health().startswith("down") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.health().startswith("down: weed exited with code 3"), server.health()
    finally:
        started = time.monotonic()
        server.stop(grace_seconds=1)
    assert time.monotonic() - started < 5
    assert server.health() == "down: stopped"
