"""Built-in PCA's regular mode on tall data (centred Gram matrix accumulated over row chunks + eigh): accuracy
against a float64 SVD and cost against scikit-learn's PCA (issue 12 item 5)."""


import numpy as np
import pytest

from opensage.algorithms.pca.train import decompose


def _low_rank(rows, features, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 10)) @ rng.normal(size=(10, features)) + 0.5 * rng.normal(size=(rows, features))
    return (X + offset).astype(np.float32)


def _hp(mode="regular", k=10, subtract_mean=True):
    return {"num_components": k, "subtract_mean": subtract_mean, "algorithm_mode": mode, "extra_components": -1}


@pytest.mark.parametrize("subtract_mean", [True, False])
def test_decompose_tall_gram_matches_float64_svd_despite_large_mean(subtract_mean):
    """Rows offset by 1,000 (float32 as read): the chunked Gram route's components and singular values equal a
    float64 SVD of the (centred) rows; centring before the float32 products keeps the offset's cancellation
    out."""
    X = _low_rank(20_000, 40, offset=1000.0)
    mean, v, s = decompose(X, _hp(k=5, subtract_mean=subtract_mean))[:3]
    X64 = X.astype(np.float64)
    centred = X64 - X64.mean(axis=0) if subtract_mean else X64
    _, s_ref, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(mean, X64.mean(axis=0) if subtract_mean else 0.0, rtol=1e-9)
    np.testing.assert_allclose(s, s_ref[:5][::-1], rtol=1e-4)
    signs = np.sign(np.sum(v * vt[:5][::-1].T, axis=0))
    np.testing.assert_allclose(v * signs, vt[:5][::-1].T, atol=1e-4)


@pytest.mark.parametrize("mode", ["regular", "randomized"])
def test_train_same_variance_as_sklearn_pca(tmp_path, mode):
    """20,000 x 100 float32 (rank 10 + noise) as SDK recordIO, 10 components: the variance kept equals
    scikit-learn's PCA with the matching solver (covariance_eigh / randomized) to 1e-4. (Speed vs the reference
    is measured by benchmarks/bench_builtin_algorithms.py, not asserted here.)"""
    from sklearn.decomposition import PCA

    from opensage.algorithms.pca.serve import load
    from tests.algorithms.firstparty_support import ml_root, train_in_process

    X = _low_rank(20_000, 100)
    root = ml_root(tmp_path, {"num_components": 10, "feature_dim": 100, "mini_batch_size": 1000,
                              "algorithm_mode": mode}, {"train": (X, None)})
    solver = "covariance_eigh" if mode == "regular" else "randomized"
    train_in_process("pca", root)
    reference = PCA(10, svd_solver=solver, random_state=0).fit(X)
    variance = X.var(axis=0, dtype=np.float64).sum()
    ours = load(root / "model").project(X).var(axis=0).sum() / variance
    theirs = reference.transform(X).var(axis=0).sum() / variance
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_decompose_blocks_rows_whose_mean_drifts_along_the_file_match_float64_svd():
    """One pass over blocks as read (the streamed route): rows whose mean drifts by up to 2,000 along the file
    (data sorted by time, say) still give a float64 SVD's singular values and components; a shift by the
    first block's mean alone would leave later blocks' float32 products uncentred."""
    from opensage.algorithms.pca.train import decompose_blocks

    rng = np.random.default_rng(1)
    X = _low_rank(20_000, 40).astype(np.float64)
    X += np.linspace(0.0, 2000.0, len(X))[:, None] * rng.normal(size=40)[None, :] / 6
    X = X.astype(np.float32)
    mean, v, s, _, rows = decompose_blocks((X[i:i + 1000].copy() for i in range(0, len(X), 1000)), 40,
                                           _hp(k=5))
    X64 = X.astype(np.float64)
    _, s_ref, vt = np.linalg.svd(X64 - X64.mean(axis=0), full_matrices=False)
    assert rows == len(X)
    np.testing.assert_allclose(s, s_ref[:5][::-1], rtol=1e-6)  # first block's shift alone: 2e-5 off
    signs = np.sign(np.sum(v * vt[:5][::-1].T, axis=0))
    np.testing.assert_allclose(v * signs, vt[:5][::-1].T, atol=1e-5)
    np.testing.assert_allclose(mean, X64.mean(axis=0), rtol=1e-7)


def test_train_tall_recordio_read_a_block_at_a_time_same_model_as_in_memory(tmp_path, monkeypatch):
    """Regular mode on tall SDK recordIO never holds the channel: peak memory well under the rows' size, and
    the model equals decompose() over the rows in memory."""
    import tracemalloc

    from opensage.algorithms import recordio_dense
    from opensage.algorithms.pca import train as pca_train
    from opensage.algorithms.pca.serve import load
    from tests.algorithms.firstparty_support import ml_root, train_in_process

    monkeypatch.setattr(recordio_dense, "BLOCK_BYTES", 64 << 10)
    monkeypatch.setattr(pca_train, "STREAM_CHUNK_VALUES", 1 << 14)  # blocks of 1,024 rows
    X = _low_rank(50_000, 50, offset=300.0)
    root = ml_root(tmp_path, {"num_components": 10, "feature_dim": 50, "mini_batch_size": 1000}, {"train": (X, None)})
    tracemalloc.start()
    try:
        train_in_process("pca", root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 4
    mean, v, s, _ = decompose(X, _hp(k=10))
    model = load(root / "model")
    projected, expected = model.project(X[:100]), (X[:100] - mean) @ v
    np.testing.assert_allclose(np.abs(projected), np.abs(expected), rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_train_tall_recordio_with_a_non_finite_value_fails_naming_the_channel(tmp_path):
    from opensage.algorithms.firstparty import UserError
    from tests.algorithms.firstparty_support import ml_root, train_in_process

    X = _low_rank(5_000, 20)
    X[4321, 7] = np.inf
    root = ml_root(tmp_path, {"num_components": 3, "feature_dim": 20, "mini_batch_size": 100}, {"train": (X, None)})
    with pytest.raises(UserError, match="channel 'train' has feature values that are not finite numbers"):
        train_in_process("pca", root)
