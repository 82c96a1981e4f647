"""CloudWatch metric alarms through real boto3 against the in-process server: PutMetricAlarm, DescribeAlarms (paging,
filters, the alarm_exists waiter), evaluation into ALARM, SetAlarmState, history, DeleteAlarms, and errors."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore.exceptions import ClientError

from tests.api.test_cloudwatch_api import _cbor_client

NS = "Custom/Alarms"


@pytest.fixture(scope="module")
def cw(fake_server):
    return fake_server.client("cloudwatch")


def _alarm(name: str, metric: str = "Errors", **overrides) -> dict:
    req = {"AlarmName": name, "Namespace": NS, "MetricName": metric, "Dimensions": [{"Name": "App", "Value": name}],
           "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 1.0,
           "ComparisonOperator": "GreaterThanThreshold"}
    req.update(overrides)
    return req


def _put_value(cw, name: str, value: float, metric: str = "Errors") -> None:
    cw.put_metric_data(Namespace=NS, MetricData=[{"MetricName": metric, "Value": value,
                                                  "Dimensions": [{"Name": "App", "Value": name}]}])


def _describe(cw, name: str) -> dict:
    (alarm,) = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return alarm


def test_put_metric_alarm_then_describe_echoes_configuration_and_starts_insufficient_data(cw, fake_server):
    cw.put_metric_alarm(**_alarm("echo", AlarmDescription="5xx on echo", DatapointsToAlarm=1,
                                 TreatMissingData="notBreaching", AlarmActions=["arn:aws:sns:us-east-1:1:t"],
                                 Unit="Count", Tags=[{"Key": "team", "Value": "ml"}]))
    cw.get_waiter("alarm_exists").wait(AlarmNames=["echo"], WaiterConfig={"Delay": 1, "MaxAttempts": 3})
    alarm = _describe(cw, "echo")
    account = fake_server.settings.account
    assert alarm["AlarmArn"] == f"arn:aws:cloudwatch:us-east-1:{account}:alarm:echo"
    assert alarm["StateValue"] in ("INSUFFICIENT_DATA", "OK")  # the background evaluator may have run already
    for key, value in (("AlarmDescription", "5xx on echo"), ("Namespace", NS), ("MetricName", "Errors"),
                       ("Statistic", "Sum"), ("Period", 60), ("EvaluationPeriods", 1), ("DatapointsToAlarm", 1),
                       ("Threshold", 1.0), ("ComparisonOperator", "GreaterThanThreshold"),
                       ("TreatMissingData", "notBreaching"), ("ActionsEnabled", True), ("Unit", "Count"),
                       ("AlarmActions", ["arn:aws:sns:us-east-1:1:t"]), ("OKActions", []),
                       ("Dimensions", [{"Name": "App", "Value": "echo"}])):
        assert alarm[key] == value, key
    assert isinstance(alarm["StateUpdatedTimestamp"], dt.datetime)
    assert isinstance(alarm["AlarmConfigurationUpdatedTimestamp"], dt.datetime)
    assert cw.describe_alarms(AlarmNames=["echo"])["CompositeAlarms"] == []


def test_breaching_metric_data_moves_alarm_to_alarm(cw, fake_server):
    cw.put_metric_alarm(**_alarm("hot", TreatMissingData="notBreaching"))
    _put_value(cw, "hot", 4.0)
    assert fake_server.platform.alarms.evaluate_now(["hot"]) == {"hot": "ALARM"}
    alarm = _describe(cw, "hot")
    assert alarm["StateValue"] == "ALARM"
    assert alarm["StateReason"].startswith("Threshold Crossed: 1 datapoint [4.0 (")
    assert alarm["StateReason"].endswith(")] was greater than the threshold (1.0).")
    assert json.loads(alarm["StateReasonData"])["recentDatapoints"] == [4.0]
    in_alarm = cw.describe_alarms(StateValue="ALARM")["MetricAlarms"]
    assert "hot" in [a["AlarmName"] for a in in_alarm]
    assert "echo" not in [a["AlarmName"] for a in in_alarm]
    assert fake_server.platform.alarms.firing(["hot", "missing"])[0][0] == "hot"


def test_endpoint_invocation_errors_fire_an_alarm_through_the_metrics_flush(cw, fake_server):
    """The path UpdateEndpoint's AutoRollbackConfiguration uses: InvokeEndpoint records 5xx in memory, the
    evaluator flushes and reads AWS/SageMaker Invocation5XXErrors."""
    dims = [{"Name": "EndpointName", "Value": "ep-alarm"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    cw.put_metric_alarm(AlarmName="ep-5xx", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
                        Dimensions=dims, Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=0.0,
                        ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
    assert fake_server.platform.alarms.evaluate_now(["ep-5xx"]) == {"ep-5xx": "OK"}
    for status in (200, 500, 503):
        fake_server.platform.endpoint_metrics.record("ep-alarm", "AllTraffic", 1, 0.01, 0.001, status)
    assert fake_server.platform.alarms.evaluate_now(["ep-5xx"]) == {"ep-5xx": "ALARM"}
    assert "[2.0 (" in _describe(cw, "ep-5xx")["StateReason"]


def test_set_alarm_state_then_history_lists_the_transition(cw, fake_server):
    cw.put_metric_alarm(**_alarm("manual", TreatMissingData="ignore"))
    cw.set_alarm_state(AlarmName="manual", StateValue="ALARM", StateReason="drill",
                       StateReasonData=json.dumps({"drill": True}))
    alarm = _describe(cw, "manual")
    assert (alarm["StateValue"], alarm["StateReason"]) == ("ALARM", "drill")
    assert json.loads(alarm["StateReasonData"]) == {"drill": True}
    history = cw.describe_alarm_history(AlarmName="manual")["AlarmHistoryItems"]
    assert [h["HistoryItemType"] for h in history] == ["StateUpdate", "ConfigurationUpdate"]
    assert history[0]["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    assert history[1]["HistorySummary"] == 'Alarm "manual" created'
    assert history[0]["AlarmType"] == "MetricAlarm"
    assert json.loads(history[0]["HistoryData"])["newState"]["stateValue"] == "ALARM"
    only_state = cw.describe_alarm_history(AlarmName="manual", HistoryItemType="StateUpdate",
                                           ScanBy="TimestampAscending")["AlarmHistoryItems"]
    assert len(only_state) == 1
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert cw.describe_alarm_history(AlarmName="manual", StartDate=future)["AlarmHistoryItems"] == []


def test_set_alarm_state_missing_alarm_is_resource_not_found(cw):
    with pytest.raises(cw.exceptions.ResourceNotFound) as e:
        cw.set_alarm_state(AlarmName="ghost", StateValue="ALARM", StateReason="x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "ghost" in e.value.response["Error"]["Message"]


def test_describe_alarms_pages_by_name_with_max_records(cw):
    names = [f"page-{i}" for i in (3, 1, 4, 0, 2)]
    for name in names:
        cw.put_metric_alarm(**_alarm(name))
    first = cw.describe_alarms(AlarmNamePrefix="page-", MaxRecords=2)
    assert [a["AlarmName"] for a in first["MetricAlarms"]] == ["page-0", "page-1"]
    second = cw.describe_alarms(AlarmNamePrefix="page-", MaxRecords=2, NextToken=first["NextToken"])
    assert [a["AlarmName"] for a in second["MetricAlarms"]] == ["page-2", "page-3"]
    pages = cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix="page-",
                                                         PaginationConfig={"PageSize": 2})
    assert [a["AlarmName"] for p in pages for a in p["MetricAlarms"]] == sorted(names)
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.describe_alarms(NextToken="%%%")


def test_describe_alarms_filters_by_action_prefix_and_alarm_type(cw):
    cw.put_metric_alarm(**_alarm("acted", OKActions=["arn:aws:sns:us-east-1:1:ops-topic"]))
    found = cw.describe_alarms(ActionPrefix="arn:aws:sns:us-east-1:1:ops")["MetricAlarms"]
    assert [a["AlarmName"] for a in found] == ["acted"]
    composite = cw.describe_alarms(AlarmTypes=["CompositeAlarm"])
    assert (composite["MetricAlarms"], composite["CompositeAlarms"]) == ([], [])


def test_describe_alarms_for_metric_matches_metric_and_dimensions(cw):
    cw.put_metric_alarm(**_alarm("for-metric", metric="Latency", Statistic="Average"))
    dims = [{"Name": "App", "Value": "for-metric"}]
    found = cw.describe_alarms_for_metric(Namespace=NS, MetricName="Latency", Dimensions=dims)["MetricAlarms"]
    assert [a["AlarmName"] for a in found] == ["for-metric"]
    assert cw.describe_alarms_for_metric(Namespace=NS, MetricName="Latency", Dimensions=dims,
                                         Statistic="Sum")["MetricAlarms"] == []
    assert cw.describe_alarms_for_metric(Namespace=NS, MetricName="Latency")["MetricAlarms"] == []


def test_disable_then_enable_alarm_actions(cw):
    cw.put_metric_alarm(**_alarm("toggled"))
    cw.disable_alarm_actions(AlarmNames=["toggled", "not-there"])
    assert _describe(cw, "toggled")["ActionsEnabled"] is False
    cw.enable_alarm_actions(AlarmNames=["toggled"])
    assert _describe(cw, "toggled")["ActionsEnabled"] is True


def test_delete_alarms_removes_existing_and_skips_unknown_names(cw):
    cw.put_metric_alarm(**_alarm("doomed"))
    cw.delete_alarms(AlarmNames=["doomed", "never-was"])
    assert cw.describe_alarms(AlarmNames=["doomed"])["MetricAlarms"] == []
    history = cw.describe_alarm_history(AlarmName="doomed")["AlarmHistoryItems"]
    assert history[0]["HistorySummary"] == 'Alarm "doomed" deleted'


@pytest.mark.parametrize(("overrides", "exception", "fragment"), [
    ({"DatapointsToAlarm": 2}, None, "DatapointsToAlarm (2)"),
    ({"ComparisonOperator": "GreaterThanUpperThreshold"}, "InvalidParameterValueException", "anomaly"),
    ({"Period": 45}, "InvalidParameterValueException", "10, 20, 30 or a multiple of 60"),
    ({"Statistic": "Sum", "ExtendedStatistic": "p90"}, "InvalidParameterCombinationException",
     "mutually exclusive"),
])
def test_put_metric_alarm_bad_input_is_refused_with_the_parameter_named(cw, overrides, exception, fragment):
    with pytest.raises(ClientError) as e:
        cw.put_metric_alarm(**_alarm("bad", **overrides))
    if exception:
        assert isinstance(e.value, getattr(cw.exceptions, exception))
    else:
        assert e.value.response["Error"]["Code"] == "ValidationError"
    assert fragment in e.value.response["Error"]["Message"]
    assert cw.describe_alarms(AlarmNames=["bad"])["MetricAlarms"] == []


def test_put_metric_alarm_without_period_is_missing_parameter(cw):
    req = _alarm("no-period")
    del req["Period"]
    with pytest.raises(cw.exceptions.MissingRequiredParameterException) as e:
        cw.put_metric_alarm(**req)
    assert "Period" in e.value.response["Error"]["Message"]


def test_alarms_over_smithy_rpc_v2_cbor(fake_server, tmp_path_factory):
    cbor = _cbor_client(fake_server, tmp_path_factory)
    cbor.put_metric_alarm(**_alarm("cbor-alarm"))
    cbor.set_alarm_state(AlarmName="cbor-alarm", StateValue="OK", StateReason="checked")
    (alarm,) = cbor.describe_alarms(AlarmNames=["cbor-alarm"])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["Threshold"]) == ("OK", 1.0)
    assert isinstance(alarm["StateUpdatedTimestamp"], dt.datetime)
    with pytest.raises(cbor.exceptions.ResourceNotFound):
        cbor.set_alarm_state(AlarmName="cbor-ghost", StateValue="OK", StateReason="x")
