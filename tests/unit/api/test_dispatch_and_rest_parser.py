"""Dispatcher handler caching, request ids, and the rest-json parser's per-operation plan."""

import asyncio
import uuid

import pytest

from opensage.api import parser
from opensage.api.dispatch import Dispatcher, RequestContext, new_request_id
from opensage.errors import UnknownOperation, ValidationError


def test_new_request_id_many_are_distinct_version_4_uuids():
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for rid in list(ids)[:200]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert uuid.UUID(RequestContext().request_id).version == 4


class _Runtime:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def invoke_endpoint(self, ctx, params):
        return {"Body": self.tag.encode(), "ContentType": "text/plain"}


def _invoke(name: str = "ep") -> parser.ParsedRequest:
    return parser.parse_rest_json("sagemaker-runtime", "POST", f"/endpoints/{name}/invocations", "",
                                  {"Content-Type": "text/csv"}, b"1,2")


def test_dispatch_async_runtime_invalid_name_raises_validation_error_every_time():
    d = Dispatcher()
    d.register("sagemaker-runtime", _Runtime("a"))
    for _ in range(2):  # the second call takes the cached handler; validation still runs
        with pytest.raises(ValidationError, match="endpointName"):
            asyncio.run(d.dispatch_async(RequestContext(), _invoke("bad_name!")))


def test_dispatch_async_handler_registered_later_is_found():
    d = Dispatcher()
    with pytest.raises(UnknownOperation):
        asyncio.run(d.dispatch_async(RequestContext(), _invoke()))
    d.register("sagemaker-runtime", _Runtime("late"))
    assert asyncio.run(d.dispatch_async(RequestContext(), _invoke()))["Body"] == b"late"


def test_dispatch_sync_handler_runs_in_threadpool_and_returns_result():
    class Sync:
        def invoke_endpoint(self, ctx, params):
            return {"Body": params["Body"]}

    d = Dispatcher()
    d.register("sagemaker-runtime", Sync())
    assert asyncio.run(d.dispatch_async(RequestContext(), _invoke()))["Body"] == b"1,2"


def test_parse_rest_json_headers_any_case_fill_members_in_model_order():
    req = parser.parse_rest_json(
        "sagemaker-runtime", "POST", "/endpoints/my-ep/invocations", "",
        {"x-amzn-sagemaker-target-variant": "B", "Accept": "text/csv", "Content-Type": "text/csv",
         "X-Amzn-SageMaker-Custom-Attributes": "k=v", "X-Unrelated": "1"}, b"1,2")
    assert req.operation.name == "InvokeEndpoint"
    assert req.params == {"EndpointName": "my-ep", "ContentType": "text/csv", "Accept": "text/csv",
                          "CustomAttributes": "k=v", "TargetVariant": "B", "Body": b"1,2"}
    assert list(req.params) == ["EndpointName", "ContentType", "Accept", "CustomAttributes", "TargetVariant",
                                "Body"]


def test_parse_rest_json_integer_header_bad_value_names_the_value():
    with pytest.raises(Exception, match="'soon' is not a valid integer"):
        parser.parse_rest_json("sagemaker-runtime", "POST", "/endpoints/ep/async-invocations", "",
                               {"X-Amzn-SageMaker-RequestTTLSeconds": "soon"}, b"")


def test_parse_rest_json_unknown_path_is_unknown_operation():
    with pytest.raises(UnknownOperation, match="POST /endpoints/ep/elsewhere"):
        parser.parse_rest_json("sagemaker-runtime", "POST", "/endpoints/ep/elsewhere", "", {}, b"")


def test_dispatch_async_remembered_valid_request_still_rejects_changed_members():
    d = Dispatcher()
    d.register("sagemaker-runtime", _Runtime("ok"))
    good = _invoke("ep")
    for _ in range(2):
        assert asyncio.run(d.dispatch_async(RequestContext(), good))["Body"] == b"ok"
    too_long = _invoke("ep")
    too_long.params["ContentType"] = "x" * 1025
    with pytest.raises(ValidationError, match="contentType"):
        asyncio.run(d.dispatch_async(RequestContext(), too_long))
    not_bytes = _invoke("ep")
    not_bytes.params["Body"] = "1,2"
    with pytest.raises(ValidationError, match="body"):
        asyncio.run(d.dispatch_async(RequestContext(), not_bytes))


def test_flat_key_distinguishes_types_and_skips_nested_values():
    from opensage.api.dispatch import _flat_key

    assert _flat_key("Op", {"A": True}) != _flat_key("Op", {"A": 1})
    assert _flat_key("Op", {"Body": b"a"}) == _flat_key("Op", {"Body": b"bb"})
    assert _flat_key("Op", {"A": ["x"]}) is None and _flat_key("Op", {"A": {"k": "v"}}) is None


# Issue 7 item 11: malformed documents are SerializationException (400), never RecursionError / 500.
@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError inside json.loads
    b'{"NameContains":' + b"[" * 100 + b"]" * 100 + b"}",  # parses, but deeper than MAX_DEPTH
    b'{"MaxResults": NaN}',
    b'{"NameContains": "\\ud800"}',  # a lone surrogate cannot be stored or encoded
    b'{"NameContains": "\xed\xa0\x80"}',  # the same surrogate UTF-8-encoded (json.loads would let it pass)
    '{"NameContains": "x"}'.encode("utf-16"),
    b'{"NameContains": "\xff"}',
    b"[1]",
])
def test_parse_json_protocol_malformed_body_is_serialization_exception(body):
    with pytest.raises(parser.SerializationException):
        parser.parse_json_protocol("sagemaker", "SageMaker.ListTrainingJobs", body)


def test_parse_json_protocol_nesting_within_limit_parses():
    body = b'{"NameContains":' + b"[" * 40 + b"]" * 40 + b"}"
    assert parser.parse_json_protocol("sagemaker", "SageMaker.ListTrainingJobs", body).params["NameContains"]


@pytest.mark.parametrize("value", [b"1e308", b"-1e308", b"1e400", b'"1e308"', b'"9999-99-99"'])
def test_parse_json_protocol_timestamp_out_of_range_is_validation_exception_naming_member(value):
    from opensage.api.validate import validate
    from opensage.errors import ValidationException

    req = parser.parse_json_protocol("sagemaker", "SageMaker.ListTrainingJobs",
                                     b'{"CreationTimeAfter": ' + value + b"}")
    with pytest.raises(ValidationException, match="creationTimeAfter.*Member must be a timestamp"):
        validate(req.params, req.operation.input_shape)


def test_parse_rest_json_timestamp_header_out_of_range_is_validation_error():
    from opensage.api.spec import service_model

    shape = service_model("sagemaker").operation_model("ListTrainingJobs").input_shape.members["CreationTimeAfter"]
    with pytest.raises(parser.ValidationException):
        parser._scalar("1e308", shape)


def test_parse_query_protocol_invalid_utf8_body_is_malformed_query_string():
    with pytest.raises(parser.MalformedQueryString):
        parser.parse_query_protocol("sts", b"Action=GetCallerIdentity&Version=2011-06-15&X=\xff", "")
    with pytest.raises(parser.MalformedQueryString):
        parser.parse_query_protocol("sts", b"Action=GetCallerIdentity&Version=2011-06-15&X=%ff", "")
