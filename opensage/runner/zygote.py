"""A fork server ("zygote") per (interpreter, module): a job's ``python -m <module>`` without the interpreter
start and the module's heavy imports.

Measured (benchmarks/RESULTS.md, built-in algorithms): a fresh algorithm process pays 1.5-2.5 s importing
numpy / scipy / scikit-learn / torch before it reads a byte, while the job's own work is often 0.01-0.5 s.
A zygote is a long-lived process of the job's interpreter that imported the module and its lazily imported
libraries once (``PRELOAD``; import only: no thread pool started, so forking stays safe) and forks a child
per job host. The child does what ``unshare --mount -- python -I jobexec.py ... -- python -m <module>``
does today (``jobexec.prepare``: /opt/ml bind, hidden platform home, private /tmp, /etc/passwd and
/etc/hosts, the UTS name, setuid to the job's uid, death signal, cwd), then runs the module as ``__main__``
in-process instead of exec'ing a new interpreter.

Security (issue 7): the zygote runs as root (it must, to build the namespace and drop to the job's uid
after the fork) with the environment every job inherits anyway (``sandbox.inherited_env``: no OPENSAGE_*
setting, no platform key pair or profile) and never reads a request itself: the child does, after the
fork, so no job's credentials are ever in the zygote's memory for a later child to copy. The child closes
the zygote's sockets before the job's code runs. The socket directory is root's, 0700.

Protocol (one connection per job host, from the agent): the agent sends one length-prefixed JSON request
(argv, environment, jobexec options) with its log pipe's write end as SCM_RIGHTS; the zygote answers
``pid <n>`` at once and ``exit <wait status>`` when the child ended. If the agent's end closes first (the
agent died), the zygote SIGKILLs the child: what PR_SET_PDEATHSIG does for a command the agent started.

Lifecycle: the training reconciler starts zygotes on demand (``ZygotePool``: an agent that found none
leaves ``<key>.want``; that job runs the usual way) and stops them at shutdown. A zygote whose parent is
gone, or that got SIGTERM, stops accepting and exits once its running children have ended (agents outlive
a control-plane restart; their jobs must too).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ZYGOTE_DIR_ENV = "OPENSAGE_ZYGOTE_DIR"  # set by the training reconciler, popped by the agent
MAX_REQUEST = 4 << 20

# Modules a job of ``module`` imports lazily (inside ``train``): imported by its zygote up front. Import only:
# nothing here may start a thread pool (fork keeps only the forking thread). torch._dynamo is what torch's
# optimizers import on their first step (~2 s of a cold job's "first-call warm-up").
_TORCH = ("torch", "torch.nn", "torch.optim", "torch._dynamo")
_FIRST_PARTY = ("scipy.sparse", "pyarrow", "pyarrow.csv", "google.protobuf.descriptor_pb2",
                "google.protobuf.descriptor_pool", "google.protobuf.message_factory", "opensage.algorithms.recordio",
                "opensage.algorithms.formats", "opensage.algorithms.firstparty",
                "opensage.algorithms.recordio_dense",  # imported by content's recordIO read when a channel has one
                "opensage.runner.fastfile", "opensage.runner.channels")  # content's channel reads: 18 ms a job
PRELOAD: dict[str, tuple[str, ...]] = {
    "opensage.algorithms.factorization_machines.train": (*_FIRST_PARTY, *_TORCH),
    "opensage.algorithms.ipinsights.train": (*_FIRST_PARTY, *_TORCH, "sklearn.metrics"),
    "opensage.algorithms.kmeans.train": (*_FIRST_PARTY, "sklearn.cluster"),
    "opensage.algorithms.knn.train": (*_FIRST_PARTY, "sklearn.cluster", "sklearn.neighbors"),
    "opensage.algorithms.lda.train": (*_FIRST_PARTY, "sklearn.decomposition"),
    "opensage.algorithms.linear_learner.train": (*_FIRST_PARTY, "scipy.optimize", "sklearn.metrics"),
    "opensage.algorithms.ntm.train": (*_FIRST_PARTY, *_TORCH),
    "opensage.algorithms.pca.train": (*_FIRST_PARTY, "sklearn.utils.extmath"),
    "opensage.algorithms.randomcutforest.train": _FIRST_PARTY,
    # xgboost without scikit-learn, as the job itself imports it (algorithms/xgboost import_xgboost_fast)
    # pyarrow.parquet and pyarrow.compute (Table.cast imports it): ~0.1 s of each Parquet job, once per zygote
    "opensage.algorithms.xgboost.train": ("opensage.algorithms.xgboost:import_xgboost_fast", "pyarrow",
                                          "pyarrow.csv", "pyarrow.parquet", "pyarrow.compute", "scipy.sparse",
                                          "opensage.runner.fastfile", "opensage.runner.channels"),
    "opensage.frameworks.training": ("boto3", "botocore.client", "opensage.objects.s3:warm_botocore_loader"),
}
# A zygote is started once this many jobs of one (interpreter, module) ran without one: a platform that runs
# a module once (most tests) never pays its preload (seconds of CPU for torch / scikit-learn).
START_AFTER_JOBS = 2

# Read once when an interpreter or a native library starts: a child of a zygote started with other values
# would not honour the job's. A job whose values differ from its zygote's runs the usual way.
INIT_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONOPTIMIZE", "PYTHONWARNINGS", "PYTHONDEVMODE",
            "PYTHONMALLOC", "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONUTF8", "PYTHONIOENCODING",
            "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONINSPECT", "PYTHONVERBOSE",
            "PYTHONFAULTHANDLER", "PYTHONTRACEMALLOC", "PYTHONPROFILEIMPORTTIME", "PYTHONBREAKPOINT",
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
            "NUMEXPR_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY",
            "LD_PRELOAD", "LD_LIBRARY_PATH", "MALLOC_ARENA_MAX", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def key(python: str, module: str) -> str:
    # The interpreter's path as given, not its realpath: every virtual environment's bin/python links to the
    # same base interpreter, and a zygote holds its environment's packages (sys.prefix comes from the link's
    # place). Keyed by realpath, a PyTorch job forked from the scikit-learn environment's zygote.
    return hashlib.sha256(f"{os.path.abspath(python)}\0{module}".encode()).hexdigest()[:20]


_SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes with the terminating NUL; keep a margin


def _unix_call(sock: socket.socket, method: str, path: Path) -> None:
    """``sock.bind`` / ``sock.connect`` to ``path``; a path too long for an AF_UNIX address (a deep home) is
    reached through a descriptor of its directory (``/proc/self/fd/N/name``, resolved by the kernel)."""
    if len(os.fsencode(str(path))) <= _SUN_PATH_MAX:
        getattr(sock, method)(str(path))
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        getattr(sock, method)(f"/proc/self/fd/{dir_fd}/{path.name}")
    finally:
        os.close(dir_fd)


def init_env(environ: dict[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in INIT_ENV if name in environ}


def module_command(command: list[str]) -> tuple[str, str, list[str]] | None:
    """(python, module, args) when ``command`` is ``<python> -m <module> args...`` and nothing else."""
    if len(command) < 3 or command[1] != "-m" or not os.path.basename(command[0]).startswith("python"):
        return None
    return command[0], command[2], command[3:]


# ============================================================================== the agent's side (client)


class ZygoteChild:
    """The subset of ``subprocess.Popen`` the agent's supervision uses, for a child of a zygote."""

    def __init__(self, conn: socket.socket, pid: int, stdout: Any, stderr: Any = None) -> None:
        self._conn = conn
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._buffer = b""

    def _read_status(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        self._conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._conn.recv(256)
                if not chunk:  # the zygote went away without a status: the child died with it
                    self.returncode = -signal.SIGKILL
                    self._conn.close()
                    return
                self._buffer += chunk
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            self.returncode = -signal.SIGKILL
            return
        line = self._buffer.split(b"\n", 1)[0].decode()
        status = int(line.split()[1]) if line.startswith("exit ") else (signal.SIGKILL & 0x7F)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._conn.close()

    def poll(self) -> int | None:
        self._read_status(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read_status(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(["zygote-child", str(self.pid)], timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never a pid the zygote has already reaped (and the kernel may reuse)
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _send_message(sock: socket.socket, payload: bytes, fds: list[int]) -> None:
    header = struct.pack("!I", len(payload))
    sock.sendmsg([header], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
    sock.sendall(payload)


def _recv_message(sock: socket.socket) -> tuple[bytes, list[int]]:
    data, ancdata, _flags, _addr = sock.recvmsg(4, socket.CMSG_SPACE(struct.calcsize("4i")))
    fds: list[int] = []
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(blob) // 4}i", blob[:len(blob) - len(blob) % 4]))
    while len(data) < 4:
        more = sock.recv(4 - len(data))
        if not more:
            raise ConnectionError("short request")
        data += more
    (size,) = struct.unpack("!I", data)
    if size > MAX_REQUEST:
        raise ConnectionError("request too large")
    body = b""
    while len(body) < size:
        more = sock.recv(min(1 << 20, size - len(body)))
        if not more:
            raise ConnectionError("short request")
        body += more
    return body, fds


def find(zygote_dir: Path, python: str, module: str, env: dict[str, str]) -> Path | None:
    """The socket of a ready zygote for (python, module) whose start environment matches ``env``'s
    (``INIT_ENV``); None otherwise, and a ``<key>.want`` asks the pool to start one."""
    name = key(python, module)
    sock = zygote_dir / f"{name}.sock"
    ready = zygote_dir / f"{name}.json"
    try:
        info = json.loads(ready.read_text())
    except (OSError, ValueError):
        info = None
    if info is None or not sock.exists():
        try:
            want = zygote_dir / f"{name}.want"
            if not want.exists():
                tmp = zygote_dir / f".{name}.want.{os.getpid()}"
                tmp.write_text(json.dumps({"python": python, "module": module}))
                os.replace(tmp, want)
        except OSError:
            pass
        return None
    if info.get("init_env") != init_env(env):
        return None
    return sock


def start_child(sock_path: Path, module: str, args: list[str], env: dict[str, str], options: dict[str, Any],
                timeout: float = 10.0) -> ZygoteChild:
    """Ask the zygote at ``sock_path`` for a child running ``python -m module args`` with ``env`` and the
    jobexec ``options``; its stdout and its stderr go to a pipe each, whose read ends are the result's
    ``stdout`` and ``stderr`` (as ``sandbox._popen``'s). Raises OSError when the zygote cannot be reached (the
    caller then starts the command the usual way)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    read_fd, write_fd = os.pipe()
    err_read_fd, err_write_fd = os.pipe()
    try:
        _unix_call(conn, "connect", sock_path)
        payload = json.dumps({"module": module, "args": args, "env": env, "options": options}).encode()
        _send_message(conn, payload, [write_fd, err_write_fd])
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                raise ConnectionError("the zygote closed the connection")
            line += chunk
        if not line.startswith(b"pid "):
            raise ConnectionError(f"unexpected answer {line!r}")
        pid = int(line.split()[1])
    except (OSError, ValueError):
        conn.close()
        for fd in (read_fd, write_fd, err_read_fd, err_write_fd):
            os.close(fd)
        raise
    os.close(write_fd)
    os.close(err_write_fd)
    return ZygoteChild(conn, pid, os.fdopen(read_fd, "rb", buffering=0), os.fdopen(err_read_fd, "rb", buffering=0))


# ============================================================================== the zygote process


class _Server:
    def __init__(self, sock_path: Path, module: str, parent: int) -> None:
        self.sock_path = sock_path
        self.module = module
        self.parent = parent
        self.listener: socket.socket | None = None
        self.children: dict[int, socket.socket] = {}
        self.draining = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)

    def listen(self) -> None:
        try:
            self.sock_path.unlink()
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            _unix_call(listener, "bind", self.sock_path)
        finally:
            os.umask(old)
        listener.listen(64)
        self.listener = listener

    def _stop_accepting(self, *_: object) -> None:
        self.draining = True
        if self.wake_w >= 0:
            os.write(self.wake_w, b"x")

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: os.write(self.wake_w, b"c"))
        signal.signal(signal.SIGTERM, self._stop_accepting)
        signal.signal(signal.SIGINT, self._stop_accepting)
        poller = select.poll()
        assert self.listener is not None
        poller.register(self.listener, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        by_fd: dict[int, int] = {}
        while True:
            if (self.draining or os.getppid() != self.parent) and self.listener is not None:
                poller.unregister(self.listener)
                self.listener.close()
                self.listener = None
                for path in (self.sock_path, self.sock_path.with_suffix(".json")):
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
            if self.listener is None and not self.children:
                return
            try:
                events = poller.poll(1000)
            except InterruptedError:
                continue
            for fd, mask in events:
                if self.listener is not None and fd == self.listener.fileno():
                    self._accept(poller, by_fd)
                elif fd == self.wake_r:
                    os.read(self.wake_r, 4096)
                elif fd in by_fd and mask & (select.POLLHUP | select.POLLRDHUP | select.POLLERR):
                    pid = by_fd.pop(fd)
                    poller.unregister(fd)
                    try:
                        os.kill(pid, signal.SIGKILL)  # the agent is gone: so is its command
                    except ProcessLookupError:
                        pass
            self._reap(poller, by_fd)

    def _accept(self, poller: select.poll, by_fd: dict[int, int]) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        pid = os.fork()
        if pid == 0:
            _child(conn, self)  # never returns
        self.children[pid] = conn
        by_fd[conn.fileno()] = pid
        poller.register(conn, select.POLLRDHUP | select.POLLHUP)
        try:
            conn.sendall(f"pid {pid}\n".encode())
        except OSError:
            pass

    def _reap(self, poller: select.poll, by_fd: dict[int, int]) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if by_fd.pop(conn.fileno(), None) is not None:
                poller.unregister(conn)
            try:
                conn.sendall(f"exit {status}\n".encode())
            except OSError:
                pass
            conn.close()

    def close_in_child(self, keep: socket.socket) -> None:
        if self.listener is not None:
            self.listener.close()
        for conn in self.children.values():
            if conn is not keep:
                conn.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.wake_w = -1


def _child(conn: socket.socket, server: _Server) -> None:
    """In the forked child: read the request, become the job's process (jobexec.prepare), run the module."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        server.close_in_child(conn)
        conn.settimeout(30)
        body, fds = _recv_message(conn)
        conn.close()
        request = json.loads(body)
        out = fds[0]
        err = fds[1] if len(fds) > 1 else out  # one descriptor: an agent of an older release
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (null, *fds):
            if fd > 2:
                os.close(fd)
        code = _run_job(request, os.getppid())
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException:  # noqa: BLE001 - what python itself does with an uncaught exception
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _run_job(request: dict[str, Any], parent: int) -> int:
    import ctypes
    import io
    import runpy

    from opensage.runner import jobexec

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS, then every mount private: unshare --propagation private
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    jobexec._mount("none", "/", None, 0x40000 | jobexec.MS_REC)  # MS_PRIVATE
    options = request["options"]
    args = jobexec.parse_args([*options, "--", "python"])
    env = jobexec.prepare(args, request["env"], parent)
    os.setpgid(0, 0)  # signals to the zygote's group never reach a job
    os.environ.clear()
    os.environ.update(env)
    # A fresh ``python -m`` has the cwd first (the zygote's is its socket directory), then PYTHONPATH (equal
    # to the zygote's: INIT_ENV). The module runs afresh as __main__, as ``-m`` does (its imports are warm).
    sys.path[0] = os.getcwd()
    sys.modules.pop(request["module"], None)
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, write_through=True,
                                  errors="backslashreplace")
    _fresh_process_state()
    code = 0
    try:
        sys.argv = ["-m", *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # as at interpreter exit: join non-daemon threads
    atexit._run_exitfuncs()
    return code


def _fresh_process_state() -> None:
    """What differs between a forked child and a fresh process: random generators seeded at import (every
    child would draw the same numbers), torch's thread count (a fresh process sizes its pool itself)."""
    import random

    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


def preload(module: str) -> None:
    import importlib

    if module not in PRELOAD:  # root imports only the platform's own modules; a child imports the rest itself
        return
    for name in (*PRELOAD[module], module):
        try:
            target, _, function = name.partition(":")
            loaded = importlib.import_module(target)
            if function:
                getattr(loaded, function)()
        except Exception as exc:  # noqa: BLE001 - a job then imports it itself and reports the error
            print(f"zygote: preloading {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def serve(sock_path: Path, module: str, parent: int | None = None) -> int:
    """Preload ``module``, then fork jobs until told to stop or ``parent`` (the control plane) is gone.

    The parent's pid comes from the pool (or is read before the preload): read after it, a control plane that
    died during the preload's seconds made PID 1 the recorded parent, and the zygote never exited."""
    started = time.monotonic()
    parent = os.getppid() if parent is None else parent
    preload(module)
    server = _Server(sock_path, module, parent)
    server.listen()
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
    ready = sock_path.with_suffix(".json")
    tmp = ready.with_name(f".{ready.name}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "module": module, "python": sys.executable,
                               "init_env": init_env(dict(os.environ)), "threads": threads,
                               "preload_seconds": round(time.monotonic() - started, 3)}))
    os.replace(tmp, ready)
    print(f"zygote {module}: ready in {time.monotonic() - started:.2f} s, {threads} thread(s)", file=sys.stderr,
          flush=True)
    server.serve()
    return 0


# ============================================================================== the control plane's side


class ZygotePool:
    """The zygotes of one control plane: started when an agent asked for one (``<key>.want``), stopped at
    shutdown. Only for a root platform on Linux (the child builds the job's namespace and drops to its uid)."""

    def __init__(self, directory: Path, environ: dict[str, str]) -> None:
        self.directory = directory
        self.environ = environ
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.asked: dict[str, int] = {}
        self.enabled = sys.platform.startswith("linux") and os.geteuid() == 0 and hasattr(os, "fork")
        if self.enabled:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)

    def start_wanted(self) -> None:
        if not self.enabled:
            return
        try:
            wants = [p for p in self.directory.iterdir() if p.suffix == ".want"]
        except OSError:
            return
        for want in wants:
            try:
                info = json.loads(want.read_text())
                want.unlink()
            except (OSError, ValueError):
                continue
            python, module = str(info.get("python") or ""), str(info.get("module") or "")
            if module not in PRELOAD:
                continue
            name = key(python, module)
            self.asked[name] = self.asked.get(name, 0) + 1
            if self.asked[name] < START_AFTER_JOBS:
                continue
            self.start(python, module)

    def start(self, python: str, module: str) -> subprocess.Popen[bytes] | None:
        """Start the zygote of (python, module) unless it runs; it is ready once ``<key>.json`` exists."""
        name = key(python, module)
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            return proc
        if not self.enabled or not os.path.isabs(python) or not os.access(python, os.X_OK) or not module:
            return None
        with open(self.directory / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [python, "-m", "opensage.runner.zygote", str(self.directory / f"{name}.sock"), module,
                 str(os.getpid())],
                env=self.environ, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, start_new_session=True, close_fds=True)
        return self.procs[name]

    def shutdown(self) -> None:
        """Stop accepting; each zygote exits once the jobs it forked have ended."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 2
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # a job of it is still running; it exits after that job


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or (len(args) == 3 and not args[2].isdigit()):
        print("usage: python -m opensage.runner.zygote <socket> <module> [<parent pid>]", file=sys.stderr)
        return 2
    return serve(Path(args[0]), args[1], int(args[2]) if len(args) == 3 else None)


if __name__ == "__main__":
    sys.exit(main())
