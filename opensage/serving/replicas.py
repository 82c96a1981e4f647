"""The only place that spawns model servers. A replica = one model-server OS process on a port of its node.

Replicas run in their own session (like job agents), so a restarted control plane can adopt them: the
handle is (pid, port), checked against /proc so a reused pid is not mistaken for ours.

A replica backend places replicas: ``ReplicaManager`` (this module) starts them as children of this process
on loopback; ``executors.ray_replicas.RayReplicaManager`` puts each in a placement-group bundle on a Ray node
and has that node's launcher start it there with this same ``ReplicaManager``, bound to the node's address.
An endpoint replica carries a random token (``Replica.token``): the model server refuses every request
(``/ping`` included) without header ``X-OpenSage-Replica-Token`` equal to it, and refuses to listen on a
non-loopback address without one. The router's upstream client and ``ping`` send it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from opensage.runner.sandbox import inherited_env
from opensage.serving.upstream import TOKEN_HEADER

SERVER_MODULE = "opensage.serving.model_server"
TOKEN_ENV = "OPENSAGE_REPLICA_TOKEN"  # model_server.TOKEN_ENV (not imported: that module is the server's)
STOP_GRACE_SECONDS = 30.0  # SageMaker: SIGTERM, then SIGKILL 30 s later
STARTUP_TIMEOUT_SECONDS = 600.0  # SAGEMAKER_STARTUP_TIMEOUT's default: /ping must pass within this


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a free port and listening, for a model server to inherit."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def unix_listening_socket(directory: Path, name: str) -> tuple[socket.socket, str] | None:
    """A Unix socket bound in ``directory`` (made root-only: only the platform connects to it) and listening,
    for a loopback model server to inherit beside its TCP one; None where the path would be too long for
    sun_path (108 bytes) or cannot be made -- the replica is then reached over TCP only. The server never
    needs the path (it inherits the descriptor), so its own mount namespace need not see the directory."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        path = str(directory / f"{name}.sock")
        if len(path.encode()) > 100:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
    except OSError:
        return None
    return sock, path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Replica:
    pid: int
    port: int
    log_path: str
    host: str = "127.0.0.1"
    uid: int | None = None  # the user it runs as when isolated (its processes are found by it)
    token: str | None = None  # what its model server requires in TOKEN_HEADER (None: loopback, no check)
    placement: dict[str, Any] | None = None  # the backend's own (Ray: placement group and node ids)
    unix: str | None = None  # a loopback replica's Unix socket (same server, same token check), else None


    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def routed_url(self) -> str:
        """The URL the router sends requests to, with the replica's token registered for the upstream client."""
        from opensage.serving.upstream import set_replica_socket, set_replica_token

        set_replica_token(self.url, self.token)
        set_replica_socket(self.url, self.unix)
        return self.url

    def to_state(self) -> dict:
        state: dict[str, Any] = {"pid": self.pid, "port": self.port, "log": self.log_path}
        if self.uid is not None:
            state["uid"] = self.uid
        if self.host != "127.0.0.1":
            state["host"] = self.host
        if self.token is not None:
            state["token"] = self.token
        if self.placement is not None:
            state["placement"] = self.placement
        if self.unix is not None:
            state["unix"] = self.unix
        return state

    @classmethod
    def from_state(cls, raw: dict) -> Replica:
        return cls(raw["pid"], raw["port"], raw["log"], host=raw.get("host") or "127.0.0.1", uid=raw.get("uid"),
                   token=raw.get("token"), placement=raw.get("placement"), unix=raw.get("unix"))


def new_token() -> str:
    return secrets.token_urlsafe(32)


class ReplicaBackend(Protocol):
    """Where model servers run: ``ReplicaManager`` (here, loopback) or a cluster (``RayReplicaManager``)."""

    def start(self, model_dir: Path, kind: str, environment: dict[str, str], log_path: Path,
              python: str | None = None, token: str | None = None, instance_type: str | None = None,
              group: str | None = None) -> Replica: ...

    def running(self, replica: Replica) -> bool: ...

    def healthy(self, replica: Replica, timeout: float = 2.0) -> bool: ...

    def stop(self, replica: Replica, grace: float = STOP_GRACE_SECONDS, wait: bool = True) -> None: ...

    def exit_status(self, replica: Replica) -> str: ...

    def log_tail(self, replica: Replica, lines: int = 15) -> str: ...


