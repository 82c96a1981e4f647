"""SageMaker Python SDK v2, unmodified, against `opensage up`."""

from __future__ import annotations

import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _breast_cancer_csv(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    X, y = X[idx], y[idx]
    train = tmp_path / "train.csv"
    np.savetxt(train, np.column_stack([y[:450], X[:450]]), delimiter=",", fmt="%.6g")
    return train, X[450:], y[450:]


def _load_model_tar(sess, s3_uri: str, dest: Path) -> Path:
    import sagemaker

    local = sagemaker.s3.S3Downloader.download(s3_uri, str(dest), sagemaker_session=sess)[0]
    with tarfile.open(local) as tar:
        tar.extractall(dest / "model", filter="data")
    return dest / "model"


def test_generic_estimator_builtin_xgboost_fit_logs_trains_usable_model(sm_session, tmp_path, capsys):
    import sagemaker
    import xgboost as xgb
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput

    train, X_test, y_test = _breast_cancer_csv(tmp_path)
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(train), bucket=bucket, key_prefix="e2e/xgb/train")
    image = sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    est = Estimator(image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.large",
                    output_path=f"s3://{bucket}/e2e/xgb/out", sagemaker_session=sm_session,
                    hyperparameters={"num_round": 20, "objective": "binary:logistic", "max_depth": 3})
    est.fit({"train": TrainingInput(uri, content_type="text/csv"),
             "validation": TrainingInput(uri, content_type="text/csv")}, logs=True)
    printed = capsys.readouterr().out
    assert "train-logloss" in printed
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed"
    metrics = {m["MetricName"] for m in desc["FinalMetricDataList"]}
    assert {"train:logloss", "validation:logloss"} <= metrics
    model_dir = _load_model_tar(sm_session, est.model_data, tmp_path)
    booster = xgb.Booster()
    booster.load_model(str(model_dir / "xgboost-model"))
    pred = booster.predict(xgb.DMatrix(X_test)) > 0.5
    assert (pred == y_test).mean() > 0.9


def test_sklearn_estimator_entry_point_runs_user_script(sm_session, tmp_path):
    from sagemaker.sklearn import SKLearn

    train, _, _ = _breast_cancer_csv(tmp_path)
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(train), bucket=bucket, key_prefix="e2e/sk/train")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent('''
        import argparse, os, joblib, numpy as np
        from sklearn.linear_model import LogisticRegression
        p = argparse.ArgumentParser()
        p.add_argument("-C", type=float)  # the toolkit passes 1-character names as -k
        p.add_argument("--solver", type=str)
        a = p.parse_args()
        data = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), delimiter=",")
        m = LogisticRegression(C=a.C, solver=a.solver, max_iter=5000).fit(data[:, 1:], data[:, 0])
        print(f"train_accuracy={m.score(data[:, 1:], data[:, 0]):.4f}")
        joblib.dump(m, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
    '''))
    est = SKLearn(entry_point="train.py", source_dir=str(src), framework_version="1.2-1", role=ROLE,
                  instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session,
                  output_path=f"s3://{bucket}/e2e/sk/out", hyperparameters={"C": 0.5, "solver": "lbfgs"},
                  metric_definitions=[{"Name": "train:accuracy", "Regex": "train_accuracy=([0-9.]+)"}])
    est.fit({"train": uri}, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed"
    assert desc["FinalMetricDataList"][0]["Value"] > 0.9
    model_dir = _load_model_tar(sm_session, est.model_data, tmp_path)
    import joblib

    assert joblib.load(model_dir / "model.joblib").predict(np.zeros((1, 30))).shape == (1,)


def test_script_that_raises_fails_job_with_actionable_reason(sm_session, tmp_path):
    from sagemaker.sklearn import SKLearn

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("raise ValueError('column price has text in row 7')\n")
    est = SKLearn(entry_point="train.py", source_dir=str(src), framework_version="1.2-1", role=ROLE,
                  instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session)
    with pytest.raises(Exception) as e:
        est.fit(logs=False)
    assert "ValueError: column price has text in row 7" in str(e.value)


def test_pytorch_estimator_entry_point_trains_on_cpu(sm_session, tmp_path):
    from sagemaker.pytorch import PyTorch

    bucket = sm_session.default_bucket()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.1
    data = tmp_path / "data.csv"
    np.savetxt(data, np.column_stack([y, X]), delimiter=",")
    uri = sm_session.upload_data(str(data), bucket=bucket, key_prefix="e2e/pt/train")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent('''
        import argparse, os, numpy as np, torch
        p = argparse.ArgumentParser()
        p.add_argument("--epochs", type=int)
        p.add_argument("--lr", type=float)
        a = p.parse_args()
        d = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAINING"], "data.csv"), delimiter=",")
        X, y = torch.tensor(d[:, 1:], dtype=torch.float32), torch.tensor(d[:, :1], dtype=torch.float32)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=a.lr)
        for epoch in range(a.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(X), y)
            loss.backward()
            opt.step()
        print(f"final_loss={loss.item():.6f}", flush=True)
        torch.save(model.state_dict(), os.path.join(os.environ["SM_MODEL_DIR"], "model.pth"))
    '''))
    est = PyTorch(entry_point="train.py", source_dir=str(src), framework_version="2.1", py_version="py310",
                  role=ROLE, instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session,
                  output_path=f"s3://{bucket}/e2e/pt/out", hyperparameters={"epochs": 200, "lr": 0.1},
                  metric_definitions=[{"Name": "loss", "Regex": "final_loss=([0-9.]+)"}])
    est.fit(uri, logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["FinalMetricDataList"][0]["Value"] < 0.01
    model_dir = _load_model_tar(sm_session, est.model_data, tmp_path)
    assert (model_dir / "model.pth").exists()
