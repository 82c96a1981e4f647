"""Alarm evaluation: moves every CloudWatch metric alarm between OK, ALARM and INSUFFICIENT_DATA.

Each alarm is evaluated every Period (high-resolution alarms: 10, 20, 30 s) or every 60 s for longer periods,
as CloudWatch does. An evaluation reads the alarm's metric from the metric store (after ``before_read``, the
endpoint-metrics flush) in Period buckets aligned to multiples of Period, over the last EvaluationPeriods buckets.
The newest bucket is the one in progress when it already holds data (so an endpoint's errors count within one
evaluation); while it is still empty the window ends at the last complete period instead, so an unfinished period
is never "missing". DatapointsToAlarm (M) of EvaluationPeriods (N) breaching -> ALARM, otherwise OK; missing
datapoints are filled as TreatMissingData says (breaching / notBreaching), or skipped (missing / ignore): with no
datapoint at all, ``missing`` gives INSUFFICIENT_DATA and ``ignore`` keeps the current state. A state written by
SetAlarmState lasts until the alarm's next scheduled evaluation, as on AWS.

``firing(names)`` is the cheap query for the deployment reconciler (auto-rollback alarms); ``evaluate_now()``
forces a fresh evaluation of every alarm.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opensage.runner.loop import ReconcileLoop
from opensage.services.alarms import ALARM_KIND, OPERATORS, STATE_VALUES, change_state, iso, watched_metric
from opensage.services.base import Deps
from opensage.services.cloudwatch import bucketize
from opensage.store.resources import ConcurrentUpdate, Resource

log = logging.getLogger(__name__)

EVALUATION_INTERVAL_SECONDS = 5.0
REASON_POINTS = 10  # datapoints quoted in a StateReason / StateReasonData


@dataclass(frozen=True)
class Datapoint:
    timestamp: float  # bucket start
    value: float | None  # None: no data in that period
    sample_count: float = 0.0


@dataclass(frozen=True)
class Verdict:
    state: str | None  # None: keep the current state (TreatMissingData=ignore, no data)
    reason: str
    data: dict[str, Any] | None


def window_points(config: dict[str, Any], samples: list, now: float) -> list[Datapoint]:
    """The alarm's N datapoints, oldest first, from the samples of its last N + 1 periods."""
    metric = watched_metric(config)
    period, n = metric["Period"], config["EvaluationPeriods"]
    current = math.floor(now / period) * period
    buckets = bucketize(samples, current - n * period, period)
    end = current if current in buckets else current - period  # an empty unfinished period is not missing
    out = []
    for t in (end - (n - 1 - i) * period for i in range(n)):
        b = buckets.get(t)
        out.append(Datapoint(t, b.stat(metric["Stat"]), b.count) if b else Datapoint(t, None))
    return out


def alarm_datapoints(deps: Deps, config: dict[str, Any], now: float) -> list[Datapoint]:
    """The alarm's N datapoints now, read from the metric store (the evaluator's and the autoscaler's view)."""
    metric = watched_metric(config)
    period, n = metric["Period"], config["EvaluationPeriods"]
    start = (math.floor(now / period) - n) * period
    samples = deps.metrics.samples(metric["Namespace"], metric["Dimensions"], metric["MetricName"], start,
                                   now + period)
    return window_points(config, samples, now)


def decide(config: dict[str, Any], points: list[Datapoint], now: float) -> Verdict:
    """The state N datapoints put the alarm in, with CloudWatch's StateReason and StateReasonData."""
    n = len(points)
    m = config.get("DatapointsToAlarm") or n
    test, words = OPERATORS[config["ComparisonOperator"]]
    threshold = float(config["Threshold"])
    treat = config.get("TreatMissingData") or "missing"
    present = [p for p in points if p.value is not None]
    missing = n - len(present)
    data = _reason_data(config, points, now)
    if not present and treat in ("missing", "ignore"):
        if treat == "ignore":
            return Verdict(None, "", None)
        return Verdict("INSUFFICIENT_DATA", f"Insufficient Data: {_count(n, 'datapoint')} "
                                            f"{'was' if n == 1 else 'were'} unknown.", data)
    breaching = [p for p in present if test(p.value, threshold)]
    within = [p for p in present if not test(p.value, threshold)]
    filled = missing if treat in ("breaching", "notBreaching") else 0
    bad = len(breaching) + (filled if treat == "breaching" else 0)
    if bad >= m:
        return Verdict("ALARM", _crossed(breaching, n, words, threshold, m, "OK -> ALARM",
                                         filled if treat == "breaching" else 0, "Breaching"), data)
    if not within and not filled:  # too few datapoints breach, and none is within the threshold
        return Verdict("OK", _crossed(breaching, n, words, threshold, m, "OK -> ALARM", 0, ""), data)
    return Verdict("OK", _crossed(within, n, f"not {words}", threshold, n - m + 1, "ALARM -> OK",
                                  filled if treat == "notBreaching" else 0, "NonBreaching"), data)


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _crossed(points: list[Datapoint], n: int, words: str, threshold: float, minimum: int, transition: str,
             filled: int, filled_as: str) -> str:
    """'Threshold Crossed: 1 datapoint [5.0 (26/11/23 10:00:00)] was greater than the threshold (1.0).'"""
    quoted = ", ".join(f"{p.value!r} ({datetime.fromtimestamp(p.timestamp, UTC):%d/%m/%y %H:%M:%S})"
                       for p in sorted(points, key=lambda p: -p.timestamp)[:REASON_POINTS])
    if not points:
        return (f"Threshold Crossed: no datapoints were received for {_count(n, 'period')} and "
                f"{_count(filled, 'missing datapoint')} {'was' if filled == 1 else 'were'} treated as [{filled_as}].")
    k = len(points)
    lead = _count(k, "datapoint") if n == 1 else f"{k} out of the last {n} datapoints"
    reason = f"Threshold Crossed: {lead} [{quoted}] {'was' if k == 1 else 'were'} {words} the threshold ({threshold!r})"
    if filled:
        reason += f" and {_count(filled, 'missing datapoint')} {'was' if filled == 1 else 'were'} treated as " \
                  f"[{filled_as}]"
    if n > 1:
        reason += f" (minimum {_count(minimum, 'datapoint')} for {transition} transition)"
    return reason + "."


