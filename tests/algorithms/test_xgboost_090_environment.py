"""Built-in XGBoost 0.90-x under a real xgboost 0.90 (the environment a sagemaker-xgboost:0.90-* image gets).

Skipped unless ``OPENSAGE_TEST_XGBOOST090_PYTHON`` names an interpreter whose ``xgboost.__version__`` is
``0.90`` and which has numpy < 2, scipy, scikit-learn (pyarrow optional), e.g. a throwaway venv:
``python -m venv /tmp/xgb090 && /tmp/xgb090/bin/pip install xgboost==0.90 'numpy<2' scipy scikit-learn``
then ``OPENSAGE_TEST_XGBOOST090_PYTHON=/tmp/xgb090/bin/python``. The platform's package is put on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import opensage
from opensage.algorithms.xgboost import serve

REPO_ROOT = Path(opensage.__file__).resolve().parent.parent
PYTHON = os.environ.get("OPENSAGE_TEST_XGBOOST090_PYTHON", "")


def _xgboost_090_available() -> bool:
    if not PYTHON or not Path(PYTHON).exists():
        return False
    probe = subprocess.run([PYTHON, "-c", "import xgboost; print(xgboost.__version__)"], capture_output=True,
                           text=True, timeout=60)
    return probe.returncode == 0 and probe.stdout.strip() == "0.90"


pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not _xgboost_090_available(),
    reason="needs OPENSAGE_TEST_XGBOOST090_PYTHON = an interpreter with xgboost 0.90 (see the module docstring)")]

SERVE = """
import sys
from opensage.algorithms.xgboost import import_xgboost_fast, serve
import_xgboost_fast()
model = serve.load(sys.argv[1])
try:
    body, content_type = serve.predict(model, b"0.9,0.1,0.2\\n0.1,0.5,0.5", "text/csv", "application/json")
    print(content_type, body.decode())
except serve.InferenceError as exc:
    print(exc.status, exc)
"""


def _env(version: str, root: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "OPENSAGE_IMAGE_VERSION": version, "PYTHONPATH": str(REPO_ROOT)}
    if root is not None:
        env["SAGEMAKER_BASE_DIR"] = str(root)
    return env


def _train_090(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(
        {"num_round": "4", "objective": "binary:logistic", "silent": "1", "eval_metric": "auc", "max_depth": "2"}))
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps({"train": {"ContentType": "text/csv"}}))
    X = np.random.default_rng(0).random((150, 3))
    (root / "input" / "data" / "train").mkdir(parents=True)
    np.savetxt(root / "input" / "data" / "train" / "d.csv", np.column_stack([X[:, 0] > 0.5, X]), delimiter=",",
               fmt="%.6g")
    result = subprocess.run([PYTHON, "-m", "opensage.algorithms.xgboost.train"], env=_env("0.90-1", root),
                            capture_output=True, text=True, timeout=300)
    return result, root / "model"


def test_train_090_writes_legacy_pickle_served_by_090_refused_by_platform(tmp_path):
    result, model_dir = _train_090(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "[0]\ttrain-auc:1"  # 0.90 formats values with %g
    assert serve.pickled_booster_kind(model_dir / "xgboost-model") == "legacy"
    served = subprocess.run([PYTHON, "-c", SERVE, str(model_dir)], env=_env("0.90-1"), capture_output=True,
                            text=True, timeout=120)
    content_type, body = served.stdout.split()
    assert content_type == "text/csv" and len(body.split(",")) == 2  # Accept ignored, comma-joined
    first, second = (float(v) for v in body.split(","))
    assert first > 0.5 > second
    with pytest.raises(serve.ModelFormatError, match="saved by xgboost 0.90"):
        serve.load_now(model_dir, serve.ContainerVersion("1.7-1"))


def test_serve_090_newer_pickle_refused_without_aborting(tmp_path):
    import pickle

    import xgboost as xgb

    X = np.random.default_rng(0).random((50, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=X[:, 0] > 0.5), 2)
    (tmp_path / "xgboost-model").write_bytes(pickle.dumps(booster))
    served = subprocess.run([PYTHON, "-c", SERVE, str(tmp_path)], env=_env("0.90-2"), capture_output=True,
                            text=True, timeout=120)
    assert served.returncode == 0, served.stderr  # xgboost 0.90 itself would abort on this pickle
    assert served.stdout.startswith("500 Unable to load model: this model is a Booster pickled by xgboost 1.0")
