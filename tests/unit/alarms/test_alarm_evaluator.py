"""Alarm evaluation: the statistic over Period buckets, DatapointsToAlarm of EvaluationPeriods, TreatMissingData,
state transitions and history, SetAlarmState's lifetime, and PutMetricAlarm's checks (fake clock, real SQLite)."""

from __future__ import annotations

import json

import pytest

from opensage.arns import ArnBuilder
from opensage.clock import FakeClock
from opensage.errors import ServiceError
from opensage.services.alarms import AlarmService
from opensage.services.base import Deps
from opensage.serving.alarms import AlarmEvaluator, Datapoint, decide, window_points
from opensage.settings import Settings
from opensage.store.db import make_engine, migrate
from opensage.store.logs import LogRepository
from opensage.store.metrics import MetricRepository, Sample
from opensage.store.resources import ResourceRepository
from opensage.store.tags import TagRepository

T0 = 1_700_000_040.0  # 22:14:00 UTC on 14/11/23, a whole minute
NS = "Custom/App"
DIMS = [{"Name": "Host", "Value": "a"}]


@pytest.fixture
def deps(tmp_path) -> Deps:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    return Deps(settings=Settings.build(tmp_path / "home"), clock=FakeClock(T0),
                arns=ArnBuilder("us-east-1", "123456789012"), resources=ResourceRepository(engine),
                tags=TagRepository(engine), logs=LogRepository(engine), metrics=MetricRepository(engine))


@pytest.fixture
def flushed() -> list[int]:
    return []


@pytest.fixture
def evaluator(deps, flushed) -> AlarmEvaluator:
    return AlarmEvaluator(deps, before_read=lambda: flushed.append(1), interval=0.05)


@pytest.fixture
def api(deps, evaluator) -> AlarmService:
    return AlarmService(deps, on_change=evaluator.schedule)


