"""knn, factorization-machines and randomcutforest are addressed by their image repository names and their
metric lines are read by their MetricDefinitions (usable as tuning objectives, with SageMaker's directions)."""

import pytest

from opensage import images
from opensage.algorithms.registry import BUILTIN_ALGORITHMS, describe_metric_definitions
from opensage.runner.logtail import MetricMatcher

ECR = "382416733822.dkr.ecr.us-east-1.amazonaws.com"
REPOSITORIES = {"knn": "knn", "factorization-machines": "factorization_machines",
                "randomcutforest": "randomcutforest", "lda": "lda", "ipinsights": "ipinsights", "ntm": "ntm"}
PREFIX = "[11/26/2026 14:00:00 INFO 140] #quality_metric: host=algo-1, "


@pytest.mark.parametrize("repository", sorted(REPOSITORIES))
def test_resolve_training_and_inference_image_repository_runs_builtin(repository):
    resolved = images.resolve_training_image(f"{ECR}/{repository}:1", None, {"feature_dim": "3"}, None, None)
    assert resolved.kind == "builtin" and resolved.algorithm == repository
    assert resolved.command[1:] == ["-m", f"opensage.algorithms.{REPOSITORIES[repository]}.train"]
    assert images.resolve_inference_image(f"{ECR}/{repository}:1", {}).kind == f"builtin-{repository}"
    from opensage.serving.model_server import _serve_module

    assert _serve_module(repository) == f"opensage.algorithms.{REPOSITORIES[repository]}.serve"


@pytest.mark.parametrize(("repository", "line", "expected", "direction"), [
    ("knn", "test accuracy <score>=0.97", ("test:accuracy", 0.97), "Maximize"),
    ("knn", "test mse <loss>=12.5", ("test:mse", 12.5), "Minimize"),
    ("factorization-machines", "test rmse <loss>=0.9", ("test:rmse", 0.9), "Minimize"),
    ("factorization-machines", "test binary_classification_accuracy <score>=0.7",
     ("test:binary_classification_accuracy", 0.7), "Maximize"),
    ("factorization-machines", "test binary_classification_cross_entropy <loss>=0.5",
     ("test:binary_classification_cross_entropy", 0.5), "Minimize"),
    ("factorization-machines", "test binary_f_beta <score>=0.6", ("test:binary_f_beta", 0.6), "Maximize"),
    ("randomcutforest", "test f1 <score>=0.8", ("test:f1", 0.8), "Maximize"),
    ("lda", "test pwll <score>=-3.4", ("test:pwll", -3.4), "Maximize"),
    ("ipinsights", "validation discriminator_auc <score>=0.97", ("validation:discriminator_auc", 0.97), "Maximize"),
    ("ntm", "validation total_loss <loss>=312.5", ("validation:total_loss", 312.5), "Minimize"),
])
def test_metric_definitions_read_our_lines_with_sagemaker_names(repository, line, expected, direction):
    algorithm = BUILTIN_ALGORITHMS[repository]
    assert MetricMatcher.build(list(algorithm.metric_definitions)).match(PREFIX + line) == [expected]
    assert algorithm.metric_direction(expected[0]) == direction
    assert expected[0] in {d["Name"] for d in describe_metric_definitions(f"{ECR}/{repository}:1")}


def test_factorization_machines_per_epoch_line_not_read_as_final_metric():
    matcher = MetricMatcher.build(list(BUILTIN_ALGORITHMS["factorization-machines"].metric_definitions))
    assert matcher.match(PREFIX + "epoch=3, train binary_classification_cross_entropy <loss>=0.4") == []
