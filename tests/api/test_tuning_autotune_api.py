"""Autotune (``Autotune: {Mode: Enabled}``, ``ParameterRanges.AutoParameters``) through boto3 and SDK v2's
``HyperparameterTuner(autotune=True)`` against the in-process platform (children on the scripted executor of
tests/api/tuning_support), and HyperParameterTuningResourceConfig.InstanceConfigs."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.api.tuning_support import BUCKET, TuningExecutor, all_children, tuning_request, wait_tuning
from tests.conftest import ROLE, XGB_IMAGE, start_server

XGB_AUTO = [{"Name": "eta", "ValueHint": "0.3"}, {"Name": "max_depth", "ValueHint": "6"},
            {"Name": "objective", "ValueHint": "reg:squarederror"}]


@pytest.fixture(scope="module")
def tserver(tmp_path_factory):
    executor = TuningExecutor()
    for server in start_server(tmp_path_factory.mktemp("home"), executor=executor):
        store = server.store()
        store.ensure_bucket(BUCKET)
        store.put_bytes(BUCKET, "data/train/part-0.csv", b"1,0.5\n")
        server.executor = executor
        yield server


@pytest.fixture
def sm(tserver):
    return tserver.client("sagemaker")


def _autotune_request(name: str, auto: list[dict], max_jobs: int | None = None, **definition_overrides) -> dict:
    req = tuning_request(name, strategy="Bayesian", max_jobs=max_jobs or 2, parallel=2,
                         ranges={"AutoParameters": auto},
                         definition_overrides={"StaticHyperParameters": {"num_round": "8"}, **definition_overrides})
    if max_jobs is None:
        del req["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"]
    req["Autotune"] = {"Mode": "Enabled"}
    return req


def _error(call, **kw) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def test_create_hyper_parameter_tuning_job_autotune_chooses_xgboost_ranges_and_unset_limits(sm):
    sm.create_hyper_parameter_tuning_job(**_autotune_request("auto-defaults", XGB_AUTO))
    d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="auto-defaults")
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="auto-defaults")
    assert d["Autotune"] == {"Mode": "Enabled"}
    config = d["HyperParameterTuningJobConfig"]
    ranges = config["ParameterRanges"]
    # SageMaker's recommended ranges for built-in XGBoost ("Tune an XGBoost Model"); AutoParameters as sent.
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.5", "ScalingType": "Auto"}]
    assert ranges["IntegerParameterRanges"] == [
        {"Name": "max_depth", "MinValue": "0", "MaxValue": "10", "ScalingType": "Auto"}]
    assert ranges["CategoricalParameterRanges"] == []
    assert ranges["AutoParameters"] == XGB_AUTO
    # Not a tunable XGBoost hyperparameter: runs with its ValueHint.
    assert d["TrainingJobDefinition"]["StaticHyperParameters"]["objective"] == "reg:squarederror"
    # Settings the request left unset are chosen; the given ones are kept.
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 20, "MaxParallelTrainingJobs": 2}
    assert config["TuningJobCompletionCriteria"]["ConvergenceDetected"] == {"CompleteOnConvergence": "Enabled"}
    assert config["Strategy"] == "Bayesian"
    wait_tuning(sm, "auto-defaults")


def test_create_hyper_parameter_tuning_job_autotune_children_search_chosen_ranges(sm, tserver):
    auto = [{"Name": "eta", "ValueHint": "0.9"}, {"Name": "objective", "ValueHint": "reg:squarederror"}]
    req = _autotune_request("auto-run", auto, max_jobs=4)
    req["HyperParameterTuningJobConfig"]["ParameterRanges"]["IntegerParameterRanges"] = [
        {"Name": "max_depth", "MinValue": "2", "MaxValue": "4"}]
    sm.create_hyper_parameter_tuning_job(**req)
    d = wait_tuning(sm, "auto-run")
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 4  # given: kept
    # A hint outside the recommended range widens it so the example value can be searched.
    assert d["HyperParameterTuningJobConfig"]["ParameterRanges"]["ContinuousParameterRanges"] == [
        {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.9", "ScalingType": "Auto"}]
    children = all_children(sm, "auto-run")
    assert len(children) == 4
    for c in children:
        hps = tserver.executor.hyperparameters[c["TrainingJobName"]]
        assert 0.1 <= float(hps["eta"]) <= 0.9 and 2 <= int(hps["max_depth"]) <= 4
        assert hps["objective"] == "reg:squarederror" and "AutoParameters" not in hps
        assert set(c["TunedHyperParameters"]) == {"eta", "max_depth"}


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda r: r.pop("Autotune"), "AutoParameters needs Autotune"),
    (lambda r: r["HyperParameterTuningJobConfig"]["ParameterRanges"].update(
        AutoParameters=[{"Name": "objective", "ValueHint": "reg:squarederror"}]),
     "Autotune found no tunable hyperparameter"),
    (lambda r: r["TrainingJobDefinition"]["StaticHyperParameters"].update(eta="0.2"),
     "both in HyperParameterTuningJobConfig.ParameterRanges.AutoParameters and in StaticHyperParameters"),
    (lambda r: r["HyperParameterTuningJobConfig"]["ParameterRanges"].update(ContinuousParameterRanges=[
        {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.2"}]), "both in"),
])
def test_create_hyper_parameter_tuning_job_bad_autotune_request_is_validation_exception(sm, mutate, words):
    req = _autotune_request("auto-bad", XGB_AUTO)
    mutate(req)
    code, message = _error(sm.create_hyper_parameter_tuning_job, **req)
    assert code == "ValidationException" and words in message, message


def test_create_hyper_parameter_tuning_job_autotune_script_mode_keeps_hints_static(sm):
    """A script's own hyperparameters are not known to be tunable: with nothing else to tune Autotune says so."""
    req = _autotune_request("auto-script", [{"Name": "sagemaker_program", "ValueHint": '"train.py"'},
                                            {"Name": "epochs", "ValueHint": "10"}],
                            AlgorithmSpecification={"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File",
                                                    "MetricDefinitions": [{"Name": "validation:rmse",
                                                                           "Regex": "rmse: ([0-9.]+)"}]})
    code, message = _error(sm.create_hyper_parameter_tuning_job, **req)
    assert code == "ValidationException" and "epochs" in message and "sagemaker_program" in message, message


