"""CloudWatch metrics through boto3: JSON 1.0 (what botocore 1.44 picks) and Smithy RPC v2 CBOR (what the
service model lists first; forced here with a service model that lists only it), against the same server."""

from __future__ import annotations

import datetime as dt
import json

import botocore.session
import pytest
from botocore.config import Config

from opensage.executors.fake import FakeRun
from tests.conftest import training_request, wait_for_status

NS = "Custom/Test"


def _cbor_client(server, tmp_path_factory):
    from botocore.loaders import create_loader

    raw = create_loader().load_service_model("cloudwatch", "service-2")
    raw["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
    root = tmp_path_factory.mktemp("cbor-models")
    target = root / "cloudwatch" / raw["metadata"]["apiVersion"]
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(raw))
    core = botocore.session.Session()
    core.get_component("data_loader").search_paths.insert(0, str(root))
    creds = server.settings.credentials
    return core.create_client("cloudwatch", endpoint_url=server.url, region_name="us-east-1",
                              aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                              config=Config(retries={"max_attempts": 1}))


@pytest.fixture(scope="module", params=["json", "cbor"])
def cw(request, fake_server, tmp_path_factory):
    if request.param == "json":
        client = fake_server.client("cloudwatch")
        assert client.meta.service_model.resolved_protocol == "json"
    else:
        client = _cbor_client(fake_server, tmp_path_factory)
        assert client.meta.service_model.resolved_protocol == "smithy-rpc-v2-cbor"
    return client


def _name(cw, base: str) -> str:
    """Both protocol runs share one server: keep their metrics apart."""
    return f"{base}-{cw.meta.service_model.resolved_protocol}"


def _minute(minutes_ago: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes_ago)


def test_put_metric_data_then_get_metric_statistics_buckets_by_period(cw):
    t0 = _minute(10)
    dims = [{"Name": "Host", "Value": f"h-{cw.meta.service_model.resolved_protocol}"}]
    cw.put_metric_data(Namespace=NS, MetricData=[
        {"MetricName": "Load", "Dimensions": dims, "Timestamp": t0 + dt.timedelta(seconds=s), "Value": v}
        for s, v in ((5, 1.0), (30, 3.0), (65, 10.0))] + [
        {"MetricName": "Load", "Dimensions": dims, "Timestamp": t0 + dt.timedelta(seconds=70),
         "StatisticValues": {"SampleCount": 2, "Sum": 4.0, "Minimum": 1.5, "Maximum": 2.5}}])
    out = cw.get_metric_statistics(Namespace=NS, MetricName="Load", Dimensions=dims, StartTime=t0,
                                   EndTime=t0 + dt.timedelta(minutes=5), Period=60,
                                   Statistics=["SampleCount", "Sum", "Average", "Minimum", "Maximum"])
    points = sorted(out["Datapoints"], key=lambda p: p["Timestamp"])
    assert out["Label"] == "Load"
    assert [p["Timestamp"] for p in points] == [t0, t0 + dt.timedelta(minutes=1)]
    first, second = points
    assert (first["SampleCount"], first["Sum"], first["Average"], first["Minimum"], first["Maximum"]) == \
        (2, 4.0, 2.0, 1.0, 3.0)
    assert (second["SampleCount"], second["Sum"], second["Minimum"], second["Maximum"]) == (3, 14.0, 1.5, 10.0)
    whole = cw.get_metric_statistics(Namespace=NS, MetricName="Load", Dimensions=dims, StartTime=t0,
                                     EndTime=t0 + dt.timedelta(minutes=5), Period=300, Statistics=["Sum"])
    assert [p["Sum"] for p in whole["Datapoints"]] == [18.0]


def test_get_metric_statistics_dimensions_must_match_exactly(cw):
    t0 = _minute(3)
    name = _name(cw, "Exact")
    cw.put_metric_data(Namespace=NS, MetricData=[{"MetricName": name, "Timestamp": t0, "Value": 1.0,
                                                  "Dimensions": [{"Name": "A", "Value": "1"},
                                                                 {"Name": "B", "Value": "2"}]}])
    common = {"Namespace": NS, "MetricName": name, "StartTime": t0, "EndTime": t0 + dt.timedelta(minutes=1),
              "Period": 60, "Statistics": ["Sum"]}
    assert cw.get_metric_statistics(Dimensions=[{"Name": "A", "Value": "1"}], **common)["Datapoints"] == []
    both = cw.get_metric_statistics(Dimensions=[{"Name": "B", "Value": "2"}, {"Name": "A", "Value": "1"}], **common)
    assert [p["Sum"] for p in both["Datapoints"]] == [1.0]


