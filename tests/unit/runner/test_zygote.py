"""Training jobs forked from a warm fork server (runner/zygote.py): the child is the job's process exactly as
``unshare … jobexec.py … python -m <module>`` makes it (own uid, /opt/ml, private /tmp, no platform secret),
its exit code, stop signal and death with its agent behave as a command's, and the agent falls back to a
fresh process when no zygote is ready."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from opensage.executors.local import agent_env
from opensage.runner import zygote
from opensage.runner.jobspec import JobResult, JobSpec, ObjectStoreSpec
from opensage.runner.sandbox import JOB_UID_MIN, inherited_env, namespace_supported, pick_job_uid
from opensage.settings import Settings

BUCKET = "bkt"
MODULE = "zprobe"  # /opt/ml/code/zprobe.py: run as ``python -m zprobe`` (cwd /opt/ml/code, as -m does)

PROBE = textwrap.dedent("""
    import json, os, random, sys
    home = sys.argv[1]
    out = {"uid": os.getuid(), "cwd": os.getcwd(), "argv": sys.argv[1:], "ppid": os.getppid(),
           "home_env": os.environ.get("HOME"), "random": random.random(), "name": __name__,
           "marker": os.environ.get("_OPENSAGE_JOB_ID"), "zygote_dir": os.environ.get("OPENSAGE_ZYGOTE_DIR")}
    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except OSError as exc:
            out[name] = type(exc).__name__
    attempt("credentials", lambda: open(os.path.join(home, "credentials.json")).read())
    attempt("zygote_socket_dir", lambda: os.listdir(os.path.join(home, "zygotes")))
    sockets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets.append(fd)
        except OSError:
            pass
    out["sockets"] = sockets
    out["stdout_is_stderr"] = os.readlink("/proc/self/fd/1") == os.readlink("/proc/self/fd/2")
    print("probe stderr", file=sys.stderr, flush=True)
    with open("/opt/ml/model/probe.json", "w") as fh:
        json.dump(out, fh)
    print("probe ran", flush=True)
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    if mode == "sleep":
        import time
        time.sleep(60)
    sys.exit(int(mode) if mode.isdigit() else 0)
