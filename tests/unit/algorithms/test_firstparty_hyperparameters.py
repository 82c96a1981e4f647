"""Hyperparameters of the first-party built-ins: SageMaker's names, defaults, required ones and validation."""

import pytest

from opensage.algorithms.firstparty import HyperparameterError
from opensage.algorithms.kmeans import hyperparameters as kmeans_hp
from opensage.algorithms.linear_learner import hyperparameters as ll_hp
from opensage.algorithms.pca import hyperparameters as pca_hp


def test_linear_learner_parse_sdk_strings_defaults_filled():
    hp = ll_hp.parse({"predictor_type": "binary_classifier", "feature_dim": "30", "mini_batch_size": "200",
                      "use_bias": "True", "normalize_data": "auto", "wd": "0.01", "positive_example_weight_mult":
                      "balanced", "sagemaker_extra": "x", "_tuning_objective_metric": "validation:recall"})
    assert hp["feature_dim"] == 30 and hp["mini_batch_size"] == 200 and hp["use_bias"] is True
    assert hp["normalize_data"] is None and hp["wd"] == 0.01 and hp["positive_example_weight_mult"] == "balanced"
    assert (hp["epochs"], hp["loss"], hp["optimizer"], hp["binary_classifier_model_selection_criteria"]) == \
        (15, "logistic", "adam", "accuracy")
    assert (hp["early_stopping_patience"], hp["target_recall"], hp["accuracy_top_k"]) == (3, 0.8, 3)


@pytest.mark.parametrize(("raw", "named"), [
    ({}, "'predictor_type' is a required property"),
    ({"predictor_type": "classifier"}, "predictor_type"),
    ({"predictor_type": "regressor", "epochs": "0"}, "epochs"),
    ({"predictor_type": "regressor", "epochs": "1.5"}, "epochs"),
    ({"predictor_type": "regressor", "learning_rate": "-1"}, "learning_rate"),
    ({"predictor_type": "regressor", "target_recall": "1"}, "target_recall"),
    ({"predictor_type": "regressor", "use_bias": "maybe"}, "use_bias"),
    ({"predictor_type": "regressor", "num_layers": "3"}, "'num_layers' was unexpected"),
    ({"predictor_type": "multiclass_classifier"}, "'num_classes' is a required property"),
    ({"predictor_type": "multiclass_classifier", "num_classes": "2"}, "num_classes"),
    ({"predictor_type": "regressor", "loss": "logistic"}, "loss 'logistic' cannot be used"),
])
def test_linear_learner_parse_bad_or_missing_raises_naming_it(raw, named):
    with pytest.raises(HyperparameterError) as info:
        ll_hp.parse(raw)
    message = str(info.value)
    assert message.startswith("ClientError: Unable to initialize the algorithm. Failed to validate input "
                              "hyperparameters.")
    assert named in message and len(message) < 1024


def test_kmeans_parse_sdk_hyperparameters_and_required():
    hp = kmeans_hp.parse({"k": "10", "feature_dim": "784", "mini_batch_size": "500", "force_dense": "True",
                          "eval_metrics": '["msd", "ssd"]', "local_lloyd_max_iter": "50",
                          "extra_center_factor": "auto"})
    assert (hp["k"], hp["eval_metrics"], hp["extra_center_factor"], hp["init_method"]) == \
        (10, ["msd", "ssd"], None, "random")
    with pytest.raises(HyperparameterError, match="'k' is a required property"):
        kmeans_hp.parse({"feature_dim": "3"})
    with pytest.raises(HyperparameterError, match="eval_metrics"):
        kmeans_hp.parse({"k": "2", "feature_dim": "3", "eval_metrics": '["mse"]'})
    with pytest.raises(HyperparameterError, match="local_lloyd_tol"):
        kmeans_hp.parse({"k": "2", "feature_dim": "3", "local_lloyd_tol": "2"})


