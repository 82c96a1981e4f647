"""ParameterRanges -> search space: validation, scaling, string round trips, Grid enumeration."""

from __future__ import annotations

import math

import pytest

from opensage.errors import ValidationException
from opensage.tuning.ranges import parse_ranges


def test_parse_ranges_integer_continuous_categorical_builds_distributions():
    space = parse_ranges({
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "9",
                                    "ScalingType": "Logarithmic"}],
        "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.01", "MaxValue": "0.5"}],
        "CategoricalParameterRanges": [{"Name": "booster", "Values": ["gbtree", "dart"]}]})
    dists = space.distributions()
    assert (dists["max_depth"].low, dists["max_depth"].high, dists["max_depth"].log) == (2, 9, True)
    assert (dists["eta"].low, dists["eta"].high, dists["eta"].log) == (0.01, 0.5, False)
    assert list(dists["booster"].choices) == ["gbtree", "dart"]


def test_reverse_logarithmic_samples_one_minus_value_on_a_log_scale():
    r = parse_ranges({"ContinuousParameterRanges": [
        {"Name": "momentum", "MinValue": "0.9", "MaxValue": "0.999", "ScalingType": "ReverseLogarithmic"}]}).ranges[0]
    d = r.distribution()
    assert d.log and d.low == pytest.approx(0.001) and d.high == pytest.approx(0.1)
    assert float(r.to_string(0.01)) == pytest.approx(0.99)
    assert r.from_string("0.99") == pytest.approx(0.01)


@pytest.mark.parametrize(("ranges", "words"), [
    ({"IntegerParameterRanges": [{"Name": "a", "MinValue": "1.5", "MaxValue": "3"}]}, ["'a'", "integer"]),
    ({"ContinuousParameterRanges": [{"Name": "a", "MinValue": "1", "MaxValue": "1"}]}, ["'a'", "less than"]),
    ({"ContinuousParameterRanges": [{"Name": "a", "MinValue": "nan", "MaxValue": "1"}]}, ["'a'", "finite"]),
    ({"IntegerParameterRanges": [{"Name": "a", "MinValue": "0", "MaxValue": "3", "ScalingType": "Logarithmic"}]},
     ["'a'", "greater than 0"]),
    ({"IntegerParameterRanges": [{"Name": "a", "MinValue": "1", "MaxValue": "3",
                                  "ScalingType": "ReverseLogarithmic"}]}, ["'a'", "continuous"]),
    ({"CategoricalParameterRanges": [{"Name": "c", "Values": ["x", "x"]}]}, ["'c'", "more than once"]),
    ({"CategoricalParameterRanges": [{"Name": "c", "Values": []}]}, ["'c'", "at least one"]),
    ({}, ["at least one"]),
    ({"AutoParameters": [{"Name": "a", "ValueHint": "1"}]}, ["at least one"]),  # resolved by tuning/autotune.py
])
def test_parse_ranges_invalid_raises_validation_exception_naming_it(ranges, words):
    with pytest.raises(ValidationException) as e:
        parse_ranges(ranges)
    for word in words:
        assert word in e.value.message


def test_params_from_strings_round_trips_and_refuses_values_outside_the_range():
    space = parse_ranges({
        "IntegerParameterRanges": [{"Name": "d", "MinValue": "2", "MaxValue": "9"}],
        "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.01", "MaxValue": "0.5"}]})
    tuned = {r.name: r.to_string(v) for r, v in zip(space.ranges, (4, 0.123), strict=True)}
    assert tuned == {"d": "4", "eta": "0.123"}
    assert space.params_from_strings(tuned) == {"d": 4, "eta": 0.123}
    assert space.params_from_strings({"d": "12", "eta": "0.1"}) is None  # a warm-start parent's wider range
    assert space.params_from_strings({"d": "4"}) is None


def test_grid_enumerates_categorical_and_integer_values_in_a_fixed_order():
    space = parse_ranges({"IntegerParameterRanges": [{"Name": "d", "MinValue": "1", "MaxValue": "2"}],
                          "CategoricalParameterRanges": [{"Name": "b", "Values": ["x", "y", "z"]}]})
    assert space.grid_size() == 6 == math.prod([2, 3])
    assert space.grid() == [{"d": d, "b": b} for d in ("1", "2") for b in ("x", "y", "z")]
