"""Issue 7 item 12: a NextToken works only for the list that returned it (same operation, filters and sort;
MaxResults may change), and cannot be forged or edited."""

from __future__ import annotations

import base64
import json

import pytest
from botocore.exceptions import ClientError

from opensage.store.resources import InvalidPageToken, PageTokens
from tests.conftest import training_request

INVALID = "Invalid pagination token"  # SageMaker's ValidationException wording (as moto copies it)


@pytest.fixture(scope="module")
def sm(fake_server):
    client = fake_server.client("sagemaker")
    for i in range(3):
        client.create_training_job(**training_request(f"tok-{i}"))
    return client


def _refused(call, **kw) -> str:
    with pytest.raises(ClientError) as e:
        call(**kw)
    err = e.value.response["Error"]
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Code"] == "ValidationException"
    assert INVALID in err["Message"]
    return err["Message"]


def _token(sm, **kw) -> str:
    page = sm.list_training_jobs(NameContains="tok-", MaxResults=1, **kw)
    assert page["NextToken"]
    return page["NextToken"]


def test_list_models_list_training_jobs_token_is_validation_exception(sm):
    message = _refused(sm.list_models, NextToken=_token(sm))
    assert "different list operation" in message
    _refused(sm.list_endpoints, NextToken=_token(sm))
    _refused(sm.list_transform_jobs, NextToken=_token(sm))


@pytest.mark.parametrize("changed", [{"NameContains": "tok-1"}, {"SortOrder": "Descending"}, {"SortBy": "Name"},
                                     {"StatusEquals": "Completed"}])
def test_list_training_jobs_token_with_other_filters_or_sort_is_refused(sm, changed):
    token = _token(sm)
    kw = {"NameContains": "tok-", "MaxResults": 1, **changed}
    assert "different filters" in _refused(sm.list_training_jobs, NextToken=token, **kw)


def test_list_training_jobs_token_with_other_max_results_pages_on(sm):
    token = _token(sm)
    page = sm.list_training_jobs(NameContains="tok-", MaxResults=5, NextToken=token)
    assert [s["TrainingJobName"] for s in page["TrainingJobSummaries"]] == ["tok-1", "tok-2"]


def test_list_training_jobs_tampered_or_forged_token_is_refused(sm):
    token = _token(sm)
    payload, _, mac = token.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["p"][1] = "tok-9"  # jump elsewhere in the list
    edited = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    _refused(sm.list_training_jobs, NameContains="tok-", MaxResults=1, NextToken=f"{edited}.{mac}")
    old_style = base64.urlsafe_b64encode(json.dumps([0, "tok-0"]).encode()).decode()  # the unsigned format
    _refused(sm.list_training_jobs, NameContains="tok-", MaxResults=1, NextToken=old_style)
    _refused(sm.list_training_jobs, NameContains="tok-", MaxResults=1, NextToken="not-a-token")
    _refused(sm.list_training_jobs, NameContains="tok-", MaxResults=1, NextToken=f"{payload}.\u00e9\u00e9")


def test_list_tags_token_of_another_resource_is_refused(sm, fake_server):
    # ListTags pages only past 50 tags (MaxResults >= 50) and a resource holds at most 50: a token is sealed
    # here as the platform would seal it, to check it is bound to its ARN.
    arns = [sm.describe_training_job(TrainingJobName=f"tok-{i}")["TrainingJobArn"] for i in range(2)]
    for arn in arns:
        sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{j}", "Value": "v"} for j in range(3)])
    token = fake_server.platform.deps.tokens.seal(f"ListTags:{arns[0]}", None, "k0")
    rest = sm.list_tags(ResourceArn=arns[0], NextToken=token)["Tags"]
    assert [t["Key"] for t in rest] == ["k1", "k2"]
    _refused(sm.list_tags, ResourceArn=arns[1], NextToken=token)
    _refused(sm.list_tags, ResourceArn=arns[0], NextToken="k0")  # the old format: a bare key


def test_page_tokens_same_key_opens_after_restart_other_key_refuses():
    token = PageTokens(b"k" * 32).seal("training-job", {"a": 1}, [1.5, "x"])
    assert PageTokens(b"k" * 32).open(token, "training-job", {"a": 1}) == [1.5, "x"]
    with pytest.raises(InvalidPageToken):
        PageTokens(b"z" * 32).open(token, "training-job", {"a": 1})


