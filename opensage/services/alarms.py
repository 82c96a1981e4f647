"""CloudWatch metric alarms: PutMetricAlarm, DescribeAlarms, DescribeAlarmsForMetric, DeleteAlarms, SetAlarmState,
DescribeAlarmHistory, EnableAlarmActions, DisableAlarmActions.

An alarm is a ``resources`` row of kind ``cloudwatch-alarm``: ``request`` holds its configuration (PutMetricAlarm's
members, PascalCase, Tags excluded), ``status`` its StateValue, ``state`` StateReason / StateReasonData and the
timestamps. History lives in rows of kind ``cloudwatch-alarm-history`` (one per alarm name, newest item last), kept
when the alarm is deleted, as CloudWatch keeps it. ``serving.alarms.AlarmEvaluator`` moves StateValue; both writers
go through ``change_state`` (compare-and-set). Actions naming an Application Auto Scaling policy ARN are executed
by ``serving.autoscaler.Autoscaler`` (on entering the state, then once a minute while in it, as CloudWatch does for
Auto Scaling actions); other actions (SNS, EC2, ...) are stored and echoed, never executed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opensage.errors import ResourceNotFound, ServiceError, ValidationError
from opensage.services.base import Deps, epoch, open_next_token, seal_next_token
from opensage.services.cloudwatch import (
    STATISTICS,
    InvalidNextToken,
    InvalidParameterCombination,
    InvalidParameterValue,
    MissingParameter,
)
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, ListQuery, Resource
from opensage.store.tags import check_user_tags

ALARM_KIND = "cloudwatch-alarm"
HISTORY_KIND = "cloudwatch-alarm-history"
STATE_VALUES = ("OK", "ALARM", "INSUFFICIENT_DATA")
OPERATORS = {  # the static-threshold operators: (test, wording in StateReason)
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}
TREAT_MISSING = ("missing", "notBreaching", "breaching", "ignore")
ALARM_PERIODS = "10, 20, 30 or a multiple of 60"
MAX_ALARMS = 10_000
DEFAULT_MAX_RECORDS = 50
HISTORY_KEEP = 200  # items per alarm name
HISTORY_RETENTION_SECONDS = 14 * 86400  # CloudWatch keeps alarm history for two weeks
UNSUPPORTED = {
    "EvaluationCriteria": "PromQL alarms",
    "EvaluationWindow": "evaluation windows",
    "WarmUpConfiguration": "warm-up periods",
    "EvaluationInterval": "evaluation intervals (they apply to PromQL alarms)",
}
METRIC_MEMBERS = ("MetricName", "Namespace", "Dimensions", "Period", "Unit", "Statistic", "ExtendedStatistic")


class LimitExceeded(ServiceError):
    code = "LimitExceeded"


class InvalidFormat(ServiceError):
    code = "InvalidFormat"


def alarm_arn(deps: Deps, name: str) -> str:
    return f"arn:aws:cloudwatch:{deps.arns.region}:{deps.arns.account}:alarm:{name}"


def iso(t: float) -> str:
    """CloudWatch's timestamp spelling inside StateReasonData / HistoryData."""
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}+0000"


# -- the metric an alarm watches -------------------------------------------------------------------------
def watched_metric(config: dict[str, Any]) -> dict[str, Any]:
    """{Namespace, MetricName, Dimensions (dict), Period, Stat} of an alarm, from MetricName or a one-query
    Metrics list."""
    if config.get("Metrics"):
        stat = config["Metrics"][0]["MetricStat"]
        metric = stat["Metric"]
        return {"Namespace": metric["Namespace"], "MetricName": metric["MetricName"],
                "Dimensions": _dims(metric.get("Dimensions")), "Period": stat["Period"], "Stat": stat["Stat"]}
    return {"Namespace": config["Namespace"], "MetricName": config["MetricName"],
            "Dimensions": _dims(config.get("Dimensions")), "Period": config["Period"],
            "Stat": config.get("Statistic") or config.get("ExtendedStatistic")}


def _dims(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in items or []}


