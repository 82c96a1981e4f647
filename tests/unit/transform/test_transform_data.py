"""Splitting, batching, JSONPath and joins of batch transform (contracts §7)."""

from __future__ import annotations

import json
import struct

import pytest

from opensage.runner.transform_data import (
    MB,
    Batch,
    DataError,
    DataProcessor,
    JsonPath,
    check_data_processing,
    line_batches,
    make_batches,
    split_lines,
    split_outputs,
    split_recordio,
    split_records,
    split_tfrecord,
)

MAGIC = struct.pack("<I", 0xCED7230A)


def _frame(payload: bytes, flag: int = 0) -> bytes:
    return MAGIC + struct.pack("<I", (flag << 29) | len(payload)) + payload + b"\0" * (-len(payload) % 4)


def _triples(pairs):
    return ((n, r, None) for n, r in pairs)


def test_split_lines_blank_lines_skipped_numbers_kept():
    assert list(split_lines(b"a\n\nb\r\nc")) == [(1, b"a"), (3, b"b"), (4, b"c")]


def test_line_batches_cut_at_newlines_within_limit_numbers_follow_input():
    data = b"".join(b"%03d\n" % i for i in range(10))  # 4 bytes a line
    batches = list(line_batches(data, 9))
    assert [b.body for b in batches[:2]] == [b"000\n001\n", b"002\n003\n"]
    assert [(b.first, b.count) for b in batches] == [(1, 2), (3, 2), (5, 2), (7, 2), (9, 2)]


def test_line_batches_unlimited_is_one_batch_and_final_newline_added():
    batches = list(line_batches(b"1,2\n3,4", 0))
    assert len(batches) == 1 and batches[0].body == b"1,2\n3,4\n" and batches[0].count == 2


def test_line_batches_line_longer_than_limit_names_line():
    with pytest.raises(DataError, match="line 2 is"):
        list(line_batches(b"a\n" + b"x" * 50 + b"\n", 10))


def test_make_batches_single_record_one_per_request():
    batches = list(make_batches(_triples(split_lines(b"a\nb\n\nc\n")), "Line", "SingleRecord", 6 * MB))
    assert [(b.body, b.first) for b in batches] == [(b"a\n", 1), (b"b\n", 2), (b"c\n", 4)]


def test_make_batches_multi_record_packs_up_to_limit_and_keeps_sources():
    records = ((i, b"xx", {"i": i}) for i in range(1, 6))
    batches = list(make_batches(records, "Line", "MultiRecord", 7, sources=True))
    assert [b.body for b in batches] == [b"xx\nxx\n", b"xx\nxx\n", b"xx\n"]
    assert batches[1].numbers == [3, 4] and batches[1].sources == [{"i": 3}, {"i": 4}]
    assert batches[1].label() == "3-4"


def test_make_batches_record_over_limit_fails_with_number():
    with pytest.raises(DataError, match="record 1 is .* MaxPayloadInMB"):
        list(make_batches(_triples([(1, b"x" * 20)]), "RecordIO", "MultiRecord", 10))


def test_split_recordio_keeps_split_record_whole_and_single_record_strips_padding():
    data = _frame(b"abc") + _frame(b"p1", 1) + _frame(b"p2", 3) + _frame(b"defg")
    records = list(split_recordio(data))
    assert [n for n, _ in records] == [1, 2, 3]
    assert records[1][1] == _frame(b"p1", 1) + _frame(b"p2", 3)
    single = list(make_batches(_triples(records), "RecordIO", "SingleRecord", MB))
    assert single[0].body == _frame(b"abc")[:11]  # no padding
    multi = list(make_batches(_triples(records), "RecordIO", "MultiRecord", MB))
    assert multi[0].body == data


def test_split_recordio_bad_magic_is_data_error():
    with pytest.raises(DataError, match="bad RecordIO magic"):
        list(split_recordio(b"\0" * 12))