def test_describe_alarms_token_with_other_prefix_or_operation_is_invalid_next_token(fake_server):
    cw = fake_server.client("cloudwatch")
    for i in range(3):
        cw.put_metric_alarm(AlarmName=f"tokalarm-{i}", Namespace="App", MetricName="Errors", Statistic="Sum",
                            Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")
    token = cw.describe_alarms(AlarmNamePrefix="tokalarm-", MaxRecords=1)["NextToken"]
    assert [a["AlarmName"] for a in cw.describe_alarms(AlarmNamePrefix="tokalarm-", MaxRecords=5,
                                                       NextToken=token)["MetricAlarms"]] == ["tokalarm-1",
                                                                                             "tokalarm-2"]
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.describe_alarms(AlarmNamePrefix="tokalarm-1", MaxRecords=1, NextToken=token)
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.describe_alarm_history(NextToken=token)
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.list_metrics(NextToken=token)


@pytest.fixture(scope="module")
def logs(fake_server):
    deps = fake_server.platform.deps
    for stream in ("s-0", "s-1", "s-2"):
        deps.logs.append("/tok/group", stream, [(1000 + i, f"{stream} line {i}") for i in range(3)], 5000)
    deps.logs.append("/tok/other", "s-0", [(1000, "other")], 5000)
    return fake_server.client("logs")


def _logs_refused(logs, call: str, **kw) -> None:
    with pytest.raises(logs.exceptions.InvalidParameterException) as e:
        getattr(logs, call)(**kw)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("token", ["abc", str(2**70), "-5", "f/99999999999999999999999", "b/1", "f/x"])
def test_logs_forged_or_out_of_range_tokens_are_invalid_parameter_not_500(logs, token):
    _logs_refused(logs, "describe_log_streams", logGroupName="/tok/group", nextToken=token)
    _logs_refused(logs, "get_log_events", logGroupName="/tok/group", logStreamName="s-0", nextToken=token)
    _logs_refused(logs, "filter_log_events", logGroupName="/tok/group", nextToken=token)


def test_logs_tokens_page_on_and_are_bound_to_their_operation_and_request(logs):
    page = logs.describe_log_streams(logGroupName="/tok/group", limit=1)
    names = [s["logStreamName"] for s in page["logStreams"]]
    while "nextToken" in page:
        token = page["nextToken"]
        page = logs.describe_log_streams(logGroupName="/tok/group", limit=1, nextToken=token)
        names += [s["logStreamName"] for s in page["logStreams"]]
    assert names == ["s-0", "s-1", "s-2"]
    _logs_refused(logs, "describe_log_streams", logGroupName="/tok/other", nextToken=token)
    _logs_refused(logs, "filter_log_events", logGroupName="/tok/group", nextToken=token)

    first = logs.filter_log_events(logGroupName="/tok/group", limit=2)
    rest = logs.filter_log_events(logGroupName="/tok/group", limit=20, nextToken=first["nextToken"])
    assert len(first["events"]) + len(rest["events"]) == 9
    _logs_refused(logs, "filter_log_events", logGroupName="/tok/group", logStreamNamePrefix="s-1",
                  nextToken=first["nextToken"])

    events = logs.get_log_events(logGroupName="/tok/group", logStreamName="s-0", startFromHead=True, limit=2)
    assert events["nextForwardToken"].startswith("f/") and events["nextBackwardToken"].startswith("b/")
    more = logs.get_log_events(logGroupName="/tok/group", logStreamName="s-0", startFromHead=True,
                               nextToken=events["nextForwardToken"])
    assert [e["message"] for e in events["events"] + more["events"]] == [f"s-0 line {i}" for i in range(3)]
    end = logs.get_log_events(logGroupName="/tok/group", logStreamName="s-0", startFromHead=True,
                              nextToken=more["nextForwardToken"])
    assert end["events"] == [] and end["nextForwardToken"] == more["nextForwardToken"]  # the SDK's end signal
    _logs_refused(logs, "get_log_events", logGroupName="/tok/group", logStreamName="s-1",
                  nextToken=events["nextForwardToken"])
