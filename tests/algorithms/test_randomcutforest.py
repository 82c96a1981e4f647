"""Built-in Random Cut Forest: train (process) with a labelled CSV test channel -> test:f1 / accuracy ->
served scores; quality vs scikit-learn's IsolationForest on data with injected anomalies."""

import json
import math
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest

from tests.algorithms.firstparty_support import (
    handler,
    invoke,
    ml_root,
    quality_metrics,
    recordio_bytes,
    run_training,
    sdk_records,
)


def _with_anomalies(n=4000, dims=5, anomalies=40, seed=0):
    """Two Gaussian clusters plus uniformly scattered anomalies (label 1), shuffled."""
    rng = np.random.default_rng(seed)
    inliers = np.vstack([rng.normal(0, 1, (n // 2, dims)), rng.normal(4, 0.5, (n // 2, dims))])
    X = np.vstack([inliers, rng.uniform(-6, 8, (anomalies, dims))]).astype(np.float32)
    y = np.r_[np.zeros(n), np.ones(anomalies)].astype(np.float32)
    order = rng.permutation(len(y))
    return X[order], y[order]


def _scores(h, X):
    body = invoke(h, recordio_bytes(X), "application/x-recordio-protobuf", "application/json").body
    return np.array([s["score"] for s in json.loads(body)["scores"]])


def test_train_process_csv_test_channel_f1_matches_served_scores(tmp_path):
    X, y = _with_anomalies()
    test_csv = "\n".join(",".join([repr(float(label))] + [repr(float(v)) for v in row])
                         for row, label in zip(X[:1000], y[:1000], strict=True)).encode()
    root = ml_root(tmp_path, {"feature_dim": 5, "num_trees": 50, "num_samples_per_tree": 256},
                   {"train": (X, None), "test": test_csv}, {"test": {"ContentType": "text/csv;label_size=1"}})
    result = run_training("randomcutforest", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = quality_metrics(result.stdout)
    assert set(metrics) == {"test:accuracy", "test:precision", "test:recall", "test:f1"}

    from opensage.algorithms.firstparty import load_state

    cutoff = load_state(root / "model", "randomcutforest")[1]["threshold"]
    h = handler("randomcutforest", root / "model")
    predicted, actual = _scores(h, X[:1000]) > cutoff, y[:1000] == 1
    precision = np.sum(predicted & actual) / max(predicted.sum(), 1)
    recall = np.sum(predicted & actual) / actual.sum()
    assert metrics["test:f1"] == pytest.approx(2 * precision * recall / (precision + recall), rel=1e-6)
    assert metrics["test:f1"] > 0.6 and metrics["test:accuracy"] > 0.98
    records = sdk_records(invoke(h, recordio_bytes(X[:3]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    assert [set(r.label) for r in records] == [{"score"}] * 3


def test_serve_scores_rank_anomalies_as_isolation_forest_does(tmp_path):
    """Injected anomalies: ROC AUC of the served scores within 0.01 of IsolationForest's, and the two rankings
    agree (Spearman > 0.8); inliers score about 1, anomalies clearly more (AWS's scale)."""
    from scipy.stats import spearmanr
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    from tests.algorithms.firstparty_support import train_in_process

    X, y = _with_anomalies(seed=1)
    root = ml_root(tmp_path, {"feature_dim": 5}, {"train": (X, None)})
    train_in_process("randomcutforest", root)
    scores = _scores(handler("randomcutforest", root / "model"), X)
    reference = -IsolationForest(random_state=0).fit(X).score_samples(X)
    assert roc_auc_score(y, scores) >= roc_auc_score(y, reference) - 0.01
    assert spearmanr(scores, reference)[0] > 0.8
    assert 0.5 < np.median(scores[y == 0]) < 1.5 and np.median(scores[y == 1]) > 2 * np.median(scores[y == 0])


def test_score_point_cut_off_at_root_is_log2_sample_size():
    """A row far outside every tree's bounding box is separated by the first cut with probability ~1: its score
    is scoreUnseen(depth 0) * log2(samples + 1) = log2(257); a row equal to a training row scores lowest."""
    from opensage.algorithms.randomcutforest import forest

    X, _ = _with_anomalies(n=2000, anomalies=0)
    model = forest.build(X, 50, 256, seed=0)
    far = model.score(np.full((1, 5), 1e9))[0]
    assert far == pytest.approx(math.log2(257), rel=1e-6)
    near = model.score(X[:200])
    assert near.max() < far and near.min() > 0


def _score_by_definition(model, x):
    """One row's score, tree by tree and node by node as the score is defined (AWS's random-cut-forest
    library): the leaf's score, then backed up to the root through each node's separation probability."""
    total = 0.0
    for root, mass in zip(model.roots, model.tree_mass, strict=True):
        path, node = [int(root)], int(root)
        while model.left[node] >= 0:
            node = int(model.left[node] if x[model.dim[node]] <= model.cut[node] else model.right[node])
            path.append(node)
        depth, leaf_mass = len(path) - 1, float(model.mass[node])
        if np.all(x == model.low[node]):
            score = (1.0 - leaf_mass / (2.0 * float(model.mass[root]))) / (depth + math.log2(leaf_mass + 1.0))
        else:
            score = 1.0 / (depth + 1.0)
        for level in range(depth - 1, -1, -1):
            at = path[level]
            old = float((model.high[at] - model.low[at]).sum())
            new = float((np.maximum(model.high[at], x) - np.minimum(model.low[at], x)).sum())
            prob = 1.0 - old / new if new > 0 else 0.0
            score = prob / (level + 1.0) + (1.0 - prob) * score
        total += score * math.log2(float(mass) + 1.0)
    return total / len(model.roots)


def test_scores_of_all_trees_at_once_equal_the_definition_row_by_row(monkeypatch):
    """Forest.score walks every (row, tree) pair at once and stops backing a pair up at the first box that
    holds its row: the scores equal the definition's for training rows (seen leaves), shifted rows, rows far
    outside every box and rows outside in one dimension only, whatever the block size."""
    from opensage.algorithms.randomcutforest import forest

    X, _ = _with_anomalies(n=600, anomalies=6, seed=3)
    model = forest.build(X, 20, 64, seed=1)
    one_dim_out = np.array(X[:5], dtype=np.float64)
    one_dim_out[:, 2] = 50.0
    rows = np.vstack([X[:40], X[:30] + 0.3, np.full((2, 5), -1e6), one_dim_out]).astype(np.float64)
    expected = np.array([_score_by_definition(model, row) for row in rows])
    assert model.score(rows) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(forest, "SCORE_VALUES", 7 * len(model.roots) * 5)  # blocks of 7 rows
    assert model.score(rows) == pytest.approx(expected, rel=1e-12)
    assert model.score(rows[3:4])[0] == pytest.approx(expected[3], rel=1e-12)


@pytest.mark.parametrize(("build_values", "reduceat_max_width"), [(None, None), (3 * 128 * 5, None), (None, 0)],
                         ids=["all trees at once", "three trees at a time", "boxes by padded blocks"])
def test_built_trees_hold_the_random_cut_invariants(monkeypatch, build_values, reduceat_max_width):
    """forest.build grows trees a level at a time, as many together as fit BUILD_VALUES: each node's box is
    exactly its points' box (its children's boxes together), its mass its children's, its cut inside its box and
    between its children; a leaf holds equal points only; each tree holds its sample; and a cut's dimension is
    drawn in proportion to its span (two dimensions spanning 9:1, over 4,000 roots)."""
    from opensage.algorithms.randomcutforest import forest

    if build_values is not None:
        monkeypatch.setattr(forest, "BUILD_VALUES", build_values)
    if reduceat_max_width is not None:  # the path of rows wider than REDUCEAT_MAX_WIDTH
        monkeypatch.setattr(forest, "REDUCEAT_MAX_WIDTH", reduceat_max_width)
    X, _ = _with_anomalies(n=500, anomalies=5, seed=4)
    X = np.vstack([X, X[:50]])  # duplicates: leaves of more than one point
    model = forest.build(X, 30, 128, seed=2)
    children = np.r_[model.left[model.left >= 0], model.right[model.right >= 0]]
    assert len(set(model.roots)) == 30 and not np.isin(model.roots, children).any()
    assert len(children) + 30 == len(model.mass) and len(set(children)) == len(children)  # a node, one parent
    assert set(model.tree_mass) == {128} and np.all(model.mass[model.roots] == 128)
    inner = np.flatnonzero(model.left >= 0)
    left, right = model.left[inner], model.right[inner]
    assert np.array_equal(right, left + 1)
    assert np.array_equal(model.mass[left] + model.mass[right], model.mass[inner])
    assert np.array_equal(np.minimum(model.low[left], model.low[right]), model.low[inner])
    assert np.array_equal(np.maximum(model.high[left], model.high[right]), model.high[inner])
    rows, dims, cuts = np.arange(len(inner)), model.dim[inner], model.cut[inner]
    assert np.all(model.low[inner][rows, dims] <= cuts) and np.all(cuts < model.high[inner][rows, dims])
    assert np.all(model.high[left][rows, dims] <= cuts) and np.all(model.low[right][rows, dims] > cuts)
    leaves = np.flatnonzero(model.left < 0)
    assert np.array_equal(model.low[leaves], model.high[leaves]) and np.all(model.right[leaves] == -1)
    assert model.mass[leaves].sum() == 30 * 128
    for leaf in leaves[:200]:  # a leaf's point is a row of the data
        assert np.any(np.all(X == model.low[leaf], axis=1))

    rng = np.random.default_rng(0)
    wide = np.c_[rng.uniform(0, 9, 400), rng.uniform(0, 1, 400)]
    roots = forest.build(wide, 4000, 64, seed=5)
    span = roots.high[roots.roots] - roots.low[roots.roots]
    expected = float(np.mean(span[:, 0] / span.sum(axis=1)))  # ~0.9 (each root's own sample's box)
    assert float(np.mean(roots.dim[roots.roots] == 0)) == pytest.approx(expected, abs=0.02)  # > 4 sd


def test_a_model_whose_children_are_not_adjacent_is_refused_at_load():
    """The walk takes a node's right child as left + 1 (as both builders ever used numbered them): a model file
    that breaks it is refused, not scored wrong."""
    from opensage.algorithms.randomcutforest import forest

    X, _ = _with_anomalies(n=300, anomalies=0)
    arrays = forest.build(X, 3, 32, seed=0).arrays()
    forest.Forest.from_arrays(arrays)
    inner = int(np.flatnonzero(arrays["left"] >= 0)[0])
    arrays["right"] = arrays["right"].copy()
    arrays["right"][inner] += 1
    with pytest.raises(ValueError, match="right child"):
        forest.Forest.from_arrays(arrays)


def test_train_bad_hyperparameters_fail_naming_them(tmp_path):
    X, _ = _with_anomalies(n=200, anomalies=0)
    root = ml_root(tmp_path, {"feature_dim": 5, "num_trees": 10}, {"train": (X, None)})
    assert run_training("randomcutforest", root).returncode == 1
    assert "num_trees" in (root / "output" / "failure").read_text()
    root = ml_root(tmp_path / "b", {"feature_dim": 5, "eval_metrics": '["f1"]'}, {"train": (X, None)})
    assert run_training("randomcutforest", root).returncode == 1
    assert "eval_metrics" in (root / "output" / "failure").read_text()
