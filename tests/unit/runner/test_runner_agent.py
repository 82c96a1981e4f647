"""The job agent, run as a real subprocess against a file:// object store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from opensage.executors.local import LocalExecutor, agent_env
from opensage.runner.agent import failure_reason
from opensage.runner.jobspec import ChannelSpec, JobResult, JobSpec, ObjectStoreSpec
from opensage.runner.sandbox import LogSink, Outcome, namespace_supported

BUCKET = "bkt"


def put(store_root: Path, key: str, data: bytes | str, bucket: str = BUCKET) -> None:
    path = store_root / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def make_job(tmp_path: Path, command: list[str], channels: list[ChannelSpec] | None = None,
             name: str = "job", **kw: object) -> Path:
    store_root = tmp_path / "store"
    (store_root / BUCKET).mkdir(parents=True, exist_ok=True)
    jobdir = tmp_path / name
    (jobdir / "ml" / "input" / "config").mkdir(parents=True)
    (jobdir / "ml" / "input" / "config" / "hyperparameters.json").write_text('{"eta": "0.1"}')
    kw.setdefault("model_s3_uri", f"s3://{BUCKET}/out/{name}/output/model.tar.gz")
    kw.setdefault("output_s3_uri", f"s3://{BUCKET}/out/{name}/output/output.tar.gz")
    spec = JobSpec(
        job_name=name, job_arn=f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
        kind="training", command=command, environment={}, channels=channels or [],
        object_store=ObjectStoreSpec(f"file://{store_root}"), **kw,  # type: ignore[arg-type]
    )
    spec.write(jobdir)
    return jobdir


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def run_agent(jobdir: Path, timeout: float = 30) -> JobResult:
    subprocess.run([sys.executable, "-m", "opensage.runner.agent", str(jobdir)], env=agent_env(),
                   timeout=timeout, check=True, capture_output=True)
    result = JobResult.read(jobdir)
    assert result is not None
    return result


def log_texts(jobdir: Path, host: int = 1) -> list[str]:
    lines = (jobdir / "logs" / f"algo-{host}.log").read_text().splitlines()
    return [line.split(" ", 1)[1] if " " in line else "" for line in lines]


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# ----------------------------------------------------------------------------------------- channels


def test_agent_file_mode_nested_keys_downloaded_with_relative_paths(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put(store, "data/train/a.csv", "1,2\n")
    put(store, "data/train/sub/deep/b.csv", "3,4\n")
    jobdir = make_job(tmp_path, ["cat", "../input/data/train/sub/deep/b.csv"],
                      [ChannelSpec("train", f"s3://{BUCKET}/data/train")])
    result = run_agent(jobdir)
    assert result.exit_code == 0, result.failure_reason
    data = jobdir / "ml" / "input" / "data" / "train"
    assert (data / "a.csv").read_text() == "1,2\n"
    assert (data / "sub" / "deep" / "b.csv").read_text() == "3,4\n"
    assert "3,4" in log_texts(jobdir)
    statuses = [json.loads(line)["status"] for line in (jobdir / "events.jsonl").read_text().splitlines()]
    assert statuses == ["Downloading", "Training", "Uploading"]
    for rel in ("model", "output/data", "output/intermediate", "checkpoints", "code", "input/data"):
        assert (jobdir / "ml" / rel).is_dir()
    assert int((jobdir / "agent.pid").read_text()) > 0


def test_agent_single_object_uri_puts_file_in_channel_dir(tmp_path: Path) -> None:
    put(tmp_path / "store", "data/one.csv", "x\n")
    jobdir = make_job(tmp_path, ["true"], [ChannelSpec("train", f"s3://{BUCKET}/data/one.csv")])
    assert run_agent(jobdir).exit_code == 0
    assert (jobdir / "ml" / "input" / "data" / "train" / "one.csv").read_text() == "x\n"


def test_agent_sharded_by_s3_key_two_hosts_partition_keys(tmp_path: Path) -> None:
    keys = [f"data/part-{i:02d}.csv" for i in range(7)]
    for key in keys:
        put(tmp_path / "store", key, key)
    got: list[set[str]] = []
    for host in (0, 1):
        jobdir = make_job(tmp_path, ["true"], [ChannelSpec("train", f"s3://{BUCKET}/data/",
                                                            distribution="ShardedByS3Key")],
                          name=f"host{host}", host_index=host, host_count=2)
        assert run_agent(jobdir).exit_code == 0
        got.append({p.name for p in (jobdir / "ml" / "input" / "data" / "train").iterdir()})
    assert got[0] == {f"part-{i:02d}.csv" for i in (0, 2, 4, 6)}
    assert got[1] == {f"part-{i:02d}.csv" for i in (1, 3, 5)}


def test_agent_manifest_file_fetches_listed_objects(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put(store, "raw/x/1.txt", "one")
    put(store, "raw/y/2.txt", "two")
    put(store, "raw/z/3.txt", "not listed")
    put(store, "manifests/m.json", json.dumps([{"prefix": f"s3://{BUCKET}/raw/"}, "x/1.txt", "y/2.txt"]))
    jobdir = make_job(tmp_path, ["true"], [ChannelSpec("train", f"s3://{BUCKET}/manifests/m.json",
                                                        s3_data_type="ManifestFile")])
    assert run_agent(jobdir).exit_code == 0
    data = jobdir / "ml" / "input" / "data" / "train"
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*.txt")) == ["x/1.txt", "y/2.txt"]


def test_agent_bad_manifest_fails_with_reason_naming_channel(tmp_path: Path) -> None:
    put(tmp_path / "store", "m.json", "{not json")
    jobdir = make_job(tmp_path, ["true"], [ChannelSpec("train", f"s3://{BUCKET}/m.json",
                                                        s3_data_type="ManifestFile")])
    result = run_agent(jobdir)
    assert result.exit_code is None
    assert "'train'" in (result.failure_reason or "") and "not valid JSON" in (result.failure_reason or "")


def test_agent_empty_channel_fails_with_reason_naming_channel_and_uri(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["true"], [ChannelSpec("train", f"s3://{BUCKET}/nothing/here")])
    result = run_agent(jobdir)
    assert result.exit_code is None
    assert result.failure_reason is not None
    assert "'train'" in result.failure_reason and f"s3://{BUCKET}/nothing/here" in result.failure_reason
    assert "No S3 objects found" in result.failure_reason
    assert not result.model_uploaded


def test_agent_missing_bucket_fails_with_reason_naming_bucket(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["true"], [ChannelSpec("validation", "s3://no-such-bucket/x/")])
    result = run_agent(jobdir)
    assert result.exit_code is None
    assert "no-such-bucket" in (result.failure_reason or "") and "'validation'" in (result.failure_reason or "")


def test_agent_unreadable_jobspec_still_writes_result(tmp_path: Path) -> None:
    jobdir = tmp_path / "broken"
    jobdir.mkdir()
    (jobdir / "jobspec.json").write_text("{")
    result = run_agent(jobdir)
    assert result.exit_code is None and "agent failed" in (result.failure_reason or "")


def test_agent_pipe_mode_child_reads_fifo_bytes_over_two_epochs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put(store, "pipe/b.bin", b"BBB")
    put(store, "pipe/a.bin", b"AAA")
    code = """
        import os
        for epoch in (0, 1):
            path = f"../input/data/train_{epoch}"
            while not os.path.exists(path):
                pass
            with open(path, "rb") as fh:
                print(epoch, fh.read().decode(), flush=True)
    """
    jobdir = make_job(tmp_path, py(code), [ChannelSpec("train", f"s3://{BUCKET}/pipe/", input_mode="Pipe")])
    result = run_agent(jobdir)
    assert result.exit_code == 0, result.failure_reason
    assert log_texts(jobdir) == ["0 AAABBB", "1 AAABBB"]


def test_agent_pipe_mode_gzip_decompressed_while_streaming(tmp_path: Path) -> None:
    import gzip

    put(tmp_path / "store", "gz/a.gz", gzip.compress(b"hello pipe"))
    code = "print(open('../input/data/train_0','rb').read().decode())"
    jobdir = make_job(tmp_path, py(code), [ChannelSpec("train", f"s3://{BUCKET}/gz/", input_mode="Pipe",
                                                        compression="Gzip")])
    assert run_agent(jobdir).exit_code == 0
    assert log_texts(jobdir) == ["hello pipe"]


# ----------------------------------------------------------------------------------------- failures


def test_agent_failure_file_becomes_failure_reason(tmp_path: Path) -> None:
    code = """
        import sys
        open("../output/failure", "w").write("ValueError: bad eta " + "x" * 2000)
        sys.exit(1)
    """
    jobdir = make_job(tmp_path, py(code))
    result = run_agent(jobdir)
    assert result.exit_code == 1
    assert result.failure_reason is not None and result.failure_reason.startswith("ValueError: bad eta")
    assert len(result.failure_reason) == 1024


def test_agent_exit_code_without_failure_file_reports_code_and_last_lines(tmp_path: Path) -> None:
    code = """
        import sys
        for i in range(30):
            print(f"step {i}")
        print("KeyError: 'label'", file=sys.stderr)
        sys.exit(3)
    """
    jobdir = make_job(tmp_path, py(code))
    result = run_agent(jobdir)
    assert result.exit_code == 3
    reason = result.failure_reason or ""
    assert "exit code 3" in reason and "KeyError: 'label'" in reason and "step 29" in reason
    assert "step 0\n" not in reason
    assert len(reason) <= 1024
    assert result.model_uploaded is False  # failed with an empty model dir


def test_agent_missing_executable_fails_with_reason(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["/no/such/program"])
    result = run_agent(jobdir)
    # plain mode cannot exec it (None); in the namespace the wrapper shell reports 127, like a container
    assert result.exit_code in (None, 127)
    assert "/no/such/program" in (result.failure_reason or "")


# ----------------------------------------------------------------------------------------- stop / time


def test_agent_sigterm_stops_child_and_uploads_model(tmp_path: Path) -> None:
    code = """
        import time
        open("../model/weights.txt", "w").write("w")
        print("ready", flush=True)
        time.sleep(60)
    """
    jobdir = make_job(tmp_path, py(code), stop_grace_seconds=5)
    executor = LocalExecutor()
    handle = executor.submit(jobdir)
    log = jobdir / "logs" / "algo-1.log"
    wait_for(lambda: log.exists() and "ready" in log.read_text())
    started = time.monotonic()
    executor.stop(handle)
    wait_for(lambda: not executor.is_running(handle), timeout=15)
    assert time.monotonic() - started < 5
    result = JobResult.read(jobdir)
    assert result is not None and result.stopped and result.model_uploaded
    assert result.failure_reason is None
    assert (tmp_path / "store" / BUCKET / "out" / "job" / "output" / "model.tar.gz").is_file()


def test_agent_sigterm_ignored_by_child_is_killed_after_grace(tmp_path: Path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    jobdir = make_job(tmp_path, py(code), stop_grace_seconds=1)
    executor = LocalExecutor()
    handle = executor.submit(jobdir)
    log = jobdir / "logs" / "algo-1.log"
    wait_for(lambda: log.exists() and "ready" in log.read_text())
    executor.stop(handle)
    wait_for(lambda: not executor.is_running(handle), timeout=15)
    result = JobResult.read(jobdir)
    assert result is not None and result.stopped and result.exit_code == 137


def test_agent_max_runtime_exceeded_ends_sleeping_child(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["sleep", "30"], max_runtime_seconds=1, stop_grace_seconds=2)
    started = time.monotonic()
    result = run_agent(jobdir)
    assert time.monotonic() - started < 6
    assert result.max_runtime_exceeded and not result.stopped


# ----------------------------------------------------------------------------------------- sandbox


@pytest.mark.skipif(not namespace_supported(), reason="needs root + unshare/mount (namespace sandbox)")
def test_agent_namespace_mode_child_sees_opt_ml(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["sh", "-c", "cat /opt/ml/input/config/hyperparameters.json; echo; pwd; "
                                 "echo $SAGEMAKER_BASE_DIR; echo m > /opt/ml/model/m.txt"],
                      sandbox="namespace")
    assert run_agent(jobdir).exit_code == 0
    assert log_texts(jobdir) == ['{"eta": "0.1"}', "/opt/ml/code", "/opt/ml"]
    assert (jobdir / "ml" / "model" / "m.txt").read_text() == "m\n"


def test_agent_plain_mode_rewrites_opt_ml_paths(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["sh", "-c", "cat /opt/ml/input/config/hyperparameters.json; echo; "
                                 "echo $SAGEMAKER_BASE_DIR; echo $SM_MODEL_DIR"], sandbox="plain")
    spec = JobSpec.read(jobdir)
    spec.environment = {"SM_MODEL_DIR": "/opt/ml/model"}
    spec.write(jobdir)
    assert run_agent(jobdir).exit_code == 0
    ml = str(jobdir / "ml")
    assert log_texts(jobdir) == ['{"eta": "0.1"}', ml, f"{ml}/model"]


def test_agent_environment_has_store_settings_and_no_opensage_secrets(tmp_path: Path) -> None:
    code = "import os; print(sorted(k for k in os.environ if k.startswith(('OPENSAGE_','AWS_REGION','PYTHONUNB','TRAINING_JOB_NAME','MY_'))))"
    jobdir = make_job(tmp_path, py(code))
    spec = JobSpec.read(jobdir)
    spec.environment = {"MY_VAR": "1"}
    spec.object_store.access_key = "AK"
    spec.write(jobdir)
    env = {**agent_env(), "OPENSAGE_SECRET_KEY": "s3cret"}
    subprocess.run([sys.executable, "-m", "opensage.runner.agent", str(jobdir)], env=env, timeout=30, check=True)
    assert log_texts(jobdir) == ["['AWS_REGION', 'MY_VAR', 'PYTHONUNBUFFERED', 'TRAINING_JOB_NAME']"]


# ----------------------------------------------------------------------------------------- logs


def test_agent_log_lines_have_ms_timestamp_tabs_and_low_latency(tmp_path: Path) -> None:
    code = """
        import sys, time
        print(f"{time.time()}\\t[0]\\tvalidation-rmse:0.5")
        time.sleep(3)
    """
    jobdir = make_job(tmp_path, py(code))
    executor = LocalExecutor()
    handle = executor.submit(jobdir)
    log = jobdir / "logs" / "algo-1.log"
    wait_for(lambda: log.exists() and log.read_text().endswith("\n"))
    seen_at = time.time()
    stamp, text = log.read_text().splitlines()[0].split(" ", 1)
    printed_at = float(text.split("\t")[0])
    assert text.split("\t")[1:] == ["[0]", "validation-rmse:0.5"]
    # Generous bounds (shared 2-core CI); typical values are ~1 ms and ~20 ms.
    assert abs(int(stamp) / 1000 - printed_at) < 0.25
    assert seen_at - printed_at < 1.0
    executor.kill(handle)


def test_agent_overlong_line_split_at_256_kib(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, py("print('x' * (256 * 1024 + 10)); print('end')"))
    assert run_agent(jobdir).exit_code == 0
    texts = log_texts(jobdir)
    assert [len(t) for t in texts] == [256 * 1024, 10, 3]


def test_agent_stdout_lines_stay_whole_while_stderr_writes(tmp_path: Path) -> None:
    """Jobs run with PYTHONUNBUFFERED: ``print("epoch", i, "loss", x)`` is a write per argument. stderr (a
    progress bar, log4j) writing meanwhile must not land inside that line (one pipe for both did): each stream
    is split into lines on its own, as SageMaker's log driver does."""
    code = """
        import sys, threading
        done = threading.Event()
        def noise():
            while not done.is_set():
                sys.stderr.write("progress-bar-update\\n")
        t = threading.Thread(target=noise)
        t.start()
        for i in range(3000):
            print("epoch", i, "loss", 0.5)
        done.set()
        t.join()
    """
    jobdir = make_job(tmp_path, py(code))
    assert run_agent(jobdir, timeout=120).exit_code == 0
    texts = log_texts(jobdir)
    epochs = [t for t in texts if "epoch" in t]
    assert epochs == [f"epoch {i} loss 0.5" for i in range(3000)]
    assert set(texts) - set(epochs) == {"progress-bar-update"}