def image_environment_python(env: dict[str, str], log_path: Path, model_dir: Path | None = None) -> str | None:
    """The interpreter of the container image's environment (``images.environment_for_image``, built now when
    missing; its progress goes to the replica's log), or None for the platform's. Removes the plan's image
    keys from ``env`` and adds the environment's directory (which the isolated replica must read).
    ``model_dir``: a built-in model that only its image's framework version reads picks that environment."""
    from opensage.serving.plan import SERVING_IMAGE_ENV, SERVING_IMAGE_KIND_ENV

    image = env.pop(SERVING_IMAGE_ENV, None)
    kind = env.pop(SERVING_IMAGE_KIND_ENV, None) or "inference"
    if not image:
        return None
    from opensage import environments, images
    from opensage.runner.sandbox import IMAGE_ENV_DIR

    spec = images.environment_for_image(image, kind, model_dir)
    if spec is None:
        return None
    venv_cache = env.get("OPENSAGE_VENV_CACHE")
    root = environments.cache_root(Path(venv_cache).parent if venv_cache else None)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def write(line: str) -> None:
        with open(log_path, "a") as log:
            log.write(line + "\n")

    found = environments.ensure_environment(spec, root, log=write)
    if found.directory is None:
        return None
    env[IMAGE_ENV_DIR] = str(found.directory)
    return found.python


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return state != "Z" and SERVER_MODULE.encode() in cmdline


def server_argv(python: str, model_dir: Path, port: int, kind: str, host: str = "127.0.0.1") -> list[str]:
    """The model-server command line (also used by a pipeline front for its per-container children)."""
    return [python, "-m", SERVER_MODULE, "--model-dir", str(model_dir), "--port", str(port), "--host", host,
            "--kind", kind]


def _model_dirs(model_dir: Path, kind: str) -> list[str]:
    """The directories a model server reads its model(s) from: its own, and a pipeline's containers'."""
    dirs = [str(model_dir)]
    if kind == "pipeline":
        try:
            spec = json.loads((model_dir / "pipeline.json").read_text())
            dirs += [str(c["model_dir"]) for c in spec.get("containers", [])]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return dirs


def _open_for_reading(path: str) -> None:
    """Readable by the model server's own user: a staged model unpacked as root may hold 0600 files (the
    platform's home, closed to everyone, is what protects it on the host)."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode | 0o555)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode | 0o444)
    if not os.path.islink(path):
        os.chmod(path, os.stat(path).st_mode | 0o555)


def isolated_argv(model_dir: Path, kind: str, env: dict[str, str], argv: list[str],
                  tmp: Path | None = None) -> tuple[list[str], int]:
    """``argv`` run as a user of its own in a private mount namespace (runner/jobexec.py): it reads the
    interpreter, the platform package, its model directories (read-only; a multi-model server's cache
    directory writable: it unpacks models there) and the requirements-venv cache, and nothing else of the
    platform's home."""
    from opensage.runner.sandbox import (
        JOB_GID,
        JOBEXEC,
        pick_job_uid,
        prepare_job_venv_cache,
        private_tmp,
        readable_roots,
    )

    uid = pick_job_uid()
    multi_model = bool(env.get("OPENSAGE_MULTI_MODEL_URL"))
    # No death signal: PR_SET_PDEATHSIG follows the *thread* that spawned the server (a reconciler thread of
    # this control plane), and replicas must outlive a control-plane restart to be adopted by the next one.
    options = ["--uid", str(uid), "--gid", str(JOB_GID), "--cwd", str(model_dir), "--outlive-parent"]
    if tmp is not None:
        options += ["--tmp", str(private_tmp(tmp, uid))]
        options += ["--ml-root", str(_serving_ml_root(tmp.with_suffix(".ml"), model_dir))]
    for path in readable_roots(env):
        options += ["--expose", path]
    if env.get("OPENSAGE_VENV_CACHE"):
        prepare_job_venv_cache(Path(env["OPENSAGE_VENV_CACHE"]))
    store_url = env.get("OPENSAGE_OBJECT_STORE_URL", "")
    if multi_model and store_url.startswith("file://"):  # a file:// store (tests): read in place
        options += ["--expose", store_url.removeprefix("file://")]
    for path in _model_dirs(model_dir, kind):
        if multi_model and path == str(model_dir):
            # The cache every replica of this prefix unpacks models into (each as its own user).
            Path(path).mkdir(parents=True, exist_ok=True)
            os.chown(path, 0, JOB_GID)
            os.chmod(path, 0o2770)
            options += ["--expose", path]
        else:
            _open_for_reading(path)
            options += ["--expose-ro", path]
    return ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", JOBEXEC, *options,
            "--", *argv], uid


