"""Studies: seeded samplers repeat, a rebuilt study continues without replaying, pruners stop bad trials."""

from __future__ import annotations

from opensage.tuning.jobs import Definition
from opensage.tuning.ranges import parse_ranges
from opensage.tuning.strategies import new_study

SPACE = parse_ranges({"ContinuousParameterRanges": [{"Name": "x", "MinValue": "-2", "MaxValue": "2"}],
                      "CategoricalParameterRanges": [{"Name": "c", "Values": ["a", "b"]}]})
DEFINITIONS = [Definition(None, {}, {"Type": "Minimize", "MetricName": "loss"}, SPACE)]


def f(tuned: dict[str, str]) -> float:
    return (float(tuned["x"]) - 0.7) ** 2 + (0.5 if tuned["c"] == "b" else 0.0)


def _config(strategy: str, seed: int | None = 3, early: str = "Off") -> dict:
    return {"Strategy": strategy, "RandomSeed": seed, "TrainingJobEarlyStoppingType": early,
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 1}}


def _run(study, n: int) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        number, _, tuned = study.ask()
        study.trials[f"job-{i}"] = number
        study.tell(f"job-{i}", f(tuned), "complete")
        out.append(tuned)
    return out


def test_random_strategy_same_seed_same_trials():
    a = _run(new_study("a", _config("Random"), DEFINITIONS, "Minimize", 12), 5)
    b = _run(new_study("b", _config("Random"), DEFINITIONS, "Minimize", 12), 5)
    assert a == b


def test_bayesian_strategy_improves_on_its_random_start():
    study = new_study("bo", _config("Bayesian"), DEFINITIONS, "Minimize", 12)
    values = [f(t) for t in _run(study, 12)]
    assert min(values[3:]) < min(values[:3])
    assert min(values) < 0.05


def test_rebuilt_study_with_same_seed_does_not_replay_finished_trials():
    first = new_study("job", _config("Random"), DEFINITIONS, "Minimize", 12)
    done = _run(first, 3)
    rebuilt = new_study("job", _config("Random"), DEFINITIONS, "Minimize", 12, resumed_trials=3)
    for i, tuned in enumerate(done):
        rebuilt.trials[f"job-{i}"] = rebuilt.add_finished(DEFINITIONS[0], tuned, "complete", f(tuned), [])
    assert len(rebuilt.study.trials) == 3
    nxt = _run(rebuilt, 3)
    assert not set(map(str, nxt)) & set(map(str, done))


def test_median_pruner_stops_trial_worse_than_earlier_ones_at_same_step():
    study = new_study("med", _config("Random", early="Auto"), DEFINITIONS, "Minimize", 12)
    for i in range(3):
        number, _, _ = study.ask()
        study.trials[f"good-{i}"] = number
        assert not study.report(f"good-{i}", [1.0, 0.5, 0.2])
        study.tell(f"good-{i}", 0.2, "complete")
    number, _, _ = study.ask()
    study.trials["bad"] = number
    assert not study.report("bad", [5.0])  # warm-up step
    assert study.report("bad", [5.0, 4.0])


def test_multiple_definitions_pick_one_and_prefix_its_parameters():
    other = parse_ranges({"IntegerParameterRanges": [{"Name": "k", "MinValue": "1", "MaxValue": "5"}]})
    defs = [Definition("xgb", {}, {"Type": "Minimize", "MetricName": "loss"}, SPACE),
            Definition("knn", {}, {"Type": "Minimize", "MetricName": "loss"}, other)]
    study = new_study("multi", _config("Random"), defs, "Minimize", 12)
    seen = set()
    for _ in range(10):
        number, definition, tuned = study.ask()
        seen.add(definition.name)
        assert set(tuned) == set(definition.space.names)
        study.study.tell(number, 1.0)
    assert seen == {"xgb", "knn"}