def _reason_data(config: dict[str, Any], points: list[Datapoint], now: float) -> dict[str, Any]:
    metric = watched_metric(config)
    present = [p for p in points if p.value is not None]
    return {"version": "1.0", "queryDate": iso(now), "startDate": iso(points[0].timestamp),
            "statistic": metric["Stat"], "period": metric["Period"],
            "recentDatapoints": [p.value for p in present][-REASON_POINTS:],
            "threshold": float(config["Threshold"]),
            "evaluatedDatapoints": [{"timestamp": iso(p.timestamp), "sampleCount": p.sample_count, "value": p.value}
                                    for p in sorted(present, key=lambda p: -p.timestamp)[:REASON_POINTS]]}


class AlarmEvaluator(ReconcileLoop):
    def __init__(self, deps: Deps, before_read: Callable[[], Any] | None = None,
                 interval: float = EVALUATION_INTERVAL_SECONDS) -> None:
        self.d = deps
        self.before_read = before_read or (lambda: None)
        self._due: dict[str, float] = {}  # alarm name -> next scheduled evaluation (epoch seconds)
        self._lock = threading.Lock()  # one evaluation at a time (the loop, evaluate_now callers)
        self._init_loop("alarm-evaluator", interval, interval)

    # -- queries for the platform --------------------------------------------------------------------
    def firing(self, names: list[str]) -> list[tuple[str, str]]:
        """(name, StateReason) of the named alarms now in ALARM; missing alarms are not firing."""
        out = []
        for name in dict.fromkeys(names):
            res = self.d.resources.get(ALARM_KIND, name)
            if res is not None and res.status == "ALARM":
                out.append((name, res.state.get("StateReason", "")))
        return out

    def evaluate_now(self, names: list[str] | None = None) -> dict[str, str]:
        """Evaluate the named alarms (default: all) right away; returns name -> StateValue afterwards."""
        return self._evaluate(lambda res, now: names is None or res.name in names)

    def schedule(self, name: str) -> None:
        """An alarm was created or reconfigured: evaluate it in the next pass."""
        self._due[name] = 0.0
        self.wake()

    # -- the loop ------------------------------------------------------------------------------------
    def run_once(self) -> bool:
        self._evaluate(lambda res, now: self._due.get(res.name, 0.0) <= now)
        return False

    def shutdown(self) -> None:
        self._stop_loop()

    def _evaluate(self, select: Callable[[Resource, float], bool]) -> dict[str, str]:
        with self._lock:
            now = self.d.clock.time()
            every = self.d.resources.in_status(ALARM_KIND, STATE_VALUES)
            names = {r.name for r in every}
            self._due = {n: t for n, t in self._due.items() if n in names}  # forget deleted alarms
            alarms = [r for r in every if select(r, now)]
            if alarms:
                self.before_read()
            states = {}
            for res in alarms:
                try:
                    states[res.name] = self._evaluate_one(res, now)
                except Exception:
                    log.exception("alarm %s: evaluation failed", res.name)
            return states

    def _evaluate_one(self, res: Resource, now: float) -> str:
        self._due[res.name] = now + min(watched_metric(res.request)["Period"], 60)
        verdict = decide(res.request, alarm_datapoints(self.d, res.request, now), now)
        if verdict.state is None or verdict.state == res.status:
            return res.status
        try:
            change_state(self.d, res, verdict.state, verdict.reason, verdict.data, now)
        except ConcurrentUpdate:  # reconfigured or set meanwhile: look again in the next pass
            self._due[res.name] = 0.0
            return res.status
        log.info("alarm %s: %s", res.name, verdict.reason)
        return verdict.state
