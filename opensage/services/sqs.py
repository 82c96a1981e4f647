"""A minimal Amazon SQS (AWS JSON 1.0, ``X-Amz-Target: AmazonSQS.*``), durable in the metadata store.

Why: a pipeline's Callback step sends its token to the queue named by ``SqsQueueUrl`` and a consumer
receives it with boto3; no client may reach real AWS. Queues and messages are resource rows (kinds
``sqs-queue`` and ``sqs-message``, a message's parent is its queue), so a restart loses nothing.

What is served: CreateQueue, GetQueueUrl, ListQueues, GetQueueAttributes, SetQueueAttributes, DeleteQueue,
PurgeQueue, SendMessage, ReceiveMessage (VisibilityTimeout, WaitTimeSeconds long polling, MaxNumberOfMessages,
system and message attributes), DeleteMessage, ChangeMessageVisibility, their *Batch forms, and queue tags. FIFO queues keep order, need a
MessageGroupId, deduplicate for 5 minutes and hold back a group while one of its messages is in flight.
ReceiveMessage scans a queue's rows in send order: fine for the queues a platform like this holds (callback
tokens, work lists), not for millions of messages.

A queue is named by the last segment of its URL: a definition that names
``https://sqs.us-east-1.amazonaws.com/<account>/<name>`` reaches the local queue ``<name>``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import struct
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlparse

from opensage.errors import ServiceError
from opensage.services.base import Deps, open_next_token, seal_next_token
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, ListQuery, Resource

QUEUE = "sqs-queue"
MESSAGE = "sqs-message"
SCAN_PAGE = 200
DEDUP_WINDOW = 300.0  # FIFO deduplication interval, seconds
POLL_INTERVAL = 0.1  # long polling: seconds between two looks at the queue
# attribute -> (default, min, max) for the numeric queue attributes SQS lets a caller set
NUMERIC = {"DelaySeconds": (0, 0, 900), "MaximumMessageSize": (262144, 1024, 1048576),
           "MessageRetentionPeriod": (345600, 60, 1209600), "ReceiveMessageWaitTimeSeconds": (0, 0, 20),
           "VisibilityTimeout": (30, 0, 43200)}
SETTABLE = {*NUMERIC, "Policy", "RedrivePolicy", "RedriveAllowPolicy", "FifoQueue", "ContentBasedDeduplication",
            "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "DeduplicationScope", "FifoThroughputLimit",
            "SqsManagedSseEnabled"}
SYSTEM_ATTRIBUTES = ("SenderId", "SentTimestamp", "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp",
                     "MessageGroupId", "MessageDeduplicationId", "SequenceNumber")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
_BODY_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class SqsError(ServiceError):
    """SQS's errors: the code is the modeled shape name (botocore maps it through x-amzn-query-error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code, status=400)


def invalid_parameter(message: str) -> SqsError:
    return SqsError("InvalidParameterValue", message)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def attributes_md5(attributes: dict[str, Any]) -> str:
    """MD5OfMessageAttributes as SQS computes it: per name in order, length-prefixed name, data type, a
    transport byte (1 string, 2 binary) and the length-prefixed value."""
    out = bytearray()

    def put(raw: bytes) -> None:
        out.extend(struct.pack(">I", len(raw)))
        out.extend(raw)

    for name in sorted(attributes):
        value = attributes[name]
        put(name.encode())
        put(value["DataType"].encode())
        if value.get("BinaryValue") is not None:
            out.append(2)
            raw = value["BinaryValue"]
            put(raw if isinstance(raw, bytes) else base64.b64decode(raw))
        else:
            out.append(1)
            put(str(value.get("StringValue", "")).encode())
    return md5_hex(bytes(out))