""")

needs_root = pytest.mark.skipif(not namespace_supported(), reason="needs root and mount namespaces (Linux)")


def _pool(home: Path) -> tuple[zygote.ZygotePool, dict]:
    pool = zygote.ZygotePool(home / "zygotes", inherited_env(agent_env()))
    pool.start(sys.executable, MODULE)
    ready = home / "zygotes" / f"{zygote.key(sys.executable, MODULE)}.json"
    deadline = time.monotonic() + 120  # a loaded 2-core CI machine imports slowly
    while not ready.exists():
        if time.monotonic() > deadline or any(proc.poll() is not None for proc in pool.procs.values()):
            logs = {p.name: p.read_text(errors="replace")[-3000:] for p in (home / "zygotes").glob("*.log")}
            codes = {name: proc.poll() for name, proc in pool.procs.items()}
            raise AssertionError(f"zygote not ready: exit codes {codes}, logs {logs}")
        time.sleep(0.05)
    return pool, json.loads(ready.read_text())


def _job(home: Path, name: str, args: list[str], zygote_dir: Path | None) -> Path:
    store_root = home / "s3"
    (store_root / BUCKET).mkdir(parents=True, exist_ok=True)
    jobdir = home / "jobs" / name / "algo-1"
    (jobdir / "ml" / "input" / "config").mkdir(parents=True)
    (jobdir / "ml" / "code").mkdir(parents=True)
    (jobdir / "ml" / "code" / f"{MODULE}.py").write_text(PROBE)
    env = {zygote.ZYGOTE_DIR_ENV: str(zygote_dir)} if zygote_dir else {}
    JobSpec(job_name=name, job_arn=f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
            kind="training", command=[sys.executable, "-m", MODULE, *args], environment=env, channels=[],
            object_store=ObjectStoreSpec(f"file://{store_root}"),
            model_s3_uri=f"s3://{BUCKET}/out/{name}/model.tar.gz", run_as_uid=pick_job_uid()).write(jobdir)
    return jobdir


def _start_agent(jobdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "opensage.runner.agent", str(jobdir)], env=agent_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _run_agent(jobdir: Path) -> tuple[JobResult, dict]:
    assert _start_agent(jobdir).wait(timeout=60) == 0
    result = JobResult.read(jobdir)
    assert result is not None
    return result, json.loads((jobdir / "ml" / "model" / "probe.json").read_text())


@needs_root
def test_training_job_forked_from_zygote_runs_as_job_user_without_platform_secrets(tmp_path: Path) -> None:
    home = Settings.build(tmp_path / "home").home
    pool, ready = _pool(home)
    try:
        result, probe = _run_agent(_job(home, "z1", [str(home), "7"], pool.directory))
        _, second = _run_agent(_job(home, "z2", [str(home)], pool.directory))
    finally:
        pool.shutdown()
    assert probe["ppid"] == ready["pid"], "the job did not run in a child of the zygote"
    assert result.exit_code == 7 and result.model_uploaded, result  # its exit code is the job's
    assert probe["uid"] >= JOB_UID_MIN and probe["cwd"] == "/opt/ml/code" and probe["name"] == "__main__"
    assert probe["argv"] == [str(home), "7"] and probe["home_env"] == f"/tmp/opensage-job-{probe['uid']}"
    assert probe["marker"] and probe["zygote_dir"] is None  # the job's environment, not the zygote's
    for what in ("credentials", "zygote_socket_dir"):
        assert probe[what] in ("PermissionError", "FileNotFoundError"), (what, probe)
    assert probe["sockets"] == [], "the zygote's sockets leaked into the job"
    # stdout and stderr are pipes of their own (split into lines apart, as sandbox._popen's), both logged
    assert probe["stdout_is_stderr"] is False
    log = (home / "jobs" / "z1" / "algo-1" / "logs" / "algo-1.log").read_text()
    assert " probe ran\n" in log and " probe stderr\n" in log
    assert second["uid"] != probe["uid"] and second["random"] != probe["random"]  # reseeded per child


@needs_root
def test_training_job_stop_reaches_zygote_child_and_agent_death_kills_it(tmp_path: Path) -> None:
    home = Settings.build(tmp_path / "home").home
    pool, ready = _pool(home)
    try:
        jobdir = _job(home, "stopme", [str(home), "sleep"], pool.directory)
        agent = _start_agent(jobdir)
        _wait_file(jobdir / "ml" / "model" / "probe.json")
        agent.send_signal(signal.SIGTERM)  # StopTrainingJob: the agent terminates its command
        assert agent.wait(timeout=30) == 0
        result = JobResult.read(jobdir)
        assert result is not None and result.stopped, result

        jobdir = _job(home, "orphan", [str(home), "sleep"], pool.directory)
        agent = _start_agent(jobdir)
        _wait_file(jobdir / "ml" / "model" / "probe.json")
        child = json.loads((jobdir / "ml" / "model" / "probe.json").read_text())
        os.killpg(agent.pid, signal.SIGKILL)  # the agent dies: its command must not outlive it
        agent.wait()
        _wait_gone(child["uid"])
    finally:
        pool.shutdown()


@needs_root
def test_training_job_without_ready_zygote_runs_fresh_process_and_asks_for_one(tmp_path: Path) -> None:
    home = Settings.build(tmp_path / "home").home
    pool = zygote.ZygotePool(home / "zygotes", inherited_env(agent_env()))
    result, probe = _run_agent(_job(home, "cold", [str(home)], pool.directory))
    assert result.exit_code == 0 and probe["uid"] >= JOB_UID_MIN
    wants = list(pool.directory.glob("*.want"))
    assert [json.loads(w.read_text())["module"] for w in wants] == [MODULE]


def test_zygote_not_used_when_job_environment_differs_from_its_start(tmp_path: Path) -> None:
    directory = tmp_path / "z"
    directory.mkdir(mode=0o700)
    name = zygote.key(sys.executable, MODULE)
    (directory / f"{name}.sock").touch()
    (directory / f"{name}.json").write_text(json.dumps({"init_env": {"PYTHONPATH": "/a"}}))
    assert zygote.find(directory, sys.executable, MODULE, {"PYTHONPATH": "/a"}) == directory / f"{name}.sock"
    assert zygote.find(directory, sys.executable, MODULE, {"PYTHONPATH": "/a", "OMP_NUM_THREADS": "1"}) is None
    assert zygote.module_command([sys.executable, "train.py"]) is None


def test_zygote_pool_starts_only_platform_modules_after_repeated_asks(tmp_path: Path) -> None:
    pool = zygote.ZygotePool(tmp_path / "z", {})
    if not pool.enabled:
        pytest.skip("zygotes need root on Linux")
    started: list[str] = []
    pool.start = lambda python, module: started.append(module)  # type: ignore[method-assign]
    for module in ("opensage.algorithms.kmeans.train", "user_module"):
        (pool.directory / f"{module}.want").write_text(json.dumps({"python": sys.executable, "module": module}))
    pool.start_wanted()
    assert started == []  # one job of a module: no zygote (its preload costs seconds of CPU)
    for module in ("opensage.algorithms.kmeans.train", "user_module"):
        (pool.directory / f"{module}.want").write_text(json.dumps({"python": sys.executable, "module": module}))
    pool.start_wanted()
    assert started == ["opensage.algorithms.kmeans.train"]  # never a module root would import from the job


def _wait_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _wait_gone(uid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(int(p)) == uid]
        if not alive:
            return
        assert time.monotonic() < deadline, f"job processes {alive} outlived their agent"
        time.sleep(0.1)


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_zygote_key_differs_per_virtual_environment_of_one_interpreter(tmp_path: Path) -> None:
    """Every venv's bin/python links to the same base interpreter: a key by realpath made a PyTorch job fork
    from the scikit-learn environment's zygote (and fail on that environment's botocore)."""
    links = []
    for env in ("sklearn-env", "pytorch-env"):
        (tmp_path / env / "bin").mkdir(parents=True)
        (tmp_path / env / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
        links.append(str(tmp_path / env / "bin" / "python"))
    assert zygote.key(links[0], MODULE) != zygote.key(links[1], MODULE)
    assert zygote.key(links[0], MODULE) == zygote.key(links[0], MODULE)


def test_zygote_socket_path_longer_than_an_af_unix_address_still_binds_and_connects(tmp_path: Path) -> None:
    import socket

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "0943d41481c23bfe0a95.sock"
    assert len(str(path)) > 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        zygote._unix_call(server, "bind", path)
        server.listen(1)
        zygote._unix_call(client, "connect", path)
        conn, _ = server.accept()
        client.sendall(b"ok")
        assert conn.recv(2) == b"ok"
        conn.close()
    finally:
        client.close()
        server.close()


def test_zygote_exits_when_its_control_plane_died_during_the_preload(tmp_path: Path) -> None:
    """A control plane killed while its zygote was still importing left that zygote running for ever (~100 MB):
    it read its parent's pid only after the preload, by then PID 1, so "parent gone" never fired."""
    if not zygote.ZygotePool(tmp_path / "probe", {}).enabled:
        pytest.skip("zygotes need root on Linux")
    module = "opensage.algorithms.kmeans.train"  # a real preload: scikit-learn's imports take most of a second
    control_plane = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, sys
            from pathlib import Path
            from opensage.executors.local import agent_env
            from opensage.runner import zygote
            from opensage.runner.sandbox import inherited_env
            proc = zygote.ZygotePool(Path({str(tmp_path / 'z')!r}), inherited_env(agent_env())).start(
                sys.executable, {module!r})
            print(proc.pid, flush=True)
            os._exit(0)  # dies as SIGKILL would: no shutdown(), the zygote is still preloading
        """)], capture_output=True, text=True, timeout=60, check=True)
    pid = int(control_plane.stdout.split()[0])
    ready = tmp_path / "z" / f"{zygote.key(sys.executable, module)}.json"
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            log = (tmp_path / "z" / f"{zygote.key(sys.executable, module)}.log").read_text(errors="replace")
            raise AssertionError(f"zygote {pid} outlived its control plane by 60 s; log: {log[-2000:]}")
        time.sleep(0.1)
    assert not ready.exists()  # nobody is told to fork from it


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"