def test_split_tfrecord_frames():
    def rec(p: bytes) -> bytes:
        return struct.pack("<Q", len(p)) + b"\0" * 4 + p + b"\0" * 4

    data = rec(b"one") + rec(b"three")
    assert [r for _, r in split_tfrecord(data)] == [rec(b"one"), rec(b"three")]
    assert list(split_records(b"whole", "None")) == [(1, b"whole")]


@pytest.mark.parametrize("expr,value,expected", [
    ("$", {"a": 1}, {"a": 1}),
    ("$.a", {"a": 1}, 1),
    ("$.a.b", {"a": {"b": 2}}, 2),
    ("$['a','c']", {"a": 1, "b": 2, "c": 3}, {"a": 1, "c": 3}),
    ("$[1,3,-1]", [0, 1, 2, 3, 4], [1, 3, 4]),
    ("$[2:4]", [0, 1, 2, 3, 4], [2, 3]),
    ("$[:2]", [0, 1, 2], [0, 1]),
    ("$[1:]", [0, 1, 2], [1, 2]),
    ("$[*]", [5, 6], [5, 6]),
    ("$.*", {"a": 1, "b": 2}, [1, 2]),
    ("$.features[0]", {"features": [7, 8]}, 7),
])
def test_jsonpath_subset_selects(expr, value, expected):
    assert JsonPath(expr).apply(value) == expected


@pytest.mark.parametrize("expr", ["a.b", "$..a", "$[a]", "$['a','b'.c]", "$.a?"])
def test_jsonpath_outside_subset_is_refused(expr):
    with pytest.raises(ValueError, match="JSONPath"):
        JsonPath(expr)


def test_jsonpath_missing_member_is_data_error():
    with pytest.raises(DataError, match="does not match"):
        JsonPath("$.x").apply({"a": 1})


def test_processor_json_join_object_and_non_object():
    p = DataProcessor({"JoinSource": "Input"}, "application/jsonlines")
    batch = Batch(b"", 1, 2, [1, 2], sources=[{"id": 1}, [1, 2]])
    out = p.outputs(batch, b'{"score": 0.5}\n{"score": 0.25}\n', "application/jsonlines")
    assert [json.loads(o) for o in out] == [{"id": 1, "SageMakerOutput": {"score": 0.5}},
                                            {"SageMakerInput": [1, 2], "SageMakerOutput": {"score": 0.25}}]


def test_processor_csv_input_filter_join_and_output_filter():
    p = DataProcessor({"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}, "text/csv")
    sent, parsed = p.filter_input(b"id7,1.5,2")
    assert sent == b"1.5,2" and parsed == ["id7", "1.5", "2"]
    out = p.outputs(Batch(b"", 1, 1, [1], sources=[parsed]), b"0.75\n", "text/csv")
    assert out == [b"id7,0.75"]


def test_split_outputs_json_object_with_one_list():
    values, fmt = split_outputs(b'{"predictions": [{"score": 1}, {"score": 2}]}', "application/json", 2)
    assert values == [{"score": 1}, {"score": 2}] and fmt == "json"


def test_split_outputs_count_mismatch_is_data_error():
    with pytest.raises(DataError, match="3 lines for 2 input records"):
        split_outputs(b"1\n2\n3\n", "text/csv", 2)


def test_check_data_processing_refuses_name_path_on_csv_and_binary_input():
    with pytest.raises(ValueError, match="index paths only"):
        check_data_processing({"InputFilter": "$.a"}, "text/csv")
    with pytest.raises(ValueError, match="JSON, JSON Lines and CSV"):
        check_data_processing({"JoinSource": "Input"}, "application/x-recordio-protobuf")
    with pytest.raises(ValueError, match="DataProcessing.OutputFilter"):
        check_data_processing({"OutputFilter": "$[x"}, "application/json")
    check_data_processing({"InputFilter": "$.features", "JoinSource": "Input"}, "application/json")