def _alarm(name: str = "high", **overrides) -> dict:
    req = {"AlarmName": name, "Namespace": NS, "MetricName": "Errors", "Dimensions": DIMS, "Statistic": "Sum",
           "Period": 60, "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "GreaterThanThreshold"}
    req.update(overrides)
    return req


def _config(**overrides) -> dict:
    cfg = _alarm(**overrides)
    del cfg["AlarmName"]
    return cfg


def _put(deps: Deps, t: float, value: float, name: str = "Errors") -> None:
    deps.metrics.put(NS, {"Host": "a"}, [(name, t, value)])


def _state(api: AlarmService, name: str = "high") -> dict:
    (alarm,) = api.describe_alarms(None, {"AlarmNames": [name]})["MetricAlarms"]
    return alarm


def _points(*values: float | None, period: int = 60) -> list[Datapoint]:
    return [Datapoint(T0 + i * period, v, 1.0 if v is not None else 0.0) for i, v in enumerate(values)]


# -- decide: the pure rule ------------------------------------------------------------------------------
def test_decide_one_breaching_datapoint_alarms_with_cloudwatch_reason():
    verdict = decide(_config(), _points(5.0), T0 + 30)
    assert verdict.state == "ALARM"
    assert verdict.reason == ("Threshold Crossed: 1 datapoint [5.0 (14/11/23 22:14:00)] was greater than the "
                              "threshold (1.0).")
    assert verdict.data["evaluatedDatapoints"] == [{"timestamp": "2023-11-14T22:14:00.000+0000",
                                                    "sampleCount": 1.0, "value": 5.0}]
    assert (verdict.data["statistic"], verdict.data["period"], verdict.data["threshold"]) == ("Sum", 60, 1.0)


def test_decide_value_at_threshold_is_ok_for_greater_than_and_alarm_for_greater_or_equal():
    assert decide(_config(), _points(1.0), T0).state == "OK"
    assert decide(_config(ComparisonOperator="GreaterThanOrEqualToThreshold"), _points(1.0), T0).state == "ALARM"
    assert decide(_config(ComparisonOperator="LessThanThreshold"), _points(0.5), T0).state == "ALARM"
    assert decide(_config(ComparisonOperator="LessThanOrEqualToThreshold"), _points(1.5), T0).state == "OK"


def test_decide_m_of_n_needs_datapoints_to_alarm_breaching():
    cfg = _config(EvaluationPeriods=3, DatapointsToAlarm=2)
    two = decide(cfg, _points(5.0, 0.0, 7.0), T0)
    assert two.state == "ALARM"
    assert two.reason.startswith("Threshold Crossed: 2 out of the last 3 datapoints [7.0 (14/11/23 22:16:00), "
                                 "5.0 (14/11/23 22:14:00)] were greater than the threshold (1.0)")
    assert two.reason.endswith("(minimum 2 datapoints for OK -> ALARM transition).")
    one = decide(cfg, _points(5.0, 0.0, 0.0), T0)
    assert one.state == "OK"
    assert "were not greater than the threshold (1.0)" in one.reason


def test_decide_without_datapoints_to_alarm_needs_every_period_breaching():
    cfg = _config(EvaluationPeriods=3)
    assert decide(cfg, _points(5.0, 5.0, 0.0), T0).state == "OK"
    assert decide(cfg, _points(5.0, 5.0, 5.0), T0).state == "ALARM"


@pytest.mark.parametrize(("treat", "expected"), [(None, "INSUFFICIENT_DATA"), ("missing", "INSUFFICIENT_DATA"),
                                                 ("ignore", None), ("breaching", "ALARM"),
                                                 ("notBreaching", "OK")])
def test_decide_all_missing_follows_treat_missing_data(treat, expected):
    cfg = _config(EvaluationPeriods=2) if treat is None else _config(EvaluationPeriods=2, TreatMissingData=treat)
    verdict = decide(cfg, _points(None, None), T0)
    assert verdict.state == expected
    if expected == "INSUFFICIENT_DATA":
        assert verdict.reason == "Insufficient Data: 2 datapoints were unknown."
    if treat == "breaching":
        assert "2 missing datapoints were treated as [Breaching]" in verdict.reason


def test_decide_some_missing_filled_as_breaching_reaches_datapoints_to_alarm():
    cfg = _config(EvaluationPeriods=3, DatapointsToAlarm=3)
    assert decide(cfg | {"TreatMissingData": "breaching"}, _points(5.0, None, None), T0).state == "ALARM"
    assert decide(cfg | {"TreatMissingData": "notBreaching"}, _points(5.0, None, None), T0).state == "OK"
    missing = decide(cfg | {"TreatMissingData": "missing"}, _points(5.0, None, None), T0)
    assert missing.state == "OK"  # one breaching datapoint exists, three are needed
    assert "(minimum 3 datapoints for OK -> ALARM transition)" in missing.reason


# -- window_points: which buckets are evaluated -----------------------------------------------------------
def test_window_points_includes_the_current_period_once_it_has_data():
    samples = [Sample(T0 - 50, 1, 2.0, 2.0, 2.0), Sample(T0 + 5, 1, 9.0, 9.0, 9.0)]
    points = window_points(_config(EvaluationPeriods=2), samples, T0 + 20)
    assert [(p.timestamp, p.value) for p in points] == [(T0 - 60, 2.0), (T0, 9.0)]


def test_window_points_skips_an_empty_unfinished_period():
    samples = [Sample(T0 - 50, 1, 2.0, 2.0, 2.0), Sample(T0 - 100, 2, 6.0, 1.0, 5.0)]
    points = window_points(_config(EvaluationPeriods=2, Statistic="Average"), samples, T0 + 20)
    assert [(p.timestamp, p.value) for p in points] == [(T0 - 120, 3.0), (T0 - 60, 2.0)]


def test_window_points_high_resolution_period_buckets_by_ten_seconds():
    samples = [Sample(T0 + 1, 1, 1.0, 1.0, 1.0), Sample(T0 + 12, 1, 4.0, 4.0, 4.0),
               Sample(T0 + 15, 1, 6.0, 6.0, 6.0)]
    points = window_points(_config(Period=10, EvaluationPeriods=2, Statistic="Maximum"), samples, T0 + 19)
    assert [(p.timestamp, p.value, p.sample_count) for p in points] == [(T0, 1.0, 1), (T0 + 10, 6.0, 2)]


# -- the evaluator against the store ----------------------------------------------------------------------
def test_new_alarm_starts_insufficient_data_then_alarms_on_breaching_data(deps, api, evaluator, flushed):
    api.put_metric_alarm(None, _alarm())
    first = _state(api)
    assert (first["StateValue"], first["StateReason"]) == ("INSUFFICIENT_DATA", "Unchecked: Initial alarm creation")
    _put(deps, T0 + 1, 3.0)
    deps.clock.advance(10)
    assert evaluator.evaluate_now() == {"high": "ALARM"}
    assert flushed  # the endpoint-metrics flush ran before reading
    alarm = _state(api)
    assert alarm["StateValue"] == "ALARM"
    assert alarm["StateReason"] == ("Threshold Crossed: 1 datapoint [3.0 (14/11/23 22:14:00)] was greater than the "
                                    "threshold (1.0).")
    assert json.loads(alarm["StateReasonData"])["recentDatapoints"] == [3.0]
    assert alarm["StateTransitionedTimestamp"] == T0 + 10
    assert evaluator.firing(["high", "no-such-alarm"]) == [("high", alarm["StateReason"])]


def test_evaluator_history_records_each_transition(deps, api, evaluator):
    api.put_metric_alarm(None, _alarm(TreatMissingData="notBreaching"))
    evaluator.evaluate_now()
    _put(deps, T0 + 61, 5.0)
    deps.clock.advance(70)
    evaluator.evaluate_now()
    items = api.describe_alarm_history(None, {"AlarmName": "high", "HistoryItemType": "StateUpdate"})
    summaries = [i["HistorySummary"] for i in items["AlarmHistoryItems"]]
    assert summaries == ["Alarm updated from OK to ALARM", "Alarm updated from INSUFFICIENT_DATA to OK"]
    data = json.loads(items["AlarmHistoryItems"][0]["HistoryData"])
    assert data["oldState"]["stateValue"] == "OK" and data["newState"]["stateValue"] == "ALARM"
    assert data["newState"]["stateReasonData"]["recentDatapoints"] == [5.0]


def test_evaluator_sums_statistic_sets_of_one_period(deps, api, evaluator):
    deps.metrics.put_stats(NS, {"Host": "a"}, [("Errors", T0, 10, 2.0, 0.0, 1.0), ("Errors", T0, 20, 1.0, 0.0, 1.0)])
    api.put_metric_alarm(None, _alarm("sum", Threshold=2.5))
    api.put_metric_alarm(None, _alarm("avg", Statistic="Average", Threshold=0.2))
    api.put_metric_alarm(None, _alarm("count", Statistic="SampleCount", Threshold=29.0))
    deps.clock.advance(30)
    assert evaluator.evaluate_now() == {"avg": "OK", "count": "ALARM", "sum": "ALARM"}


def test_evaluator_other_dimensions_are_another_metric(deps, api, evaluator):
    deps.metrics.put(NS, {"Host": "b"}, [("Errors", T0 + 1, 9.0)])
    deps.metrics.put(NS, {"Host": "a", "Zone": "z"}, [("Errors", T0 + 1, 9.0)])
    api.put_metric_alarm(None, _alarm())
    deps.clock.advance(30)
    assert evaluator.evaluate_now() == {"high": "INSUFFICIENT_DATA"}


def test_alarm_returns_to_insufficient_data_when_data_stops(deps, api, evaluator):
    api.put_metric_alarm(None, _alarm(EvaluationPeriods=2))
    _put(deps, T0 + 1, 5.0)
    deps.clock.advance(10)
    assert evaluator.evaluate_now() == {"high": "OK"}  # one of two periods breaching
    _put(deps, T0 + 61, 5.0)
    deps.clock.advance(60)
    assert evaluator.evaluate_now() == {"high": "ALARM"}
    deps.clock.advance(300)
    assert evaluator.evaluate_now() == {"high": "INSUFFICIENT_DATA"}


def test_set_alarm_state_holds_until_the_next_scheduled_evaluation(deps, api, evaluator):
    api.put_metric_alarm(None, _alarm(TreatMissingData="notBreaching"))
    evaluator.run_once()
    assert _state(api)["StateValue"] == "OK"
    api.set_alarm_state(None, {"AlarmName": "high", "StateValue": "ALARM", "StateReason": "testing rollback",
                               "StateReasonData": '{"why": "test"}'})
    assert evaluator.firing(["high"]) == [("high", "testing rollback")]
    deps.clock.advance(30)
    evaluator.run_once()  # not due yet: a 60-s alarm is evaluated once a minute
    assert _state(api)["StateValue"] == "ALARM"
    assert json.loads(_state(api)["StateReasonData"]) == {"why": "test"}
    deps.clock.advance(31)
    evaluator.run_once()
    assert _state(api)["StateValue"] == "OK"
    assert evaluator.firing(["high"]) == []


def test_set_alarm_state_missing_alarm_or_bad_json_is_refused(api):
    with pytest.raises(ServiceError) as e:
        api.set_alarm_state(None, {"AlarmName": "nope", "StateValue": "ALARM", "StateReason": "x"})
    assert (e.value.code, e.value.status, e.value.message) == ("ResourceNotFound", 404, "Alarm nope not found")
    api.put_metric_alarm(None, _alarm())
    with pytest.raises(ServiceError) as e:
        api.set_alarm_state(None, {"AlarmName": "high", "StateValue": "ALARM", "StateReason": "x",
                                   "StateReasonData": "{not json"})
    assert e.value.code == "InvalidFormat"


def test_put_metric_alarm_update_keeps_state_and_is_evaluated_next_pass(deps, api, evaluator):
    api.put_metric_alarm(None, _alarm())
    _put(deps, T0 + 1, 3.0)
    deps.clock.advance(5)
    evaluator.run_once()
    assert _state(api)["StateValue"] == "ALARM"
    deps.clock.advance(5)
    api.put_metric_alarm(None, _alarm(Threshold=10.0, AlarmDescription="raised"))
    updated = _state(api)
    assert (updated["StateValue"], updated["Threshold"], updated["AlarmDescription"]) == ("ALARM", 10.0, "raised")
    assert updated["AlarmConfigurationUpdatedTimestamp"] == T0 + 10
    evaluator.run_once()  # scheduled by the update although a minute has not passed
    assert _state(api)["StateValue"] == "OK"


def test_evaluator_loop_thread_evaluates_in_the_background(deps, api, evaluator):
    _put(deps, T0 + 1, 3.0)
    api.put_metric_alarm(None, _alarm())
    evaluator.start()
    try:
        import time

        deadline = time.time() + 5
        while _state(api)["StateValue"] != "ALARM" and time.time() < deadline:
            time.sleep(0.02)
    finally:
        evaluator.shutdown()
    assert _state(api)["StateValue"] == "ALARM"


def test_metrics_with_one_metric_stat_is_evaluated_like_metric_name(deps, api, evaluator):
    api.put_metric_alarm(None, {
        "AlarmName": "m", "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "GreaterThanThreshold",
        "Metrics": [{"Id": "e", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": NS, "MetricName": "Errors", "Dimensions": DIMS}, "Period": 60,
            "Stat": "Maximum"}}]})
    _put(deps, T0 + 1, 3.0)
    assert evaluator.evaluate_now() == {"m": "ALARM"}
    assert "Metrics" in _state(api, "m") and "MetricName" not in _state(api, "m")


