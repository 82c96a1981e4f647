"""The sagemaker-training toolkit's SM_* variables and CLI arguments (contracts doc §4-5)."""

from __future__ import annotations

import json
from pathlib import Path

from opensage.frameworks.toolkit_env import (
    decode_hyperparameters,
    load_environment,
    split_hyperparameters,
    to_cmd_args,
    to_env_vars,
    toolkit_environment,
)
from tests.unit.frameworks.helpers import make_ml_root

# What SDK v2 framework estimators send (captured; contracts doc §4).
SDK_V2_HPS = {
    "opt": '"adam"', "epochs": "3", "flag": "true", "d": '{"a": 1}', "k": '"v"', "lr": "0.1",
    "sagemaker_program": '"train.py"', "sagemaker_submit_directory": '"s3://b/job/source/sourcedir.tar.gz"',
    "sagemaker_container_log_level": "20", "sagemaker_job_name": '"job-1"', "sagemaker_region": '"us-west-2"',
    "_tuning_objective_metric": "validation:rmse", "sagemaker_mpi_enabled": "false",
}


def test_decode_hyperparameters_json_values_decoded_else_kept() -> None:
    decoded = decode_hyperparameters({"opt": '"adam"', "epochs": "3", "flag": "true", "raw": "adam",
                                      "d": '{"a": 1}', "f": "0.5"})
    assert decoded == {"opt": "adam", "epochs": 3, "flag": True, "raw": "adam", "d": {"a": 1}, "f": 0.5}


def test_split_hyperparameters_sagemaker_and_tuning_keys_removed() -> None:
    user, platform = split_hyperparameters(decode_hyperparameters(SDK_V2_HPS))
    assert set(user) == {"opt", "epochs", "flag", "d", "k", "lr"}
    assert platform["sagemaker_program"] == "train.py"
    assert platform["_tuning_objective_metric"] == "validation:rmse"


def test_to_cmd_args_sdk_values_formatted_like_toolkit() -> None:
    user, _ = split_hyperparameters(decode_hyperparameters(SDK_V2_HPS))
    assert to_cmd_args(user) == ["-d", "a=1", "--epochs", "3", "--flag", "True", "-k", "v", "--lr", "0.1",
                                 "--opt", "adam"]


def test_to_cmd_args_none_list_and_dict_values() -> None:
    assert to_cmd_args({"x": None, "layers": [1, 2], "m": {"b": 2, "a": "z"}}) == [
        "--layers", "[1, 2]", "-m", "a=z,b=2", "-x", ""]


def test_to_env_vars_strings_raw_others_compact_sorted_json() -> None:
    env = to_env_vars({"model_dir": "/opt/ml/model", "hps": {"b": 1, "a": [1, 2]}, "num_gpus": 0,
                       "flag": True, "none": None})
    assert env == {"SM_MODEL_DIR": "/opt/ml/model", "SM_HPS": '{"a":[1,2],"b":1}', "SM_NUM_GPUS": "0",
                   "SM_FLAG": "true", "SM_NONE": ""}


