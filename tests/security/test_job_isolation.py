"""Issue 7 item 3 (b, c): a job's code runs as a user of its own and cannot read the platform's home, other
jobs' files, or signal the platform; the home and the files carrying credentials are owner-only."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opensage.executors.local import agent_env
from opensage.runner.jobspec import JobResult, JobSpec, ObjectStoreSpec
from opensage.runner.sandbox import JOB_UID_MIN, namespace_supported, pick_job_uid
from opensage.settings import Settings

BUCKET = "bkt"

PROBE = textwrap.dedent("""
    import getpass, json, os, sys
    home, other, platform_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {"uid": os.getuid(), "user": getpass.getuser(), "home_env": os.environ.get("HOME")}
    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except OSError as exc:
            out[name] = type(exc).__name__
    attempt("credentials", lambda: open(os.path.join(home, "credentials.json")).read())
    attempt("database", lambda: open(os.path.join(home, "opensage.db"), "rb").read())
    attempt("list_home", lambda: out.setdefault("home_entries", sorted(os.listdir(home))))
    attempt("other_job", lambda: open(other).read())
    attempt("signal", lambda: os.kill(platform_pid, 0))
    open(f"/tmp/opensage-probe-{os.getuid()}", "w").write("private")
    with open("/opt/ml/model/probe.json", "w") as fh:
        json.dump(out, fh)
    print(json.dumps(out))
