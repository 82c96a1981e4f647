"""End-to-end process contract: ``python -m opensage.algorithms.xgboost.train`` in a temporary /opt/ml."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import opensage
from opensage.algorithms.xgboost import load_booster

REPO_ROOT = Path(opensage.__file__).resolve().parent.parent


def _ml_root(tmp_path, hyperparameters, channels):
    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    config = {name: {"ContentType": "text/csv", "TrainingInputMode": "File",
                     "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"} for name in channels}
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(config))
    for name, rows in channels.items():
        (root / "input" / "data" / name).mkdir(parents=True)
        if rows is not None:
            np.savetxt(root / "input" / "data" / name / "part-0.csv", rows, delimiter=",", fmt="%.10g")
    return root


def _run(root):
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "opensage.algorithms.xgboost.train"], env=env,
                          capture_output=True, text=True, timeout=120)


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return X[order], y[order]


def test_train_process_breast_cancer_model_predicts_held_out(tmp_path):
    X, y = _breast_cancer()
    train, validation, test = slice(0, 380), slice(380, 470), slice(470, None)
    root = _ml_root(tmp_path, {"num_round": "30", "objective": "binary:logistic", "max_depth": "3",
                               "eta": "0.3", "eval_metric": "logloss,auc", "sagemaker_program_hint": "x"},
                    {"train": np.column_stack([y[train], X[train]]),
                     "validation": np.column_stack([y[validation], X[validation]])})
    result = _run(root)
    assert result.returncode == 0, result.stderr
    assert "[0]\ttrain-logloss:" in result.stdout
    assert "\tvalidation-auc:" in result.stdout.splitlines()[-1]
    booster = load_booster(root / "model" / "xgboost-model")
    import xgboost as xgb

    accuracy = ((booster.predict(xgb.DMatrix(X[test])) > 0.5) == y[test]).mean()
    assert accuracy > 0.9
    assert not (root / "output" / "failure").exists()


@pytest.mark.slow
def test_train_process_checkpoints_written_and_resumed(tmp_path):
    X, y = _breast_cancer()
    root = _ml_root(tmp_path, {"num_round": "4", "objective": "binary:logistic"},
                    {"train": np.column_stack([y, X])})
    (root / "checkpoints").mkdir()
    (root / "input" / "config" / "checkpointconfig.json").write_text(
        json.dumps({"LocalPath": "/opt/ml/checkpoints", "S3Uri": "s3://b/ckpt"}))
    assert _run(root).returncode == 0
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == [f"xgboost-checkpoint.{i}" for i in range(4)]
    config = root / "input" / "config" / "hyperparameters.json"
    config.write_text(json.dumps({"num_round": "6", "objective": "binary:logistic"}))
    result = _run(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("[4]\ttrain-logloss:")
    assert "[5]\t" in result.stdout and "[3]\t" not in result.stdout
    booster = load_booster(root / "model" / "xgboost-model")
    assert booster.num_boosted_rounds() == 6


@pytest.mark.parametrize(("hyperparameters", "channels", "expected"), [
    ({"num_round": "5"}, {"train": None}, "Required channel 'train' is missing or empty"),
    ({"num_round": "5", "eta": "7"}, {"train": np.ones((4, 3))}, "eta: value 7 is out of range"),
    ({"num_round": "5", "objective": "binary:logistic"},
     {"train": np.column_stack([[0, 1, 2, 0], np.ones((4, 2))])},
     "XGBoost training failed: label must be in \\(0, 1\\) for logistic regression"),
])
def test_train_process_failure_writes_reason_and_exits_nonzero(tmp_path, hyperparameters, channels, expected):
    import re

    root = _ml_root(tmp_path, hyperparameters, channels)
    result = _run(root)
    assert result.returncode != 0
    reason = (root / "output" / "failure").read_text()
    assert re.search(expected, reason), reason
    assert not (root / "model" / "xgboost-model").exists()


def test_train_process_malformed_csv_failure_names_file_and_line(tmp_path):
    root = _ml_root(tmp_path, {"num_round": "2"}, {"train": np.ones((5, 3))})
    path = root / "input" / "data" / "train" / "part-0.csv"
    lines = path.read_text().splitlines()
    lines[3] = "1,oops,1"
    path.write_text("\n".join(lines) + "\n")
    result = _run(root)
    assert result.returncode == 1
    assert (root / "output" / "failure").read_text() == (
        "train channel: file part-0.csv line 4: could not convert 'oops' to float")


def _write_config(root, hyperparameters, data_config):
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(data_config))


def test_train_process_recordio_multiclass_early_stopping(tmp_path):
    from opensage.algorithms import recordio

    rng = np.random.default_rng(0)
    X = rng.random((600, 4)).astype(np.float32)
    y = (X[:, 0] * 3).astype(np.int64).astype(np.float32)
    root = tmp_path / "ml"
    _write_config(root, {"num_round": "200", "objective": "multi:softprob", "num_class": "3",
                         "eval_metric": "mlogloss,accuracy", "early_stopping_rounds": "3", "eta": "0.9"},
                  {ch: {"ContentType": "application/x-recordio-protobuf"} for ch in ("train", "validation")})
    for channel, rows in (("train", slice(0, 500)), ("validation", slice(500, None))):
        (root / "input" / "data" / channel).mkdir(parents=True)
        (root / "input" / "data" / channel / "data.pbr").write_bytes(recordio.encode_dense(X[rows], y[rows]))
    result = _run(root)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "\tvalidation-mlogloss:" in last and "\tvalidation-accuracy:" in last
    assert len(result.stdout.strip().splitlines()) < 200  # stopped early
    booster = load_booster(root / "model" / "xgboost-model")
    import xgboost as xgb

    assert booster.predict(xgb.DMatrix(X[:2])).shape == (2, 3)


def test_train_process_libsvm_is_default_content_type(tmp_path):
    root = tmp_path / "ml"
    _write_config(root, {"num_round": "3"}, {"train": {"TrainingInputMode": "File"}})
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "input" / "data" / "train" / "part").write_text("1 0:1 2:3\n0 1:2\n1 0:2 2:1\n0 1:1\n")
    result = _run(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[0]\ttrain-rmse:")


def test_train_process_parquet_channels_label_first_column(tmp_path):
    """application/x-parquet (SageMaker XGBoost 1.2+): the first column is the label, any numeric column type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y = _breast_cancer()
    root = tmp_path / "ml"
    _write_config(root, {"num_round": "20", "objective": "binary:logistic", "eval_metric": "error"},
                  {ch: {"ContentType": "application/x-parquet"} for ch in ("train", "validation")})
    for channel, rows in (("train", slice(0, 450)), ("validation", slice(450, None))):
        (root / "input" / "data" / channel).mkdir(parents=True)
        columns = {"label": pa.array(y[rows].astype(np.int64))} | {f"f{i}": X[rows, i] for i in range(X.shape[1])}
        pq.write_table(pa.table(columns), root / "input" / "data" / channel / "part-0.parquet")
    result = _run(root)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "\tvalidation-error:" in last and float(last.rsplit(":", 1)[1]) < 0.1, last
    booster = load_booster(root / "model" / "xgboost-model")
    assert booster.num_features() == X.shape[1]


