"""Built-in PCA: train (process) -> model_algo-1 -> serve ``projection``; components match scikit-learn's."""

import json
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest

from tests.algorithms.firstparty_support import (
    handler,
    invoke,
    ml_root,
    recordio_bytes,
    run_training,
    sdk_records,
    train_in_process,
)


def _digits():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


def _projection(h, X):
    body = invoke(h, recordio_bytes(X), "application/x-recordio-protobuf", "application/json").body
    return np.array([p["projection"] for p in json.loads(body)["projections"]])


def _same_up_to_sign(ours, reference, atol):
    signs = np.sign(np.sum(ours * reference, axis=0))
    np.testing.assert_allclose(ours * signs, reference, atol=atol)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_train_projection_matches_sklearn_pca_up_to_sign(tmp_path, mode):
    """Digits (bundled), 5 components: served projections = sklearn PCA's transform, columns reversed
    (SageMaker's model lists the most significant component last)."""
    from sklearn.decomposition import PCA

    X = _digits()
    reference = PCA(n_components=5, svd_solver="full").fit(X)
    root = ml_root(tmp_path, {"num_components": 5, "feature_dim": 64, "mini_batch_size": 200,
                              "algorithm_mode": mode}, {"train": (X, None)})
    train_in_process("pca", root)
    ours = _projection(handler("pca", root / "model"), X[:200])
    expected = reference.transform(X[:200])[:, ::-1]
    scale = float(np.abs(expected).max())
    _same_up_to_sign(ours, expected, atol=2e-3 * scale if mode == "regular" else 2e-2 * scale)


def test_train_process_then_serve_recordio_and_subtract_mean_false(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 5.0).astype(np.float32)
    root = ml_root(tmp_path, {"num_components": 2, "feature_dim": 6, "mini_batch_size": 100,
                              "subtract_mean": "False"}, {"train": (X, None), "test": (X[:10], None)})
    result = run_training("pca", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    h = handler("pca", root / "model")
    records = sdk_records(invoke(h, recordio_bytes(X[:4]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    projections = np.array([list(r.label["projection"].float32_tensor.values) for r in records])
    # without centring, the top right-singular vector of the raw rows (the last column here)
    _, _, vt = np.linalg.svd(X.astype(np.float64), full_matrices=False)
    _same_up_to_sign(projections[:, -1:], (X[:4] @ vt[0])[:, None], atol=1e-2)


def test_train_num_components_above_feature_dim_fails_naming_it(tmp_path):
    root = ml_root(tmp_path, {"num_components": 70, "feature_dim": 64, "mini_batch_size": 10},
                   {"train": (_digits()[:100], None)})
    assert run_training("pca", root).returncode == 1
    assert "num_components (70) must not exceed feature_dim (64)" in (root / "output" / "failure").read_text()
