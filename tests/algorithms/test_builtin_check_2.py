"""The shared first-party check (test_builtin_check.py: train -> model_algo-1 -> every request format and Accept
-> bad requests -> missing required hyperparameter) run on the second batch of built-ins."""

import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import pytest

from tests.algorithms import test_builtin_check as check
from tests.algorithms.firstparty_support import handler, ml_root, train_in_process
from tests.algorithms.test_builtin_check import (  # noqa: F401  (collected here with this module's cases)
    test_serve_bad_request_answers_4xx_without_traceback,
    test_serve_every_request_format_and_accept_agree,
    test_train_missing_required_hyperparameter_failure_names_it,
    test_train_writes_model_algo_1_only,
)

Case = check.Case
CASES = [
    Case("knn", "knn", {"feature_dim": 4, "k": 3, "predictor_type": "classifier", "sample_size": 100}, True,
         "sample_size", ("predicted_label",)),
    Case("factorization-machines", "factorization_machines",
         {"feature_dim": 4, "num_factors": 2, "predictor_type": "binary_classifier", "epochs": 3}, True,
         "num_factors", ("score", "predicted_label")),
    Case("randomcutforest", "randomcutforest", {"feature_dim": 4, "num_trees": 50}, False, "feature_dim",
         ("score",), json_key="scores"),
    Case("lda", "lda", {"num_topics": 2, "feature_dim": 4, "mini_batch_size": 10, "max_restarts": 1}, False,
         "mini_batch_size", ("topic_mixture",)),
    Case("ntm", "ntm", {"feature_dim": 4, "num_topics": 2, "epochs": 2}, False, "num_topics", ("topic_weights",)),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.repository)
def trained(request, tmp_path_factory):
    case = request.param
    X, y = check._iris()
    root = ml_root(tmp_path_factory.mktemp(case.module), case.hyperparameters,
                   {"train": (X, y if case.supervised else None)})
    train_in_process(case.module, root)
    return case, root, handler(case.repository, root / "model")
