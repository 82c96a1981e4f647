"""The ``mpi`` distribution's process manager (frameworks/mpi.py): MPICH ranks started by each host's launcher
form one MPI world through algo-1's PMI-1 server, with no ssh and no mpirun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from opensage.frameworks import distributed, mpi

try:
    import mpi4py  # noqa: F401 - MPICH's library comes with the mpich wheel
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi4py = pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py / mpich are not installed in this venv "
                                  "(uv pip install mpich==5.0.2 mpi4py==4.1.2)")



@pytest.fixture(autouse=True)
def _no_shared_memory_left():
    """These tests run ranks as this process's user, not as a job's (whose /dev/shm entries the agent removes):
    the MPICH segments of ranks a test kills would stay in the machine's /dev/shm. Only this user's new ones are
    removed (a job running beside these tests has a uid of its own)."""
    def ours() -> set[Path]:
        found = set()
        for path in Path("/dev/shm").glob("mpich_shm_*"):
            try:
                if path.lstat().st_uid == os.getuid():
                    found.add(path)
            except FileNotFoundError:  # another process's segment, removed meanwhile
                continue
        return found

    before = ours()
    yield
    for path in ours() - before:
        path.unlink(missing_ok=True)


RANK_SCRIPT = textwrap.dedent('''
    import json, os, sys
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    total = comm.allreduce(rank + 1)
    if rank == 0:
        comm.send({"greeting": "from rank 0"}, dest=size - 1, tag=7)
    got = comm.recv(source=0, tag=7) if rank == size - 1 else None
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    with open(os.path.join(sys.argv[1], f"rank-{rank}.json"), "w") as f:
        json.dump({"rank": rank, "size": size, "sum": total, "got": got, "local_size": local,
                   "ompi_rank": os.environ.get("OMPI_COMM_WORLD_RANK")}, f)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plan(node: int, port: int, hosts: int = 2, per_host: int = 2, base: int = 1000) -> mpi.MpiPlan:
    return mpi.MpiPlan(hosts=hosts, per_host=per_host, node=node, server_host="127.0.0.1", port=port,
                       bind_address="127.0.0.1", allowed=frozenset({"127.0.0.1"}), id_base=base)


_READERS: dict[socket.socket, Any] = {}


def _line(sock: socket.socket) -> str:
    """One reply line ('' once the server dropped the connection)."""
    reader = _READERS.setdefault(sock, sock.makefile("rb"))
    return reader.readline().decode()


@needs_mpi4py
def test_pmi_server_two_hosts_two_ranks_allreduce_and_send_recv(tmp_path):
    """Real MPICH ranks (mpi4py) of two hosts x two processes meet through the server alone."""
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    port = _free_port()
    server = mpi.PmiServer(_plan(0, port))
    server.start()
    procs = []
    try:
        for node in range(2):
            plan = _plan(node, port)
            for local in range(2):
                env = {**mpi.clean_environment(dict(os.environ)), **distributed.MPI_DEFAULT_ENV,
                       **plan.rank_environment(local)}
                procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                                              stderr=subprocess.PIPE))
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
        server.close()
    assert codes == [0, 0, 0, 0], [p.stderr.read().decode()[-2000:] for p in procs if p.stderr]
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(4)]
    assert {r["size"] for r in results} == {4} and {r["sum"] for r in results} == {10}
    assert results[3]["got"] == {"greeting": "from rank 0"}
    assert {r["local_size"] for r in results} == {2}  # PMI_process_mapping: two ranks per host


def test_pmi_server_refuses_foreign_pmiid_and_second_claim_on_a_slot():
    port = _free_port()
    server = mpi.PmiServer(_plan(0, port, hosts=1, per_host=2, base=5000))
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as stranger:
            stranger.sendall(b"cmd=initack pmiid=1\n")  # not one of the job's ids: dropped unanswered
            assert _line(stranger) == ""
        with socket.create_connection(("127.0.0.1", port)) as first, \
                socket.create_connection(("127.0.0.1", port)) as second:
            first.sendall(b"cmd=initack pmiid=5001\n")
            reply = _line(first) + _line(first) + _line(first) + _line(first)
            assert reply == "cmd=initack rc=0\ncmd=set size=2\ncmd=set rank=1\ncmd=set debug=0\n"
            second.sendall(b"cmd=initack pmiid=5001\n")  # rank 1's slot is taken
            assert _line(second) == ""
        with socket.create_connection(("127.0.0.1", port)) as early:
            early.sendall(b"cmd=get kvsname=x key=a\n")  # anything before initack
            assert _line(early) == ""
        assert server.rejected == 3
    finally:
        server.close()


def test_pmi_server_barrier_out_only_when_every_rank_arrived_and_kvs_shared():
    port = _free_port()
    server = mpi.PmiServer(_plan(0, port, hosts=2, per_host=1, base=0))
    server.start()
    try:
        a, b = (socket.create_connection(("127.0.0.1", port)) for _ in range(2))
        for sock, rank in ((a, 0), (b, 1)):
            sock.sendall(f"cmd=initack pmiid={rank}\n".encode())
            for _ in range(4):
                _line(sock)
        a.sendall(b"cmd=put kvsname=opensage_kvs key=card-0 value=tcp://10.0.0.1:99\n")
        assert _line(a) == "cmd=put_result rc=0\n"
        a.sendall(b"cmd=barrier_in\n")
        time.sleep(0.5)
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            a.recv(100)  # rank 1 has not arrived: no barrier_out yet
        a.setblocking(True)
        b.sendall(b"cmd=barrier_in\n")
        assert _line(a) == "cmd=barrier_out rc=0\n" and _line(b) == "cmd=barrier_out rc=0\n"
        b.sendall(b"cmd=get kvsname=opensage_kvs key=card-0\n")
        assert _line(b) == "cmd=get_result rc=0 value=tcp://10.0.0.1:99\n"
        b.sendall(b"cmd=get kvsname=opensage_kvs key=PMI_process_mapping\n")
        assert _line(b) == "cmd=get_result rc=0 value=(vector,(0,2,1))\n"
        b.sendall(b"cmd=get kvsname=opensage_kvs key=missing\n")
        assert _line(b).startswith("cmd=get_result rc=1 ")
        b.sendall(b"cmd=get_my_kvsname\n")
        name = _line(b).strip().rpartition("kvsname=")[2]
        # MPICH names its /dev/shm segments after the KVS name: never one shared by two worlds.
        assert name == server.kvsname and name != mpi.PmiServer(_plan(0, port)).kvsname
        a.close()
        b.close()
    finally:
        server.close()


LAUNCHER = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    from opensage.frameworks import distributed
    from opensage.frameworks.toolkit_env import load_environment
    root, script, out = sys.argv[1:4]
    env = load_environment(Path(root), {})
    code, _ = distributed.run_mpi(env, [sys.executable, script, out], dict(os.environ), root)
    sys.exit(code)
''')


def _host_root(tmp_path: Path, host: str, hps: dict[str, str]) -> Path:
    root = tmp_path / host
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"sagemaker_program": '"ranks.py"', **hps}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": ["algo-1", "algo-2"]}))
    return root


def _launch(tmp_path: Path, host: str, script: Path, ports: tuple[int, int], hps: dict[str, str]):
    env = {**os.environ, "OPENSAGE_JOB_HOSTS": "algo-1=127.0.0.1,algo-2=127.0.0.1",
           "OPENSAGE_JOB_MASTER_PORT": str(ports[0]), "OPENSAGE_JOB_PMI_PORT": str(ports[1]),
           "OPENSAGE_JOB_SECRET": "unit-test-secret", "PYTHONPATH": str(Path(__file__).parents[3])}
    root = _host_root(tmp_path, host, hps)
    return subprocess.Popen([sys.executable, "-c", LAUNCHER, str(root), str(script), str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@needs_mpi4py
def test_run_mpi_two_host_launchers_form_one_world_algo2_first(tmp_path):
    """Each host's launcher starts its own ranks; algo-2's waits for algo-1's process manager."""
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    ports = (_free_port(), _free_port())
    hps = {"sagemaker_mpi_enabled": "true", "sagemaker_mpi_num_of_processes_per_host": "2"}
    second = _launch(tmp_path, "algo-2", script, ports, hps)
    time.sleep(1.0)  # algo-2 is up before algo-1's server: it must wait, not fail
    first = _launch(tmp_path, "algo-1", script, ports, hps)
    try:
        outs = [p.communicate(timeout=180) for p in (first, second)]
    finally:
        for p in (first, second):
            p.kill()
    assert (first.returncode, second.returncode) == (0, 0), [o[1].decode()[-3000:] for o in outs]
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(4)]
    assert [r["ompi_rank"] for r in results] == ["0", "1", "2", "3"]
    assert {r["sum"] for r in results} == {10} and results[3]["got"] == {"greeting": "from rank 0"}


@needs_mpi4py
def test_run_mpi_failing_rank_ends_its_hosts_other_ranks(tmp_path):
    """Rank 1 fails before reaching MPI; rank 0, blocked in a barrier, is ended and the host fails."""
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent('''
        import os, sys
        if os.environ["OMPI_COMM_WORLD_RANK"] == "1":
            sys.exit("rank 1 broke")
        from mpi4py import MPI
        MPI.COMM_WORLD.Barrier()
    '''))
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(
        {"sagemaker_program": '"fail.py"', "sagemaker_mpi_enabled": "true",
         "sagemaker_mpi_num_of_processes_per_host": "2"}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    env = {**os.environ, "OPENSAGE_JOB_HOSTS": "algo-1=127.0.0.1", "OPENSAGE_JOB_MASTER_PORT": str(_free_port()),
           "OPENSAGE_JOB_PMI_PORT": str(_free_port()), "PYTHONPATH": str(Path(__file__).parents[3])}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(tmp_path), str(script), str(tmp_path)], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 1 and b"rank 1 broke" in proc.stderr
    assert time.monotonic() - started < 60