# -- PutMetricAlarm's checks -----------------------------------------------------------------------------
def check_alarm(params: dict[str, Any]) -> None:
    """What the spec cannot say: which members go together, supported statistics and operators, period rules."""
    for member, what in UNSUPPORTED.items():
        if params.get(member) is not None:
            raise InvalidParameterValue(f"The parameter {member} is not supported: OpenSage has no {what}. Alarm "
                                        "on a metric with MetricName/Namespace/Statistic/Period instead.")
    op = params.get("ComparisonOperator")
    if op is None:
        raise MissingParameter("The parameter ComparisonOperator is required (one of "
                               f"{', '.join(OPERATORS)}).")
    if op not in OPERATORS:
        raise InvalidParameterValue(f"The value {op} for parameter ComparisonOperator is for anomaly detection "
                                    f"alarms, which OpenSage does not support; use one of {', '.join(OPERATORS)}.")
    if params.get("ThresholdMetricId"):
        raise InvalidParameterCombination("The parameter ThresholdMetricId is only for anomaly detection alarms; "
                                          "use Threshold with a static ComparisonOperator.")
    if params.get("Threshold") is None:
        raise MissingParameter("The parameter Threshold is required for an alarm with a static threshold.")
    if params.get("EvaluationPeriods") is None:
        raise MissingParameter("The parameter EvaluationPeriods is required.")
    if params.get("Metrics"):
        period = _check_metrics(params)
    else:
        period = _check_single_metric(params)
    n, m = params["EvaluationPeriods"], params.get("DatapointsToAlarm")
    if m is not None and m > n:
        raise ValidationError(f"DatapointsToAlarm ({m}) must be less than or equal to EvaluationPeriods ({n}).")
    limit = 86_400 if period < 3600 else 604_800
    if period * n > limit:
        raise ValidationError(f"The evaluation period (Period x EvaluationPeriods = {period} x {n} = "
                              f"{period * n} seconds) must not exceed {limit} seconds"
                              f"{' for periods under one hour' if limit == 86_400 else ''}.")
    treat = params.get("TreatMissingData")
    if treat is not None and treat not in TREAT_MISSING:
        raise InvalidParameterValue(f"The value {treat} for parameter TreatMissingData is invalid; use one of "
                                    f"{', '.join(TREAT_MISSING)}.")


def _check_period(period: int | None, field: str) -> int:
    if period is None:
        raise MissingParameter(f"The parameter {field} is required ({ALARM_PERIODS} seconds).")
    if period not in (10, 20, 30) and period % 60:
        raise InvalidParameterValue(f"The value {period} for parameter {field} is invalid: alarm periods are "
                                    f"{ALARM_PERIODS} seconds.")
    return period


def _check_statistic(stat: str | None, extended: str | None, where: str) -> None:
    if stat and extended:
        raise InvalidParameterCombination(f"The parameters {where}Statistic and {where}ExtendedStatistic are "
                                          "mutually exclusive and you have specified both.")
    if extended:
        raise InvalidParameterValue(f"The value {extended} for parameter {where}ExtendedStatistic is not "
                                    "supported: OpenSage stores statistic sets, from which percentiles cannot be "
                                    f"computed; use Statistic with one of {', '.join(STATISTICS)}.")
    if not stat:
        raise MissingParameter(f"The parameter {where}Statistic is required (one of {', '.join(STATISTICS)}).")
    if stat not in STATISTICS:
        raise InvalidParameterValue(f"The value {stat} for parameter {where}Statistic is not supported; use one of "
                                    f"{', '.join(STATISTICS)}.")


def _check_single_metric(params: dict[str, Any]) -> int:
    for member in ("MetricName", "Namespace"):
        if not params.get(member):
            raise MissingParameter(f"The parameter {member} is required (or a Metrics list).")
    _check_statistic(params.get("Statistic"), params.get("ExtendedStatistic"), "")
    names = [d["Name"] for d in params.get("Dimensions") or []]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InvalidParameterValue(f"The dimension {dup} appears more than once in parameter Dimensions.")
    return _check_period(params.get("Period"), "Period")


def _check_metrics(params: dict[str, Any]) -> int:
    given = [m for m in METRIC_MEMBERS if params.get(m) is not None]
    if given:
        raise InvalidParameterCombination(f"The parameter Metrics cannot be used together with {', '.join(given)}: "
                                          "put the metric, statistic and period inside Metrics.")
    queries = params["Metrics"]
    returned = [q for q in queries if q.get("ReturnData", True)]
    if len(queries) != 1 or len(returned) != 1 or not queries[0].get("MetricStat") or queries[0].get("Expression"):
        raise InvalidParameterValue("Metrics must hold exactly one MetricStat query with ReturnData true: OpenSage "
                                    "does not evaluate metric math expressions in alarms.")
    stat = queries[0]["MetricStat"]
    _check_statistic(stat.get("Stat"), None, "Metrics.member.1.MetricStat.")
    return _check_period(stat.get("Period"), "Metrics.member.1.MetricStat.Period")


