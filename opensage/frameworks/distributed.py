"""Multi-instance script mode: how the SDK's ``distribution`` options launch the entry point on each host.

The SDK sends the choice as hyperparameters (``PyTorch._pytorch_distribution_configuration``):

* ``sagemaker_torch_distributed_enabled`` (``torch_distributed``): ``torchrun`` on every host, as the
  toolkit's TorchDistributedRunner does: ``--nnodes N --nproc_per_node P --node_rank i --master_addr algo-1
  --master_port <port>``; P = the host's GPUs, else 1 (``nproc_per_node`` in the distribution, passed by
  the SDK as ``sagemaker_nproc_per_node`` / ``sagemaker_torch_distributed_nproc_per_node``, wins).
* ``sagemaker_distributed_dataparallel_enabled`` / ``sagemaker_pytorch_ddp_enabled`` (``pytorchddp``, which
  the SDK rewrites to smdistributed dataparallel): SageMaker starts it with mpirun + smddprun on GPUs; here
  the same torchrun launch (native DDP: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT), since
  smdistributed and NCCL are not available on CPU.
* ``sagemaker_mpi_enabled`` (``mpi``): SageMaker's MPIRunner has algo-1 ``mpirun`` the ranks over ssh.
  There is no ssh here: each host's agent starts its own ``processes_per_host`` ranks (global rank = host
  index x processes_per_host + local rank) and algo-1's launcher runs a PMI-1 process manager
  (``frameworks/mpi.py``) that every rank of every host reaches through ``PMI_PORT`` / ``PMI_ID``, so
  MPICH (the ``mpich`` + ``mpi4py`` wheels pinned in the PyTorch environment) wires the
  ranks up itself: ``mpi4py``'s ``COMM_WORLD`` spans the hosts, ranks of one host share memory, others
  talk over TCP (UCX, ``UCX_TLS=self,tcp`` unless the job sets it: UCX's shared-memory transports fail
  between hosts of one machine, which run as different users). Each rank also gets the environment Open
  MPI gives a rank (``OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE/NODE_RANK``) and the torch.distributed
  one (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so scripts that read their rank from
  either (SageMaker's MPI examples with ``init_process_group``) run too. ``-x NAME[=VALUE]`` in
  ``custom_mpi_options`` exports a variable to the ranks, as mpirun does; other mpirun options do not
  apply. A Python entry point runs as ``python -m mpi4py script`` (as SageMaker's runner does: an
  uncaught exception aborts the world instead of hanging in MPI_Finalize). A rank that fails ends its
  host's other ranks (as mpirun does) and its host fails; the control plane then stops the other hosts.
  Not here: Open MPI itself, Horovod, ``MPI_Comm_spawn``.

Where the master is: ``algo-1`` when the name resolves (jobexec's private /etc/hosts, root); otherwise (an
agent that is not root) the address the reconciler put in ``OPENSAGE_JOB_HOSTS``. The port is the job's own
(``OPENSAGE_JOB_MASTER_PORT``, free when the job started), not SageMaker's fixed 7777: on one machine every
host and every job shares the loopback. MPI's process manager listens on ``OPENSAGE_JOB_PMI_PORT`` when
the control plane reserved one, else on the master port + 1 (the master port stays torch's).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from typing import Any

from opensage.frameworks import mpi
from opensage.frameworks.toolkit_env import ToolkitEnvironment

HOSTS_ENV = "OPENSAGE_JOB_HOSTS"  # same names as runner/jobexec.py (which must stay standard-library only)
MASTER_PORT_ENV = "OPENSAGE_JOB_MASTER_PORT"
DEFAULT_MASTER_PORT = 7777  # SageMaker's (used only when the reconciler gave none)
TORCHRUN_FLAGS = ("sagemaker_torch_distributed_enabled", "sagemaker_distributed_dataparallel_enabled",
                  "sagemaker_pytorch_ddp_enabled")
MPI_FLAG = "sagemaker_mpi_enabled"
STDERR_TAIL_BYTES = 64 * 1024


def _enabled(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def launcher(env: ToolkitEnvironment) -> str | None:
    """``torchrun`` | ``mpi`` | None (run the entry point once, as a single process)."""
    params = env.platform_params
    if any(_enabled(params.get(flag)) for flag in TORCHRUN_FLAGS):
        return "torchrun"
    if _enabled(params.get(MPI_FLAG)):
        return "mpi"
    return None


def host_addresses(environ: dict[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    pairs = (item.partition("=") for item in source.get(HOSTS_ENV, "").split(",") if "=" in item)
    return {name.strip(): address.strip() for name, _, address in pairs}


def master_address(env: ToolkitEnvironment, environ: dict[str, str] | None = None) -> str:
    """``algo-1`` if it resolves here, else its address from the reconciler (not root: no /etc/hosts)."""
    name = env.master_hostname
    try:
        socket.getaddrinfo(name, None)
        return name
    except OSError:
        return host_addresses(environ).get(name, name)


def master_port(environ: dict[str, str] | None = None) -> int:
    source = os.environ if environ is None else environ
    try:
        return int(source.get(MASTER_PORT_ENV) or DEFAULT_MASTER_PORT)
    except ValueError:
        return DEFAULT_MASTER_PORT


def _hosts(env: ToolkitEnvironment) -> list[str]:
    return list(env.distribution_hosts or env.hosts)


def processes_per_host(env: ToolkitEnvironment, mpi: bool) -> int:
    params = env.platform_params
    keys = (("sagemaker_mpi_num_of_processes_per_host",) if mpi else
            ("sagemaker_nproc_per_node", "sagemaker_torch_distributed_nproc_per_node"))
    for key in keys:
        try:
            if params.get(key) not in (None, ""):
                return max(1, int(params[key]))
        except (TypeError, ValueError):
            continue
    return max(1, env.num_gpus)


def torchrun_command(env: ToolkitEnvironment, python: str, entry_cmd: list[str]) -> list[str]:
    """``python -m torch.distributed.run <rendezvous> <script> args`` (``entry_cmd`` = the single-process
    command ``[python, "--", script, args...]``)."""
    hosts = _hosts(env)
    script = [a for a in entry_cmd[1:] if a != "--"] if entry_cmd[:1] == [python] else entry_cmd
    return [python, "-m", "torch.distributed.run", "--nnodes", str(len(hosts)),
            "--nproc_per_node", str(processes_per_host(env, mpi=False)),
            "--node_rank", str(hosts.index(env.current_host)), "--master_addr", master_address(env),
            "--master_port", str(master_port()), *script]


MPI_OPTIONS_PARAM = "sagemaker_mpi_custom_mpi_options"
# MPICH's defaults that fail here: UCX's shared-memory transports between hosts of one machine (different
# users, "Shared memory error" at MPI_Init). Ranks of one host still share memory (MPICH's own shm).
MPI_DEFAULT_ENV = {"UCX_TLS": "self,tcp"}


class RankEnvironments(list[dict[str, str]]):
    """One environment per local rank; ``plan`` when the ranks form an MPI world (``run_ranks`` then runs
    algo-1's process manager or waits for it)."""

    plan: mpi.MpiPlan | None = None


def mpi_plan(env: ToolkitEnvironment, environ: dict[str, str] | None = None) -> mpi.MpiPlan:
    """This host's view of the job's MPI world: hosts, ranks per host, where algo-1's PMI server is."""
    source = os.environ if environ is None else environ
    hosts = _hosts(env)
    addresses = host_addresses(source)
    master = env.master_hostname
    bind = addresses.get(master) or _resolve(master) or "127.0.0.1"
    try:
        port = int(source.get(mpi.PMI_PORT_ENV) or 0) or master_port(source) + 1
    except ValueError:
        port = master_port(source) + 1
    per_host = processes_per_host(env, mpi=True)
    return mpi.MpiPlan(hosts=len(hosts), per_host=per_host, node=hosts.index(env.current_host),
                       server_host=master_address(env, source), port=port, bind_address=bind,
                       allowed=frozenset(addresses.values()),
                       id_base=mpi.id_base(source.get(mpi.SECRET_ENV, ""), per_host * len(hosts), len(hosts)))


def _resolve(name: str) -> str | None:
    try:
        return socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0]
    except (OSError, IndexError):
        return None


