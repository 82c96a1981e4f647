"""A real MPI runtime without ssh: a PMI-1 process manager for the ``mpi`` distribution (``distributed.py``).

SageMaker's MPIRunner has algo-1 ``mpirun`` every rank over ssh. Here each host's agent starts its own
``processes_per_host`` ranks (``distributed.run_ranks``), and MPICH (PyPI's ``mpich`` wheel, which
``mpi4py`` loads) wires them up itself once it can reach a process manager speaking the simple PMI-1 wire
protocol (MPICH ``src/pmi``: ``PMI_PORT=host:port`` + ``PMI_ID``; ``cmd=initack``, ``init``,
``get_maxes``, ``get_appnum``, ``get_my_kvsname``, ``put``, ``get``, ``barrier_in``, ``finalize``,
``abort``). ``PmiServer`` is that process manager: algo-1's launcher runs it, every rank of every host
connects to it, and the ranks exchange their business cards through its key-value space and then talk to
each other directly (MPICH's own TCP / shared-memory transports). ``PMI_process_mapping`` tells MPICH which
ranks share a host (blocks of ``processes_per_host``), so ranks on one host use shared memory.

Each host's launcher also holds a *watch* connection (our own two commands on the same wire): a non-master
host starts its ranks only once it reaches the server (a rank's PMI connect is not retried), and sends
``cmd=opensage_done`` when its ranks ended, so algo-1 keeps serving until every host is done. A host whose
rank fails ends its own ranks (``run_ranks``) and exits; the control plane then stops the other hosts
(``runner/interruptions.py``), so the job's FailureReason is the failing rank's error.

Exposure: the server listens on algo-1's job address (the loopback on one machine, the node's address on
Ray) for the job's lifetime, on the job's PMI port. It answers only connections from the job's hosts'
addresses, and a connection's first command must be an ``initack`` whose ``pmiid`` is one of the job's:
``PMI_ID`` = a per-job offset + rank, the offset derived from ``OPENSAGE_JOB_SECRET`` when the control plane
gives the job one (31 bits: the protocol's ids are C ints), else 0. The data plane is MPICH's own, as
unauthenticated as any MPI's: jobs of one cluster must trust its network.
"""

from __future__ import annotations

import hashlib
import secrets
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SECRET_ENV = "OPENSAGE_JOB_SECRET"  # per job, shared by its hosts (set by the control plane when it has one)
PMI_PORT_ENV = "OPENSAGE_JOB_PMI_PORT"  # the PMI server's port when the control plane reserved one
KVS_NAME_MAX, KEY_MAX, VAL_MAX = 256, 64, 1024  # Hydra's (pmiserv_common.h)
MAX_LINE = 64 * 1024  # a longer line is no PMI-1 command: the connection is dropped
# How long a host waits for algo-1's server: algo-1 may start minutes later (its node building the environment);
# if it never does, its failure makes the control plane stop this host first.
CONNECT_TIMEOUT_S = 1800.0
# Variables of another process manager that would take precedence over ours (PMI_FD) or confuse MPICH's
# auto-detection (PMIX_*): never passed to a rank.
FOREIGN_PMI_PREFIXES = ("PMI_", "PMIX_", "PMI2_")


def id_base(secret: str, world: int, hosts: int) -> int:
    """The pmiid of rank 0: unguessable when the job has a secret, so only its ranks can take a slot."""
    if not secret:
        return 0
    span = 2**31 - 1 - world - hosts
    return int.from_bytes(hashlib.sha256(f"opensage-pmi:{secret}".encode()).digest()[:8], "big") % span


def process_mapping(hosts: int, per_host: int) -> str:
    """MPICH's node map (``MPL_rankmap_str_to_array``): ranks in blocks of ``per_host`` per host."""
    return f"(vector,(0,{hosts},{per_host}))"


@dataclass(frozen=True)
class MpiPlan:
    """One host's view of the job's MPI world (the same on every host, but for ``node``)."""

    hosts: int
    per_host: int
    node: int  # this host's index (algo-1 = 0 serves PMI)
    server_host: str  # what ranks connect to: algo-1, or its address where the name does not resolve
    port: int
    bind_address: str  # algo-1's address (the server listens there)
    allowed: frozenset[str] = field(default=frozenset())  # peers' addresses (empty: the job gave none)
    id_base: int = 0

    @property
    def world(self) -> int:
        return self.hosts * self.per_host

    @property
    def is_master(self) -> bool:
        return self.node == 0

    def rank_environment(self, local: int) -> dict[str, str]:
        """What MPICH's PMI-1 client reads: where the process manager is and which slot is this rank's."""
        rank = self.node * self.per_host + local
        return {"PMI_PORT": f"{self.server_host}:{self.port}", "PMI_ID": str(self.id_base + rank),
                "MPIR_CVAR_PMI_VERSION": "1"}

    @property
    def watch_id(self) -> int:
        return self.id_base + self.world + self.node


