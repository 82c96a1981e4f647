"""Run the job's command the way a container would see it, and capture its output.

The command sees ``/opt/ml``: as root on Linux it runs in a private mount namespace where ``<jobdir>/ml``
is bind-mounted on ``/opt/ml``; otherwise ``SAGEMAKER_BASE_DIR`` points at the real directory and the
literal ``/opt/ml`` in argv (and in the job's environment values) is rewritten to it.

Isolation (issue 7): as root, the command runs as a uid of its own (``JobSpec.run_as_uid``, no passwd
entry, group ``JOB_GID``) that owns its ml tree and nothing else; directories closed to other users on the
way to the interpreter, the platform package or the jobs' venv cache are hidden under a tmpfs in the
namespace and only those directories bound back (``jobexec.py``), so the platform's home is not visible.
Every user process carries a marker (``job_marker``) and dies with its agent (PR_SET_PDEATHSIG); what
outlives it is found by uid or marker (``kill_job_processes``). Its environment has the job's temporary
credentials, never the platform's key pair or client profile (``inherited_env``); ``/tmp`` is a directory
of its own beside its ml tree. Not isolated: network, CPU / memory (no cgroup limits), other processes
(visible in /proc; not signalable).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from opensage.runner.jobspec import JobSpec

OPT_ML = "/opt/ml"
MAX_LINE_BYTES = 256 * 1024
TAIL_LINES = 10
_OPT_ML_RE = re.compile(r"/opt/ml(?=/|\b|$)")
_MOUNT_SCRIPT = 'mount --bind "$1" /opt/ml && cd /opt/ml/code && shift && exec "$@"'


# ----------------------------------------------------------------------------------------- namespace


@functools.cache
def namespace_supported() -> bool:
    """True if ``unshare --mount`` + ``mount --bind`` onto /opt/ml works here (probed once per process)."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    try:
        Path(OPT_ML).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="opensage-probe-") as tmp:
            (Path(tmp) / "code").mkdir()
            (Path(tmp) / ".probe").write_text("ok")
            argv = _namespace_argv(Path(tmp), ["test", "-f", "/opt/ml/.probe"])
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
            return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


JOBEXEC = str(Path(__file__).with_name("jobexec.py"))


def _jobexec_argv(env: dict[str, str], options: list[str], uid: int | None) -> list[str]:
    """``python -I runner/jobexec.py <options> -- `` (then the command): see jobexec's docstring."""
    return [sys.executable, "-I", JOBEXEC, *_jobexec_options(env, options, uid), "--"]


def _jobexec_options(env: dict[str, str], options: list[str], uid: int | None) -> list[str]:
    argv = list(options)
    if uid is not None:
        argv += ["--uid", str(uid), "--gid", str(JOB_GID)]
        for path in readable_roots(env):
            argv += ["--expose", path]
    return argv


def readable_roots(env: dict[str, str]) -> list[str]:
    """Directories the job user must reach: the interpreter, the platform's venv and package, the jobs'
    requirements-venv cache. jobexec uncovers them where an ancestor is closed (e.g. a 0700 /root)."""
    import opensage

    roots = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)),
             str(Path(opensage.__file__).resolve().parents[1])]
    if env.get("OPENSAGE_VENV_CACHE"):
        roots.append(env["OPENSAGE_VENV_CACHE"])
    if env.get(IMAGE_ENV_DIR):  # the image's environment (opensage.environments), set by the agent
        roots.append(env[IMAGE_ENV_DIR])
    return [os.path.realpath(r) for r in dict.fromkeys(roots)]


IMAGE_ENV_DIR = "OPENSAGE_ENV_DIR"


def give_to_job(ml_root: Path, uid: int) -> None:
    """The job user owns its /opt/ml tree (it writes model/, output/, checkpoints/, code/). Links are
    changed themselves, never followed."""
    os.lchown(ml_root, uid, JOB_GID)
    for dirpath, dirnames, filenames in os.walk(ml_root):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), uid, JOB_GID)


def private_tmp(path: Path, uid: int) -> Path:
    """A fresh directory the job user owns, its /tmp in the namespace (on disk, beside its ml tree)."""
    if path.is_symlink() or path.exists():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    path.mkdir(mode=0o700)
    os.lchown(path, uid, JOB_GID)
    return path


