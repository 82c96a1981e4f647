"""Completion criteria over finished child rows: best-not-improving count and convergence."""

from __future__ import annotations

from opensage.store.resources import Resource
from opensage.tuning import reconciler

REQUEST = {"HyperParameterTuningJobConfig": {
    "Strategy": "Bayesian", "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
    "ResourceLimits": {"MaxNumberOfTrainingJobs": 50, "MaxParallelTrainingJobs": 1},
    "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "x", "MinValue": "0", "MaxValue": "1"}]}},
    "TrainingJobDefinition": {}}


def _rows(values: list[float]) -> list[Resource]:
    return [Resource("training-job", f"t-{i:03d}-00000000", f"arn:{i}", "Completed", float(i), float(i), {},
                     {"TrainingEndTime": float(i), "FinalMetricDataList": [{"MetricName": "loss", "Value": v}]})
            for i, v in enumerate(values)]


def test_not_improving_counts_completed_jobs_since_the_best():
    assert reconciler._not_improving(_rows([3.0, 2.0, 2.5, 2.1, 2.0]), REQUEST) == 3
    assert reconciler._not_improving(_rows([3.0, 2.0, 1.0]), REQUEST) == 0


def test_converged_when_last_window_brings_no_relative_gain():
    flat = [5.0, 1.0] + [1.0 + 0.01 * i for i in range(reconciler.CONVERGENCE_WINDOW)]
    assert reconciler._converged(_rows(flat), REQUEST)
    improving = [5.0 - 0.1 * i for i in range(reconciler.CONVERGENCE_WINDOW + 2)]
    assert not reconciler._converged(_rows(improving), REQUEST)
    assert not reconciler._converged(_rows([1.0] * reconciler.CONVERGENCE_WINDOW), REQUEST)  # too few yet