def clean_environment(base: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base.items() if not k.startswith(FOREIGN_PMI_PREFIXES)}


def _parse(line: str) -> dict[str, str]:
    """``cmd=put kvsname=k key=a value=b`` -> {"cmd": "put", ...}; MPICH escapes with backslashes."""
    out: dict[str, str] = {}
    for token in line.split(" "):
        if not token:
            continue
        key, _, value = token.partition("=")
        out[key] = value.replace("\\ ", " ").replace("\\\\", "\\") if "\\" in value else value
    return out


class _Conn:
    __slots__ = ("sock", "peer", "buf", "rank", "watch_host", "finalized", "done")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock, self.peer, self.buf = sock, peer, b""
        self.rank: int | None = None
        self.watch_host: int | None = None
        self.finalized = False
        self.done = False


class PmiServer:
    """A PMI-1 process manager for one job's MPI world (see the module doc); a daemon thread serves it."""

    def __init__(self, plan: MpiPlan, log: Any = None) -> None:
        self.plan = plan
        # Unique per world: MPICH names its shared-memory segments after a hash of it (/dev/shm/mpich_shm_*),
        # so two jobs (or two attempts of one) with one name would open each other's.
        self.kvsname = f"kvs_{secrets.token_hex(8)}"
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._kvs: dict[str, str] = {}
        self._barrier: set[int] = set()
        self._ranks: dict[int, _Conn] = {}
        self._hosts_done: dict[int, bool] = {}  # host -> ended cleanly (True) / connection lost (False)
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.rejected = 0  # connections refused (address or pmiid not the job's)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Listen on algo-1's address and the job's PMI port (OSError when taken: the job cannot run)."""
        family = socket.AF_INET6 if ":" in self.plan.bind_address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.plan.bind_address, self.plan.port))
            sock.listen(max(16, self.plan.world + self.plan.hosts))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, name="opensage-pmi", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()

    def wait_hosts(self, timeout: float | None = None, stop: threading.Event | None = None) -> list[int]:
        """Block until every other host's launcher said it is done (or its watch connection ended), the
        timeout passed or ``stop`` is set; returns the hosts whose connection ended without
        ``opensage_done``."""
        others = set(range(1, self.plan.hosts))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not others <= set(self._hosts_done) and not (stop is not None and stop.is_set()):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(0.2 if left is None else min(0.2, left))
            return sorted(h for h, ok in self._hosts_done.items() if not ok)

    # -- the loop -------------------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, addr = self._listener.accept()
        except OSError:
            return
        peer = addr[0]
        if self.plan.allowed and peer not in self.plan.allowed and not peer.startswith("127."):
            self.rejected += 1
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sel.register(sock, selectors.EVENT_READ, _Conn(sock, peer))

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        conn.buf += chunk
        while b"\n" in conn.buf:
            line, conn.buf = conn.buf.split(b"\n", 1)
            if not self._handle(conn, line.decode("utf-8", errors="replace")):
                self._drop(conn)
                return
        if len(conn.buf) > MAX_LINE:
            self._drop(conn)

    def _send(self, conn: _Conn, text: str) -> None:
        # Replies are small; a rank reads each before its next command, so a blocking send cannot deadlock.
        conn.sock.setblocking(True)
        try:
            conn.sock.sendall(text.encode())
        except OSError:
            pass
        finally:
            conn.sock.setblocking(False)

    def _drop(self, conn: _Conn) -> None:
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        with self._changed:
            if conn.rank is not None and self._ranks.get(conn.rank) is conn:
                del self._ranks[conn.rank]
                self._barrier.discard(conn.rank)
            if conn.watch_host is not None:
                self._hosts_done.setdefault(conn.watch_host, conn.done)
            self._changed.notify_all()

    # -- commands -------------------------------------------------------------------------------------
    def _handle(self, conn: _Conn, line: str) -> bool:
        """Answer one command; False drops the connection."""
        msg = _parse(line.strip())
        cmd = msg.get("cmd", "")
        if conn.rank is None and conn.watch_host is None:
            if cmd != "initack":
                self.rejected += 1
                return False
            return self._initack(conn, msg)
        if conn.watch_host is not None:
            if cmd == "opensage_done":
                conn.done = True
                with self._changed:
                    self._hosts_done[conn.watch_host] = True
                    self._changed.notify_all()
                return True
            return False
        rank = conn.rank
        if cmd == "init":
            self._send(conn, "cmd=response_to_init rc=0 pmi_version=1 pmi_subversion=1\n")
        elif cmd == "get_maxes":
            self._send(conn, f"cmd=maxes rc=0 kvsname_max={KVS_NAME_MAX} keylen_max={KEY_MAX} "
                             f"vallen_max={VAL_MAX}\n")
        elif cmd == "get_appnum":
            self._send(conn, "cmd=appnum rc=0 appnum=0\n")
        elif cmd == "get_universe_size":
            self._send(conn, f"cmd=universe_size rc=0 size={self.plan.world}\n")
        elif cmd == "get_my_kvsname":
            self._send(conn, f"cmd=my_kvsname rc=0 kvsname={self.kvsname}\n")
        elif cmd == "put":
            key, value = msg.get("key", ""), msg.get("value", "")
            if not key or len(key) > KEY_MAX or len(value) > VAL_MAX:
                self._send(conn, "cmd=put_result rc=1 msg=invalid_key_or_value\n")
            else:
                with self._lock:
                    self._kvs[key] = value
                self._send(conn, "cmd=put_result rc=0\n")
        elif cmd == "get":
            value = self._lookup(msg.get("key", ""))
            self._send(conn, f"cmd=get_result rc=0 value={value}\n" if value is not None
                       else "cmd=get_result rc=1 msg=key_not_found\n")
        elif cmd == "barrier_in":
            self._barrier_in(rank)  # type: ignore[arg-type]
        elif cmd == "finalize":
            conn.finalized = True
            self._send(conn, "cmd=finalize_ack rc=0\n")
        elif cmd == "abort":
            # MPICH expects the process manager to end an aborting rank (Hydra kills it); dropping its
            # connection ends its wait, so it exits with its code and its host's launcher ends the others.
            self._log(f"MPI rank {rank} called MPI_Abort (exit code {msg.get('exitcode', '?')})")
            return False
        elif cmd in ("publish_name", "unpublish_name", "lookup_name"):
            reply = {"publish_name": "publish_result", "unpublish_name": "unpublish_result",
                     "lookup_name": "lookup_result"}[cmd]
            self._send(conn, f"cmd={reply} rc=1 msg=name_service_not_supported\n")
        else:  # spawn (MPI_Comm_spawn) and anything newer: an error the rank reports, not a hang
            self._send(conn, f"cmd={cmd or 'unknown'}_result rc=1 msg=not_supported_by_opensage\n")
        return True

    def _initack(self, conn: _Conn, msg: dict[str, str]) -> bool:
        try:
            slot = int(msg.get("pmiid", "")) - self.plan.id_base
        except ValueError:
            slot = -1
        world = self.plan.world
        if 0 <= slot < world:
            with self._changed:
                if slot in self._ranks:  # a second claim on a live rank's slot
                    self.rejected += 1
                    return False
                self._ranks[slot] = conn
            conn.rank = slot
            self._send(conn, f"cmd=initack rc=0\ncmd=set size={world}\ncmd=set rank={slot}\ncmd=set debug=0\n")
            return True
        host = slot - world
        if 1 <= host < self.plan.hosts:
            with self._changed:
                if host in self._hosts_done or any(
                        c.watch_host == host for c in self._watchers()):
                    self.rejected += 1
                    return False
            conn.watch_host = host
            self._send(conn, "cmd=initack rc=0\n")
            return True
        self.rejected += 1
        return False

    def _watchers(self) -> list[_Conn]:
        return [k.data for k in self._sel.get_map().values() if isinstance(k.data, _Conn)
                and k.data.watch_host is not None]

    def _lookup(self, key: str) -> str | None:
        if key == "PMI_process_mapping":
            return process_mapping(self.plan.hosts, self.plan.per_host)
        if key == "universeSize":
            return str(self.plan.world)
        if key.startswith("PMI_"):  # PMI_hwloc_xmlfile, PMI_dead_processes, ...: none here
            return None
        with self._lock:
            return self._kvs.get(key)

    def _barrier_in(self, rank: int) -> None:
        with self._lock:
            self._barrier.add(rank)
            if len(self._barrier) < self.plan.world:
                return
            waiting = [self._ranks[r] for r in self._barrier if r in self._ranks]
            self._barrier.clear()
        for conn in waiting:
            self._send(conn, "cmd=barrier_out rc=0\n")


class Watch:
    """A host's watch connection to algo-1's server (see the module doc)."""

    def __init__(self, plan: MpiPlan, timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.plan = plan
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                sock = socket.create_connection((plan.server_host, plan.port), timeout=10)
                sock.sendall(f"cmd=initack pmiid={plan.watch_id}\n".encode())
                reply = _read_line(sock)
                if reply.startswith("cmd=initack") and " rc=0" in f" {reply}":
                    sock.settimeout(None)
                    self.sock = sock
                    return
                sock.close()
                last = ConnectionRefusedError(f"the server answered {reply!r}")
            except OSError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"could not reach the MPI process manager on {plan.server_host}:{plan.port} "
                    f"(algo-1) within {int(timeout)} s: {last}")
            time.sleep(0.2)

    def done(self, exit_code: int) -> None:
        try:
            self.sock.sendall(f"cmd=opensage_done exitcode={int(exit_code)}\n".encode())
        except OSError:
            pass
        finally:
            self.sock.close()


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < MAX_LINE:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", errors="replace").split("\n", 1)[0]

