"""CloudWatch metrics: PutMetricData, GetMetricStatistics, GetMetricData, ListMetrics.

Data comes from the metric store: training metrics parsed from job logs (``/aws/sagemaker/TrainingJobs``),
endpoint metrics flushed by ``serving.metrics`` (``AWS/SageMaker``, ``/aws/sagemaker/Endpoints``), and
whatever clients put. Statistics are computed over Period buckets aligned like CloudWatch's: the start time is
rounded down to the whole minute for periods that are multiples of 60 s. A metric is identified by namespace,
name and its exact set of dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensage.errors import ServiceError
from opensage.services.base import Deps, epoch, open_next_token, seal_next_token
from opensage.serving.metrics import KNOWN_UNITS
from opensage.store.metrics import Sample, parse_dimension_key

STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
HIGH_RESOLUTION_PERIODS = (1, 5, 10, 20, 30)
MAX_DATAPOINTS = 1440
LIST_PAGE = 500
RECENTLY_ACTIVE_SECONDS = {"PT3H": 3 * 3600}


class InvalidParameterValue(ServiceError):
    code = "InvalidParameterValue"


class InvalidParameterCombination(ServiceError):
    code = "InvalidParameterCombination"


class MissingParameter(ServiceError):
    code = "MissingParameter"


class InvalidNextToken(ServiceError):
    code = "InvalidNextToken"


@dataclass
class Bucket:
    count: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, s: Sample) -> None:
        self.count += s.count
        self.total += s.total
        self.minimum = min(self.minimum, s.minimum)
        self.maximum = max(self.maximum, s.maximum)

    def stat(self, name: str) -> float:
        if name == "SampleCount":
            return self.count
        if name == "Sum":
            return self.total
        if name == "Minimum":
            return self.minimum
        if name == "Maximum":
            return self.maximum
        return self.total / self.count if self.count else 0.0


def _dims(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in items or []}


def check_period(period: int, field: str) -> None:
    if period not in HIGH_RESOLUTION_PERIODS and period % 60:
        raise InvalidParameterValue(f"The parameter {field} must be 1, 5, 10, 20, 30, 60 or a multiple of 60 "
                                    f"(got {period}).")


def window(start: float, end: float, period: int) -> tuple[float, int]:
    """(aligned start, number of buckets) for [start, end) in ``period``-second buckets."""
    if start >= end:
        raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
    align = 60 if period % 60 == 0 else 1
    origin = math.floor(start / align) * align
    return origin, math.ceil((end - origin) / period)


def bucketize(samples: list[Sample], origin: float, period: int) -> dict[float, Bucket]:
    buckets: dict[float, Bucket] = {}
    for s in samples:
        t = origin + math.floor((s.timestamp - origin) / period) * period
        buckets.setdefault(t, Bucket()).add(s)
    return buckets


class CloudWatchService:
    """``before_read`` runs before every read (the endpoint-metrics aggregator's flush), so reads are fresh."""

    def __init__(self, deps: Deps, before_read: Callable[[], None] | None = None) -> None:
        self.d = deps
        self.before_read = before_read or (lambda: None)

    def _series(self, namespace: str, name: str, dims: dict[str, str], start: float, end: float,
                period: int) -> dict[float, Bucket]:
        origin, _ = window(start, end, period)
        return bucketize(self.d.metrics.samples(namespace, dims, name, origin, end), origin, period)

    # -- reads ---------------------------------------------------------------------------------------
    def get_metric_statistics(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        stats = list(params.get("Statistics") or [])
        if params.get("ExtendedStatistics"):
            raise InvalidParameterValue("ExtendedStatistics (percentiles) are not supported by OpenSage; use "
                                        f"Statistics with {', '.join(STATISTICS)}.")
        if not stats:
            raise MissingParameter("The parameter Statistics is required (one or more of "
                                   f"{', '.join(STATISTICS)}).")
        period = params["Period"]
        check_period(period, "Period")
        start, end = epoch(params["StartTime"]), epoch(params["EndTime"])
        _, n = window(start, end, period)
        if n > MAX_DATAPOINTS:
            raise InvalidParameterCombination(
                f"You have requested up to {n:,} datapoints, which exceeds the limit of {MAX_DATAPOINTS:,}. You may "
                "reduce the datapoints requested by increasing Period, or decreasing the time range.")
        self.before_read()
        namespace, name = params["Namespace"], params["MetricName"]
        unit = params.get("Unit") or KNOWN_UNITS.get((namespace, name), "None")
        buckets = self._series(namespace, name, _dims(params.get("Dimensions")), start, end, period)
        points = [{"Timestamp": t, "Unit": unit, **{s: b.stat(s) for s in stats}}
                  for t, b in sorted(buckets.items())]
        return {"Label": name, "Datapoints": points}

    def get_metric_data(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        start, end = epoch(params["StartTime"]), epoch(params["EndTime"])
        queries = params["MetricDataQueries"]
        ids = [q["Id"] for q in queries]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidParameterValue(f"The value {dup} for parameter MetricDataQueries.member.N.Id is not "
                                        "unique: every query needs its own Id.")
        for i, q in enumerate(queries, 1):
            self._check_query(q, i)
        self.before_read()
        descending = (params.get("ScanBy") or "TimestampDescending") == "TimestampDescending"
        results = [self._query(q, start, end, descending) for q in queries if q.get("ReturnData", True)]
        return {"MetricDataResults": results, "Messages": []}

    @staticmethod
    def _check_query(q: dict[str, Any], i: int) -> None:
        where = f"MetricDataQueries.member.{i}"
        if q.get("Expression"):
            raise InvalidParameterValue(f"{where} (Id {q['Id']}) uses an Expression; OpenSage answers MetricStat "
                                        "queries only.")
        stat = q.get("MetricStat")
        if not stat:
            raise MissingParameter(f"The parameter {where}.MetricStat is required (or an Expression).")
        if stat["Stat"] not in STATISTICS:
            raise InvalidParameterValue(f"The value {stat['Stat']} for parameter {where}.MetricStat.Stat is not "
                                        f"supported; use one of {', '.join(STATISTICS)}.")
        if not stat["Metric"].get("Namespace") or not stat["Metric"].get("MetricName"):
            raise MissingParameter(f"The parameters {where}.MetricStat.Metric.Namespace and MetricName are "
                                   "required.")
        check_period(stat["Period"], f"{where}.MetricStat.Period")

    def _query(self, q: dict[str, Any], start: float, end: float, descending: bool) -> dict[str, Any]:
        stat = q["MetricStat"]
        metric = stat["Metric"]
        buckets = self._series(metric["Namespace"], metric["MetricName"], _dims(metric.get("Dimensions")),
                               start, end, stat["Period"])
        ordered = sorted(buckets.items(), reverse=descending)
        return {"Id": q["Id"], "Label": q.get("Label") or metric["MetricName"],
                "Timestamps": [t for t, _ in ordered], "Values": [b.stat(stat["Stat"]) for _, b in ordered],
                "StatusCode": "Complete", "Messages": []}

    def list_metrics(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self.before_read()
        since = None
        if params.get("RecentlyActive"):
            since = self.d.clock.time() - RECENTLY_ACTIVE_SECONDS[params["RecentlyActive"]]
        filters = params.get("Dimensions") or []
        found = []
        for namespace, name, key in self.d.metrics.list_metrics(params.get("Namespace"), params.get("MetricName"),
                                                                since):
            dims = parse_dimension_key(key)
            if all(f["Name"] in dims and f.get("Value") in (None, dims[f["Name"]]) for f in filters):
                found.append({"Namespace": namespace, "MetricName": name,
                              "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]})
        offset = open_next_token(self.d, "ListMetrics", params, InvalidNextToken) or 0
        if not isinstance(offset, int):
            raise InvalidNextToken("The NextToken is invalid: pass the value from the previous ListMetrics response.")
        out: dict[str, Any] = {"Metrics": found[offset:offset + LIST_PAGE]}
        if offset + LIST_PAGE < len(found):
            out["NextToken"] = seal_next_token(self.d, "ListMetrics", params, offset + LIST_PAGE)
        return out

    # -- writes --------------------------------------------------------------------------------------
    def put_metric_data(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        namespace = params["Namespace"]
        if namespace.startswith("AWS/"):
            raise InvalidParameterValue(f"The value {namespace} for parameter Namespace is invalid: namespaces "
                                        "starting with AWS/ are reserved for AWS services.")
        data = list(params.get("MetricData") or [])
        for entity in params.get("EntityMetricData") or []:
            data.extend(entity.get("MetricData") or [])
        if not data:
            raise MissingParameter("The parameter MetricData is required.")
        now = self.d.clock.time()
        parsed = [self._datum(d, i, now) for i, d in enumerate(data, 1)]
        with self.d.metrics.engine.begin() as conn:
            for dims, raw, sets in parsed:
                self.d.metrics.put(namespace, dims, raw, conn=conn)
                self.d.metrics.put_stats(namespace, dims, sets, conn=conn)
        return {}

    @staticmethod
    def _datum(d: dict[str, Any], i: int, now: float) -> tuple[dict[str, str], list, list]:
        where = f"MetricData.member.{i}"
        name = d["MetricName"]
        t = epoch(d.get("Timestamp")) or now
        given = [k for k in ("Value", "StatisticValues", "Values") if d.get(k) is not None]
        if len(given) > 1:
            raise InvalidParameterCombination(f"The parameters {where}.{given[0]} and {where}.{given[1]} are "
                                              "mutually exclusive and you have specified both.")
        if not given:
            raise MissingParameter(f"The parameter {where}.Value is required (or StatisticValues, or Values).")
        raw: list[tuple[str, float, float]] = []
        sets: list[tuple[str, float, float, float, float, float]] = []
        if "Value" in given:
            raw.append((name, t, _finite(d["Value"], f"{where}.Value")))
        elif "StatisticValues" in given:
            sv = d["StatisticValues"]
            count, total, lo, hi = (_finite(sv[k], f"{where}.StatisticValues.{k}")
                                    for k in ("SampleCount", "Sum", "Minimum", "Maximum"))
            if count <= 0 or lo > hi:
                raise InvalidParameterValue(f"The parameter {where}.StatisticValues is invalid: SampleCount must be "
                                            "positive and Minimum must not exceed Maximum.")
            sets.append((name, t, count, total, lo, hi))
        else:
            values, counts = d["Values"], d.get("Counts") or [1.0] * len(d["Values"])
            if len(counts) != len(values):
                raise InvalidParameterValue(f"The parameters {where}.Values and {where}.Counts must have the same "
                                            f"length ({len(values)} values, {len(counts)} counts).")
            for v, c in zip(values, counts, strict=True):
                v = _finite(v, f"{where}.Values")
                if c == 1:
                    raw.append((name, t, v))
                elif c > 0:
                    sets.append((name, t, c, v * c, v, v))
        return _dims(d.get("Dimensions")), raw, sets


def _finite(value: float, field: str) -> float:
    value = float(value)
    if not math.isfinite(value) or abs(value) > 2.0 ** 360:
        raise InvalidParameterValue(f"The value {value} for parameter {field} is invalid: values must be finite "
                                    "numbers between -2^360 and 2^360.")
    return value