class SqsService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self._seq = itertools.count()
        self._lock = threading.Lock()

    # -- names -------------------------------------------------------------------------------------------
    def _arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.d.settings.region}:{self.d.settings.account}:{name}"

    def queue_url(self, name: str) -> str:
        return f"{self.d.settings.endpoint_url}/{self.d.settings.account}/{name}"

    @staticmethod
    def queue_name(url: str) -> str:
        """The queue a URL names (its last path segment); a bare name is accepted too."""
        path = urlparse(url).path if "://" in url else url
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise SqsError("InvalidAddress", f"The address {url} is not valid for this endpoint.")
        return name

    def _queue(self, url: str) -> Resource:
        res = self.d.resources.get(QUEUE, self.queue_name(url))
        if res is None:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return res

    def _next_name(self, now: float) -> str:
        """Message rows sort by (creation time, name): a per-process counter keeps same-instant sends in order."""
        with self._lock:
            return f"{int(now * 1e6):017d}-{next(self._seq):08d}-{uuid.uuid4().hex[:8]}"

    # -- queues ------------------------------------------------------------------------------------------
    def create_queue(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["QueueName"]
        attrs = self._checked_attributes(params.get("Attributes") or {})
        fifo = name.endswith(".fifo")
        base = name[:-5] if fifo else name
        if not _NAME.fullmatch(base) or len(name) > 80:
            raise invalid_parameter("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in "
                                    "length")
        if (attrs.get("FifoQueue") == "true") != fifo:
            if fifo and "FifoQueue" not in attrs:
                raise invalid_parameter("The name of a FIFO queue can only include alphanumeric characters, hyphens, "
                                        "or underscores, must end with .fifo suffix. Set the FifoQueue attribute to "
                                        "true.")
            raise invalid_parameter("The name of a FIFO queue can only include alphanumeric characters, hyphens, or "
                                    "underscores, must end with .fifo suffix.")
        if not fifo and "ContentBasedDeduplication" in attrs:
            raise SqsError("InvalidAttributeName", "Unknown Attribute ContentBasedDeduplication.")
        existing = self.d.resources.get(QUEUE, name)
        if existing is not None:
            for key, value in attrs.items():
                if existing.request["Attributes"].get(key) != value:
                    raise SqsError("QueueNameExists", f"A queue already exists with the same name and a different "
                                                      f"value for attribute {key}")
            return {"QueueUrl": self.queue_url(name)}
        full = {key: str(default) for key, (default, _, _) in NUMERIC.items()}
        full.update(attrs)
        now = self.d.clock.time()
        try:
            self.d.resources.create(Resource(QUEUE, name, self._arn(name), "Active", now, now,
                                             {"Attributes": full}, {"Tags": params.get("tags") or {}}))
        except AlreadyExists:  # created meanwhile by another request: answer as SQS does for the same queue
            return self.create_queue(ctx, params)
        return {"QueueUrl": self.queue_url(name)}

    @staticmethod
    def _checked_attributes(attrs: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in attrs.items():
            if key not in SETTABLE:
                raise SqsError("InvalidAttributeName", f"Unknown Attribute {key}.")
            if key in NUMERIC:
                _, low, high = NUMERIC[key]
                if not str(value).isdigit() or not low <= int(value) <= high:
                    raise SqsError("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
                value = str(int(value))
            elif key in ("FifoQueue", "ContentBasedDeduplication"):
                if str(value).lower() not in ("true", "false"):
                    raise SqsError("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
                value = str(value).lower()
            out[key] = str(value)
        return out

    def get_queue_url(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._queue(params["QueueName"])
        return {"QueueUrl": self.queue_url(res.name)}

    def list_queues(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        limit = params.get("MaxResults")
        if limit is not None and not 1 <= limit <= 1000:
            raise invalid_parameter("Value for parameter MaxResults is invalid. Reason: MaxResults must be an integer "
                                    "between 1 and 1000.")
        if params.get("NextToken") and limit is None:
            raise invalid_parameter("MaxResults is a mandatory parameter when you provide a value for NextToken.")
        after = open_next_token(self.d, "ListQueues", params, invalid_parameter)
        prefix = params.get("QueueNamePrefix") or ""
        rows, _ = self.d.resources.list(QUEUE, ListQuery(sort_by="Name", limit=100000))
        names = [r.name for r in rows if r.name.startswith(prefix) and (after is None or r.name > after)]
        page = names[:limit or 1000]
        out: dict[str, Any] = {}
        if page:
            out["QueueUrls"] = [self.queue_url(n) for n in page]
        if limit is not None and len(names) > limit:
            out["NextToken"] = seal_next_token(self.d, "ListQueues", params, page[-1])
        return out

    def get_queue_attributes(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._queue(params["QueueUrl"])
        wanted = params.get("AttributeNames") or []
        if not wanted:
            return {}
        now = self.d.clock.time()
        counts = {"ApproximateNumberOfMessages": 0, "ApproximateNumberOfMessagesNotVisible": 0,
                  "ApproximateNumberOfMessagesDelayed": 0}
        for msg in self._messages(res):
            st = msg.state
            if st["visible_at"] <= now:
                counts["ApproximateNumberOfMessages"] += 1
            elif st.get("receipt"):
                counts["ApproximateNumberOfMessagesNotVisible"] += 1
            else:
                counts["ApproximateNumberOfMessagesDelayed"] += 1
        attrs: dict[str, str] = dict(res.request["Attributes"])
        attrs.update({k: str(v) for k, v in counts.items()})
        attrs.update(QueueArn=res.arn, CreatedTimestamp=str(int(res.creation_time)),
                     LastModifiedTimestamp=str(int(res.last_modified_time)))
        if "All" in wanted:
            return {"Attributes": attrs}
        unknown = [w for w in wanted if w not in attrs and w not in SETTABLE]
        if unknown:
            raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
        return {"Attributes": {k: attrs[k] for k in wanted if k in attrs}}

    def set_queue_attributes(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        attrs = self._checked_attributes(params.get("Attributes") or {})
        if "FifoQueue" in attrs:
            raise SqsError("InvalidAttributeName", "Unknown Attribute FifoQueue.")  # fixed at creation
        for _ in range(10):
            res = self._queue(params["QueueUrl"])
            res.request["Attributes"].update(attrs)
            try:
                self.d.resources.save(res, self.d.clock.time())
                return {}
            except ConcurrentUpdate:
                continue
        raise SqsError("RequestThrottled", "The queue is being updated; retry SetQueueAttributes.")

    def delete_queue(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._queue(params["QueueUrl"])
        self._purge(res)
        self.d.resources.delete(QUEUE, res.name)
        return {}

    def purge_queue(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._purge(self._queue(params["QueueUrl"]))
        return {}

    def _purge(self, res: Resource) -> None:
        for msg in self._messages(res):
            self.d.resources.delete(MESSAGE, msg.name)

    def _messages(self, res: Resource):
        """The queue's message rows in send order, a page at a time."""
        token = None
        while True:
            rows, token = self.d.resources.list(MESSAGE, ListQuery(parent_arn=res.arn, sort_by="CreationTime",
                                                                   limit=SCAN_PAGE, next_token=token))
            yield from rows
            if not token:
                return

    # -- messages ----------------------------------------------------------------------------------------
    def send_message(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._queue(params["QueueUrl"])
        attrs = res.request["Attributes"]
        body = params["MessageBody"]
        if not body:
            raise invalid_parameter("The request must contain the parameter MessageBody.")
        if _BODY_INVALID.search(body):
            raise SqsError("InvalidMessageContents", "Invalid binary character in the message body: only "
                                                     "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | "
                                                     "#x10000 to #x10FFFF are allowed.")
        message_attrs = params.get("MessageAttributes") or {}
        size = len(body.encode()) + sum(len(k) + len(str(v.get("StringValue") or v.get("BinaryValue") or b""))
                                        + len(v.get("DataType", "")) for k, v in message_attrs.items())
        limit = int(attrs["MaximumMessageSize"])
        if size > limit:
            raise invalid_parameter(f"One or more parameters are invalid. Reason: Message must be shorter than "
                                    f"{limit} bytes.")
        fifo = attrs.get("FifoQueue") == "true"
        delay = params.get("DelaySeconds")
        if delay is not None and fifo:
            raise invalid_parameter(f"Value {delay} for parameter DelaySeconds is invalid. Reason: The request "
                                    f"include parameter that is not valid for this queue type.")
        if delay is not None and not 0 <= delay <= 900:
            raise invalid_parameter(f"Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds "
                                    f"must be >= 0 and <= 900.")
        group, dedup = params.get("MessageGroupId"), params.get("MessageDeduplicationId")
        if fifo and not group:
            raise SqsError("MissingParameter", "The request must contain the parameter MessageGroupId.")
        if fifo and not dedup:
            if attrs.get("ContentBasedDeduplication") != "true":
                raise invalid_parameter("The queue should either have ContentBasedDeduplication enabled or "
                                        "MessageDeduplicationId provided explicitly")
            dedup = hashlib.sha256(body.encode()).hexdigest()
        now = self.d.clock.time()
        out: dict[str, Any] = {"MD5OfMessageBody": md5_hex(body.encode())}
        if message_attrs:
            out["MD5OfMessageAttributes"] = attributes_md5(message_attrs)
        if fifo:
            seen = self._duplicate(res, dedup, now)
            if seen is not None:
                out.update(MessageId=seen.request["MessageId"], SequenceNumber=seen.request["SequenceNumber"])
                return out
        name = self._next_name(now)
        message_id = str(uuid.uuid4())
        request: dict[str, Any] = {"MessageId": message_id, "Body": body, "MD5OfBody": out["MD5OfMessageBody"],
                                   "SenderId": ctx.access_key or self.d.settings.account, "SentTimestamp": now}
        if message_attrs:
            request["MessageAttributes"] = {k: _stored_attribute(v) for k, v in message_attrs.items()}
            request["MD5OfMessageAttributes"] = out["MD5OfMessageAttributes"]
        if fifo:
            request.update(MessageGroupId=group, MessageDeduplicationId=dedup, SequenceNumber=name.replace("-", "")[:20])
            out["SequenceNumber"] = request["SequenceNumber"]
        visible = now + (delay if delay is not None else int(attrs["DelaySeconds"]))
        self.d.resources.create(Resource(MESSAGE, name, f"{res.arn}/{name}", "Active", now, now, request,
                                         {"visible_at": visible, "receive_count": 0}, parent_arn=res.arn))
        out["MessageId"] = message_id
        return out

    def _duplicate(self, res: Resource, dedup: str, now: float) -> Resource | None:
        for msg in self._messages(res):
            if msg.request.get("MessageDeduplicationId") == dedup and now - msg.creation_time < DEDUP_WINDOW:
                return msg
        return None

    async def receive_message(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        """Long polling in the event loop (no thread held while waiting); each look runs in the threadpool."""
        from starlette.concurrency import run_in_threadpool

        res = await run_in_threadpool(self._queue, params["QueueUrl"])
        wait = params.get("WaitTimeSeconds")
        if wait is None:
            wait = int(res.request["Attributes"]["ReceiveMessageWaitTimeSeconds"])
        if not 0 <= wait <= 20:
            raise invalid_parameter(f"Value {wait} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 "
                                    f"and <= 20, if provided.")
        deadline = time.monotonic() + wait
        while True:
            messages = await run_in_threadpool(self.receive_now, params)
            left = deadline - time.monotonic()
            if messages or left <= 0:
                return {"Messages": messages} if messages else {}
            await asyncio.sleep(min(POLL_INTERVAL, left))

    def receive_now(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One look at the queue: claim up to MaxNumberOfMessages visible messages (compare-and-set per row, so
        two receivers never get the same message)."""
        res = self._queue(params["QueueUrl"])
        attrs = res.request["Attributes"]
        count = params.get("MaxNumberOfMessages") or 1
        if not 1 <= count <= 10:
            raise invalid_parameter(f"Value {count} for parameter MaxNumberOfMessages is invalid. Reason: Must be "
                                    f"between 1 and 10, if provided.")
        timeout = params.get("VisibilityTimeout")
        if timeout is None:
            timeout = int(attrs["VisibilityTimeout"])
        if not 0 <= timeout <= 43200:
            raise invalid_parameter(f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be "
                                    f">= 0 and <= 43200, if provided.")
        fifo = attrs.get("FifoQueue") == "true"
        retention = int(attrs["MessageRetentionPeriod"])
        now = self.d.clock.time()
        busy_groups: set[str] = set()
        out: list[dict[str, Any]] = []
        for msg in self._messages(res):
            if len(out) >= count:
                break
            st = msg.state
            if now - msg.creation_time > retention:
                self.d.resources.delete(MESSAGE, msg.name)
                continue
            group = msg.request.get("MessageGroupId")
            if st["visible_at"] > now:
                if fifo and group and st.get("receipt"):
                    busy_groups.add(group)  # FIFO: a group waits while one of its messages is in flight
                continue
            if fifo and group in busy_groups:
                continue
            st["visible_at"] = now + timeout
            st["receipt"] = uuid.uuid4().hex
            st["receive_count"] = int(st.get("receive_count", 0)) + 1
            st.setdefault("first_receive", now)
            try:
                self.d.resources.save(msg, now)
            except ConcurrentUpdate:
                continue  # another receiver took it
            out.append(self._received(res, msg, params))
        return out

    def _received(self, res: Resource, msg: Resource, params: dict[str, Any]) -> dict[str, Any]:
        req, st = msg.request, msg.state
        handle = base64.urlsafe_b64encode(f"{res.name}\n{msg.name}\n{st['receipt']}".encode()).decode()
        item: dict[str, Any] = {"MessageId": req["MessageId"], "ReceiptHandle": handle, "MD5OfBody": req["MD5OfBody"],
                                "Body": req["Body"]}
        wanted = set(params.get("AttributeNames") or []) | set(params.get("MessageSystemAttributeNames") or [])
        if wanted:
            system = {"SenderId": req.get("SenderId"), "SentTimestamp": str(int(req["SentTimestamp"] * 1000)),
                      "ApproximateReceiveCount": str(st["receive_count"]),
                      "ApproximateFirstReceiveTimestamp": str(int(st["first_receive"] * 1000)),
                      "MessageGroupId": req.get("MessageGroupId"),
                      "MessageDeduplicationId": req.get("MessageDeduplicationId"),
                      "SequenceNumber": req.get("SequenceNumber")}
            item["Attributes"] = {k: v for k, v in system.items() if v is not None and ("All" in wanted or k in wanted)}
        names = params.get("MessageAttributeNames") or []
        stored = req.get("MessageAttributes") or {}
        if names and stored:
            chosen = {k: _wire_attribute(v) for k, v in stored.items() if _attribute_wanted(k, names)}
            if chosen:
                item["MessageAttributes"] = chosen
                item["MD5OfMessageAttributes"] = attributes_md5(chosen)
        return item

    def _message_for(self, params: dict[str, Any]) -> tuple[Resource, Resource | None, str]:
        res = self._queue(params["QueueUrl"])
        handle = params["ReceiptHandle"]
        try:
            queue, name, receipt = base64.urlsafe_b64decode(handle.encode()).decode().split("\n")
        except (ValueError, UnicodeDecodeError):
            raise SqsError("ReceiptHandleIsInvalid", f'The input receipt handle "{handle}" is not a valid receipt '
                                                     f'handle.') from None
        if queue != res.name:
            raise SqsError("ReceiptHandleIsInvalid", f'The input receipt handle "{handle}" is not a valid for this '
                                                     f'queue.')
        return res, self.d.resources.get(MESSAGE, name), receipt

    def delete_message(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        _, msg, _ = self._message_for(params)
        if msg is not None:  # deleting a message already deleted succeeds, as on SQS
            self.d.resources.delete(MESSAGE, msg.name)
        return {}

    def change_message_visibility(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        timeout = params["VisibilityTimeout"]
        if not 0 <= timeout <= 43200:
            raise invalid_parameter(f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be "
                                    f">= 0 and <= 43200.")
        for _ in range(10):
            _, msg, receipt = self._message_for(params)
            now = self.d.clock.time()
            if msg is None or msg.state.get("receipt") != receipt or msg.state["visible_at"] <= now:
                raise SqsError("MessageNotInflight", "The message referred to isn't in flight.")
            msg.state["visible_at"] = now + timeout
            try:
                self.d.resources.save(msg, now)
                return {}
            except ConcurrentUpdate:
                continue
        raise SqsError("RequestThrottled", "The message is being updated; retry ChangeMessageVisibility.")


    # -- batches and tags --------------------------------------------------------------------------------
    def send_message_batch(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._queue(params["QueueUrl"])  # a missing queue fails the whole request, as on SQS
        return _batch(params["Entries"], lambda e: self.send_message(ctx, {
            "QueueUrl": params["QueueUrl"], **{k: v for k, v in e.items() if k != "Id"}}))

    def delete_message_batch(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._queue(params["QueueUrl"])
        return _batch(params["Entries"], lambda e: self.delete_message(ctx, {
            "QueueUrl": params["QueueUrl"], "ReceiptHandle": e["ReceiptHandle"]}))

    def change_message_visibility_batch(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._queue(params["QueueUrl"])
        return _batch(params["Entries"], lambda e: self.change_message_visibility(ctx, {
            "QueueUrl": params["QueueUrl"], "ReceiptHandle": e["ReceiptHandle"],
            "VisibilityTimeout": e.get("VisibilityTimeout", 0)}))

    def tag_queue(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._tags(params["QueueUrl"], lambda tags: tags.update(params["Tags"]))

    def untag_queue(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._tags(params["QueueUrl"], lambda tags: [tags.pop(k, None) for k in params["TagKeys"]])

    def list_queue_tags(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        tags = self._queue(params["QueueUrl"]).state.get("Tags") or {}
        return {"Tags": tags} if tags else {}

    def _tags(self, url: str, change) -> dict[str, Any]:
        for _ in range(10):
            res = self._queue(url)
            change(res.state.setdefault("Tags", {}))
            try:
                self.d.resources.save(res, self.d.clock.time())
                return {}
            except ConcurrentUpdate:
                continue
        raise SqsError("RequestThrottled", "The queue is being updated; retry.")


_BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
BATCH_MAX = 10


def _batch(entries: list[dict[str, Any]], run) -> dict[str, Any]:
    """SQS's batch rules (1-10 entries, distinct valid Ids), then each entry on its own: an entry's error is
    reported in Failed and the others still run."""
    if not entries:
        raise SqsError("EmptyBatchRequest", "There should be at least one SendMessageBatchRequestEntry in the "
                                            "request.")
    if len(entries) > BATCH_MAX:
        raise SqsError("TooManyEntriesInBatchRequest", f"Maximum number of entries per request are {BATCH_MAX}. "
                                                       f"You have sent {len(entries)}.")
    ids = [e["Id"] for e in entries]
    bad = next((i for i in ids if not _BATCH_ID.fullmatch(i)), None)
    if bad is not None:
        raise SqsError("InvalidBatchEntryId", f"A batch entry id can only contain alphanumeric characters, "
                                              f"hyphens and underscores. It can be at most 80 letters long. "
                                              f"Invalid id: {bad}")
    if len(set(ids)) != len(ids):
        raise SqsError("BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.")
    ok: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for entry in entries:
        try:
            out = run(entry) or {}
        except ServiceError as e:
            failed.append({"Id": entry["Id"], "SenderFault": e.sender_fault, "Code": e.code, "Message": e.message})
            continue
        ok.append({"Id": entry["Id"], **{k: v for k, v in out.items() if v is not None}})
    return {"Successful": ok, "Failed": failed}


def _stored_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as JSON can hold it (a binary value base64-encoded)."""
    out = {"DataType": value["DataType"]}
    if value.get("BinaryValue") is not None:
        out["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    else:
        out["StringValue"] = value.get("StringValue", "")
    return out


def _wire_attribute(value: dict[str, Any]) -> dict[str, Any]:
    out = {"DataType": value["DataType"]}
    if "BinaryValue" in value:
        out["BinaryValue"] = base64.b64decode(value["BinaryValue"])
    else:
        out["StringValue"] = value["StringValue"]
    return out


def _attribute_wanted(name: str, wanted: list[str]) -> bool:
    for pattern in wanted:
        if pattern in ("All", ".*") or pattern == name:
            return True
        if pattern.endswith(".*") and name.startswith(pattern[:-1]):
            return True
    return False
