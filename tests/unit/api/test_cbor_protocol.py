"""RPC v2 CBOR wire handling against botocore's own serializer and parser for the same shapes."""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from opensage.api import cbor_protocol
from opensage.api.parser import SerializationException
from opensage.api.spec import service_model
from opensage.errors import ServiceError, UnknownOperation


def _op(name: str):
    return service_model("cloudwatch").operation_model(name)


def test_parse_request_from_botocore_serializer_decodes_timestamps_and_lists():
    start = dt.datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=dt.UTC)
    params = {"Namespace": "N", "MetricName": "M", "StartTime": start, "EndTime": start, "Period": 60,
              "Statistics": ["Sum"], "Dimensions": [{"Name": "A", "Value": "1"}]}
    request = create_serializer("smithy-rpc-v2-cbor").serialize_to_request(params, _op("GetMetricStatistics"))
    assert request["url_path"] == "/service/GraniteServiceVersion20100801/operation/GetMetricStatistics"
    assert request["headers"]["smithy-protocol"] == "rpc-v2-cbor"
    assert cbor_protocol.service_for_prefix("GraniteServiceVersion20100801") == "cloudwatch"
    parsed = cbor_protocol.parse_request("cloudwatch", "GetMetricStatistics", request["body"])
    assert parsed.operation.name == "GetMetricStatistics"
    assert parsed.params == params


def test_response_parses_with_botocore_parser():
    t = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    status, headers, body = cbor_protocol.response(_op("GetMetricStatistics"), {
        "Label": "M", "Datapoints": [{"Timestamp": t, "Sum": 3, "Unit": "None", "Unknown": 1}]})
    parsed = create_parser("smithy-rpc-v2-cbor").parse(
        {"status_code": status, "headers": headers, "body": body}, _op("GetMetricStatistics").output_shape)
    assert parsed["Datapoints"] == [{"Timestamp": t, "Sum": 3.0, "Unit": "None"}]


def test_error_response_carries_query_compatible_code():
    err = ServiceError("bad period", code="InvalidParameterValue")
    status, headers, body = cbor_protocol.error_response("cloudwatch", err)
    assert status == 400 and headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"
    assert cbor2.loads(body)["__type"].endswith("#InvalidParameterValueException")
    parsed = create_parser("smithy-rpc-v2-cbor").parse({"status_code": status, "headers": headers, "body": body},
                                                       None)
    assert (parsed["Error"]["Code"], parsed["Error"]["Message"]) == ("InvalidParameterValue", "bad period")


def test_parse_request_garbage_body_is_serialization_exception():
    with pytest.raises(SerializationException):
        cbor_protocol.parse_request("cloudwatch", "ListMetrics", b"\xff\x00garbage")


def test_parse_request_unknown_operation_names_it():
    with pytest.raises(UnknownOperation, match="Nope"):
        cbor_protocol.parse_request("cloudwatch", "Nope", b"")


# Issue 7 item 11: whatever cbor2 cannot read, and documents nested past MAX_DEPTH, are the client's error.
@pytest.mark.parametrize("body", [
    b"\xa1\x61a\xc1\xfb\x7f\xef\xff\xff\xff\xff\xff\xff",  # tag 1 epoch 1.8e308
    b"\xa1\x61a\xd8\x23\x61(",  # tag 35: a regular expression that does not compile
    b"\xa1\x61a\x62\xff\xfe",  # invalid UTF-8 text
    b"\xa1\x61a\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",  # a byte string claiming 2**63 bytes
    b"\xa1\x61a" + b"\x81" * 300 + b"\x00",  # within cbor2's 400 levels, deeper than ours
    b"\x81" * 100_000 + b"\x00",
])
def test_parse_request_hostile_cbor_is_serialization_exception(body):
    with pytest.raises(SerializationException):
        cbor_protocol.parse_request("cloudwatch", "ListMetrics", body)