def test_get_metric_data_returns_values_newest_first(cw):
    t0 = _minute(20)
    name = _name(cw, "Gmd")
    cw.put_metric_data(Namespace=NS, MetricData=[
        {"MetricName": name, "Timestamp": t0 + dt.timedelta(minutes=i), "Values": [float(i), 1.0],
         "Counts": [2.0, 1.0]} for i in range(3)])
    metric = {"Namespace": NS, "MetricName": name}
    out = cw.get_metric_data(StartTime=t0, EndTime=t0 + dt.timedelta(minutes=3), MetricDataQueries=[
        {"Id": "total", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}},
        {"Id": "n", "Label": "count", "MetricStat": {"Metric": metric, "Period": 120, "Stat": "SampleCount"},
         "ReturnData": True},
        {"Id": "hidden", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum"}, "ReturnData": False}])
    total, count = out["MetricDataResults"]
    assert total["Timestamps"] == [t0 + dt.timedelta(minutes=i) for i in (2, 1, 0)]
    assert total["Values"] == [5.0, 3.0, 1.0] and total["StatusCode"] == "Complete" and total["Label"] == name
    assert (count["Label"], count["Values"]) == ("count", [3.0, 6.0])


def test_list_metrics_filters_by_dimension_name_and_value(cw):
    proto = cw.meta.service_model.resolved_protocol
    cw.put_metric_data(Namespace=f"{NS}/{proto}", MetricData=[
        {"MetricName": "Listed", "Value": 1.0, "Dimensions": [{"Name": "Stage", "Value": s}]} for s in ("a", "b")] + [
        {"MetricName": "Other", "StatisticValues": {"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}}])
    everything = cw.list_metrics(Namespace=f"{NS}/{proto}")["Metrics"]
    assert sorted(m["MetricName"] for m in everything) == ["Listed", "Listed", "Other"]
    only_b = cw.list_metrics(Namespace=f"{NS}/{proto}", Dimensions=[{"Name": "Stage", "Value": "b"}])["Metrics"]
    assert only_b == [{"Namespace": f"{NS}/{proto}", "MetricName": "Listed",
                       "Dimensions": [{"Name": "Stage", "Value": "b"}]}]


def test_get_metric_statistics_period_7_is_invalid_parameter_value(cw):
    with pytest.raises(cw.exceptions.InvalidParameterValueException) as e:
        cw.get_metric_statistics(Namespace=NS, MetricName="Load", StartTime=_minute(5), EndTime=_minute(0),
                                 Period=7, Statistics=["Average"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "Period" in e.value.response["Error"]["Message"]


def test_put_metric_data_value_and_statistic_values_is_invalid_combination(cw):
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException) as e:
        cw.put_metric_data(Namespace=NS, MetricData=[{"MetricName": "Both", "Value": 1.0, "StatisticValues": {
            "SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}}])
    assert "MetricData.member.1.Value" in e.value.response["Error"]["Message"]


def test_put_metric_data_reserved_aws_namespace_is_refused(cw):
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=[{"MetricName": "Invocations", "Value": 1.0}])


def test_too_many_datapoints_is_invalid_parameter_combination(cw):
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException) as e:
        cw.get_metric_statistics(Namespace=NS, MetricName="Load", StartTime=_minute(60 * 24 * 2),
                                 EndTime=_minute(0), Period=60, Statistics=["Sum"])
    assert "1,440" in e.value.response["Error"]["Message"]


def test_training_job_metrics_readable_by_get_metric_statistics_and_sdk_analytics(fake_server, monkeypatch):
    fake_server.platform.training.executor.script("cw-metrics-job", FakeRun(log_lines=[
        "epoch 1 loss=0.9", "epoch 2 loss=0.5", "epoch 3 loss=0.4"]))
    sm = fake_server.client("sagemaker")
    req = training_request("cw-metrics-job")
    req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]
    sm.create_training_job(**req)
    d = wait_for_status(sm, "cw-metrics-job")
    cw = fake_server.client("cloudwatch")
    out = cw.get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs", MetricName="loss",
        Dimensions=[{"Name": "TrainingJobName", "Value": "cw-metrics-job"}], StartTime=d["TrainingStartTime"],
        EndTime=d["TrainingEndTime"] + dt.timedelta(minutes=1), Period=60, Statistics=["Average", "SampleCount"])
    assert sum(p["SampleCount"] for p in out["Datapoints"]) == 3
    assert sum(p["Average"] * p["SampleCount"] for p in out["Datapoints"]) == pytest.approx(1.8)

    import boto3
    import sagemaker
    from sagemaker.analytics import TrainingJobAnalytics

    creds = fake_server.settings.credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", fake_server.url)
    boto = boto3.Session(aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                         region_name="us-east-1")
    session = sagemaker.Session(boto_session=boto, sagemaker_client=sm, default_bucket="bucket1")
    frame = TrainingJobAnalytics("cw-metrics-job", sagemaker_session=session).dataframe()
    assert list(frame["metric_name"].unique()) == ["loss"]
    assert sorted(frame["value"]) == pytest.approx(sorted(p["Average"] for p in out["Datapoints"]))