# -- PutMetricAlarm's checks ------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "code", "fragment"), [
    ({"DatapointsToAlarm": 3}, "ValidationError", "DatapointsToAlarm (3) must be less than or equal to "
                                                  "EvaluationPeriods (1)"),
    ({"ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"}, "InvalidParameterValue",
     "anomaly detection"),
    ({"Statistic": None, "ExtendedStatistic": "p99"}, "InvalidParameterValue", "ExtendedStatistic"),
    ({"ExtendedStatistic": "p99"}, "InvalidParameterCombination", "mutually exclusive"),
    ({"Statistic": None}, "MissingParameter", "Statistic is required"),
    ({"Period": 15}, "InvalidParameterValue", "10, 20, 30 or a multiple of 60"),
    ({"Period": None}, "MissingParameter", "Period is required"),
    ({"Threshold": None}, "MissingParameter", "Threshold is required"),
    ({"Period": 60, "EvaluationPeriods": 1441}, "ValidationError", "must not exceed 86400 seconds"),
    ({"TreatMissingData": "sometimes"}, "InvalidParameterValue", "TreatMissingData"),
    ({"Metrics": [{"Id": "x", "Expression": "m1 * 2"}]}, "InvalidParameterCombination", "MetricName"),
    ({"EvaluationInterval": 60}, "InvalidParameterValue", "EvaluationInterval"),
])
def test_put_metric_alarm_bad_configuration_names_the_parameter(api, overrides, code, fragment):
    req = {k: v for k, v in _alarm(**overrides).items() if v is not None}
    with pytest.raises(ServiceError) as e:
        api.put_metric_alarm(None, req)
    assert e.value.code == code
    assert fragment in e.value.message


