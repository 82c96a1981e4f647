"""Built-in k-NN's exact search (faiss.Flat, L2): large query sets through scikit-learn's fused brute force give
today's numpy results, at about scikit-learn's cost (issue 12 item 5)."""


import numpy as np

from opensage.algorithms.knn import index


def _data(rows, queries, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, 20)).astype(np.float32), rng.normal(size=(queries, 20)).astype(np.float32))


def test_search_flat_l2_large_query_set_same_neighbours_as_small_blocks():
    """The same queries searched as one large set (scikit-learn's path) and as small blocks (numpy's path, what
    a serving request takes): the same ids, nearest first, and the same squared distances."""
    rows, queries = _data(30_000, 400)
    flat = index.build("faiss.Flat", "L2", rows, None, None)
    assert len(queries) * len(rows) >= index.FUSED_MIN_PAIRS
    costs, ids = flat.search(queries, 7)
    small = [flat.search(queries[i:i + 8], 7) for i in range(0, len(queries), 8)]
    assert 8 * len(rows) < index.FUSED_MIN_PAIRS
    np.testing.assert_array_equal(ids, np.concatenate([i for _, i in small]))
    np.testing.assert_allclose(costs, np.concatenate([c for c, _ in small]), rtol=1e-4)
    assert np.all(np.diff(costs, axis=1) >= 0)
    exact = ((queries[:5, None, :].astype(np.float64) - rows[None].astype(np.float64)) ** 2).sum(axis=2)
    np.testing.assert_array_equal(ids[:5], np.argsort(exact, axis=1)[:, :7])


def test_search_flat_l2_same_neighbours_as_sklearn_kneighbors():
    """100,000 rows x 5,000 queries, k=5: the index's exact search finds scikit-learn's
    NearestNeighbors(brute).kneighbors neighbours (ties aside). (Speed is measured by
    benchmarks/bench_builtin_algorithms.py, not asserted here.)"""
    from sklearn.neighbors import NearestNeighbors

    rows, queries = _data(100_000, 5_000)
    _, ids = index.build("faiss.Flat", "L2", rows, None, None).search(queries, 5)
    _, expected = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(rows).kneighbors(queries)
    assert np.mean(ids == expected) > 0.999
