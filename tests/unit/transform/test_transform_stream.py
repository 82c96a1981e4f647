"""Batch transform over objects that arrive in chunks: streaming line batches and on-the-fly gunzip."""

from __future__ import annotations

import gzip
import random

import pytest

from opensage.runner.transform_data import DataError, line_batches, stream_line_batches
from opensage.runner.transform_worker import TransformFailed, _gunzip


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _as_tuples(batches) -> list[tuple[bytes, int, int]]:
    return [(b.body, b.first, b.count) for b in batches]


def _random_lines(rng: random.Random, n: int) -> bytes:
    parts = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.1:
            parts.append(b"\n")  # blank line
        elif kind < 0.15:
            parts.append(b"  \r\n")  # whitespace-only line
        else:
            parts.append(b",".join(b"%d" % rng.randrange(1000) for _ in range(rng.randrange(1, 6))) + b"\n")
    data = b"".join(parts)
    return data if rng.random() < 0.5 else data.rstrip(b"\n")  # with and without a final newline


@pytest.mark.parametrize("seed", range(6))
def test_stream_line_batches_any_chunking_same_batches_as_whole_object(seed):
    rng = random.Random(seed)
    data = _random_lines(rng, 300)
    for limit in (0, 24, 64, 500):
        expected = _as_tuples(line_batches(data, limit))
        for size in (1, 7, 64, 1000, len(data) or 1):
            assert _as_tuples(stream_line_batches(_chunked(data, size), limit)) == expected, (limit, size)


def test_stream_line_batches_first_batch_before_the_object_ends():
    data = b"".join(b"%04d\n" % i for i in range(1000))  # 5 bytes a line

    def chunks():
        yield from _chunked(data[:100], 10)
        raise AssertionError("read past what the first batch needs")

    first = next(stream_line_batches(chunks(), 20))
    assert (first.body, first.first, first.count) == (data[:20], 1, 4)


def test_stream_line_batches_line_longer_than_limit_names_line_and_full_length():
    data = b"a\n" + b"x" * 50 + b"\nb\n"
    with pytest.raises(DataError, match=r"line 2 is 0\.00 MB, more than MaxPayloadInMB"):
        list(stream_line_batches(_chunked(data, 3), 10))


def test_stream_line_batches_empty_and_blank_objects_yield_nothing():
    assert list(stream_line_batches([], 10)) == []
    assert list(stream_line_batches([b"\n", b"  \n"], 10)) == []


def test_gunzip_concatenated_members_any_chunking_round_trips():
    data = b"".join(b"%d,%d\n" % (i, i * i) for i in range(5000))
    blob = gzip.compress(data[:7000]) + gzip.compress(data[7000:])
    for size in (1, 13, 4096, len(blob)):
        assert b"".join(_gunzip(iter(_chunked(blob, size)), "s3://b/k.gz")) == data


def test_gunzip_truncated_stream_fails_naming_object():
    blob = gzip.compress(b"1,2\n" * 1000)
    with pytest.raises(TransformFailed, match=r"s3://b/k\.gz is not gzip data .*truncated"):
        list(_gunzip(iter([blob[:-12]]), "s3://b/k.gz"))


def test_gunzip_not_gzip_fails_naming_compression_type():
    with pytest.raises(TransformFailed, match="CompressionType is Gzip"):
        list(_gunzip(iter([b"1,2,3\n4,5,6\n"]), "s3://b/plain.csv"))