def test_put_metric_alarm_metric_math_expression_is_refused(api):
    req = {"AlarmName": "m", "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "GreaterThanThreshold",
           "Metrics": [{"Id": "e", "Expression": "m1 * 2", "ReturnData": True},
                       {"Id": "m1", "ReturnData": False, "MetricStat": {
                           "Metric": {"Namespace": NS, "MetricName": "Errors"}, "Period": 60, "Stat": "Sum"}}]}
    with pytest.raises(ServiceError) as e:
        api.put_metric_alarm(None, req)
    assert "metric math" in e.value.message


def test_put_metric_alarm_beyond_the_quota_is_limit_exceeded(deps):
    api = AlarmService(deps, max_alarms=2)
    api.put_metric_alarm(None, _alarm("a"))
    api.put_metric_alarm(None, _alarm("b"))
    api.put_metric_alarm(None, _alarm("a", Threshold=3.0))  # an update is not a new alarm
    with pytest.raises(ServiceError) as e:
        api.put_metric_alarm(None, _alarm("c"))
    assert e.value.code == "LimitExceeded"


def test_deleted_alarm_is_not_evaluated_and_keeps_its_history(deps, api, evaluator):
    api.put_metric_alarm(None, _alarm())
    api.delete_alarms(None, {"AlarmNames": ["high", "never-existed"]})
    assert evaluator.evaluate_now() == {}
    assert evaluator.firing(["high"]) == []
    summaries = [i["HistorySummary"] for i in api.describe_alarm_history(None, {})["AlarmHistoryItems"]]
    assert summaries == ['Alarm "high" deleted', 'Alarm "high" created']