# ---------------------------------------------------------------------------------------------- streamed channels


def _streamed_csv() -> bytes:
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(size=(30_000, 5)), 4)
    y = (x @ rng.normal(size=5) + rng.normal(size=30_000) > 0).astype(int)
    return "".join(f"{label}," + ",".join(f"{v:.4f}" for v in row) + "\n" for label, row in zip(y, x, strict=True)).encode()


def _start_streamed(root, mode: str, store, body: bytes):
    """The agent's part: the channel's files created and streamed (``prepare_channels(stream_fastfile=True)``,
    as for a built-in algorithm), the algorithm process started, then the download."""
    from opensage.runner import channels
    from opensage.runner.jobspec import ChannelSpec

    _write_config(root, {"num_round": "5", "objective": "binary:logistic", "max_depth": "3"},
                  {"train": {"ContentType": "text/csv", "TrainingInputMode": mode}})
    store.ensure_bucket("b")
    store.put_bytes("b", "train/part-0.csv", body)
    spec = ChannelSpec(name="train", s3_uri="s3://b/train/", input_mode=mode)
    (feeder,) = channels.prepare_channels(store, [spec], root / "input" / "data", 0, 1, stream_fastfile=True)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "opensage.algorithms.xgboost.train"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    feeder.start()
    return proc, feeder


@pytest.mark.parametrize("mode", ["File", "FastFile"])
def test_train_process_streamed_channel_parsed_while_downloading_model_identical_to_downloaded(tmp_path, mode):
    from tests.streaming import GatedStore, reader_position, wait_for

    body = _streamed_csv()
    reference = tmp_path / "downloaded"
    _write_config(reference, {"num_round": "5", "objective": "binary:logistic", "max_depth": "3"},
                  {"train": {"ContentType": "text/csv", "TrainingInputMode": "File"}})
    (reference / "input" / "data" / "train").mkdir(parents=True)
    (reference / "input" / "data" / "train" / "part-0.csv").write_bytes(body)
    assert _run(reference).returncode == 0

    store = GatedStore(pause_at=len(body) // 2)
    root = tmp_path / "streamed"
    proc, feeder = _start_streamed(root, mode, store, body)
    try:
        # The download is held at its middle: the algorithm reads the first half before the rest exists. The
        # position is the one seen while waiting: read again later, the reader may be between descriptors (0).
        seen = [0]

        def read_far() -> bool:
            seen[0] = max(seen[0], reader_position(proc.pid, root / "input" / "data" / "train" / "part-0.csv"))
            return seen[0] >= len(body) // 4 or proc.poll() is not None

        wait_for(read_far, what="the algorithm to read the first part")
        assert proc.poll() is None, proc.communicate()
        assert seen[0] >= len(body) // 4
    finally:
        store.release.set()
    out, err = proc.communicate(timeout=300)
    feeder.join(10)
    assert proc.returncode == 0, err
    assert feeder.error is None
    # Byte-identical model: the streamed channel parsed as it arrived is the downloaded one.
    assert (root / "model" / "xgboost-model").read_bytes() == (reference / "model" / "xgboost-model").read_bytes()


def test_train_process_streamed_download_fails_midway_failure_is_download_reason(tmp_path):
    from tests.streaming import GatedStore, reader_position, wait_for

    body = _streamed_csv()
    store = GatedStore(pause_at=len(body) // 2, fail=True)
    root = tmp_path / "streamed"
    proc, feeder = _start_streamed(root, "File", store, body)
    try:
        wait_for(lambda: reader_position(proc.pid, root / "input" / "data" / "train" / "part-0.csv")
                 >= len(body) // 4 or proc.poll() is not None, what="the algorithm to read the first part")
        assert proc.poll() is None, proc.communicate()
    finally:
        store.release.set()  # the held GET now breaks
    _, err = proc.communicate(timeout=300)
    feeder.join(10)
    assert proc.returncode == 1, err
    assert feeder.error.startswith("ClientError: Could not download s3://b/train/part-0.csv for channel 'train'")
    assert (root / "output" / "failure").read_text() == feeder.error  # the job's FailureReason either way
    assert not (root / "model" / "xgboost-model").exists()