def _serving_ml_root(ml: Path, model_dir: Path) -> Path:
    """The replica's ``/opt/ml``, as a serving container has it: ``code/`` exists (sagemaker-containers creates
    it at import otherwise, which the replica's user may not) and ``model`` is the replica's model."""
    if ml.is_symlink() or ml.is_file():
        ml.unlink()
    elif ml.exists():
        shutil.rmtree(ml)
    (ml / "code").mkdir(parents=True)
    (ml / "model").symlink_to(model_dir, target_is_directory=True)
    for path in (ml, ml / "code"):
        os.chmod(path, 0o755)
    return ml


def ping(host: str, port: int, timeout: float = 2.0, token: str | None = None) -> bool:
    """GET /ping answered 200 (SageMaker's health check, 2 s timeout).

    http.client, not httpx.get: a throwaway httpx client builds an SSL context per call (~35 ms CPU, taken
    from the model server that is loading; this is polled several times a second).
    """
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/ping", headers={TOKEN_HEADER: token} if token else {})
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class ReplicaManager:
    def __init__(self, python: str | None = None, isolate: bool | None = None) -> None:
        """``isolate``: run model servers as users of their own (default: when root and mount namespaces
        work), like training jobs: the user's inference code cannot read the platform's home."""
        self.python = python or sys.executable
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exited: dict[int, subprocess.Popen[bytes]] = {}  # the last few reaped, for ``exit_status``
        self._isolate = isolate

    def start(self, model_dir: Path, kind: str, environment: dict[str, str], log_path: Path,
              python: str | None = None, token: str | None = None, instance_type: str | None = None,
              group: str | None = None, host: str = "127.0.0.1") -> Replica:
        """Launch a model server for ``model_dir`` listening on ``host``; returns at once (poll ``healthy``).
        ``token``: required by the server on every request (mandatory off loopback). ``instance_type`` and
        ``group`` are for cluster backends (placement); one machine has nothing to place."""
        self._reap()
        # Bound here and inherited by the server (--listen-fd): a port picked free and bound later by the
        # server can be taken in between by another replica or process (seen under load).
        listener = listening_socket(host)
        port = listener.getsockname()[1]
        # A loopback replica also listens on a Unix socket (the router's hop: ~35% less per round trip than
        # loopback TCP); a replica on another node (Ray) stays TCP-only.
        unix = unix_listening_socket(log_path.parent / ".sockets", str(port)) if _is_loopback(host) else None
        try:
            replica = self._spawn(model_dir, kind, environment, log_path, python, port, listener, host, token,
                                  unix[0] if unix else None)
        finally:
            listener.close()  # the server holds its own copy
            if unix:
                unix[0].close()
        replica.host, replica.token = host, token
        if unix and replica.pid in self._children and "--listen-unix-fd" in (self._children[replica.pid].args or []):
            replica.unix = unix[1]
        elif unix:
            with contextlib.suppress(OSError):
                os.unlink(unix[1])
        return replica

    def _spawn(self, model_dir: Path, kind: str, environment: dict[str, str], log_path: Path,
               python: str | None, port: int, listener: socket.socket, host: str = "127.0.0.1",
               token: str | None = None, unix: socket.socket | None = None) -> Replica:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # Not the platform's settings nor its client profile / key pair: the caller passes the replica's
        # own temporary credentials in ``environment``.
        env = inherited_env()
        env.update(environment)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop(TOKEN_ENV, None)
        if token:
            env[TOKEN_ENV] = token
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            image_python = image_environment_python(env, log_path, model_dir)
        except RuntimeError as exc:  # environments.EnvironmentError: the replica "exits", its log says why
            with open(log_path, "a") as log:
                log.write(f"{exc}\n")
            argv = [sys.executable, "-c", "raise SystemExit(1)", SERVER_MODULE]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
            self._children[proc.pid] = proc
            return Replica(proc.pid, port, str(log_path))
        argv = server_argv(python or image_python or self.python, model_dir, port, kind, host)
        argv += ["--listen-fd", str(listener.fileno())]
        fds = (listener.fileno(),)
        if unix is not None:
            argv += ["--listen-unix-fd", str(unix.fileno())]
            fds += (unix.fileno(),)
        uid = None
        if self.isolating():
            # The replica's /tmp: beside its log, removed when the replica is stopped.
            argv, uid = isolated_argv(model_dir, kind, env, argv, log_path.with_suffix(".tmp"))
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, pass_fds=fds,
                                    env=env, cwd=model_dir)
        self._children[proc.pid] = proc
        return Replica(proc.pid, port, str(log_path), uid=uid)

    def isolating(self) -> bool:
        if self._isolate is None:
            from opensage.runner.sandbox import namespace_supported

            self._isolate = namespace_supported()
        return self._isolate

    def running(self, replica: Replica) -> bool:
        """Alive: by its Popen handle when this manager started it, else (adopted) by /proc.

        Not /proc for our own children: right after exec their /proc/<pid>/cmdline reads empty for a moment
        (more often under load), which ``_alive`` took for "not a model server" -- a transform then failed
        with "the model server exited before answering /ping" and an empty log."""
        self._reap()
        if replica.pid in self._children:
            return True
        if replica.pid in self._exited:
            return False
        return _alive(replica.pid)

    def healthy(self, replica: Replica, timeout: float = 2.0) -> bool:
        return ping(replica.host, replica.port, timeout, replica.token)

    def stop(self, replica: Replica, grace: float = STOP_GRACE_SECONDS, wait: bool = True) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (only waits when ``wait``)."""
        if not self.running(replica):
            self._reap()
            self._remove_tmp(replica)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(replica.pid, signal.SIGTERM)
        if not wait:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self._reap()
            if not self.running(replica):
                self._remove_tmp(replica)
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.pid, signal.SIGKILL)
        self._reap()
        self._remove_tmp(replica)

    @staticmethod
    def _remove_tmp(replica: Replica) -> None:
        """What an isolated replica leaves: processes of its user (a child that left its group), its user's
        /dev/shm segments, its /tmp (see ``start``; rmtree never follows the links its user left)."""
        if replica.uid is not None:
            from opensage.runner.sandbox import job_uid, kill_job_processes, remove_job_shm

            kill_job_processes(job_uid(replica.uid), None)
            remove_job_shm(job_uid(replica.uid))
        if replica.unix:
            with contextlib.suppress(OSError):
                os.unlink(replica.unix)
        shutil.rmtree(Path(replica.log_path).with_suffix(".tmp"), ignore_errors=True)
        shutil.rmtree(Path(replica.log_path).with_suffix(".ml"), ignore_errors=True)

    def exit_status(self, replica: Replica) -> str:
        """How a replica this manager started ended ("exit code 1", "killed by SIGKILL"), or "" if unknown."""
        proc = self._children.get(replica.pid) or self._exited.get(replica.pid)
        code = proc.poll() if proc is not None else None
        if code is None:
            return ""
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def log_tail(self, replica: Replica, lines: int = 15) -> str:
        try:
            text = Path(replica.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]
                self._exited[pid] = proc
                while len(self._exited) > 16:
                    del self._exited[next(iter(self._exited))]


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def backend_for(settings: Any, local: ReplicaManager) -> ReplicaBackend:
    """Where the platform's endpoint replicas run: on the Ray cluster with ``--executor ray`` (one bundle per
    replica), else ``local`` (children of this process on loopback)."""
    if getattr(settings, "executor", "local") != "ray":
        return local
    from opensage.executors.instance_types import InstanceTypes
    from opensage.executors.ray_replicas import RayReplicaManager

    return RayReplicaManager(settings.ray_address, settings.home, InstanceTypes.load(settings.instance_types_path),
                             local=local)
