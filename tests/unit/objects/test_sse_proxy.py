"""The object store's proxy in front of a real weed: every request authenticated, bodies checked, connections
cheap (event-driven, with header and idle timeouts), presigned URLs and chunked uploads working."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import zlib
from base64 import b64encode
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError

from opensage.credentials import CredentialAuthority
from opensage.objects import s3auth
from opensage.objects.s3 import S3Store
from opensage.objects.s3auth import Headers
from opensage.objects.seaweed import SeaweedServer, free_port, port_is_free
from opensage.objects.sse_proxy import SseKmsProxy
from opensage.settings import Credentials
from tests.unit.objects.test_s3auth import _request, streaming_request

BUCKET = "proxy-tests"


def _client(endpoint: str, ak: str, sk: str, token: str | None = None, **config: object):  # noqa: ANN202
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                        aws_session_token=token, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config))


@pytest.fixture(scope="module")
def root(seaweed: SeaweedServer):  # noqa: ANN201
    S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key).ensure_bucket(BUCKET)
    return _client(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key)


def _send(endpoint: str, method: str, target: str, headers: Headers, body: bytes) -> tuple[int, bytes]:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items:
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _fake_backend(answer: Callable[[BaseHTTPRequestHandler], None]) -> ThreadingHTTPServer:
    """A stand-in for weed on a free port, serving from a thread: ``answer(handler)`` answers each GET."""

    class Backend(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    return backend


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, length: int | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


def _missing(client, key: str) -> bool:  # noqa: ANN001
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


# -- item 12: presigned PUT with a Content-Type ------------------------------------------------------
def test_presigned_put_v4_with_content_type_header_is_stored_with_it(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    signer = _client(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key, signature_version="s3v4")
    url = signer.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "pre-v4"}, ExpiresIn=300)
    answer = requests.put(url, data=b"v4 body", headers={"Content-Type": "text/csv"}, timeout=30)
    assert answer.status_code == 200, answer.text
    got = root.get_object(Bucket=BUCKET, Key="pre-v4")
    assert got["ContentType"] == "text/csv" and got["Body"].read() == b"v4 body"


def test_presigned_put_default_signer_with_content_type_param_is_stored(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    url = root.generate_presigned_url("put_object", ExpiresIn=300,
                                      Params={"Bucket": BUCKET, "Key": "pre-v2", "ContentType": "text/plain"})
    answer = requests.put(url, data=b"v2 body", headers={"Content-Type": "text/plain"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert root.get_object(Bucket=BUCKET, Key="pre-v2")["Body"].read() == b"v2 body"
    get_url = root.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "pre-v2"})
    assert requests.get(get_url, timeout=30).content == b"v2 body"


def test_presigned_put_default_signer_then_content_type_header_is_stored(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    """Issue 7 item 12: boto3's default presigned PUT URL, then a PUT that sends a Content-Type header."""
    url = root.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "pre-ct"}, ExpiresIn=300)
    answer = requests.put(url, data=b"csv,rows", headers={"Content-Type": "text/csv"}, timeout=30)
    assert answer.status_code == 200, answer.text
    got = root.get_object(Bucket=BUCKET, Key="pre-ct")
    assert got["ContentType"] == "text/csv" and got["Body"].read() == b"csv,rows"