def test_failure_tail_keeps_stderr_lines_that_arrived_before_later_stdout_lines(tmp_path: Path) -> None:
    """The two streams' pumps run independently: a job's error on stderr can be written to the log before its
    last stdout lines (CI saw "KeyError" pushed out of a 10-line tail by 30 stdout lines pumped after it).
    The tail keeps each stream's last lines, in arrival order."""
    sink = LogSink(tmp_path / "algo-1.log")
    sink.write_lines([b"KeyError: 'label'"], "stderr")
    sink.write_lines([f"step {i}".encode() for i in range(30)], "stdout")
    sink.close()
    assert sink.tail == ["KeyError: 'label'"] + [f"step {i}" for i in range(20, 30)]
    reason = failure_reason(Outcome(3, tail=sink.tail), tmp_path) or ""
    assert "exit code 3" in reason and "KeyError: 'label'" in reason and "step 29" in reason


# ----------------------------------------------------------------------------------------- artifacts


def test_agent_model_and_output_archives_hold_files_at_root(tmp_path: Path) -> None:
    code = """
        import os
        os.makedirs("../model/sub", exist_ok=True)
        open("../model/xgboost-model", "w").write("M")
        open("../model/sub/extra.json", "w").write("{}")
        open("../output/data/report.txt", "w").write("R")
    """
    jobdir = make_job(tmp_path, py(code))
    result = run_agent(jobdir)
    assert result.model_uploaded and result.output_uploaded
    out = tmp_path / "store" / BUCKET / "out" / "job" / "output"
    with tarfile.open(out / "model.tar.gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["sub/extra.json", "xgboost-model"]
        tar.extractall(tmp_path / "x", filter="data")
    assert (tmp_path / "x" / "xgboost-model").read_text() == "M"
    with tarfile.open(out / "output.tar.gz") as tar:
        assert [m.name for m in tar.getmembers()] == ["report.txt"]


def test_agent_model_prefix_uri_gets_model_tar_gz_appended(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["true"], model_s3_uri=f"s3://{BUCKET}/prefix/j/output")
    result = run_agent(jobdir)
    assert result.model_uploaded
    assert result.extra["model_artifacts"] == f"s3://{BUCKET}/prefix/j/output/model.tar.gz"
    assert (tmp_path / "store" / BUCKET / "prefix" / "j" / "output" / "model.tar.gz").is_file()


def test_agent_checkpoints_downloaded_then_uploaded_periodically_and_at_end(tmp_path: Path) -> None:
    store = tmp_path / "store"
    put(store, "ckpt/job/epoch-1.pt", "old")
    remote = store / BUCKET / "ckpt" / "job"
    code = f"""
        import os, time
        print(open("../checkpoints/epoch-1.pt").read(), flush=True)
        open("../checkpoints/epoch-2.pt", "w").write("new")
        deadline = time.time() + 5
        while not os.path.exists({str(remote / "epoch-2.pt")!r}) and time.time() < deadline:
            time.sleep(0.05)
        print("periodic", os.path.exists({str(remote / "epoch-2.pt")!r}), flush=True)
        os.makedirs("../checkpoints/sub", exist_ok=True)
        open("../checkpoints/sub/final.pt", "w").write("final")
    """
    jobdir = make_job(tmp_path, py(code), checkpoint_s3_uri=f"s3://{BUCKET}/ckpt/job",
                      checkpoint_sync_seconds=0.2)
    result = run_agent(jobdir)
    assert result.exit_code == 0, result.failure_reason
    assert log_texts(jobdir) == ["old", "periodic True"]
    assert (remote / "epoch-2.pt").read_text() == "new"
    assert (remote / "sub" / "final.pt").read_text() == "final"
    assert (remote / "epoch-1.pt").read_text() == "old"


def test_agent_is_adoptable_and_pid_reuse_guarded(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["sleep", "30"])
    first = LocalExecutor()
    handle = first.submit(jobdir)
    wait_for(lambda: (jobdir / "agent.pid").exists())
    assert int((jobdir / "agent.pid").read_text()) == int(handle)
    adopter = LocalExecutor()
    adopter.adopt(handle, jobdir)
    assert adopter.is_running(handle)
    other = LocalExecutor()
    other.adopt(handle, tmp_path / "another-job")
    assert not other.is_running(handle)
    adopter.kill(handle)
    wait_for(lambda: not first.is_running(handle))
    assert JobResult.read(jobdir) is None  # SIGKILL: no result
    assert not os.path.exists(f"/proc/{handle}") or not first.is_running(handle)