def test_pca_parse_modes_and_required():
    hp = pca_hp.parse({"num_components": "5", "feature_dim": "50", "mini_batch_size": "500",
                       "algorithm_mode": "randomized", "subtract_mean": "False", "extra_components": "-1"})
    assert (hp["algorithm_mode"], hp["subtract_mean"], hp["extra_components"]) == ("randomized", False, -1)
    with pytest.raises(HyperparameterError, match="'num_components' is a required property"):
        pca_hp.parse({"feature_dim": "50", "mini_batch_size": "10"})
    with pytest.raises(HyperparameterError, match="algorithm_mode"):
        pca_hp.parse({"num_components": "1", "feature_dim": "2", "mini_batch_size": "1", "algorithm_mode": "fast"})
    with pytest.raises(HyperparameterError, match="extra_components"):
        pca_hp.parse({"num_components": "1", "feature_dim": "2", "mini_batch_size": "1", "extra_components": "-2"})


def test_sdk_estimators_every_hyperparameter_they_can_send_accepted():
    """What the SDK's own LinearLearner / KMeans / PCA put in HyperParameters parses (after fit's feature_dim and
    mini_batch_size), so no notebook setting fails on our validation."""
    import os

    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    import boto3
    import sagemaker

    # No AWS call is made: the estimators only store and serialize values.
    session = sagemaker.Session(boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="k",
                                                           aws_secret_access_key="s"))
    common = {"role": "arn:aws:iam::000000000000:role/R", "instance_count": 1, "instance_type": "ml.m5.large",
              "sagemaker_session": session, "data_location": "s3://bucket/record-sets/"}
    ll = sagemaker.LinearLearner(
        predictor_type="multiclass_classifier", num_classes=4, binary_classifier_model_selection_criteria="f1",
        target_recall=0.5, target_precision=0.5, positive_example_weight_mult="balanced", epochs=3, use_bias=False,
        num_models=2, num_calibration_samples=100, init_method="normal", init_scale=0.1, init_sigma=0.02,
        init_bias=0.5, optimizer="sgd", loss="softmax_loss", wd=0.01, l1=0.001, momentum=0.5, learning_rate=0.1,
        beta_1=0.8, beta_2=0.99, bias_lr_mult=2.0, bias_wd_mult=0.5, use_lr_scheduler=True, lr_scheduler_step=10,
        lr_scheduler_factor=0.5, lr_scheduler_minimum_lr=1e-4, normalize_data=True, normalize_label=False,
        unbias_data=True, unbias_label=False, num_point_for_scaler=500, margin=1.5, quantile=0.4,
        loss_insensitivity=0.02, huber_delta=2.0, early_stopping_patience=2, early_stopping_tolerance=0.01,
        accuracy_top_k=2, f_beta=2.0, balance_multiclass_weights=True, **common)
    ll.feature_dim, ll.mini_batch_size = 7, 50
    hp = ll_hp.parse(ll.hyperparameters())
    assert hp["binary_classifier_model_selection_criteria"] == "f_beta" and hp["f_beta"] == 1.0
    assert (hp["use_bias"], hp["optimizer"], hp["feature_dim"], hp["lr_scheduler_step"]) == (False, "sgd", 7, 10)
    km = sagemaker.KMeans(k=5, init_method="kmeans++", max_iterations=20, tol=0.01, num_trials=2,
                          local_init_method="random", half_life_time_size=10, epochs=2, center_factor=3,
                          eval_metrics=["msd", "ssd"], **common)
    km.feature_dim, km.mini_batch_size = 7, 50
    assert kmeans_hp.parse(km.hyperparameters())["local_lloyd_num_trials"] == 2
    pca = sagemaker.PCA(num_components=3, algorithm_mode="randomized", subtract_mean=False, extra_components=4,
                        **common)
    pca.feature_dim, pca.mini_batch_size = 7, 50
    assert pca_hp.parse(pca.hyperparameters())["extra_components"] == 4