def test_hyperparameter_tuner_autotune_fit_and_attach(sm, tserver):
    """What SDK v2's HyperparameterTuner(autotune=True) sends: every estimator hyperparameter not kept static
    as an AutoParameter, no ranges; ``attach`` reads the ranges Autotune chose back."""
    import boto3
    import sagemaker
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.tuner import HyperparameterTuner

    creds = tserver.settings.credentials
    boto_session = boto3.Session(aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                                 region_name="us-east-1")
    session = sagemaker.Session(boto_session=boto_session, sagemaker_client=sm,
                                default_bucket=BUCKET)
    est = Estimator(image_uri=XGB_IMAGE, role=ROLE, instance_count=1, instance_type="ml.m5.large",
                    output_path=f"s3://{BUCKET}/sdk-auto", sagemaker_session=session,
                    hyperparameters={"num_round": 8, "objective": "reg:squarederror", "eta": 0.2,
                                     "max_depth": 5})
    tuner = HyperparameterTuner(est, objective_metric_name="validation:rmse", hyperparameter_ranges=None,
                                objective_type="Minimize",
                                max_jobs=3, max_parallel_jobs=2, strategy="Bayesian", autotune=True,
                                hyperparameters_to_keep_static=["num_round", "objective"],
                                base_tuning_job_name="sdk-auto")
    tuner.fit({"train": TrainingInput(f"s3://{BUCKET}/data/train", content_type="text/csv")}, wait=False)
    name = tuner.latest_tuning_job.name
    d = wait_tuning(sm, name)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"]["Completed"] == 3
    attached = HyperparameterTuner.attach(name, sagemaker_session=session)
    ranges = attached.hyperparameter_ranges()
    assert {r["Name"] for r in ranges["ContinuousParameterRanges"]} == {"eta"}
    assert {r["Name"] for r in ranges["IntegerParameterRanges"]} == {"max_depth"}
    assert attached.best_training_job() == d["BestTrainingJob"]["TrainingJobName"]


def test_create_hyper_parameter_tuning_job_instance_configs_with_instance_type_is_validation_exception(sm):
    req = tuning_request("ic-both", definition_overrides={"HyperParameterTuningResourceConfig": {
        "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10,
        "InstanceConfigs": [{"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10}]}})
    code, message = _error(sm.create_hyper_parameter_tuning_job, **req)
    assert code == "ValidationException" and "InstanceConfigs" in message and "InstanceType" in message, message


def test_create_hyper_parameter_tuning_job_instance_configs_children_use_first_prioritized_config(sm):
    configs = [{"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 20},
               {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10}]
    req = tuning_request("ic-prio", max_jobs=2, definition_overrides={"HyperParameterTuningResourceConfig": {
        "AllocationStrategy": "Prioritized", "InstanceConfigs": configs}})
    sm.create_hyper_parameter_tuning_job(**req)
    d = wait_tuning(sm, "ic-prio")
    assert d["TrainingJobDefinition"]["HyperParameterTuningResourceConfig"]["InstanceConfigs"] == configs
    for c in all_children(sm, "ic-prio"):
        job = sm.describe_training_job(TrainingJobName=c["TrainingJobName"])
        assert job["ResourceConfig"] == {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 20}

