"""Linear learner's full-batch L-BFGS polish (from zero, SGD only where it fails): the optimum of each model's own
objective."""

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from opensage.algorithms.linear_learner import solver


def _data():
    X, y = make_classification(4000, 10, n_informative=4, random_state=0)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y.astype(float)


def test_fit_polish_reaches_sklearn_logistic_optimum_for_each_wd():
    X, y = _data()
    n = len(y)
    wds = [1.0 / n, 1e-2]
    candidates = [solver.Candidate(lr, wd, 0.0) for wd in wds for lr in (0.1, 0.01)]
    settings = solver.Settings(epochs=15, mini_batch_size=100, polish=True)
    models = solver.fit(X, y, np.ones(n), solver.Loss("logistic"), 1, candidates, settings)
    loss = solver.Loss("logistic")

    def objective(w, b, wd):  # the SGD objective: mean loss + wd/2 |w|^2 (bias not penalised: bias_wd_mult 0)
        return float(np.mean(loss.value((X @ w + b)[None, :, None], y)) + 0.5 * wd * w @ w)

    for m, candidate in enumerate(candidates):
        # the same objective is sklearn's with C = 1 / (n wd), solved to a tight tolerance
        ref = LogisticRegression(C=1.0 / (n * candidate.wd), tol=1e-10, max_iter=10_000).fit(X, y)
        reached = objective(models.W[m, :, 0], models.b[m, 0], candidate.wd)
        optimum = objective(ref.coef_[0], ref.intercept_[0], candidate.wd)
        assert reached <= optimum * (1 + 1e-4)


def test_fit_polish_l1_model_stays_sparse_at_lasso_optimum():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2000, 10))
    y = 3 * X[:, 0] - 2 * X[:, 1] + rng.normal(0, 0.1, 2000)
    candidates = [solver.Candidate(0.05, 0.0, 0.0), solver.Candidate(0.05, 0.0, 0.2)]
    settings = solver.Settings(epochs=20, mini_batch_size=50, polish=True)
    models = solver.fit(X, y, np.ones(2000), solver.Loss("squared_loss"), 1, candidates, settings)
    dense, sparse = models.W[0, :, 0], models.W[1, :, 0]
    assert np.count_nonzero(dense) == 10
    assert np.count_nonzero(sparse) == 2  # exactly zero, not merely small
    # the lasso optimum of mean (r^2) + l1 |w|_1: sklearn's Lasso minimises mean(r^2) / 2 + alpha |w|_1
    from sklearn.linear_model import Lasso

    ref = Lasso(alpha=0.1, tol=1e-10, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(sparse, ref.coef_, atol=2e-3)


def _counting_loss(n, batches):
    class Counting(solver.Loss):
        def __call__(self, s, labels):  # type: ignore[no-untyped-def]
            if len(labels) < n:  # a mini-batch (the polish's evaluations see every row)
                batches.append(len(labels))
            return super().__call__(s, labels)

    return Counting("logistic")


def test_fit_polish_runs_no_sgd_reports_one_epoch_and_reaches_the_optimum():
    X, y = _data()
    n = len(y)
    sgd_batches: list[int] = []
    epochs = []
    loss = _counting_loss(n, sgd_batches)
    candidates = [solver.Candidate(0.1, 1.0 / n, 0.0), solver.Candidate(0.3, 1.0 / n, 0.0)]
    settings = solver.Settings(epochs=15, mini_batch_size=100, polish=True)
    models = solver.fit(X, y, np.ones(n), loss, 1, candidates, settings,
                        on_epoch=lambda epoch, train, watched: epochs.append((epoch, train.copy(), watched)))
    assert sgd_batches == []  # the polish starts from zero: no SGD epoch before it
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X, y)
    optimum = float(np.mean(loss.value((X @ ref.coef_[0] + ref.intercept_[0])[None, :, None], y)))
    for m in range(2):
        reached = float(np.mean(loss.value((X @ models.W[m, :, 0] + models.b[m, 0])[None, :, None], y)))
        assert abs(reached - optimum) < 1e-4 * optimum
    [(epoch, train_loss, watched)] = epochs  # one epoch reported: the polished models' training loss
    assert epoch == 0 and watched is None
    np.testing.assert_allclose(train_loss, optimum, rtol=1e-4)


def test_fit_falls_back_to_sgd_where_the_polish_fails(monkeypatch):
    X, y = _data()
    n = len(y)
    sgd_batches: list[int] = []
    monkeypatch.setattr(solver, "polish", lambda *args, **kwargs: None)  # as for a non-finite solution
    settings = solver.Settings(epochs=2, mini_batch_size=100, polish=True)
    models = solver.fit(X, y, np.ones(n), _counting_loss(n, sgd_batches), 1,
                        [solver.Candidate(0.1, 1.0 / n, 0.0)], settings)
    assert sgd_batches == [100] * 80  # two whole epochs of SGD
    accuracy = float(np.mean(((X @ models.W[0, :, 0] + models.b[0, 0]) > 0) == y))
    reference = LogisticRegression(C=1.0).fit(X, y).score(X, y)  # 0.71 on this data
    assert accuracy >= reference - 0.01
