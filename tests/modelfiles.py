"""Model artifacts the tests build: model.tar.gz bytes and small built-in XGBoost models."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A model.tar.gz holding ``files`` (archive name -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def train_xgb(X: np.ndarray, y: np.ndarray, rounds: int, max_depth: int = 3) -> Any:
    import xgboost as xgb

    return xgb.train({"objective": "binary:logistic", "max_depth": max_depth}, xgb.DMatrix(X, label=y), rounds)


def xgb_model_tar(booster: Any) -> bytes:
    """``booster`` as the built-in XGBoost algorithm's model.tar.gz (``xgboost-model``)."""
    from opensage.algorithms.xgboost import save_booster

    with tempfile.TemporaryDirectory() as d:
        save_booster(booster, Path(d) / "xgboost-model")
        return tar_gz({"xgboost-model": (Path(d) / "xgboost-model").read_bytes()})


def breast_cancer_xgb(rounds: int, max_depth: int = 3) -> tuple[bytes, np.ndarray, np.ndarray, Any]:
    """A built-in XGBoost model.tar.gz trained on scikit-learn's breast cancer set: (tar, X, y, booster)."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    booster = train_xgb(X, y, rounds, max_depth)
    return xgb_model_tar(booster), X, y, booster
