"""Inference pipelines: one model server in front of one child model server per container.

``model_server --kind pipeline --model-dir D`` reads ``D/pipeline.json`` (written by serving/plan.py:
``{"mode": "Serial"|"Direct", "containers": [{hostname, kind, model_dir, env, image}]}``) and starts
``python -m opensage.serving.model_server`` for every container on a free local port, each with its
container's environment over the front's. Children stay in the front's process group (replicas are
stopped with killpg) and get SIGKILL if the front dies (PR_SET_PDEATHSIG), so none outlives it.

* ``/ping`` turns 200 once every child answers its own ``/ping``.
* ``/invocations``, Serial: the body goes through the containers in order; each container after the first
  gets the previous response's body and Content-Type. The client's Accept goes to the last container only:
  intermediate containers answer in their own default type (``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``, as
  SageMaker's pipeline examples configure them), so a client asking for JSON does not make a preprocessor
  emit JSON to a model that reads CSV. CustomAttributes and TargetModel go to every container; the answer's
  CustomAttributes are the last container's. A container's 4xx/5xx is the answer, as is.
* ``/invocations``, Direct: only the container named by ``X-Amzn-SageMaker-Target-Container-Hostname``;
  a missing or unknown hostname (or one sent to a Serial pipeline) is a ValidationError.
* A child that exits stops the front with exit code 1 (the deployment replaces the whole replica).
  SIGTERM: the front drains its own requests, then SIGTERMs the children and waits up to 30 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from opensage.serving.handlers import (
    CUSTOM_ATTRIBUTES,
    ERROR_TYPE_HEADER,
    TARGET_MODEL,
    ModelLoadError,
    Request,
    Response,
    validation_error,
)
from opensage.serving.plan import MULTI_MODEL_ENV, PIPELINE_FILE
from opensage.serving.replicas import (
    STARTUP_TIMEOUT_SECONDS,
    STOP_GRACE_SECONDS,
    free_port,
    ping,
    server_argv,
)

INVOKE_TIMEOUT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1
# The front's own settings must not reach a child (each child gets its flags on the command line).
FRONT_ONLY_ENV = ("OPENSAGE_MODEL_KIND", "OPENSAGE_MODEL_DIR", "SAGEMAKER_BIND_TO_PORT", MULTI_MODEL_ENV,
                  "OPENSAGE_MODEL_SERVER_VENV")


def log(message: str) -> None:
    print(f"[pipeline {os.getpid()}] {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    hostname: str
    kind: str
    model_dir: Path
    env: dict[str, str]
    image: str = ""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def read_spec(model_dir: Path) -> tuple[str, list[Child]]:
    path = model_dir / PIPELINE_FILE
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read the pipeline definition {path}: {exc}") from exc
    children = [Child(c["hostname"], c["kind"], Path(c["model_dir"]), dict(c.get("env") or {}), c.get("image", ""))
                for c in spec["containers"]]
    if not children:
        raise ModelLoadError(f"{path} lists no containers.")
    return spec.get("mode") or "Serial", children


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the front died before prctl took effect
            os._exit(1)

    return preexec


class PipelineHandler:
    """The model-server handler of kind ``pipeline``: start the children, route requests through them."""

    multi_model = True  # TargetModel is forwarded; each container decides whether it accepts it
    multi_container = True  # TargetContainerHostname is ours to check
    threads = 8  # concurrent requests through the pipeline (each child serves its own queue)

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.mode, self.children = read_spec(model_dir)
        self.by_hostname = {c.hostname: c for c in self.children}
        self._local = threading.local()
        self._closing = False

    # -- lifecycle
    def start(self) -> None:
        """Spawn every child (call from the main thread: PR_SET_PDEATHSIG follows the spawning thread)."""
        base = {k: v for k, v in os.environ.items() if k not in FRONT_ONLY_ENV}
        for child in self.children:
            child.port = free_port()
            env = {**base, **child.env}
            argv = server_argv(sys.executable, child.model_dir, child.port, child.kind)
            child.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env, cwd=child.model_dir,
                                          close_fds=True, preexec_fn=_die_with_parent(os.getpid()))
            log(f"container {child.hostname} ({child.kind}, {child.image or 'no image'}): pid {child.proc.pid}, "
                f"port {child.port}")

    def load(self) -> None:
        """Wait until every child answers /ping; ModelLoadError if one exits or the deadline passes."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        pending = list(self.children)
        while pending:
            for child in list(pending):
                code = child.exit_code()
                if code is not None:
                    raise ModelLoadError(f"Container {child.hostname} ({child.image}) exited with code {code} "
                                         f"before answering /ping; see its log lines above.")
                if ping("127.0.0.1", child.port):
                    pending.remove(child)
            if pending and time.monotonic() > deadline:
                raise ModelLoadError(f"Containers {', '.join(c.hostname for c in pending)} did not answer "
                                     f"/ping within {STARTUP_TIMEOUT_SECONDS:.0f} s.")
            if pending:
                time.sleep(0.05)
        log(f"all {len(self.children)} containers answer /ping ({self.mode})")

    def watch(self, on_fatal: Callable[[str], None]) -> None:
        """Call ``on_fatal(reason)`` (once, from a thread) when a child exits while the front is serving."""
        def run() -> None:
            while not self._closing:
                for child in self.children:
                    code = child.exit_code()
                    if code is not None and not self._closing:
                        on_fatal(f"container {child.hostname} exited with code {code}")
                        return
                time.sleep(0.2)

        threading.Thread(target=run, name="pipeline-watch", daemon=True).start()

    def close(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every child, wait up to ``grace`` seconds, SIGKILL what is left."""
        self._closing = True
        alive = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- requests
    def invoke(self, request: Request) -> Response:
        hostname = request.target_container_hostname
        if self.mode == "Direct":
            if not hostname:
                return validation_error(
                    f"This endpoint's model is configured for direct invocation (InferenceExecutionConfig Mode "
                    f"Direct): set TargetContainerHostname to one of {', '.join(self.by_hostname)}.")
            child = self.by_hostname.get(hostname)
            if child is None:
                return validation_error(f"TargetContainerHostname '{hostname}' does not exist in this endpoint; "
                                        f"its containers are {', '.join(self.by_hostname)}.")
            return self._post(child, request.body, request.content_type, request.accept, request)
        if hostname:
            return validation_error(
                "TargetContainerHostname is only valid for endpoints configured for direct invocation "
                "(InferenceExecutionConfig Mode Direct); this model runs its containers as a serial pipeline.")
        body, content_type = request.body, request.content_type
        response = Response(500, b"empty pipeline", "text/plain")
        for i, child in enumerate(self.children):
            last = i == len(self.children) - 1
            response = self._post(child, body, content_type, request.accept if last else None, request)
            if response.status >= 400:
                return response
            body, content_type = response.body, response.content_type
        return response

    def _post(self, child: Child, body: bytes, content_type: str | None, accept: str | None,
              request: Request) -> Response:
        headers = {"Content-Type": content_type or "application/octet-stream"}
        if accept:
            headers["Accept"] = accept
        if request.custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES] = request.custom_attributes
        if request.target_model:
            headers[TARGET_MODEL] = request.target_model
        for attempt in (0, 1):
            conn, reused = self._conn(child)
            try:
                conn.request("POST", "/invocations", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(child)
                if reused and attempt == 0:
                    continue  # the child closed an idle keep-alive connection
                return Response(500, f"Container {child.hostname} did not answer: {type(exc).__name__}: "
                                     f"{exc}".encode(), "text/plain")
            if (resp.getheader("Connection") or "").lower() == "close":
                self._drop(child)
            return Response(resp.status, data, resp.getheader("Content-Type") or "application/octet-stream",
                            _passed_headers(resp))
        return Response(500, f"Container {child.hostname} did not answer.".encode(), "text/plain")

    def _conn(self, child: Child) -> tuple[http.client.HTTPConnection, bool]:
        conns: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(child.hostname)
        if conn is not None:
            return conn, True
        conn = http.client.HTTPConnection("127.0.0.1", child.port, timeout=INVOKE_TIMEOUT_SECONDS)
        conns[child.hostname] = conn
        return conn, False

    def _drop(self, child: Child) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(child.hostname, None)
        if conn is not None:
            conn.close()


def _passed_headers(resp: http.client.HTTPResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in (CUSTOM_ATTRIBUTES, ERROR_TYPE_HEADER):
        value = resp.getheader(name)
        if value is not None:
            out[name] = value
    return out

