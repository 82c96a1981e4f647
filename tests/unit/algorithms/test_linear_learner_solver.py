"""Linear learner internals: loss gradients, threshold calibration per selection criterion, L1, class weights."""

import numpy as np
import pytest

from opensage.algorithms.linear_learner import evaluation, hyperparameters, solver
from opensage.algorithms.linear_learner.train import sample_weights

LOSSES = ["logistic", "hinge_loss", "squared_loss", "absolute_loss", "eps_insensitive_squared_loss",
          "eps_insensitive_absolute_loss", "quantile_loss", "huber_loss", "softmax_loss"]


@pytest.mark.parametrize("name", LOSSES)
def test_loss_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    outputs = 3 if name == "softmax_loss" else 1
    scores = rng.normal(size=(2, 6, outputs)) * 2
    labels = rng.integers(0, 3, 6).astype(float) if name == "softmax_loss" else \
        rng.integers(0, 2, 6).astype(float) if name in ("logistic", "hinge_loss") else rng.normal(size=6)
    loss = solver.Loss(name, quantile=0.3, delta=0.7, insensitivity=0.1)
    _, grad = loss(scores, labels)
    eps = 1e-6
    numeric = np.zeros_like(scores)
    for index in np.ndindex(scores.shape):
        up, down = scores.copy(), scores.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (loss.value(up, labels) - loss.value(down, labels))[index[:2]] / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logistic_loss_and_gradient_exact_and_finite_at_extreme_scores(dtype):
    z = np.array([-800.0, -40.0, -3.0, -1e-30, -0.0, 0.0, 2.5, 40.0, 800.0])
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0, 1], dtype=float)
    value, grad = solver.Loss("logistic")(z.astype(dtype)[None, :, None], y.astype(dtype))
    assert value.dtype == dtype and grad.dtype == dtype  # the polish computes it in float32
    z32 = z.astype(dtype).astype(np.float64)  # the scores as the loss saw them
    expected_value = np.logaddexp(0.0, z32) - y * z32
    expected_grad = 0.5 * (1.0 + np.tanh(0.5 * z32)) - y
    tolerance = 1e-15 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(value[0], expected_value, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad[0, :, 0], expected_grad, rtol=0, atol=tolerance)


def test_binary_metrics_equal_scikit_learn_with_ties_and_one_class():
    from sklearn import metrics as skm

    rng = np.random.default_rng(4)
    for case in range(60):
        n = int(rng.integers(1, 200))
        y = (rng.random(n) < [0.0, 1.0, rng.random()][case % 3]).astype(float)  # only 0s, only 1s, mixed
        score = np.round(rng.random(n), 1 + case % 3)  # many tied scores
        predicted = (score > rng.random()).astype(float)
        beta = [0.5, 1.0, 2.0][case % 3]
        got = {metric.name: metric.value for metric in evaluation.binary_metrics(y, score, predicted, beta)}
        expected = {"binary_classification_accuracy": skm.accuracy_score(y, predicted),
                    f"binary_f_{beta:.3f}": skm.fbeta_score(y, predicted, beta=beta, zero_division=0),
                    "precision": skm.precision_score(y, predicted, zero_division=0),
                    "recall": skm.recall_score(y, predicted, zero_division=0)}
        if len(np.unique(y)) == 2:
            expected["roc_auc_score"] = skm.roc_auc_score(y, score)
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), name


def test_best_threshold_each_criterion_meets_its_target():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400).astype(float)
    score = np.clip(0.35 * y + rng.normal(0.35, 0.2, 400), 0, 1)

    def rates(threshold):
        predicted = score > threshold
        tp = np.sum(predicted & (y == 1))
        return tp / max(predicted.sum(), 1), tp / y.sum(), np.mean(predicted == y)

    precision, recall, _ = rates(evaluation.best_threshold(score, y, "precision_at_target_recall",
                                                           target_recall=0.9))
    assert recall >= 0.9
    precision, recall, _ = rates(evaluation.best_threshold(score, y, "recall_at_target_precision",
                                                           target_precision=0.8))
    assert precision >= 0.8
    best_accuracy = rates(evaluation.best_threshold(score, y, "accuracy"))[2]
    assert best_accuracy >= max(rates(t)[2] for t in np.linspace(0, 1, 101)) - 1e-12
    assert evaluation.best_threshold(score, y, "loss_function", default=0.5) == 0.5


def test_fit_large_l1_zeroes_irrelevant_weights():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 10))
    y = 3 * X[:, 0] + rng.normal(0, 0.1, 500)
    models = solver.fit(X, y, np.ones(500), solver.Loss("squared_loss"), 1,
                        [solver.Candidate(0.05, 0.0, 0.0), solver.Candidate(0.05, 0.0, 0.2)],
                        solver.Settings(epochs=20, mini_batch_size=50))
    dense, sparse = models.W[0, :, 0], models.W[1, :, 0]
    assert np.count_nonzero(dense[1:]) == 9 and np.count_nonzero(sparse[1:]) <= 2
    assert sparse[0] > 2.0  # the relevant feature survives


def test_sample_weights_balanced_positive_and_multiclass():
    y = np.array([1, 0, 0, 0], dtype=float)
    hp = hyperparameters.parse({"predictor_type": "binary_classifier", "positive_example_weight_mult": "balanced"})
    np.testing.assert_array_equal(sample_weights(y, hp), [3, 1, 1, 1])
    hp = hyperparameters.parse({"predictor_type": "multiclass_classifier", "num_classes": "3",
                                "balance_multiclass_weights": "true"})
    weights = sample_weights(np.array([0, 0, 1, 2], dtype=float), hp)
    np.testing.assert_allclose(np.bincount([0, 0, 1, 2], weights=weights), [4 / 3, 4 / 3, 4 / 3])


def _peak_bytes(call):  # type: ignore[no-untyped-def]
    import tracemalloc  # numpy reports its array buffers to tracemalloc

    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fit_and_scoring_make_no_full_size_copy_of_the_rows():
    """SGD gathers each mini-batch's rows from X, and scoring casts float32 rows a block at a time: no n x d
    array is made (a fresh one costs its first touch; a shuffled copy with a column of ones, then another per
    epoch, made the peak 2-3x X)."""
    from opensage.algorithms.linear_learner.train import LinearModel

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 50))  # 16 MB
    y = (X[:, 0] > 0).astype(np.float64)
    candidates = [solver.Candidate(0.1, 0.0, 0.0), solver.Candidate(0.01, 1e-3, 0.0)]
    settings = solver.Settings(epochs=2, mini_batch_size=100)
    peak = _peak_bytes(lambda: solver.fit(X, y, np.ones(len(y)), solver.Loss("logistic"), 1, candidates, settings))
    assert peak < X.nbytes / 4
    model = LinearModel(rng.normal(size=(50, 1)), np.zeros(1), "binary_classifier", "logistic", 0.5)
    X32 = X.astype(np.float32)
    assert _peak_bytes(lambda: model.raw(X32)) < X.nbytes / 4
    np.testing.assert_allclose(model.raw(X32), X32.astype(np.float64) @ model.weights, rtol=1e-12)


def test_distinct_models_groups_equal_weights_and_biases_in_order_of_first_appearance():
    W = np.array([[[2.0]], [[1.0]], [[2.0]], [[1.0]], [[1.0]]])
    b = np.array([[0.0], [0.0], [0.0], [0.0], [5.0]])  # the last differs from model 1 by its bias only
    first, inverse = solver.distinct_models(solver.ParallelModels(W, b))
    assert first.tolist() == [0, 1, 4]
    assert inverse.tolist() == [0, 1, 0, 1, 2]