def _mpi_exports(env: ToolkitEnvironment, base: dict[str, str]) -> dict[str, str]:
    """``-x NAME=VALUE`` / ``-x NAME`` of ``custom_mpi_options``: what mpirun would export to the ranks."""
    try:
        words = shlex.split(str(env.platform_params.get(MPI_OPTIONS_PARAM) or ""))
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for flag, value in zip(words, words[1:], strict=False):
        if flag == "-x":
            name, eq, given = value.partition("=")
            if eq:
                out[name] = given
            elif name in base:
                out[name] = base[name]
    return out


def mpi_rank_environments(env: ToolkitEnvironment, base: dict[str, str]) -> RankEnvironments:
    """One environment per local rank: MPICH's PMI variables, Open MPI's rank variables and torch.distributed's
    (see module doc)."""
    hosts = _hosts(env)
    per_host = processes_per_host(env, mpi=True)
    node = hosts.index(env.current_host)
    world = per_host * len(hosts)
    plan = mpi_plan(env, base)
    clean = {**MPI_DEFAULT_ENV, **mpi.clean_environment(base), **_mpi_exports(env, base)}
    ranks = RankEnvironments()
    for local in range(per_host):
        rank = node * per_host + local
        ranks.append({
            **clean, **plan.rank_environment(local),
            "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(world),
            "OMPI_COMM_WORLD_LOCAL_RANK": str(local), "OMPI_COMM_WORLD_LOCAL_SIZE": str(per_host),
            "OMPI_COMM_WORLD_NODE_RANK": str(node), "RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(per_host), "GROUP_RANK": str(node),
            "MASTER_ADDR": master_address(env, base), "MASTER_PORT": str(master_port(base))})
    ranks.plan = plan
    return ranks