def prepare_job_venv_cache(path: Path) -> None:
    """The jobs' requirements-venv cache: shared by every job user (group JOB_GID, setgid + sticky: each
    job builds its venvs, none can delete another's), closed to other users of the host."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, JOB_GID)
    os.chmod(path, 0o3770)


def _namespace_argv(ml_root: Path, argv: list[str]) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _MOUNT_SCRIPT,
            "sh", str(ml_root), *argv]


def use_namespace(mode: str) -> bool:
    """``mode`` is JobSpec.sandbox: auto | namespace | plain."""
    if mode == "plain":
        return False
    if mode == "namespace":
        if not namespace_supported():
            raise RuntimeError("sandbox 'namespace' requested but unshare/mount --bind is not available "
                               "(needs root on Linux); use sandbox 'auto' or 'plain'")
        return True
    return namespace_supported()


def rewrite_opt_ml(value: str, ml_root: Path) -> str:
    return _OPT_ML_RE.sub(str(ml_root), value)


# ----------------------------------------------------------------------------------------- job user

# User code runs as a uid of its own when the agent is root: from a range no distribution hands out
# (system and login users sit far below; container runtimes' subordinate ranges start at 100000 and span
# 65536 per user) and with no /etc/passwd entry, so no file on the host belongs to it.
JOB_UID_MIN = 0x3000_0000
JOB_UID_MAX = 0x6FFF_FFFF
# All job users share one group: the group of the jobs' shared requirements-venv cache (never gid 0).
JOB_GID = JOB_UID_MIN - 1


def pick_job_uid() -> int:
    """A fresh uid for one host of one job (random: two live jobs share one with odds ~1e-9)."""
    import secrets

    return JOB_UID_MIN + secrets.randbelow(JOB_UID_MAX - JOB_UID_MIN)


# ----------------------------------------------------------------------------------------- environment


# The platform's own client configuration (``opensage env`` exports it into the shell that may have started
# ``opensage up``): it names the platform's key pair and files in the private home. A job gets its own
# temporary credentials and endpoints instead (and, run as another user, could not read those files anyway:
# a profile it cannot load makes boto3 fail).
PLATFORM_CLIENT_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                       "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                       "SAGEMAKER_USER_CONFIG_OVERRIDE",
                       # the client guard `opensage env` loads into botocore (cli/awsguard.py): a job signs with its
                       # own credentials, and the plugin made botocore in job environments fail to load its data
                       "BOTOCORE_EXPERIMENTAL__PLUGINS")


def inherited_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The platform's environment minus its settings (OPENSAGE_*) and its client credentials/profile."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("OPENSAGE_") and k not in PLATFORM_CLIENT_ENV}


def object_store_env(spec: JobSpec) -> dict[str, str]:
    """What user code needs to reach our object store with boto3 / the SDK: endpoint, region and the job's
    own (temporary) credentials."""
    store = spec.object_store
    env = {"AWS_DEFAULT_REGION": store.region, "AWS_REGION": store.region}
    url = store.endpoint_url or ""
    if url.startswith(("http://", "https://")):
        env["AWS_ENDPOINT_URL_S3"] = url
        env["S3_ENDPOINT_URL"] = url
    if store.access_key:
        env["AWS_ACCESS_KEY_ID"] = store.access_key
    if store.secret_key:
        env["AWS_SECRET_ACCESS_KEY"] = store.secret_key
    if store.session_token:
        env["AWS_SESSION_TOKEN"] = store.session_token
    return env


def build_env(spec: JobSpec, base_dir: str, namespace: bool, ml_root: Path) -> dict[str, str]:
    env = inherited_env()
    env.update(object_store_env(spec))
    if spec.kind == "training":
        env["TRAINING_JOB_NAME"] = spec.job_name
        env["TRAINING_JOB_ARN"] = spec.job_arn
    job_env = dict(spec.environment)
    if not namespace:
        job_env = {k: rewrite_opt_ml(v, ml_root) for k, v in job_env.items()}
    env.update(job_env)
    env["PYTHONUNBUFFERED"] = "1"
    env["SAGEMAKER_BASE_DIR"] = base_dir
    key, _, value = job_marker(ml_root).decode().partition("=")
    env[key] = value  # found again by kill_job_processes, whatever group or session the process is in
    return env


# ----------------------------------------------------------------------------------------- logs


class LogSink:
    """A job's ``algo-<n>.log``, written by the pumps of its stdout and of its stderr: ``<epoch-ms> <text>``
    lines, each pump's batch in one write under a lock, so the two streams' lines never mix within a line.

    The failure-reason tail keeps the last lines of each stream (a traceback on stderr is not pushed out
    by stdout lines that its pump happened to write later), merged back in the order they arrived."""

    def __init__(self, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed by close() after both pumps
        self._lock = threading.Lock()
        self._tails: dict[str, deque[tuple[int, str]]] = {}
        self._arrived = 0

    def write_lines(self, lines: list[bytes], stream: str = "stdout") -> None:
        if not lines:
            return
        stamp = int(time.time() * 1000)
        texts = [(raw[:-1] if raw.endswith(b"\r") else raw).decode("utf-8", errors="replace") for raw in lines]
        data = "".join(f"{stamp} {text}\n" for text in texts).encode()
        with self._lock:
            if self._out.closed:  # a pump still reading after run_command gave up waiting for it
                return
            self._out.write(data)
            tail = self._tails.setdefault(stream, deque(maxlen=TAIL_LINES))
            for text in texts:
                if text.strip():
                    self._arrived += 1
                    tail.append((self._arrived, text))

    @property
    def tail(self) -> list[str]:
        """The last TAIL_LINES non-blank lines of each stream, in arrival order."""
        with self._lock:
            return [text for _, text in sorted(line for tail in self._tails.values() for line in tail)]

    def close(self) -> None:
        with self._lock:
            self._out.close()


class LogPump(threading.Thread):
    """Copies one output stream of the child (stdout or stderr) to the job's ``LogSink``, line by line.

    The two streams have a pipe each and are split into lines separately, as SageMaker's container log
    driver does: with PYTHONUNBUFFERED, ``print(a, b)`` is one write per argument, and a single pipe for both
    let a line on stderr (log4j, tqdm, a warning) land inside a stdout line - breaking it for the reader and
    for MetricDefinitions. Each read is written at once, so a line reaches the file within a few ms.
    """

    def __init__(self, source: BinaryIO, sink: LogSink, name: str = "log-pump", stream: str = "stdout") -> None:
        super().__init__(name=name, daemon=True)
        self.source = source
        self.sink = sink
        self.stream = stream

    def run(self) -> None:
        fd = self.source.fileno()
        pending = b""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            lines, pending = split_lines(pending + chunk)
            self.sink.write_lines(lines, self.stream)
        if pending:
            self.sink.write_lines([pending], self.stream)


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete (or overlong: cut at MAX_LINE_BYTES) lines in ``data``, and the unfinished rest."""
    lines: list[bytes] = []
    start = 0
    while True:
        nl = data.find(b"\n", start)
        if nl < 0 or nl - start > MAX_LINE_BYTES:
            if len(data) - start >= MAX_LINE_BYTES:
                lines.append(data[start:start + MAX_LINE_BYTES])
                start += MAX_LINE_BYTES
                continue
            return lines, data[start:]
        lines.append(data[start:nl])
        start = nl + 1


