"""Metric store: raw samples and statistic sets read back as one series; dimension keys round-trip."""

from __future__ import annotations

import pytest

from opensage.store.db import make_engine, migrate
from opensage.store.metrics import MetricRepository, Sample, dimension_key, parse_dimension_key


@pytest.fixture
def repo(tmp_path) -> MetricRepository:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    return MetricRepository(engine)


@pytest.mark.parametrize("dims", [{}, {"A": "1"}, {"Job": "x-1", "B": r"c=d,e\f"}])
def test_dimension_key_escaped_values_round_trip(dims):
    assert parse_dimension_key(dimension_key(dims)) == dims


def test_dimension_key_plain_values_keep_the_stored_format():
    assert dimension_key({"TrainingJobName": "job-1", "A": "b"}) == "A=b,TrainingJobName=job-1"


def test_samples_merge_statistic_sets_at_one_timestamp(repo):
    dims = {"EndpointName": "e"}
    repo.put("NS", dims, [("Lat", 10.0, 5.0), ("Lat", 200.0, 1.0)])
    repo.put_stats("NS", dims, [("Lat", 60.0, 3, 30.0, 2.0, 20.0), ("Lat", 60.0, 2, 4.0, 1.0, 3.0)])
    repo.put_stats("NS", {"EndpointName": "other"}, [("Lat", 60.0, 9, 9.0, 1.0, 1.0)])
    assert repo.samples("NS", dims, "Lat", 0.0, 100.0) == [Sample(10.0, 1, 5.0, 5.0, 5.0),
                                                           Sample(60.0, 5, 34.0, 1.0, 20.0)]
    assert repo.series("NS", dims, "Lat") == [(10.0, 5.0), (60.0, 34.0), (200.0, 1.0)]


def test_list_metrics_hides_statistic_suffixes_and_wildcards(repo):
    repo.put_stats("NS", {"A": "1"}, [("a_b", 1.0, 1, 1.0, 1.0, 1.0)])
    repo.put("NS", {"A": "1"}, [("axb", 1.0, 1.0)])
    assert repo.list_metrics("NS") == [("NS", "a_b", "A=1"), ("NS", "axb", "A=1")]
    assert repo.list_metrics(metric="a_b") == [("NS", "a_b", "A=1")]
    assert repo.list_metrics("NS", since=5.0) == []
