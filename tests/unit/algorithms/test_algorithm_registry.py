import re

from opensage.algorithms.registry import BUILTIN_ALGORITHMS


def test_builtin_algorithms_xgboost_repositories_registered():
    assert BUILTIN_ALGORITHMS["sagemaker-xgboost"] is BUILTIN_ALGORITHMS["xgboost"]
    assert BUILTIN_ALGORITHMS["sagemaker-xgboost"].train_module == "opensage.algorithms.xgboost.train"


def test_xgboost_metric_definitions_match_tab_rendered_log_lines():
    definitions = {d["Name"]: d["Regex"] for d in BUILTIN_ALGORITHMS["sagemaker-xgboost"].metric_definitions}
    assert definitions["validation:rmse"] == ".*\\[[0-9]+\\].*#011validation-rmse:([^#\\s]+)"
    for channel in ("train", "validation"):
        for metric in ("accuracy", "auc", "error", "f1", "logloss", "mae", "map", "merror", "mlogloss", "mse",
                       "ndcg", "rmse"):
            assert f"{channel}:{metric}" in definitions
    line = "[3]\ttrain-rmse:0.41000\tvalidation-rmse:0.43000".replace("\t", "#011")
    assert re.match(definitions["validation:rmse"], line).group(1) == "0.43000"
    assert re.match(definitions["train:rmse"], line).group(1) == "0.41000"
    raw = "[0]\ttrain-auc:0.99\ttrain-error:0.03"  # also matches un-rendered TABs
    assert re.match(definitions["train:auc"], raw.replace("\t", "#011")).group(1) == "0.99"
    assert BUILTIN_ALGORITHMS["xgboost"].metric_direction("validation:auc") == "Maximize"
    assert BUILTIN_ALGORITHMS["xgboost"].metric_direction("validation:rmse") == "Minimize"


def test_describe_metric_definitions_xgboost_image_per_version_others_none():
    from opensage.algorithms.registry import describe_metric_definitions

    prefix = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
    latest = describe_metric_definitions(f"{prefix}:1.7-1")
    assert {"Name": "train:rmse",
            "Regex": ".*\\[[0-9]+\\].*#011train-rmse:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"} in latest
    assert len(latest) == 27 and latest == describe_metric_definitions(f"{prefix}:3.0-5")
    old = describe_metric_definitions(f"{prefix}:0.90-1-cpu-py3")
    assert len(old) == 34 and {d["Name"] for d in old} >= {"train:auc", "validation:auc", "validation:mlogloss"}
    assert len(old) <= 40  # the API's maximum
    assert describe_metric_definitions("123.dkr.ecr.us-east-1.amazonaws.com/my-image:1") is None
    assert describe_metric_definitions("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1") == latest