# -- state and history -----------------------------------------------------------------------------------
def history_item(name: str, kind: str, summary: str, data: dict[str, Any], t: float) -> dict[str, Any]:
    return {"AlarmName": name, "AlarmType": "MetricAlarm", "Timestamp": t, "HistoryItemType": kind,
            "HistorySummary": summary[:255], "HistoryData": json.dumps(data, separators=(",", ":"))[:4095]}


def append_history(deps: Deps, item: dict[str, Any]) -> None:
    """Add one item to the alarm name's history row (created on first use; retried on concurrent writers)."""
    name, now = item["AlarmName"], item["Timestamp"]
    for _ in range(20):
        row = deps.resources.get(HISTORY_KIND, name)
        if row is None:
            try:
                deps.resources.create(Resource(HISTORY_KIND, name, f"{alarm_arn(deps, name)}:history", "Active",
                                               now, now, {}, {"items": [item]}))
                return
            except AlreadyExists:
                continue
        cutoff = now - HISTORY_RETENTION_SECONDS
        items = [i for i in row.state.get("items", []) if i["Timestamp"] >= cutoff] + [item]
        row.state["items"] = items[-HISTORY_KEEP:]
        try:
            deps.resources.save(row, now)
            return
        except ConcurrentUpdate:
            continue


def change_state(deps: Deps, res: Resource, value: str, reason: str, data: dict[str, Any] | None,
                 now: float) -> bool:
    """Write a new state (compare-and-set: raises ConcurrentUpdate when the row moved); a changed StateValue is
    recorded in the history. Returns whether StateValue changed."""
    old_value, old_reason = res.status, res.state.get("StateReason", "")
    changed = value != old_value
    res.status = value
    res.state["StateReason"] = reason[:1023]
    if data is None:
        res.state.pop("StateReasonData", None)
    else:
        res.state["StateReasonData"] = json.dumps(data, separators=(",", ":"))[:4000]
    res.state["StateUpdatedTimestamp"] = now
    if changed:
        res.state["StateTransitionedTimestamp"] = now
    deps.resources.save(res, now)
    if changed:
        new_state: dict[str, Any] = {"stateValue": value, "stateReason": reason}
        if data is not None:
            new_state["stateReasonData"] = data
        append_history(deps, history_item(res.name, "StateUpdate", f"Alarm updated from {old_value} to {value}",
                                          {"version": "1.0", "oldState": {"stateValue": old_value,
                                                                          "stateReason": old_reason},
                                           "newState": new_state}, now))
    return changed


