"""Endpoint metrics as SageMaker publishes them, aggregated in memory and flushed as statistic sets.

InvokeEndpoint is latency-critical, so ``record`` only appends one tuple to a deque (atomic: no lock, no
arithmetic on the request's path); the flusher folds them into per (endpoint, variant, minute) buckets before
writing (at most ``MAX_UNFOLDED`` wait: past that ``record`` folds them itself). A background thread
(``start``) flushes the buckets every few seconds as
CloudWatch statistic sets (four rows per metric per minute, whatever the request rate) and samples the
replicas' CPU and memory from /proc. Reads through the CloudWatch API call ``flush`` first.

Namespace ``AWS/SageMaker``, dimensions EndpointName + VariantName:
  Invocations, InvocationsPerInstance (1/instances per request), ModelLatency and OverheadLatency
  (microseconds), Invocation4XXErrors / Invocation5XXErrors (1 when the model answered 4xx / 5xx, else 0),
  InvocationModelErrors (1 when the model did not answer 2xx: error status, timeout, unreachable).
  ConcurrentRequestsPerModel: high resolution (10-second periods), the average number of requests inside a
  model container over the period, per instance. Only completed requests are known (``record`` runs when
  the model answered), so a request's time in the container is spread over the periods it overlapped; a
  period is written once, GRACE seconds after it closed, with 0 for a live variant that had no request.
  Model time older than that (a request over ~20 s) is not counted in the periods already written.
  ServerlessProvisionedConcurrencyUtilization: serverless variants with ProvisionedConcurrency only, one value
  per minute: the average number of requests in flight over the minute / the variant's provisioned
  concurrency (model seconds / (60 x ProvisionedConcurrency)), written the same way (once the minute closed,
  0 for a live variant without requests).
Namespace ``/aws/sagemaker/Endpoints``, same dimensions: CPUUtilization (percent, summed over cores, so up
to 100 x cores) and MemoryUtilization (percent of the machine's memory), one sample per instance.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

INVOCATION_NAMESPACE = "AWS/SageMaker"
UTILIZATION_NAMESPACE = "/aws/sagemaker/Endpoints"
FLUSH_INTERVAL_SECONDS = 10.0
CONCURRENCY_METRIC = "ConcurrentRequestsPerModel"
HIGH_RESOLUTION_PERIOD = 10  # seconds: SageMaker's high-resolution endpoint metrics
CONCURRENCY_GRACE_SECONDS = 10.0  # a period is written this long after it closed (late answers still count)
PC_UTILIZATION_METRIC = "ServerlessProvisionedConcurrencyUtilization"
PC_PERIOD = 60
LIVE_STATUSES = ("InService", "Updating", "SystemUpdating", "RollingBack")
KNOWN_UNITS = {
    **{(INVOCATION_NAMESPACE, n): "None" for n in (
        "Invocations", "InvocationsPerInstance", "Invocation4XXErrors", "Invocation5XXErrors",
        "InvocationModelErrors", CONCURRENCY_METRIC, PC_UTILIZATION_METRIC)},
    (INVOCATION_NAMESPACE, "ModelLatency"): "Microseconds",
    (INVOCATION_NAMESPACE, "OverheadLatency"): "Microseconds",
    (UTILIZATION_NAMESPACE, "CPUUtilization"): "Percent",
    (UTILIZATION_NAMESPACE, "MemoryUtilization"): "Percent",
}

StatSet = tuple[str, float, float, float, float, float]  # name, timestamp, count, sum, min, max
MAX_UNFOLDED = 100_000  # records waiting for the flusher (~10 MB); a stalled flusher cannot grow memory past it


@dataclass
class _Stat:
    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def as_set(self, name: str, t: float) -> StatSet | None:
        return (name, t, self.count, self.total, self.minimum, self.maximum) if self.count else None


@dataclass
class _Bucket:
    invocations: int = 0
    per_instance: _Stat = field(default_factory=_Stat)
    model: _Stat = field(default_factory=_Stat)
    overhead: _Stat = field(default_factory=_Stat)
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_errors: int = 0

    def sets(self, t: float) -> list[StatSet]:
        n = self.invocations
        out = [("Invocations", t, n, n, 1.0, 1.0),
               self.per_instance.as_set("InvocationsPerInstance", t),
               self.model.as_set("ModelLatency", t), self.overhead.as_set("OverheadLatency", t)]
        for name, k in (("Invocation4XXErrors", self.errors_4xx), ("Invocation5XXErrors", self.errors_5xx),
                        ("InvocationModelErrors", self.model_errors)):
            out.append((name, t, n, k, 0.0 if k < n else 1.0, 1.0 if k else 0.0))
        return [s for s in out if s is not None]


class EndpointMetrics:
    """``record`` in the request path; ``flush`` / the flusher thread write to the metric store."""

    def __init__(self, deps: Any, interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self.d = deps
        self.interval = interval
        self._pending: dict[tuple[str, str, int], _Bucket] = {}
        # (time, endpoint, variant, instances, model s, overhead s, status) per request, not yet in _pending
        self._unfolded: deque[tuple[float, str, str, int, float | None, float, int | None]] = deque()
        self._lock = threading.Lock()  # the folded state: flushers and folds only, never a request alone
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu = CpuSampler()
        # (endpoint, variant, 10-second period start) -> container seconds / (period x instances)
        self._concurrency: dict[tuple[str, str, int], float] = {}
        self._concurrency_written: dict[tuple[str, str], int] = {}  # last period written per variant
        # (endpoint, variant, minute) -> model seconds in it; -> ServerlessProvisionedConcurrencyUtilization
        self._model_seconds: dict[tuple[str, str, int], float] = {}
        self._pc_written: dict[tuple[str, str], int] = {}  # last minute written per provisioned variant
        # (endpoint, variant) -> ProvisionedConcurrency, as the flusher thread last read the endpoint rows
        self._provisioned: dict[tuple[str, str], int] = {}

    # -- request path --------------------------------------------------------------------------------
    def record(self, endpoint: str, variant: str, instances: int, model_seconds: float | None,
               overhead_seconds: float, model_status: int | None) -> None:
        """One InvokeEndpoint that reached a variant. ``model_seconds`` / ``model_status`` are None when the
        model server never answered (timeout, unreachable)."""
        unfolded = self._unfolded
        unfolded.append((self.d.clock.time(), endpoint, variant, instances, model_seconds, overhead_seconds,
                         model_status))
        if len(unfolded) > MAX_UNFOLDED:
            self._fold()

    def _fold(self) -> None:
        """Move the recorded requests into the buckets (the flusher does this before each write)."""
        unfolded = self._unfolded
        with self._lock:
            while True:
                try:
                    record = unfolded.popleft()  # deque.append / popleft are atomic: requests never wait here
                except IndexError:
                    return
                self._add(*record)

    def _add(self, now: float, endpoint: str, variant: str, instances: int, model_seconds: float | None,
             overhead_seconds: float, model_status: int | None) -> None:
        """One request into the buckets; the caller holds ``_lock``."""
        minute = int(now // 60 * 60)
        key = (endpoint, variant, minute)
        spans = _overlaps(now - model_seconds, now) if model_seconds else []
        minutes = _overlaps(now - model_seconds, now, PC_PERIOD) if model_seconds else []
        for m, seconds in minutes:
            mk = (endpoint, variant, m)
            self._model_seconds[mk] = self._model_seconds.get(mk, 0.0) + seconds
        for period, seconds in spans:
            ck = (endpoint, variant, period)
            self._concurrency[ck] = self._concurrency.get(ck, 0.0) + seconds / (
                HIGH_RESOLUTION_PERIOD * max(instances, 1))
        b = self._pending.get(key)
        if b is None:
            b = self._pending[key] = _Bucket()
        b.invocations += 1
        b.per_instance.add(1.0 / max(instances, 1))
        b.overhead.add(overhead_seconds * 1e6)
        if model_seconds is not None:
            b.model.add(model_seconds * 1e6)
        if model_status is None or not 200 <= model_status < 300:
            b.model_errors += 1
        if model_status is not None and 400 <= model_status < 500:
            b.errors_4xx += 1
        elif model_status is not None and model_status >= 500:
            b.errors_5xx += 1

    # -- flushing ------------------------------------------------------------------------------------
    def flush(self, final: bool = False, live: list[tuple[str, str]] | None = None) -> int:
        """Write what was recorded since the last flush; returns the number of statistic sets written.

        Concurrency periods are written once closed (all of them when ``final``); ``live`` variants get a 0
        for each closed period without a request since the last one written (an idle model, not no data)."""
        with self._flush_lock:
            self._fold()
            closed = self._last_closed_period(final)
            with self._lock:
                pending, self._pending = self._pending, {}
                concurrency = {k: v for k, v in self._concurrency.items() if k[2] <= closed}
                for k in concurrency:
                    del self._concurrency[k]
            concurrency_sets = self._concurrency_sets(concurrency, closed, live or [])
            pc_sets = self._provisioned_sets(final, self._provisioned)
            if not pending and not concurrency_sets and not pc_sets:
                return 0
            written = 0
            with self.d.metrics.engine.begin() as conn:
                for (endpoint, variant, minute), bucket in pending.items():
                    sets = bucket.sets(float(minute))
                    self.d.metrics.put_stats(INVOCATION_NAMESPACE, _dims(endpoint, variant), sets, conn=conn)
                    written += len(sets)
                for (endpoint, variant), sets in [*concurrency_sets.items(), *pc_sets.items()]:
                    self.d.metrics.put_stats(INVOCATION_NAMESPACE, _dims(endpoint, variant), sets, conn=conn)
                    written += len(sets)
            return written

    def _provisioned_sets(self, final: bool, provisioned: dict[tuple[str, str], int]
                          ) -> dict[tuple[str, str], list[StatSet]]:
        """ServerlessProvisionedConcurrencyUtilization of the closed minutes, for the variants that have
        provisioned concurrency (the model seconds of other variants are dropped). ``provisioned`` is read by
        the flusher thread every few seconds, so it knows a variant that served a minute GRACE seconds after
        the minute closed, when the minute is written."""
        closed = 2**62 if final else \
            int((self.d.clock.time() - CONCURRENCY_GRACE_SECONDS) // PC_PERIOD * PC_PERIOD) - PC_PERIOD
        with self._lock:
            seconds = {k: v for k, v in self._model_seconds.items() if k[2] <= closed}
            for k in seconds:
                del self._model_seconds[k]
        out: dict[tuple[str, str], list[StatSet]] = {}
        for (endpoint, variant, minute), value in sorted(seconds.items()):
            pc = provisioned.get((endpoint, variant))
            if pc:
                u = value / (PC_PERIOD * pc)
                out.setdefault((endpoint, variant), []).append((PC_UTILIZATION_METRIC, float(minute), 1, u, u, u))
        for key in {*provisioned, *out}:
            written = {int(s[1]) for s in out.get(key, [])}
            last = self._pc_written.get(key)
            if key in provisioned and not final:  # idle minutes: 0, at most five minutes back
                first = max(last + PC_PERIOD if last is not None else closed, closed - 5 * PC_PERIOD)
                for minute in range(first, closed + 1, PC_PERIOD):
                    if minute not in written:
                        out.setdefault(key, []).append((PC_UTILIZATION_METRIC, float(minute), 1, 0.0, 0.0, 0.0))
                        written.add(minute)
            if written:
                self._pc_written[key] = max(max(written), last if last is not None else -1)
        return out

    def _last_closed_period(self, final: bool) -> int:
        if final:
            return 2**62
        period = HIGH_RESOLUTION_PERIOD
        return int((self.d.clock.time() - CONCURRENCY_GRACE_SECONDS) // period * period) - period

    def _concurrency_sets(self, values: dict[tuple[str, str, int], float], closed: int,
                          live: list[tuple[str, str]]) -> dict[tuple[str, str], list[StatSet]]:
        """One sample per period (count 1, so Average = Sum = the period's value), zeros for idle periods."""
        out: dict[tuple[str, str], list[StatSet]] = {}
        for (endpoint, variant, period), value in sorted(values.items()):
            out.setdefault((endpoint, variant), []).append((CONCURRENCY_METRIC, float(period), 1, value, value, value))
        for key in {*live, *out}:
            written = {int(s[1]) for s in out.get(key, [])}
            last = self._concurrency_written.get(key)
            if key in live and closed < 2**62:
                # idle periods since the last one written, at most a minute back (a fresh start has no history)
                first = max(last + HIGH_RESOLUTION_PERIOD if last is not None else closed,
                            closed - 5 * HIGH_RESOLUTION_PERIOD)
                for period in range(first, closed + 1, HIGH_RESOLUTION_PERIOD):
                    if period not in written:
                        out.setdefault(key, []).append((CONCURRENCY_METRIC, float(period), 1, 0.0, 0.0, 0.0))
                        written.add(period)
            if written:
                self._concurrency_written[key] = max(max(written), last if last is not None else -1)
        return out

    def sample_utilization(self) -> int:
        """CPU / memory of every live replica (its whole process tree), one point per instance."""
        fleets = live_fleets(self.d)
        if not fleets:
            self._cpu.forget_all()
            return 0
        tree = ProcessTree.scan()
        now = self.d.clock.time()
        written = 0
        with self.d.metrics.engine.begin() as conn:
            for (endpoint, variant), pids in fleets.items():
                points = []
                for pid in pids:
                    family = tree.family(pid)
                    cpu = self._cpu.percent(pid, sum(tree.cpu_ticks(p) for p in family))
                    if cpu is not None:
                        points.append(("CPUUtilization", now, cpu))
                    points.append(("MemoryUtilization", now, tree.memory_percent(family)))
                self.d.metrics.put(UTILIZATION_NAMESPACE, _dims(endpoint, variant), points, conn=conn)
                written += len(points)
        self._cpu.keep({p for pids in fleets.values() for p in pids})
        return written

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="endpoint-metrics", daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._safely(lambda: self.flush(final=True))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._safely(self._refresh_provisioned)
            self._safely(lambda: self.flush(live=list(live_fleets(self.d))))
            self._safely(self.sample_utilization)

    def _refresh_provisioned(self) -> int:
        self._provisioned = provisioned_concurrency(self.d)
        return len(self._provisioned)

    @staticmethod
    def _safely(fn: Callable[[], int]) -> None:
        try:
            fn()
        except Exception:
            log.exception("endpoint metrics: %s failed", getattr(fn, "__name__", fn))


def _overlaps(start: float, end: float, period: int = HIGH_RESOLUTION_PERIOD) -> list[tuple[int, float]]:
    """(period start, seconds of [start, end] inside it) for every period the span touches."""
    out = []
    p = int(start // period * period)
    while p < end:
        seconds = min(end, p + period) - max(start, p)
        if seconds > 0:
            out.append((p, seconds))
        p += period
    return out


def _dims(endpoint: str, variant: str) -> dict[str, str]:
    return {"EndpointName": endpoint, "VariantName": variant}


def live_fleets(deps: Any) -> dict[tuple[str, str], list[int]]:
    """(endpoint, variant) -> replica pids of the routed fleet, from the endpoint rows' state."""
    out: dict[tuple[str, str], list[int]] = {}
    for ep in deps.resources.in_status("endpoint", LIVE_STATUSES):
        for variant in (ep.state.get("_fleet") or {}).get("variants", []):
            pids = [int(r["pid"]) for r in variant.get("replicas", []) if r.get("pid")]
            if pids:
                out[(ep.name, variant["name"])] = pids
    return out


def provisioned_concurrency(deps: Any) -> dict[tuple[str, str], int]:
    """(endpoint, variant) -> ProvisionedConcurrency of the live serverless variants that have one."""
    out: dict[tuple[str, str], int] = {}
    for ep in deps.resources.in_status("endpoint", LIVE_STATUSES):
        for variant in (ep.state.get("_fleet") or {}).get("variants", []):
            pc = (variant.get("serverless") or {}).get("ProvisionedConcurrency")
            if pc:
                out[(ep.name, variant["name"])] = int(pc)
    return out


class ProcessTree:
    """One pass over /proc: parent links, CPU ticks and resident memory of every process."""

    PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, stats: dict[int, tuple[int, int, int]], mem_total: int) -> None:
        self.stats = stats  # pid -> (ppid, utime + stime ticks, rss pages)
        self.mem_total = mem_total
        self.children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            self.children.setdefault(ppid, []).append(pid)

    @classmethod
    def scan(cls, proc: str = "/proc") -> ProcessTree:
        stats: dict[int, tuple[int, int, int]] = {}
        for entry in os.listdir(proc):
            if entry.isdigit():
                parsed = _read_stat(f"{proc}/{entry}/stat")
                if parsed is not None:
                    stats[int(entry)] = parsed
        return cls(stats, _mem_total(f"{proc}/meminfo"))

    def family(self, pid: int) -> list[int]:
        if pid not in self.stats:
            return []
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(self.children.get(p, []))
        return out

    def cpu_ticks(self, pid: int) -> int:
        return self.stats[pid][1]

    def memory_percent(self, pids: list[int]) -> float:
        rss = sum(self.stats[p][2] for p in pids) * self.PAGE
        return 100.0 * rss / self.mem_total if self.mem_total else 0.0


def _read_stat(path: str) -> tuple[int, int, int] | None:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None  # the process exited during the scan
    fields = text[text.rfind(")") + 2:].split()  # the command name may contain spaces and parentheses
    # fields[0] is field 3 of proc(5): state; ppid is field 4, utime 14, stime 15, rss 24.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21])


def _mem_total(path: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class CpuSampler:
    """CPU percent of a process tree between two samples (100 = one core busy)."""

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time

        self.clock = clock or time.monotonic
        self._last: dict[int, tuple[float, int]] = {}

    def percent(self, pid: int, ticks: int) -> float | None:
        now = self.clock()
        prev = self._last.get(pid)
        self._last[pid] = (now, ticks)
        if prev is None or now <= prev[0]:
            return None
        return max(0.0, 100.0 * (ticks - prev[1]) / self.HZ / (now - prev[0]))

    def keep(self, pids: set[int]) -> None:
        for pid in list(self._last):
            if pid not in pids:
                del self._last[pid]

    def forget_all(self) -> None:
        self._last.clear()