def test_toolkit_environment_every_documented_variable_present(tmp_path: Path) -> None:
    root = make_ml_root(tmp_path / "ml", SDK_V2_HPS, {"train": {"a.csv": "1"}, "validation": {"b.csv": "2"}},
                        hosts=["algo-1", "algo-2"])
    env = toolkit_environment(root, {"TRAINING_JOB_NAME": "job-1"}, paths_root="/opt/ml")
    documented = ["SM_CHANNELS", "SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "SM_HPS", "SM_HP_OPT",
                  "SM_HOSTS", "SM_CURRENT_HOST", "SM_CURRENT_INSTANCE_TYPE", "SM_CURRENT_INSTANCE_GROUP",
                  "SM_CURRENT_INSTANCE_GROUP_HOSTS", "SM_INSTANCE_GROUPS", "SM_INSTANCE_GROUPS_DICT",
                  "SM_DISTRIBUTION_INSTANCE_GROUPS", "SM_IS_HETERO", "SM_NETWORK_INTERFACE_NAME", "SM_NUM_CPUS",
                  "SM_NUM_GPUS", "SM_NUM_NEURONS", "SM_MODEL_DIR", "SM_INPUT_DIR", "SM_INPUT_CONFIG_DIR",
                  "SM_INPUT_DATA_CONFIG", "SM_RESOURCE_CONFIG", "SM_OUTPUT_DIR", "SM_OUTPUT_DATA_DIR",
                  "SM_OUTPUT_INTERMEDIATE_DIR", "SM_MODULE_NAME", "SM_MODULE_DIR", "SM_USER_ENTRY_POINT",
                  "SM_USER_ARGS", "SM_FRAMEWORK_PARAMS", "SM_FRAMEWORK_MODULE", "SM_LOG_LEVEL", "SM_TRAINING_ENV",
                  "SAGEMAKER_JOB_NAME", "CURRENT_HOST", "SAGEMAKER_REGION"]
    assert [name for name in documented if name not in env] == []
    assert env["SM_CHANNELS"] == '["train","validation"]'
    assert env["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    assert env["SM_MODEL_DIR"] == "/opt/ml/model"
    assert env["SM_OUTPUT_DATA_DIR"] == "/opt/ml/output/data"
    assert env["SM_HOSTS"] == '["algo-1","algo-2"]'
    assert env["SM_HP_OPT"] == "adam" and env["SM_HP_EPOCHS"] == "3" and env["SM_HP_D"] == '{"a":1}'
    assert env["SM_HP_FLAG"] == "true"
    assert "SM_HP_SAGEMAKER_PROGRAM" not in env
    assert env["SM_USER_ENTRY_POINT"] == "train.py" and env["SM_MODULE_NAME"] == "train"
    assert env["SM_MODULE_DIR"] == "s3://b/job/source/sourcedir.tar.gz"
    assert env["SM_FRAMEWORK_PARAMS"] == '{"sagemaker_mpi_enabled":false}'
    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_FRAMEWORK_MODULE"] == ""
    assert json.loads(env["SM_USER_ARGS"])[:4] == ["-d", "a=1", "--epochs", "3"]
    assert env["SAGEMAKER_JOB_NAME"] == "job-1" and env["SAGEMAKER_REGION"] == "us-west-2"
    assert env["CURRENT_HOST"] == "algo-1" and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_IS_HETERO"] == "false"


def test_toolkit_environment_training_env_matches_toolkit_properties(tmp_path: Path) -> None:
    root = make_ml_root(tmp_path / "ml", SDK_V2_HPS, {"train": {"a.csv": "1"}})
    training_env = json.loads(toolkit_environment(root, {"TRAINING_JOB_NAME": "job-1"})["SM_TRAINING_ENV"])
    assert training_env["channel_input_dirs"] == {"train": str(root / "input" / "data" / "train")}
    assert training_env["hyperparameters"]["epochs"] == 3
    assert training_env["job_name"] == "job-1"
    assert training_env["is_master"] is True and training_env["master_hostname"] == "algo-1"
    assert training_env["additional_framework_parameters"] == {"sagemaker_mpi_enabled": False}
    assert training_env["module_name"] == "train"
    assert training_env["num_gpus"] >= 0 and training_env["num_cpus"] >= 1


def test_load_environment_program_env_wins_over_hyperparameter(tmp_path: Path) -> None:
    root = make_ml_root(tmp_path / "ml", {"sagemaker_program": '"train.py"'})
    env = load_environment(root, {"SAGEMAKER_PROGRAM": "other.py"})
    assert env.user_entry_point == "other.py"
    assert env.module_dir == str(root / "code")


def test_load_environment_missing_program_module_name_is_none_string(tmp_path: Path) -> None:
    env = load_environment(make_ml_root(tmp_path / "ml", {}), {})
    assert env.user_entry_point is None
    assert env.to_env_vars()["SM_MODULE_NAME"] == "None"  # the toolkit's str(None)
