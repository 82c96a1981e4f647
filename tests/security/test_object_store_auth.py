"""Security regressions of the object store (issue 7 items 1, 5, 9): the S3 proxy is the only way in, every
request's signature and body are checked there, jobs' temporary credentials work only while the job runs,
and a killed SeaweedFS comes back by itself with its objects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError

from opensage.credentials import CredentialAuthority
from opensage.objects.s3 import S3Store
from opensage.objects.seaweed import SeaweedServer
from opensage.settings import Credentials

ACCESS_KEY, SECRET_KEY = "AKIASECURITYTEST0001", "security-test-secret-0123456789"
BUCKET = "security-checks"
ENDED: set[str] = set()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    authority = CredentialAuthority(Credentials(ACCESS_KEY, SECRET_KEY), is_active=lambda o: o not in ENDED)
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-sec"), 0, ACCESS_KEY, SECRET_KEY, authority=authority)
    try:
        server.start()
        server.wait_ready(timeout=60)
        S3Store(server.endpoint_url, ACCESS_KEY, SECRET_KEY).ensure_bucket(BUCKET)
        yield server
    finally:
        server.stop(grace_seconds=2)


def _client(server: SeaweedServer, ak: str = ACCESS_KEY, sk: str = SECRET_KEY, token: str | None = None):  # noqa: ANN202
    return boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=ak, aws_secret_access_key=sk,
                        aws_session_token=token, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def _missing(server: SeaweedServer, key: str) -> bool:
    try:
        _client(server).head_object(Bucket=BUCKET, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def _signed_put(server: SeaweedServer, key: str, body: bytes) -> dict[str, str]:
    request = AWSRequest(method="PUT", url=f"{server.endpoint_url}/{BUCKET}/{key}", data=body)
    S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


# -- item 1: the signature covers the body -----------------------------------------------------------
def test_object_store_put_body_other_than_signed_hash_is_refused_and_not_stored(store: SeaweedServer) -> None:
    headers = _signed_put(store, "tampered", b"what was signed")
    answer = requests.put(f"{store.endpoint_url}/{BUCKET}/tampered", data=b"something else", headers=headers,
                          timeout=30)
    assert answer.status_code == 400 and "XAmzContentSHA256Mismatch" in answer.text
    assert _missing(store, "tampered")


def test_object_store_replayed_put_with_other_body_does_not_overwrite(store: SeaweedServer) -> None:
    headers = _signed_put(store, "replayed", b"original")
    assert requests.put(f"{store.endpoint_url}/{BUCKET}/replayed", data=b"original", headers=headers,
                        timeout=30).status_code == 200
    replay = requests.put(f"{store.endpoint_url}/{BUCKET}/replayed", data=b"attacker", headers=headers, timeout=30)
    assert replay.status_code == 400
    assert _client(store).get_object(Bucket=BUCKET, Key="replayed")["Body"].read() == b"original"


def test_object_store_large_put_with_other_body_is_refused_and_not_stored(store: SeaweedServer) -> None:
    body = os.urandom(3 * 1024 * 1024)  # several pieces: all but the last already went to weed
    headers = _signed_put(store, "tampered-large", body)
    answer = requests.put(f"{store.endpoint_url}/{BUCKET}/tampered-large", data=body[:-1] + b"!", headers=headers,
                          timeout=30)
    assert answer.status_code == 400
    assert _missing(store, "tampered-large")


# -- temporary credentials ---------------------------------------------------------------------------
def test_object_store_temporary_credentials_work_until_their_job_ends(store: SeaweedServer) -> None:
    temp = store.authority.issue("training-job/sec-job/1")
    job = _client(store, temp.access_key_id, temp.secret_access_key, temp.session_token)
    job.put_object(Bucket=BUCKET, Key="from-job", Body=b"model")
    assert job.get_object(Bucket=BUCKET, Key="from-job")["Body"].read() == b"model"
    url = job.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "from-job"})
    assert requests.get(url, timeout=30).content == b"model"
    with pytest.raises(ClientError) as no_token:
        _client(store, temp.access_key_id, temp.secret_access_key).list_buckets()
    assert no_token.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    ENDED.add("training-job/sec-job/1")
    store.authority.revoke("training-job/sec-job/1")
    with pytest.raises(ClientError) as ended:
        job.get_object(Bucket=BUCKET, Key="from-job")
    assert ended.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)
    assert requests.get(url, timeout=30).status_code in (400, 403)


# -- item 5: no way around the proxy -----------------------------------------------------------------
def _anonymous_answer(port: int, method: str, path: str) -> str:
    try:
        answer = requests.request(method, f"http://127.0.0.1:{port}{path}", data=b"x", timeout=3)
    except requests.ConnectionError:
        return "refused"
    return str(answer.status_code)


@pytest.mark.parametrize("name", ["master", "volume", "filer", "s3_backend", "master_grpc", "volume_grpc",
                                  "filer_grpc", "s3_grpc"])
def test_object_store_internal_port_refuses_anonymous_access(store: SeaweedServer, name: str) -> None:
    assert store.ports is not None
    port = getattr(store.ports, name)
    path = "/dir/assign" if name == "master" else f"/{BUCKET}/anonymous"
    for method in ("GET", "PUT", "DELETE"):
        assert _anonymous_answer(port, method, path) in ("refused", "401", "403"), (name, method)
    _client(store).put_object(Bucket=BUCKET, Key="via-proxy", Body=b"ok")  # the S3 API still works


_OTHER_USER_CONNECT = """
import os, socket, sys
os.setgid(65534); os.setuid(65534)
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        print("CONNECTED", path)
    except OSError as exc:
        print("refused", path, exc.errno)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_object_store_unix_sockets_refuse_other_users(store: SeaweedServer) -> None:
    assert store.ports is not None
    p = store.ports
    tmp = Path(tempfile.gettempdir())
    sockets = [str(tmp / f"seaweedfs-{kind}-grpc-{port}.sock") for kind, port in
               (("master", p.master_grpc), ("volume", p.volume_grpc), ("filer", p.filer_grpc), ("s3", p.s3_grpc))]
    sockets += [store._socket_path("s3", p.s3_backend), store._socket_path("filer", p.filer)]
    out = subprocess.run([sys.executable, "-c", _OTHER_USER_CONNECT, *sockets], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "CONNECTED" not in out, out


def test_object_store_without_namespace_protects_volume_and_filer_with_jwt(tmp_path: Path) -> None:
    """The fallback where no namespace can be created (e.g. user namespaces disabled)."""
    server = SeaweedServer(tmp_path / "sw", 0, ACCESS_KEY, SECRET_KEY, protection="jwt")
    try:
        server.start()
        server.wait_ready(timeout=60)
        assert server.protection == "jwt" and server.ports is not None
        assert (server.data_dir / "security.toml").stat().st_mode & 0o777 == 0o600
        for port in (server.ports.volume, server.ports.filer):
            assert _anonymous_answer(port, "GET", "/x/y") in ("401", "403")
        _client(server).put_object(Bucket="opensage-readiness-probe", Key="jwt-mode", Body=b"ok")
    finally:
        server.stop(grace_seconds=1)


_AS_NOBODY = """
import ctypes, json, os, sys, traceback
import boto3, requests
from botocore.config import Config
from opensage.objects.seaweed import SeaweedServer
boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")  # import all now
os.setgid(65534); os.setuid(65534)  # (this interpreter's files under /root are unreadable to nobody)
ctypes.CDLL(None).prctl(4, 1)  # PR_SET_DUMPABLE: a process that was root may not write its /proc/self maps
out = {}
s = SeaweedServer(sys.argv[1], 0, "AKIANOBODY0000000001", "nobody-secret-0123456789")
try:
    s.start(); s.wait_ready(60); out["protection"] = s.protection
    c = boto3.client("s3", endpoint_url=s.endpoint_url, aws_access_key_id="AKIANOBODY0000000001",
                     aws_secret_access_key="nobody-secret-0123456789", region_name="us-east-1",
                     config=Config(s3={"addressing_style": "path"}))
    c.put_object(Bucket="opensage-readiness-probe", Key="k", Body=b"abc")
    out["get"] = c.get_object(Bucket="opensage-readiness-probe", Key="k")["Body"].read().decode()
    for name in ("master", "volume", "filer"):
        try:
            out[name] = requests.get(f"http://127.0.0.1:{getattr(s.ports, name)}/", timeout=2).status_code
        except requests.ConnectionError:
            out[name] = "refused"
except Exception:
    out["error"] = traceback.format_exc()
finally:
    s.stop(2)
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_object_store_started_by_non_root_user_hides_weed_in_user_namespace() -> None:
    import json
    import shutil

    data = Path(tempfile.mkdtemp(prefix="opensage-nobody-"))  # (pytest's tmp_path is root-only)
    try:
        os.chown(data, 65534, 65534)
        out = subprocess.run([sys.executable, "-c", _AS_NOBODY, str(data / "sw")], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    finally:
        shutil.rmtree(data, ignore_errors=True)
    result = json.loads(out.strip().splitlines()[-1])
    assert result.get("protection") == "userns", result
    assert result["get"] == "abc" and result["master"] == result["volume"] == result["filer"] == "refused"


# -- item 9: supervised ------------------------------------------------------------------------------
def test_object_store_killed_weed_is_restarted_with_its_objects(store: SeaweedServer) -> None:
    client = _client(store)
    client.put_object(Bucket=BUCKET, Key="survivor", Body=b"still here")
    old_pid = store.pid
    assert old_pid is not None and store.health() == "ok"
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    seen_unhealthy = False
    while time.monotonic() < deadline:
        seen_unhealthy = seen_unhealthy or store.health() != "ok"
        if store.health() == "ok" and store.pid != old_pid:
            break
        time.sleep(0.2)
    assert seen_unhealthy and store.health() == "ok" and store.pid != old_pid
    assert client.get_object(Bucket=BUCKET, Key="survivor")["Body"].read() == b"still here"
    client.put_object(Bucket=BUCKET, Key="after-restart", Body=b"new")


def test_object_store_request_during_weed_restart_waits_instead_of_failing(store: SeaweedServer) -> None:
    client = _client(store)
    client.put_object(Bucket=BUCKET, Key="during", Body=b"x")
    assert store.pid is not None
    os.kill(store.pid, signal.SIGKILL)
    assert client.get_object(Bucket=BUCKET, Key="during")["Body"].read() == b"x"  # one try, no retries
    deadline = time.monotonic() + 30
    while store.health() != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.health() == "ok"


def test_object_store_anonymous_request_through_proxy_is_access_denied(store: SeaweedServer) -> None:
    answer = requests.get(f"{store.endpoint_url}/{BUCKET}/via-proxy", timeout=30)
    assert answer.status_code == 403 and "AccessDenied" in answer.text