def run_mpi(env: ToolkitEnvironment, cmd: list[str], base: dict[str, str], cwd: str) -> tuple[int, str]:
    """The ``mpi`` launch of this host: its ranks, wired to the job's other hosts through algo-1's PMI server."""
    return run_ranks(cmd, mpi_rank_environments(env, base), cwd)


def mpi_command(cmd: list[str]) -> list[str]:
    """``python -m mpi4py script args`` for a Python entry point when mpi4py is there, as SageMaker's MPI
    runner does: an uncaught exception then calls MPI_Abort, so a failing rank exits instead of hanging in
    MPI_Finalize while the others wait for it in a collective."""
    if len(cmd) < 3 or cmd[1] != "--" or not cmd[2].endswith(".py"):
        return cmd
    probe = [cmd[0], "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('mpi4py') is None)"]
    try:
        found = subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        found = False
    return [cmd[0], "-m", "mpi4py", *cmd[2:]] if found else cmd


def _failed_to_start(message: str) -> tuple[int, str]:
    print(message, file=sys.stderr, flush=True)
    return 1, message


def run_ranks(cmd: list[str], environments: list[dict[str, str]], cwd: str) -> tuple[int, str]:
    """Start one process per environment; when one fails the others are ended (as mpirun does). Returns the
    first failing exit code (0 when all succeed) and the tail of the ranks' stderr. With an MPI ``plan``
    (``mpi_rank_environments``), algo-1 serves PMI until every host's ranks ended; the other hosts start
    their ranks once they reach it."""
    plan = getattr(environments, "plan", None)
    if plan is not None:
        cmd = mpi_command(cmd)
    server: mpi.PmiServer | None = None
    watch: mpi.Watch | None = None
    if plan is not None and plan.is_master:
        server = mpi.PmiServer(plan)
        try:
            server.start()
        except OSError as exc:
            return _failed_to_start(
                f"MPI: the process manager could not listen on {plan.bind_address}:{plan.port} ({exc}).")
    elif plan is not None:
        try:
            watch = mpi.Watch(plan)
        except ConnectionError as exc:
            return _failed_to_start(f"MPI: {exc}")
    stopping = threading.Event()
    code, text = 1, ""
    try:
        code, text = _run_processes(cmd, environments, cwd, stopping, server)
    finally:
        if watch is not None:
            watch.done(code)
        if server is not None:
            server.close()
    return code, text


def _run_processes(cmd: list[str], environments: list[dict[str, str]], cwd: str, stopping: threading.Event,
                   server: mpi.PmiServer | None) -> tuple[int, str]:
    print(f"Invoking script on {len(environments)} rank(s) with the following command:\n{shlex.join(cmd)}",
          flush=True)
    procs = [subprocess.Popen(cmd, env=e, cwd=cwd, stderr=subprocess.PIPE) for e in environments]
    tail: deque[bytes] = deque(maxlen=64)
    lock = threading.Lock()

    def pump(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        while chunk := os.read(proc.stderr.fileno(), 65536):
            with lock:
                sys.stderr.buffer.write(chunk)
                sys.stderr.buffer.flush()
                tail.append(chunk)

    def forward(sig: int, _frame: Any) -> None:
        stopping.set()
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    pumps = [threading.Thread(target=pump, args=(p,), daemon=True) for p in procs]
    for t in pumps:
        t.start()
    code = 0
    try:
        pending = list(procs)
        while pending:
            for p in list(pending):
                try:
                    rc = p.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                pending.remove(p)
                if rc != 0 and code == 0:
                    code = 128 - rc if rc < 0 else rc
                    for other in pending:
                        other.terminate()
        if server is not None and code == 0 and not stopping.is_set():
            # The other hosts' ranks may still need the key-value space (their MPI_Finalize included).
            lost = server.wait_hosts(stop=stopping)
            if lost:
                print(f"MPI: host(s) {', '.join(f'algo-{h + 1}' for h in lost)} ended without reporting "
                      f"their ranks' end", file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for t in pumps:
        t.join(timeout=5)
    text = b"".join(tail)[-STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")
    return code, text


_CHILD_FAILED = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError"


def strip_launcher_report(stderr_tail: str) -> str:
    """torchrun ends a failed run with its own traceback and a "Root Cause" box; the user's error is what the
    ranks printed before it (the FailureReason should show that, as SageMaker's does)."""
    end = stderr_tail.rfind(_CHILD_FAILED)
    if end < 0:
        return stderr_tail
    start = stderr_tail.rfind("Traceback (most recent call last):", 0, end)
    head = stderr_tail[:start if start >= 0 else end]
    lines = [line for line in head.splitlines() if "torch.distributed.elastic" not in line]
    return "\n".join(lines) if any(line.strip() for line in lines) else stderr_tail