def describe_alarm(res: Resource) -> dict[str, Any]:
    """The MetricAlarm shape of a stored alarm."""
    cfg = res.request
    out: dict[str, Any] = {
        "AlarmName": res.name, "AlarmArn": res.arn,
        "AlarmConfigurationUpdatedTimestamp": res.state.get("AlarmConfigurationUpdatedTimestamp", res.creation_time),
        "ActionsEnabled": cfg.get("ActionsEnabled", True),
        "OKActions": cfg.get("OKActions", []), "AlarmActions": cfg.get("AlarmActions", []),
        "InsufficientDataActions": cfg.get("InsufficientDataActions", []),
        "StateValue": res.status, "StateReason": res.state.get("StateReason", ""),
        "StateUpdatedTimestamp": res.state.get("StateUpdatedTimestamp", res.creation_time),
        "StateTransitionedTimestamp": res.state.get("StateTransitionedTimestamp", res.creation_time),
        "Dimensions": cfg.get("Dimensions", []) if not cfg.get("Metrics") else None,
    }
    if res.state.get("StateReasonData"):
        out["StateReasonData"] = res.state["StateReasonData"]
    for key in ("AlarmDescription", "MetricName", "Namespace", "Statistic", "ExtendedStatistic", "Period", "Unit",
                "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData",
                "EvaluateLowSampleCountPercentile", "Metrics", "ActionConfiguration"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    return {k: v for k, v in out.items() if v is not None}


class AlarmService:
    """``on_change(name)`` tells the evaluator that an alarm was created or reconfigured (evaluate it soon)."""

    def __init__(self, deps: Deps, on_change: Callable[[str], None] | None = None,
                 max_alarms: int = MAX_ALARMS) -> None:
        self.d = deps
        self.on_change = on_change or (lambda name: None)
        self.max_alarms = max_alarms

    def all_alarms(self) -> list[Resource]:
        """Every alarm, sorted by name (the order DescribeAlarms pages in)."""
        out: list[Resource] = []
        token = None
        while True:
            page, token = self.d.resources.list(ALARM_KIND, ListQuery(sort_by="Name", limit=1000, next_token=token))
            out.extend(page)
            if not token:
                return out

    # -- writes --------------------------------------------------------------------------------------
    def put_metric_alarm(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        check_alarm(params)
        name = params["AlarmName"]
        config = {k: v for k, v in params.items() if k not in ("AlarmName", "Tags") and v is not None}
        now = self.d.clock.time()
        for _ in range(20):
            res = self.d.resources.get(ALARM_KIND, name)
            if res is None:
                if self._created(name, config, params.get("Tags") or [], now):
                    break
                continue
            res.request = config
            res.state["AlarmConfigurationUpdatedTimestamp"] = now
            try:
                self.d.resources.save(res, now)
            except ConcurrentUpdate:
                continue
            append_history(self.d, history_item(name, "ConfigurationUpdate", f'Alarm "{name}" updated',
                                                {"version": "1.0", "type": "Update",
                                                 "updatedAlarm": _history_view(res)}, now))
            break
        self.on_change(name)
        return {}

    def _created(self, name: str, config: dict[str, Any], tags: list[dict[str, str]], now: float) -> bool:
        if len(self.all_alarms()) >= self.max_alarms:
            raise LimitExceeded(f"The maximum number of alarms ({self.max_alarms}) has been reached. Delete alarms "
                                "you no longer need (DeleteAlarms) before creating new ones.")
        check_user_tags(tags or [])  # before the alarm exists: a refused tag creates nothing
        res = Resource(ALARM_KIND, name, alarm_arn(self.d, name), "INSUFFICIENT_DATA", now, now, config,
                       {"StateReason": "Unchecked: Initial alarm creation", "StateUpdatedTimestamp": now,
                        "StateTransitionedTimestamp": now, "AlarmConfigurationUpdatedTimestamp": now})
        try:
            self.d.resources.create(res)
        except AlreadyExists:
            return False  # created concurrently: update it instead
        if tags:
            self.d.tags.put(res.arn, tags)
        append_history(self.d, history_item(name, "ConfigurationUpdate", f'Alarm "{name}" created',
                                            {"version": "1.0", "type": "Create", "createdAlarm": _history_view(res)},
                                            now))
        return True

    def delete_alarms(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        """Names that do not exist are skipped; the others are deleted (CloudWatch's documented behaviour)."""
        now = self.d.clock.time()
        for name in dict.fromkeys(params["AlarmNames"]):
            res = self.d.resources.get(ALARM_KIND, name)
            if res is None:
                continue
            self.d.resources.delete(ALARM_KIND, name)
            self.d.tags.drop_all(res.arn)
            append_history(self.d, history_item(name, "ConfigurationUpdate", f'Alarm "{name}" deleted',
                                                {"version": "1.0", "type": "Delete",
                                                 "deletedAlarm": _history_view(res)}, now))
        return {}

    def set_alarm_state(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        """Holds until the evaluator's next evaluation of the alarm (at most one Period, or 60 s)."""
        name, value = params["AlarmName"], params["StateValue"]
        data = None
        if params.get("StateReasonData"):
            try:
                data = json.loads(params["StateReasonData"])
            except ValueError:
                raise InvalidFormat("The parameter StateReasonData is not syntactically valid JSON.") from None
        for _ in range(20):
            res = self.d.resources.get(ALARM_KIND, name)
            if res is None:
                raise ResourceNotFound(f"Alarm {name} not found", status=404)
            try:
                change_state(self.d, res, value, params["StateReason"], data, self.d.clock.time())
                return {}
            except ConcurrentUpdate:
                continue
        raise ServiceError(f"Alarm {name} is being updated concurrently; retry SetAlarmState.", code="Throttling")

    def enable_alarm_actions(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._set_actions(params["AlarmNames"], True)

    def disable_alarm_actions(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._set_actions(params["AlarmNames"], False)

    def _set_actions(self, names: list[str], enabled: bool) -> dict[str, Any]:
        for name in dict.fromkeys(names):
            for _ in range(20):
                res = self.d.resources.get(ALARM_KIND, name)
                if res is None:
                    break
                res.request["ActionsEnabled"] = enabled
                try:
                    self.d.resources.save(res, self.d.clock.time())
                    break
                except ConcurrentUpdate:
                    continue
        return {}

    # -- reads ---------------------------------------------------------------------------------------
    def describe_alarms(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        names, prefix = params.get("AlarmNames"), params.get("AlarmNamePrefix")
        if names and prefix:
            raise InvalidParameterCombination("The parameters AlarmNames and AlarmNamePrefix are mutually exclusive "
                                              "and you have specified both.")
        out: dict[str, Any] = {"MetricAlarms": [], "CompositeAlarms": []}
        types = params.get("AlarmTypes") or ["MetricAlarm"]
        if "LogAlarm" in types:
            out["LogAlarms"] = []
        relatives = params.get("ChildrenOfAlarmName") or params.get("ParentsOfAlarmName")
        if "MetricAlarm" not in types or relatives:
            return out  # no composite alarms exist, so no alarm has parents or children
        if names:  # a handful of rows by key instead of every alarm
            candidates = sorted((r for n in set(names) if (r := self.d.resources.get(ALARM_KIND, n)) is not None),
                                key=lambda r: r.name)
        else:
            candidates = self.all_alarms()
        found = [r for r in candidates if self._matches(r, params)]
        start = 0
        after = open_next_token(self.d, "DescribeAlarms", params, InvalidNextToken)
        if after is not None:
            start = next((i for i, r in enumerate(found) if r.name > str(after)), len(found))
        limit = params.get("MaxRecords") or DEFAULT_MAX_RECORDS
        page = found[start:start + limit]
        out["MetricAlarms"] = [describe_alarm(r) for r in page]
        if start + limit < len(found):
            out["NextToken"] = seal_next_token(self.d, "DescribeAlarms", params, page[-1].name)
        return out

    @staticmethod
    def _matches(res: Resource, params: dict[str, Any]) -> bool:
        if params.get("AlarmNames") and res.name not in params["AlarmNames"]:
            return False
        if params.get("AlarmNamePrefix") and not res.name.startswith(params["AlarmNamePrefix"]):
            return False
        if params.get("StateValue") and res.status != params["StateValue"]:
            return False
        prefix = params.get("ActionPrefix")
        if prefix:
            cfg = res.request
            actions = [*cfg.get("OKActions", []), *cfg.get("AlarmActions", []), *cfg.get("InsufficientDataActions", [])]
            return any(a.startswith(prefix) for a in actions)
        return True

    def describe_alarms_for_metric(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        dims = _dims(params.get("Dimensions"))
        found = []
        for res in self.all_alarms():
            cfg = res.request
            if cfg.get("Metrics") or cfg.get("Namespace") != params["Namespace"] \
                    or cfg.get("MetricName") != params["MetricName"] or _dims(cfg.get("Dimensions")) != dims:
                continue
            if any(params.get(k) is not None and cfg.get(k) != params[k]
                   for k in ("Statistic", "ExtendedStatistic", "Period", "Unit")):
                continue
            found.append(describe_alarm(res))
        return {"MetricAlarms": found}

    def describe_alarm_history(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        types = params.get("AlarmTypes") or ["MetricAlarm"]
        if "MetricAlarm" not in types or params.get("AlarmContributorId"):
            return {"AlarmHistoryItems": []}
        if params.get("AlarmName"):
            row = self.d.resources.get(HISTORY_KIND, params["AlarmName"])
            rows = [row] if row else []
        else:
            rows, token = [], None
            while True:
                page, token = self.d.resources.list(HISTORY_KIND, ListQuery(sort_by="Name", limit=1000,
                                                                            next_token=token))
                rows.extend(page)
                if not token:
                    break
        start, end = epoch(params.get("StartDate")), epoch(params.get("EndDate"))
        kind = params.get("HistoryItemType")
        items = [i for r in rows for i in r.state.get("items", [])
                 if (kind is None or i["HistoryItemType"] == kind) and (start is None or i["Timestamp"] >= start)
                 and (end is None or i["Timestamp"] <= end)]
        descending = (params.get("ScanBy") or "TimestampDescending") == "TimestampDescending"
        order = {id(i): n for n, i in enumerate(items)}  # items of one alarm are stored oldest first
        items.sort(key=lambda i: (i["Timestamp"], order[id(i)]), reverse=descending)
        offset = open_next_token(self.d, "DescribeAlarmHistory", params, InvalidNextToken) or 0
        if not isinstance(offset, int):
            raise InvalidNextToken("The NextToken is invalid: pass the value from the previous "
                                   "DescribeAlarmHistory response.")
        limit = params.get("MaxRecords") or DEFAULT_MAX_RECORDS
        out: dict[str, Any] = {"AlarmHistoryItems": items[offset:offset + limit]}
        if offset + limit < len(items):
            out["NextToken"] = seal_next_token(self.d, "DescribeAlarmHistory", params, offset + limit)
        return out


def _history_view(res: Resource) -> dict[str, Any]:
    """The alarm as HistoryData shows it: camelCase keys of the configuration."""
    return {k[:1].lower() + k[1:]: v for k, v in res.request.items()} | {"alarmName": res.name,
                                                                         "alarmArn": res.arn}
