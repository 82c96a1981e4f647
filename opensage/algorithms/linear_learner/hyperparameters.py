"""Linear learner hyperparameters: SageMaker's names, defaults, ranges and the checks across them
(DG ll_hyperparameters; the SDK's ``LinearLearner`` descriptors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, hyperparameter_error, parse_hyperparameters, require

BINARY, MULTICLASS, REGRESSOR = "binary_classifier", "multiclass_classifier", "regressor"
LOSSES: dict[str, tuple[str, ...]] = {
    BINARY: ("logistic", "hinge_loss"),
    MULTICLASS: ("softmax_loss",),
    REGRESSOR: ("squared_loss", "absolute_loss", "eps_insensitive_squared_loss", "eps_insensitive_absolute_loss",
                "quantile_loss", "huber_loss"),
}
DEFAULT_LOSS = {BINARY: "logistic", MULTICLASS: "softmax_loss", REGRESSOR: "squared_loss"}
SELECTION_CRITERIA = ("accuracy", "f_beta", "precision_at_target_recall", "recall_at_target_precision",
                      "loss_function")
# Older names the SDK still accepts: f1 is f_beta with beta 1, cross_entropy_loss the loss function.
LEGACY_CRITERIA = {"f1": "f_beta", "cross_entropy_loss": "loss_function"}
_ALL_LOSSES = ("auto", *sorted({loss for losses in LOSSES.values() for loss in losses}))
_UNIT = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}

SPECS: tuple[Param, ...] = (
    Param("predictor_type", "enum", required=True, choices=(BINARY, MULTICLASS, REGRESSOR)),
    Param("feature_dim", "int", low=1, auto=True),
    Param("num_classes", "int", low=3, high=1_000_000),
    Param("accuracy_top_k", "int", default=3, low=1),
    Param("balance_multiclass_weights", "bool", default=False),
    Param("beta_1", "float", low=0.0, high=1.0, high_open=True, auto=True),
    Param("beta_2", "float", low=0.0, high=1.0, high_open=True, auto=True),
    Param("bias_lr_mult", "float", low=0.0, low_open=True, auto=True),
    Param("bias_wd_mult", "float", low=0.0, auto=True),
    Param("binary_classifier_model_selection_criteria", "enum", default="accuracy",
          choices=(*SELECTION_CRITERIA, *LEGACY_CRITERIA)),
    Param("early_stopping_patience", "int", default=3, low=1),
    Param("early_stopping_tolerance", "float", default=0.001, low=0.0, low_open=True),
    Param("epochs", "int", default=15, low=1),
    Param("f_beta", "float", default=1.0, low=0.0, low_open=True),
    Param("huber_delta", "float", default=1.0, low=0.0),
    Param("init_bias", "float", default=0.0),
    Param("init_method", "enum", default="uniform", choices=("uniform", "normal")),
    Param("init_scale", "float", default=0.07, low=0.0, low_open=True),
    Param("init_sigma", "float", default=0.01, low=0.0, low_open=True),
    Param("l1", "float", low=0.0, auto=True),
    Param("learning_rate", "float", low=0.0, low_open=True, auto=True),
    Param("loss", "enum", default="auto", choices=_ALL_LOSSES),
    Param("loss_insensitivity", "float", default=0.01, low=0.0, low_open=True),
    Param("lr_scheduler_factor", "float", auto=True, **_UNIT),
    Param("lr_scheduler_minimum_lr", "float", low=0.0, low_open=True, auto=True),
    Param("lr_scheduler_step", "int", low=1, auto=True),
    Param("margin", "float", default=1.0, low=0.0),
    Param("mini_batch_size", "int", default=1000, low=1),
    Param("momentum", "float", low=0.0, high=1.0, high_open=True, auto=True),
    Param("normalize_data", "bool", default=True, auto=True),
    Param("normalize_label", "bool", auto=True),
    Param("num_calibration_samples", "int", low=1, auto=True),
    Param("num_models", "int", low=1, auto=True),
    Param("num_point_for_scaler", "int", default=10_000, low=1),
    Param("optimizer", "enum", default="auto", choices=("auto", "sgd", "adam", "rmsprop")),
    Param("positive_example_weight_mult", "float", default=1.0, low=0.0, low_open=True, auto=True,
          words=("balanced",)),
    Param("quantile", "float", default=0.5, **_UNIT),
    Param("target_precision", "float", default=0.8, **_UNIT),
    Param("target_recall", "float", default=0.8, **_UNIT),
    Param("unbias_data", "bool", auto=True),
    Param("unbias_label", "bool", auto=True),
    Param("use_bias", "bool", default=True),
    Param("use_lr_scheduler", "bool", default=True),
    Param("wd", "float", low=0.0, auto=True),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed hyperparameters with the cross-parameter rules applied (``loss`` resolved from ``auto``)."""
    hp = parse_hyperparameters(raw, SPECS)
    predictor = hp["predictor_type"]
    if predictor == MULTICLASS:
        require(hp, "num_classes", "predictor_type is multiclass_classifier")
    loss = hp["loss"]
    if loss == "auto":
        hp["loss"] = DEFAULT_LOSS[predictor]
    elif loss not in LOSSES[predictor]:
        raise hyperparameter_error(f"loss {loss!r} cannot be used with predictor_type {predictor!r}: expected "
                                   f"auto or one of {', '.join(LOSSES[predictor])}.")
    criterion = hp["binary_classifier_model_selection_criteria"]
    if criterion in LEGACY_CRITERIA:
        if criterion == "f1":
            hp["f_beta"] = 1.0
        hp["binary_classifier_model_selection_criteria"] = LEGACY_CRITERIA[criterion]
    if hp["optimizer"] == "auto":
        hp["optimizer"] = "adam"
    return hp