# ----------------------------------------------------------------------------------------- running


@dataclass
class Outcome:
    exit_code: int | None  # 128+N when killed by signal N; None if the command could not start
    stopped: bool = False
    max_runtime_exceeded: bool = False
    start_error: str | None = None
    tail: list[str] = field(default_factory=list)


class Control:
    """Stop requests (set from a signal handler: a plain flag, no locks) and the runtime deadline."""

    def __init__(self, max_runtime_seconds: float | None, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.deadline = self.started + max_runtime_seconds if max_runtime_seconds else None
        self.stop_requested = False

    def request_stop(self, *_: object) -> None:
        self.stop_requested = True

    def deadline_passed(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def open_job_file(path: Path, root: Path) -> int | None:
    """Open a file the job's code may have written, for reading by the agent (perhaps root): not through a
    link, a regular file, and really inside ``root`` (checked on the opened file, so a link swapped in
    meanwhile changes nothing). None if it is not such a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else os.path.realpath(path)
        inside = real.startswith(os.path.realpath(root).rstrip("/") + "/")
        if inside and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_job_text(path: Path, root: Path, limit: int = 64 * 1024) -> str | None:
    """The text of a file the job wrote (see ``open_job_file``), at most ``limit`` bytes."""
    fd = open_job_file(path, root)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit).decode("utf-8", errors="replace")


def _popen(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # a pipe of its own: see LogPump
        close_fds=True,
    )


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _terminate(proc: Any, grace: float) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=max(grace, 0))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_group_leftovers(run_as_uid: int | None = None, ml_root: Path | None = None) -> None:
    """SIGKILL every other process of our process group (background children of the user command), and
    every process of the job's own user or carrying its marker (those that left the group with setsid).

    The group only when the agent leads its own group (as the executor starts it), never a caller's group.
    """
    me = os.getpid()
    if os.getpgrp() == me:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                if os.getpgid(int(entry.name)) == me:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
    kill_job_processes(job_uid(run_as_uid), job_marker(ml_root) if ml_root is not None else None, exclude=me)


def remove_job_shm(uid: int | None, shm: Path = Path("/dev/shm")) -> int:
    """Remove what the job's own user left in ``shm``: the machine's /dev/shm (jobs share it; a mount namespace
    does not make it private) outlives the job, and killed MPI ranks leave MPICH's ``mpich_shm_*`` segments
    there (2 MB each), as can a user's own multiprocessing code. Only entries owned by the job's uid (no one
    else has it); never follows a link. Returns how many were removed."""
    if uid is None:
        return 0
    try:
        entries = list(os.scandir(shm))
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
    return removed


def job_uid(run_as_uid: int | None) -> int | None:
    """The uid the job's processes run as, if they run as one of their own (the agent is root)."""
    if run_as_uid is None or os.geteuid() != 0 or not JOB_UID_MIN <= run_as_uid <= JOB_UID_MAX:
        return None
    return run_as_uid


def _proc_ids(pid: int) -> tuple[int, int] | None:
    """(real uid, process group) of ``pid``, or None if it is gone / a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat_fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if stat_fields[0] in ("Z", "X"):
        return None
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1)
    return uid, int(stat_fields[2])


def kill_job_processes(uid: int | None, marker: bytes | None, exclude: int | None = None) -> int:
    """SIGKILL the processes of one job: those running as its own ``uid`` (no one else has it), and those
    carrying its ``marker`` in their environment (``job_marker``: also found after they left the agent's
    process group, and never a process that merely reused a pid). Returns how many were signalled."""
    if not Path("/proc").is_dir() or (uid is None and marker is None):
        return 0
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        pid = int(entry.name)
        ids = _proc_ids(pid)
        if ids is None:
            continue
        if (uid is not None and ids[0] == uid) or (marker is not None and _environ_has(pid, marker)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                continue
    return killed


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


JOB_MARKER_ENV = "_OPENSAGE_JOB_ID"  # not OPENSAGE_*: those are the platform settings jobs never get


def job_marker(ml_root: Path) -> bytes:
    """The environment entry every user process of one job carries: a digest of its ml root's path (unique
    per job and host, and says nothing of the host's layout)."""
    import hashlib

    digest = hashlib.sha256(str(Path(ml_root).resolve()).encode()).hexdigest()[:24]
    return f"{JOB_MARKER_ENV}={digest}".encode()


JOB_BIN = ".opensage-bin"  # under /opt/ml, first on a job's PATH
# SageMaker images run their user as root or give it sudo; here a job runs as a user of its own that already
# owns what those images open up with sudo (its /opt/ml, its private /tmp), and no job ever gets root. The
# SDK's remote-function bootstrap (@step, @remote) runs `sudo chmod -R 777 /opt/ml/... /tmp` as a non-root
# user and fails without sudo: this one runs the command as the job's own user.
_SUDO = """#!/bin/sh
# OpenSage: no job gets root; run the command as this job's own user, which owns /opt/ml and its /tmp.
while [ $# -gt 0 ]; do
  case "$1" in
    -u|-g|-p|-C|-h|-r|-t|-U) shift 2 ;;
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || exit 0
case "$1" in
  chmod|chown|chgrp)
    # What root would change for the job is what the job owns; entries it does not own (say, a directory
    # bound into its /tmp) stay as they are, said in the log, and the bootstrap goes on.
    "$@" 2>/dev/null || echo "sudo (OpenSage): '$*' changed only what the job's user owns" >&2
    exit 0 ;;
esac
exec "$@"
"""


def _write_job_bin(ml_root: Path) -> None:
    """``sudo`` for the job (see ``_SUDO``), in ``/opt/ml/.opensage-bin``, before the tree is given to the job."""
    bin_dir = ml_root / JOB_BIN
    if bin_dir.is_symlink():  # the agent writes before the job's code runs; be safe on a reused tree anyway
        bin_dir.unlink()
    bin_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(bin_dir / "sudo", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o755)
    os.fchmod(fd, 0o755)  # whatever the umask
    with os.fdopen(fd, "w") as fh:
        fh.write(_SUDO)


def prepend_path(env: dict[str, str], directory: str) -> None:
    """Put ``directory`` first on ``env``'s PATH (once)."""
    env["PATH"] = os.pathsep.join([directory, *[p for p in env.get("PATH", os.defpath).split(os.pathsep)
                                                if p and p != directory]])


def run_command(
    spec: JobSpec,
    ml_root: Path,
    log_path: Path,
    control: Control,
    on_start: Callable[[], None] | None = None,
    namespace: bool | None = None,
    zygote_dir: Path | None = None,
) -> Outcome:
    """Start the job's command, pump its logs, honour stop / max runtime; return how it ended.

    ``zygote_dir``: where the training reconciler's fork servers listen (``runner/zygote.py``): a
    ``python -m <module>`` command of an isolated job (its own uid) is then forked from a warm process of
    that interpreter with the module's imports done, else started as below."""
    if namespace is None:
        namespace = use_namespace(spec.sandbox)
    code_dir = ml_root / "code"
    uid = job_uid(spec.run_as_uid) if namespace else None
    _write_job_bin(ml_root)
    if namespace:
        env = build_env(spec, OPT_ML, True, ml_root)
        prepend_path(env, f"{OPT_ML}/{JOB_BIN}")
        options = ["--ml-root", str(ml_root), "--cwd", f"{OPT_ML}/code"]
        if uid is not None:
            give_to_job(ml_root, uid)
            options += ["--tmp", str(private_tmp(ml_root.parent / "tmp", uid))]
            if env.get("OPENSAGE_VENV_CACHE"):
                prepare_job_venv_cache(Path(env["OPENSAGE_VENV_CACHE"]))
        argv = ["unshare", "--mount", "--propagation", "private", "--", *_jobexec_argv(env, options, uid),
                *spec.command]
    else:
        env = build_env(spec, str(ml_root), False, ml_root)
        prepend_path(env, str(ml_root / JOB_BIN))
        argv = [*_jobexec_argv(env, [], None), *[rewrite_opt_ml(a, ml_root) for a in spec.command]]
    proc: Any = None
    if uid is not None and zygote_dir is not None:
        proc = _zygote_child(zygote_dir, spec.command, env, _jobexec_options(env, options, uid))
    try:
        if proc is None:
            proc = _popen(argv, env, code_dir)
    except OSError as exc:
        return Outcome(None, start_error=f"could not start the command {spec.command!r}: {exc}")
    assert proc.stdout is not None
    sink = LogSink(log_path)
    streams = [proc.stdout] + ([proc.stderr] if proc.stderr is not None else [])
    names = ("stdout", "stderr")[:len(streams)]
    pumps = [LogPump(stream, sink, f"log-pump-{name}", name) for name, stream in zip(names, streams, strict=True)]
    for pump in pumps:
        pump.start()
    if on_start is not None:
        on_start()
    outcome = _supervise(proc, spec, control)
    if sys.platform.startswith("linux"):
        kill_group_leftovers(uid, ml_root)
        remove_job_shm(uid)  # after the kill: no process of the job can make a new segment now
    if uid is not None:  # the job's /tmp (and HOME in it); rmtree never follows links
        shutil.rmtree(ml_root.parent / "tmp", ignore_errors=True)
    drained_by = time.monotonic() + 5  # a background child may hold a pipe open: wait 5 s in all, not per pump
    for pump in pumps:
        pump.join(timeout=max(0.0, drained_by - time.monotonic()))
    for stream in streams:
        stream.close()
    sink.close()
    outcome.tail = sink.tail
    return outcome


def _zygote_child(zygote_dir: Path, command: list[str], env: dict[str, str], options: list[str]) -> Any:
    """A child of the warm zygote for ``command`` (``python -m module ...``), or None: no such zygote
    ready (one is asked for), or it could not be reached. Never fails the job: None starts it as usual."""
    from opensage.runner import zygote

    parsed = zygote.module_command(command)
    if parsed is None:
        return None
    python, module, args = parsed
    sock = zygote.find(zygote_dir, python, module, env)
    if sock is None:
        return None
    try:
        return zygote.start_child(sock, module, args, env, options)
    except OSError:
        return None


def _supervise(proc: Any, spec: JobSpec, control: Control) -> Outcome:
    stopped = exceeded = False
    while proc.poll() is None:
        if control.stop_requested:
            stopped = True
        elif control.deadline_passed():
            exceeded = True
        if stopped or exceeded:
            _terminate(proc, spec.stop_grace_seconds)
            break
        time.sleep(0.05)
    return Outcome(_exit_code(proc.wait()), stopped=stopped, max_runtime_exceeded=exceeded)
