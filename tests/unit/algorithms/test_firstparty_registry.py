"""The first-party built-ins are addressed by their image repository names (images.py + the registry), and
their metric lines are read by SageMaker's own MetricDefinitions regexes."""

import re

import pytest

from opensage import images
from opensage.algorithms.registry import BUILTIN_ALGORITHMS, describe_metric_definitions
from opensage.runner.logtail import MetricMatcher

ECR = "382416733822.dkr.ecr.us-east-1.amazonaws.com"
REPOSITORIES = {"linear-learner": "linear_learner", "kmeans": "kmeans", "pca": "pca"}


@pytest.mark.parametrize("repository", sorted(REPOSITORIES))
def test_resolve_training_image_first_party_repository_runs_builtin(repository):
    resolved = images.resolve_training_image(f"{ECR}/{repository}:1", None, {"feature_dim": "3"}, None, None)
    assert resolved.kind == "builtin" and resolved.algorithm == repository
    assert resolved.command[1:] == ["-m", f"opensage.algorithms.{REPOSITORIES[repository]}.train"]
    by_name = images.resolve_training_image(None, repository, {}, None, None)
    assert by_name.command == resolved.command


@pytest.mark.parametrize("repository", sorted(REPOSITORIES))
def test_resolve_inference_image_first_party_repository_serves_builtin(repository):
    resolved = images.resolve_inference_image(f"{ECR}/{repository}:latest", {})
    assert resolved.kind == f"builtin-{repository}"
    from opensage.serving.model_server import _serve_module

    assert _serve_module(repository) == f"opensage.algorithms.{REPOSITORIES[repository]}.serve"


def test_linear_learner_metric_definitions_read_our_lines_and_directions():
    algorithm = BUILTIN_ALGORITHMS["linear-learner"]
    assert len(algorithm.metric_definitions) <= 40  # the API's maximum
    matcher = MetricMatcher.build(list(algorithm.metric_definitions))
    prefix = "[11/26/2026 14:00:00 INFO 140] #quality_metric: host=algo-1, "
    assert matcher.match(prefix + "test binary_classification_accuracy <score>=0.97") == \
        [("test:binary_classification_accuracy", 0.97)]
    assert matcher.match(prefix + "epoch=3, validation binary_classification_cross_entropy_objective "
                                  "<loss>=0.2") == [("validation:objective_loss", 0.2)]
    assert ("validation:objective_loss:final", 0.25) in matcher.match(
        prefix + "validation binary_classification_cross_entropy_objective <loss>=0.25")
    assert matcher.match(prefix + "test binary_f_1.000 <score>=0.9") == [("test:binary_f_beta", 0.9)]
    assert matcher.match(prefix + "validation multiclass_top_k_accuracy_3 <score>=0.99") == \
        [("validation:multiclass_top_k_accuracy", 0.99)]
    assert algorithm.metric_direction("test:binary_classification_accuracy") == "Maximize"
    assert algorithm.metric_direction("validation:objective_loss") == "Minimize"
    assert algorithm.metric_direction("test:mse") == "Minimize"


def test_kmeans_metric_definitions_match_sagemaker_regexes():
    definitions = {d["Name"]: d["Regex"] for d in BUILTIN_ALGORITHMS["kmeans"].metric_definitions}
    # The regexes AWS's own examples pass for k-means (sagemaker-python-sdk docs).
    assert definitions["test:msd"] == "#quality_metric: host=\\S+, test msd <loss>=(\\S+)"
    assert definitions["test:ssd"] == "#quality_metric: host=\\S+, test ssd <loss>=(\\S+)"
    assert re.search(definitions["test:ssd"], "#quality_metric: host=algo-1, test ssd <loss>=12.5").group(1) == "12.5"


def test_describe_metric_definitions_first_party_images():
    described = describe_metric_definitions(f"{ECR}/linear-learner:1")
    assert {"Name": "test:mse", "Regex": "#quality_metric: host=\\S+, test mse <loss>=(\\S+)"} in described
    assert describe_metric_definitions(f"{ECR}/kmeans:1")[0]["Name"] == "test:msd"
    assert describe_metric_definitions(f"{ECR}/pca:1") is None


def test_xgboost_metric_definitions_read_the_container_computed_tuning_objectives():
    import re

    from opensage.algorithms.registry import BUILTIN_ALGORITHMS

    definitions = {d["Name"]: d["Regex"] for d in BUILTIN_ALGORITHMS["sagemaker-xgboost"].metric_definitions}
    assert len(definitions) <= 40  # the API's maximum
    line = "[7]#011train-rmse:0.31#011validation-r2:0.8125#011validation-aucpr:0.9"
    for name, value in (("validation:r2", "0.8125"), ("validation:aucpr", "0.9"), ("train:rmse", "0.31")):
        match = re.search(definitions[name], line)
        assert match and match.group(1) == value, name