""")


def _job(home: Path, name: str, command: list[str], uid: int | None) -> Path:
    store_root = home / "s3"
    (store_root / BUCKET).mkdir(parents=True, exist_ok=True)
    jobdir = home / "jobs" / name / "algo-1"
    (jobdir / "ml" / "input" / "config").mkdir(parents=True)
    JobSpec(job_name=name, job_arn=f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
            kind="training", command=command, environment={}, channels=[],
            object_store=ObjectStoreSpec(f"file://{store_root}"),
            model_s3_uri=f"s3://{BUCKET}/out/{name}/model.tar.gz", run_as_uid=uid).write(jobdir)
    return jobdir


def _run_agent(jobdir: Path) -> JobResult:
    subprocess.run([sys.executable, "-m", "opensage.runner.agent", str(jobdir)], env=agent_env(), timeout=60,
                   check=True, capture_output=True)
    result = JobResult.read(jobdir)
    assert result is not None
    return result


needs_root = pytest.mark.skipif(not namespace_supported(), reason="needs root and mount namespaces (Linux)")


@needs_root
def test_training_job_as_root_cannot_read_home_other_jobs_or_signal_platform(tmp_path: Path) -> None:
    settings = Settings.build(tmp_path / "home")
    home = settings.home
    (home / "opensage.db").write_bytes(b"SQLite format 3\0")
    os.chmod(home / "opensage.db", 0o600)
    other = _job(home, "other", ["true"], None)
    secret_file = other / "ml" / "model" / "weights.txt"
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text("another job's model")
    jobdir = _job(home, "probe", [sys.executable, "/opt/ml/code/probe.py", str(home), str(secret_file),
                                  str(os.getpid())], pick_job_uid())
    (jobdir / "ml" / "code").mkdir(parents=True, exist_ok=True)
    (jobdir / "ml" / "code" / "probe.py").write_text(PROBE)

    result = _run_agent(jobdir)

    assert result.exit_code == 0 and result.model_uploaded, result
    probe = json.loads((jobdir / "ml" / "model" / "probe.json").read_text())
    assert probe["uid"] >= JOB_UID_MIN and probe["user"] == f"job{probe['uid']}"
    # The home is either not visible at all (hidden under a tmpfs) or not readable: never readable.
    for what in ("credentials", "database", "other_job"):
        assert probe[what] in ("PermissionError", "FileNotFoundError"), (what, probe)
    # Not visible, or only the skeleton leading to what the job may read (a tmpfs over the closed ancestor).
    assert probe["list_home"] != "ok" or "credentials.json" not in probe["home_entries"], probe
    assert probe["signal"] == "PermissionError", probe
    assert not Path(f"/tmp/opensage-probe-{probe['uid']}").exists()  # the job's /tmp is its own
    assert (home / "s3" / BUCKET / "out" / "probe" / "model.tar.gz").is_file()


@needs_root
def test_training_job_secret_in_failure_link_not_read_by_agent(tmp_path: Path) -> None:
    """The agent (root) reads output/failure after the job: a link to the key pair must not leak it."""
    settings = Settings.build(tmp_path / "home")
    creds = settings.home / "credentials.json"
    jobdir = _job(settings.home, "linker", ["/bin/sh", "-c",
                                            f"ln -s {creds} /opt/ml/output/failure; exit 3"], pick_job_uid())
    result = _run_agent(jobdir)
    assert result.exit_code == 3
    assert settings.credentials.secret_key not in (result.failure_reason or "")


def test_settings_home_private_and_credentials_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)  # an existing, too open home is tightened
    settings = Settings.build(home)
    assert stat.S_IMODE(settings.home.stat().st_mode) == 0o700
    assert stat.S_IMODE((settings.home / "credentials.json").stat().st_mode) == 0o600
    fresh = Settings.build(tmp_path / "new" / "home")
    assert stat.S_IMODE(fresh.home.stat().st_mode) == 0o700


def test_jobspec_and_result_written_owner_only(tmp_path: Path) -> None:
    jobdir = _job(tmp_path, "perm", ["true"], None)
    JobResult(exit_code=0).write(jobdir)
    for name in ("jobspec.json", "result.json"):
        assert stat.S_IMODE((jobdir / name).stat().st_mode) == 0o600, name


def test_create_app_database_owner_only(tmp_path: Path) -> None:
    from opensage.app import create_app
    from opensage.executors.fake import FakeExecutor

    settings = Settings.build(tmp_path / "home", s3_endpoint=f"file://{tmp_path / 's3'}")
    create_app(settings, executor=FakeExecutor(), run_background=False)
    assert stat.S_IMODE((settings.home / "opensage.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.jobs_dir.stat().st_mode) == 0o700


@needs_root
def test_training_job_sudo_runs_as_the_job_user_never_root(tmp_path: Path) -> None:
    """SageMaker images' bootstrap steps call sudo (the SDK's @step / @remote runner: `sudo chmod -R 777
    /opt/ml/... /tmp` as a non-root user). A job has a sudo that runs the command as its own user: the
    chmod works on what the job owns, and nothing runs as root."""
    home = Settings.build(tmp_path / "home").home
    script = ("sudo chmod -R 777 /opt/ml/output /opt/ml/model /tmp && sudo -E id -u > /opt/ml/model/sudo-uid "
              "&& stat -c %a /opt/ml/model > /opt/ml/model/mode")
    jobdir = _job(home, "sudo", ["/bin/sh", "-c", script], pick_job_uid())
    result = _run_agent(jobdir)
    assert result.exit_code == 0, result
    uid = int((jobdir / "ml" / "model" / "sudo-uid").read_text())
    assert uid >= JOB_UID_MIN  # the job's own user, not root
    assert (jobdir / "ml" / "model" / "mode").read_text().strip() == "777"


@needs_root
def test_training_job_shared_memory_segments_removed_when_it_ends(tmp_path: Path) -> None:
    """/dev/shm is the machine's, not the job's: segments its user left (MPICH's of killed ranks, a user's
    own) would outlive it. After the job: its user's are gone, another owner's stay."""
    home = Settings.build(tmp_path / "home").home
    uid = pick_job_uid()
    name = f"opensage-test-{uid}"
    foreign = Path("/dev/shm") / f"{name}-not-the-jobs"
    foreign.write_bytes(b"root's")
    script = (f"head -c 4096 /dev/zero > /dev/shm/{name}-segment && mkdir /dev/shm/{name}-dir && "
              f"touch /dev/shm/{name}-dir/x")
    try:
        result = _run_agent(_job(home, "shm", ["/bin/sh", "-c", script], uid))
        assert result.exit_code == 0, result
        assert not Path(f"/dev/shm/{name}-segment").exists() and not Path(f"/dev/shm/{name}-dir").exists()
        assert foreign.read_bytes() == b"root's"
    finally:
        foreign.unlink()
        for leftover in Path("/dev/shm").glob(f"{name}-*"):
            subprocess.run(["rm", "-rf", str(leftover)], check=False)