# -- chunked uploads ---------------------------------------------------------------------------------
def test_put_streaming_signed_chunks_is_stored_decoded(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    chunks = [os.urandom(64 * 1024), os.urandom(1000)]
    target, headers, body = streaming_request(f"{seaweed.endpoint_url}/{BUCKET}/chunked", chunks,
                                              BotoCredentials(seaweed.access_key, seaweed.secret_key))
    status, text = _send(seaweed.endpoint_url, "PUT", target, headers, body)
    assert status == 200, text
    assert root.get_object(Bucket=BUCKET, Key="chunked")["Body"].read() == b"".join(chunks)


def test_put_streaming_chunk_with_bad_signature_is_refused_and_not_stored(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    chunks = [b"x" * 5000, b"y" * 10]
    target, headers, body = streaming_request(f"{seaweed.endpoint_url}/{BUCKET}/chunked-bad", chunks,
                                              BotoCredentials(seaweed.access_key, seaweed.secret_key))
    status, text = _send(seaweed.endpoint_url, "PUT", target, headers, body.replace(b"y" * 10, b"z" * 10))
    assert status == 403 and b"SignatureDoesNotMatch" in text
    assert _missing(root, "chunked-bad")


class _TrailerSigner(S3SigV4Auth):
    def payload(self, request: AWSRequest) -> str:  # noqa: ARG002
        return s3auth.STREAMING_UNSIGNED_TRAILER


def test_put_unsigned_payload_with_crc_trailer_is_stored(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    """What boto3 sends over https (STREAMING-UNSIGNED-PAYLOAD-TRAILER): relayed to weed, which checks the CRC."""
    data = os.urandom(3000)
    crc = b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    request = AWSRequest(method="PUT", url=f"{seaweed.endpoint_url}/{BUCKET}/trailer", headers={
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "CRC32"})
    _TrailerSigner(BotoCredentials(seaweed.access_key, seaweed.secret_key), "s3", "us-east-1").add_auth(request)
    target, headers = _request(request)
    body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc.encode())
    headers.set("Content-Length", str(len(body)))
    status, text = _send(seaweed.endpoint_url, "PUT", target, headers, body)
    assert status == 200, text
    assert root.get_object(Bucket=BUCKET, Key="trailer")["Body"].read() == data


def test_boto3_multipart_upload_through_proxy_round_trips(seaweed: SeaweedServer, root, tmp_path) -> None:  # noqa: ANN001
    from boto3.s3.transfer import TransferConfig

    src = tmp_path / "parts"
    src.write_bytes(os.urandom(11 * 1024 * 1024))
    parts = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    root.upload_file(str(src), BUCKET, "parts", Config=parts)
    assert root.get_object(Bucket=BUCKET, Key="parts")["Body"].read() == src.read_bytes()


# -- item 7: connections -----------------------------------------------------------------------------
def test_proxy_idle_connections_use_no_threads_and_are_closed_after_timeout(seaweed: SeaweedServer) -> None:
    assert seaweed.ports is not None
    proxy = SseKmsProxy("127.0.0.1", 0, "", 0, authority=CredentialAuthority(
        Credentials(seaweed.access_key, seaweed.secret_key)),
        backend_socket=seaweed._socket_path("s3", seaweed.ports.s3_backend), header_timeout=2, idle_timeout=2)
    proxy.start()
    idle: list[socket.socket] = []
    try:
        threads_before = threading.active_count()
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", proxy.port)))
        idle[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a slow client that never finishes its headers
        deadline = time.monotonic() + 10
        while proxy.connections < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.connections == 300
        assert threading.active_count() - threads_before < 10
        client = _client(f"http://127.0.0.1:{proxy.port}", seaweed.access_key, seaweed.secret_key)
        assert client.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200  # still serving
        time.sleep(3)
        for sock in idle:
            sock.settimeout(5)
            assert sock.recv(1) == b""  # closed by the proxy
        assert proxy.connections <= 1  # (boto3's own kept-alive connection may still be open)
    finally:
        for sock in idle:
            sock.close()
        proxy.stop()
    assert port_is_free(proxy.port)


def test_proxy_backend_down_answers_503_service_unavailable() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    ak, sk = "AKIAPROXYDOWN0000000", "proxy-down-secret"
    proxy = SseKmsProxy("127.0.0.1", free_port(), "127.0.0.1", dead_port, {ak: sk})
    proxy.start()
    try:
        with pytest.raises(ClientError) as info:
            _client(f"http://127.0.0.1:{proxy.port}", ak, sk).list_buckets()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        proxy.stop()
    assert port_is_free(proxy.port)  # stop() released it


def test_proxy_large_object_round_trips_through_both_directions(seaweed: SeaweedServer, root) -> None:  # noqa: ANN001
    data = os.urandom(40 * 1024 * 1024)
    root.put_object(Bucket=BUCKET, Key="large", Body=data)
    assert root.get_object(Bucket=BUCKET, Key="large")["Body"].read() == data


def test_proxy_read_while_backend_restarts_is_retried_until_it_answers() -> None:
    """A restarted weed listens before its filer is ready and answers 500: while the supervisor says it is
    restarting, a GET is asked again (not relayed as 500); once it is up, a 500 is relayed as is."""
    answers = [500, 500, 200]

    def answer(handler: BaseHTTPRequestHandler) -> None:
        status = answers.pop(0) if answers else 500
        _reply(handler, status, b"<ListAllMyBucketsResult/>" if status == 200 else
               b"<Error><Code>InternalError</Code></Error>")

    backend = _fake_backend(answer)
    restarting = [True]
    ak, sk = "AKIAPROXYRESTART0000", "proxy-restart-secret"
    proxy = SseKmsProxy("127.0.0.1", free_port(), "127.0.0.1", backend.server_address[1], {ak: sk},
                        backend_wait=10, backend_restarting=lambda: restarting[0])
    proxy.start()
    try:
        client = _client(f"http://127.0.0.1:{proxy.port}", ak, sk)
        client.list_buckets()  # two 500s swallowed, the 200 relayed
        assert answers == []
        restarting[0] = False
        with pytest.raises(ClientError) as info:
            client.list_buckets()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    finally:
        proxy.stop()
        backend.shutdown()


def test_proxy_accepted_connections_have_tcp_nodelay() -> None:
    """Nagle off on the client side of the proxy: otherwise every kept-alive S3 request after the first waits
    ~40 ms for a delayed ACK between the response head and body."""
    ak, sk = "AKIAPROXYNODELAY0000", "proxy-nodelay-secret"
    proxy = SseKmsProxy("127.0.0.1", free_port(), "127.0.0.1", free_port(), {ak: sk})
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            deadline = time.monotonic() + 5
            while not proxy._writers and time.monotonic() < deadline:  # noqa: SLF001 - the accepted side
                time.sleep(0.01)
            (writer,) = list(proxy._writers)  # noqa: SLF001
            accepted = writer.get_extra_info("socket")
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            conn.close()
    finally:
        proxy.stop()


def test_proxy_connection_cap_follows_the_open_files_limit(monkeypatch, tmp_path) -> None:
    import resource

    from opensage.objects import seaweed as seaweed_module
    from opensage.objects.seaweed import SeaweedServer

    caps: list[int] = []

    class Recorder:
        def __init__(self, *args, max_connections: int = 4096, **kwargs) -> None:  # noqa: ANN002, ANN003
            caps.append(max_connections)
            raise RuntimeError("recorded")

    monkeypatch.setattr(seaweed_module, "SseKmsProxy", Recorder)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (4096, 4096))
    server = SeaweedServer(tmp_path, 0, "AKID", "secret")
    server.ports = seaweed_module.SeaweedPorts(*[0] * 8)
    with pytest.raises(RuntimeError, match="recorded"):
        server._start_proxy()
    # A quarter of the descriptors, like the control plane (a fixed 4096 took them all where the limit is 4096).
    assert caps == [1024]


# -- large bodies move socket to socket in the kernel ------------------------------------------------
def _pipes() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def _own_proxy(seaweed: SeaweedServer) -> SseKmsProxy:
    assert seaweed.ports is not None
    proxy = SseKmsProxy("127.0.0.1", 0, "", 0, authority=CredentialAuthority(
        Credentials(seaweed.access_key, seaweed.secret_key)),
        backend_socket=seaweed._socket_path("s3", seaweed.ports.s3_backend))
    proxy.start()
    return proxy


def test_proxy_splices_large_bodies_and_the_connection_carries_the_next_request(seaweed: SeaweedServer, root,  # noqa: ANN001
                                                                                monkeypatch) -> None:
    from opensage.objects import sse_proxy

    spliced: list[int] = []
    real = sse_proxy._splice

    async def counting(src: int, dst: int, count: int, timeout: float) -> int:
        moved = await real(src, dst, count, timeout)
        spliced.append(moved)
        return moved

    monkeypatch.setattr(sse_proxy, "_splice", counting)
    big, small = os.urandom(24 * 1024 * 1024 + 7), os.urandom(100_000)
    root.put_object(Bucket=BUCKET, Key="splice-big", Body=big)
    root.put_object(Bucket=BUCKET, Key="splice-small", Body=small)
    proxy = _own_proxy(seaweed)
    try:
        client = _client(f"http://127.0.0.1:{proxy.port}", seaweed.access_key, seaweed.secret_key)
        assert client.get_object(Bucket=BUCKET, Key="splice-big")["Body"].read() == big
        assert len(spliced) == 1 and 0 < spliced[0] <= len(big)  # the rest after what the reader held
        ranged = client.get_object(Bucket=BUCKET, Key="splice-big", Range="bytes=1000-5243879")["Body"].read()
        assert ranged == big[1000:5243880]
        assert client.get_object(Bucket=BUCKET, Key="splice-small")["Body"].read() == small
        assert len(spliced) == 2  # the small body went through Python
        assert client.get_object(Bucket=BUCKET, Key="splice-big")["Body"].read() == big
        assert proxy.connections == 1  # one kept-alive connection carried all four answers
    finally:
        proxy.stop()


def test_proxy_client_gone_mid_splice_leaves_no_descriptor_and_the_proxy_serving(seaweed: SeaweedServer,
                                                                                root) -> None:  # noqa: ANN001
    data = os.urandom(32 * 1024 * 1024)
    root.put_object(Bucket=BUCKET, Key="splice-cut", Body=data)
    proxy = _own_proxy(seaweed)
    try:
        client = _client(f"http://127.0.0.1:{proxy.port}", seaweed.access_key, seaweed.secret_key)
        url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "splice-cut"})
        target = url.split(f":{proxy.port}", 1)[1]
        pipes = _pipes()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
                conn.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
                got = 0
                while got < 3 * 1024 * 1024:
                    got += len(conn.recv(1 << 20))
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        deadline = time.monotonic() + 10  # closed with a reset: the proxy notices at its next move
        while (proxy.connections or _pipes() != pipes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.connections == 0 and _pipes() == pipes
        assert client.get_object(Bucket=BUCKET, Key="splice-cut")["Body"].read() == data
    finally:
        proxy.stop()


def test_proxy_backend_answer_cut_short_ends_the_client_connection_and_the_proxy_goes_on() -> None:
    from botocore.exceptions import ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/bucket/cut"):  # promises 8 MB, sends 3 MB, hangs up
            _reply(handler, 200, b"x" * (3 * 1024 * 1024), length=8 * 1024 * 1024)
            handler.close_connection = True
        else:
            _reply(handler, 200, b"<ListAllMyBucketsResult/>")

    backend = _fake_backend(answer)
    ak, sk = "AKIAPROXYCUTSHORT000", "proxy-cut-secret"
    proxy = SseKmsProxy("127.0.0.1", free_port(), "127.0.0.1", backend.server_address[1], {ak: sk})
    proxy.start()
    try:
        client = _client(f"http://127.0.0.1:{proxy.port}", ak, sk)
        body = client.get_object(Bucket="bucket", Key="cut")["Body"]
        with pytest.raises((ResponseStreamingError, ProtocolError)):
            body.read()
        assert client.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        proxy.stop()
        backend.shutdown()
