"""Amazon SQS (the minimal, durable one callback steps use) through real boto3 against the in-process platform."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("sqs-home"))


@pytest.fixture
def sqs(server):
    return server.client("sqs")


def test_create_queue_send_receive_delete_message_round_trip(sqs):
    url = sqs.create_queue(QueueName="work")["QueueUrl"]
    assert url.endswith("/work")
    assert sqs.get_queue_url(QueueName="work")["QueueUrl"] == url
    sent = sqs.send_message(QueueUrl=url, MessageBody='{"token": "abc"}', MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "callback"}})
    got = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], AttributeNames=["All"])["Messages"]
    assert [m["MessageId"] for m in got] == [sent["MessageId"]]
    assert got[0]["Body"] == '{"token": "abc"}'
    assert got[0]["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert got[0]["MessageAttributes"]["kind"]["StringValue"] == "callback"
    assert got[0]["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)


def test_receive_message_in_flight_message_returns_after_visibility_timeout(sqs):
    url = sqs.create_queue(QueueName="visibility")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="one")
    first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # in flight: nobody else gets it
    time.sleep(1.2)
    again = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert again[0]["MessageId"] == first[0]["MessageId"]
    assert again[0]["ReceiptHandle"] != first[0]["ReceiptHandle"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_receive_message_wait_time_seconds_returns_a_message_sent_meanwhile(sqs, server):
    url = sqs.create_queue(QueueName="longpoll")["QueueUrl"]
    sender = server.client("sqs")
    timer = threading.Timer(0.5, lambda: sender.send_message(QueueUrl=url, MessageBody="late"))
    timer.start()
    started = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages")
    timer.join()
    assert got and got[0]["Body"] == "late"
    assert 0.4 < time.monotonic() - started < 4


def test_receive_message_messages_come_in_send_order_up_to_max(sqs):
    url = sqs.create_queue(QueueName="ordered")["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=3)["Messages"]
    assert [m["Body"] for m in got] == ["0", "1", "2"]
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["3", "4"]


def test_fifo_queue_needs_group_and_deduplicates(sqs):
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    with pytest.raises(ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    a = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d1")
    b = sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d1")
    assert a["MessageId"] == b["MessageId"] and a["SequenceNumber"]
    sqs.send_message(QueueUrl=url, MessageBody="y", MessageGroupId="g", MessageDeduplicationId="d2")
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in first] == ["x", "y"]


def test_get_queue_url_missing_queue_is_queue_does_not_exist(sqs):
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="nope")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/000000000000/nope", MessageBody="x")


def test_create_queue_same_name_other_attributes_is_queue_name_exists(sqs):
    sqs.create_queue(QueueName="attrs", Attributes={"VisibilityTimeout": "10"})
    assert sqs.create_queue(QueueName="attrs", Attributes={"VisibilityTimeout": "10"})["QueueUrl"].endswith("/attrs")
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(QueueName="attrs", Attributes={"VisibilityTimeout": "20"})


def test_receive_message_max_number_out_of_range_is_invalid_parameter_value(sqs):
    url = sqs.create_queue(QueueName="limits")["QueueUrl"]
    with pytest.raises(ClientError) as err:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "MaxNumberOfMessages" in err.value.response["Error"]["Message"]


def test_list_queues_prefix_and_paging_then_delete_queue(sqs):
    urls = [sqs.create_queue(QueueName=f"page-{i}")["QueueUrl"] for i in range(3)]
    first = sqs.list_queues(QueueNamePrefix="page-", MaxResults=2)
    assert first["QueueUrls"] == urls[:2] and first["NextToken"]
    rest = sqs.list_queues(QueueNamePrefix="page-", MaxResults=2, NextToken=first["NextToken"])
    assert rest["QueueUrls"] == urls[2:] and "NextToken" not in rest
    sqs.send_message(QueueUrl=urls[0], MessageBody="gone with the queue")
    attrs = sqs.get_queue_attributes(QueueUrl=urls[0], AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "1" and attrs["QueueArn"].endswith(":page-0")
    sqs.delete_queue(QueueUrl=urls[0])
    assert sqs.list_queues(QueueNamePrefix="page-")["QueueUrls"] == urls[1:]


def test_messages_survive_a_control_plane_restart(tmp_path):
    home = tmp_path / "home"
    for srv in start_server(home):
        client = srv.client("sqs")
        url = client.create_queue(QueueName="durable")["QueueUrl"]
        client.send_message(QueueUrl=url, MessageBody="kept")
    for srv in start_server(home):
        client = srv.client("sqs")
        url = client.get_queue_url(QueueName="durable")["QueueUrl"]
        assert client.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "kept"


def test_send_message_batch_then_delete_message_batch_reports_each_entry(sqs):
    url = sqs.create_queue(QueueName="batches")["QueueUrl"]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "one"},
                                                         {"Id": "b", "MessageBody": "two"}])
    assert [e["Id"] for e in sent["Successful"]] == ["a", "b"] and not sent.get("Failed")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["one", "two"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "x", "ReceiptHandle": got[0]["ReceiptHandle"]}, {"Id": "y", "ReceiptHandle": "garbage"}])
    assert [e["Id"] for e in deleted["Successful"]] == ["x"]
    assert deleted["Failed"][0]["Id"] == "y" and deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(sqs.exceptions.BatchEntryIdsNotDistinct):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}])


def test_tag_queue_list_queue_tags_untag_queue(sqs):
    url = sqs.create_queue(QueueName="tagged", tags={"team": "ml"})["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"stage": "dev"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "ml", "stage": "dev"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"stage": "dev"}
