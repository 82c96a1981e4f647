import pytest

from opensage.algorithms.xgboost.hyperparameters import HyperparameterError, parse_hyperparameters


def test_parse_hyperparameters_minimal_uses_sagemaker_defaults():
    hps = parse_hyperparameters({"num_round": "10"})
    assert hps.num_round == 10
    assert hps.params["objective"] == "reg:squarederror"
    assert hps.early_stopping_rounds is None and hps.csv_weights is False


def test_parse_hyperparameters_typed_values_and_aliases_parsed():
    hps = parse_hyperparameters({
        "num_round": "50", "eta": "0.2", "max_depth": "5", "subsample": "0.8", "learning_rate": "0.1",
        "objective": "binary:logistic", "eval_metric": "auc,error@0.6,logloss", "early_stopping_rounds": "3",
        "csv_weights": "1", "seed": "7", "tree_method": "hist", "reg_lambda": "2"})
    assert hps.params["eta"] == 0.1 and hps.params["max_depth"] == 5 and hps.params["subsample"] == 0.8
    assert hps.params["lambda"] == 2.0 and hps.params["seed"] == 7
    assert hps.params["eval_metric"] == ["auc", "error@0.6", "logloss"]
    assert hps.early_stopping_rounds == 3 and hps.csv_weights is True
    assert "num_round" not in hps.params and "csv_weights" not in hps.params


def test_parse_hyperparameters_platform_keys_ignored():
    hps = parse_hyperparameters({"num_round": "1", "sagemaker_region": '"us-east-1"',
                                 "_tuning_objective_metric": "validation:auc"})
    assert "sagemaker_region" not in hps.raw and "_tuning_objective_metric" not in hps.raw


def test_parse_hyperparameters_json_quoted_strings_accepted():
    hps = parse_hyperparameters({"num_round": "3", "objective": '"binary:logistic"'})
    assert hps.params["objective"] == "binary:logistic"


def test_parse_hyperparameters_num_round_missing_raises():
    with pytest.raises(HyperparameterError, match="num_round"):
        parse_hyperparameters({"eta": "0.1"})


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("eta", "1.5", r"eta: value 1.5 is out of range; expected a number in \[0, 1\]"),
    ("subsample", "0", r"subsample: value 0 is out of range; expected a number in \(0, 1\]"),
    ("max_depth", "abc", "max_depth: 'abc' is not an integer"),
    ("max_depth", "2.5", "max_depth: '2.5' is not an integer"),
    ("num_round", "0", r"num_round: value 0 is out of range; expected an integer in \[1, \+inf\)"),
    ("booster", "forest", "booster: 'forest' is not valid; expected one of gbtree, gblinear, dart"),
    ("eval_metric", "rmse,bogus", "eval_metric: 'bogus' is not supported"),
])
def test_parse_hyperparameters_bad_value_names_parameter_and_range(key, value, fragment):
    raw = {"num_round": "10", key: value}
    with pytest.raises(HyperparameterError, match=fragment):
        parse_hyperparameters(raw)


def test_parse_hyperparameters_unknown_name_raises():
    with pytest.raises(HyperparameterError, match="'colour' is not supported"):
        parse_hyperparameters({"num_round": "1", "colour": "red"})


def test_parse_hyperparameters_multiclass_without_num_class_raises():
    with pytest.raises(HyperparameterError, match="num_class is required for objective multi:softprob"):
        parse_hyperparameters({"num_round": "1", "objective": "multi:softprob"})


def test_parse_hyperparameters_auc_with_regression_raises():
    with pytest.raises(HyperparameterError, match="'auc' can only be used"):
        parse_hyperparameters({"num_round": "1", "eval_metric": "auc"})


def test_parse_hyperparameters_legacy_values_mapped_for_modern_xgboost():
    hps = parse_hyperparameters({"num_round": "1", "objective": "reg:linear", "predictor": "cpu_predictor",
                                 "eval_metric": "accuracy,mse"})
    assert hps.params["objective"] == "reg:squarederror"
    assert "predictor" not in hps.params
    assert "eval_metric" not in hps.params  # sklearn-only metrics are computed by a custom metric
    assert hps.eval_metrics == ["accuracy", "mse"]


def test_parse_hyperparameters_tuning_metric_added_and_watched():
    hps = parse_hyperparameters({"num_round": "5", "objective": "binary:logistic", "eval_metric": "logloss",
                                 "_tuning_objective_metric": "validation:accuracy"})
    assert hps.eval_metrics == ["logloss", "accuracy"]
    assert hps.stopping_metric == "accuracy" and hps.maximize("accuracy") and not hps.maximize("logloss")
