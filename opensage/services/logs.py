"""CloudWatch Logs (read side): DescribeLogStreams, GetLogEvents, FilterLogEvents.

GetLogEvents tokens are ``f/<last id>`` and ``b/<first id>``; at the end of a stream the forward token comes
back unchanged with no events, which is how the SDK's log tailer knows to stop paging.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import InvalidParameterException, ResourceNotFoundException
from opensage.services.base import Deps


def _token_id(token: str | None, direction: str) -> int | None:
    if not token:
        return None
    kind, _, value = token.partition("/")
    if kind not in ("f", "b") or not value.lstrip("-").isdigit():
        raise InvalidParameterException("The specified nextToken is invalid.")
    return int(value)


class LogsService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _group(self, group: str) -> None:
        if not self.d.logs.group_exists(group):
            raise ResourceNotFoundException("The specified log group does not exist.")

    def describe_log_streams(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("logGroupName") or (params.get("logGroupIdentifier") or "").split(":log-group:")[-1]
        self._group(group)
        order = params.get("orderBy") or "LogStreamName"
        if order == "LastEventTime" and params.get("logStreamNamePrefix"):
            raise InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
        rows, token = self.d.logs.streams(group, params.get("logStreamNamePrefix"), order,
                                          bool(params.get("descending")), params.get("nextToken"),
                                          params.get("limit") or 50)
        streams = [{
            "logStreamName": r["stream_name"],
            "creationTime": r["creation_time"],
            "firstEventTimestamp": r["first_event_time"],
            "lastEventTimestamp": r["last_event_time"],
            "lastIngestionTime": r["last_ingestion_time"],
            "uploadSequenceToken": "1",
            "arn": self.d.arns.log_group(group) + ":log-stream:" + r["stream_name"],
            "storedBytes": r["stored_bytes"],
        } for r in rows]
        out: dict[str, Any] = {"logStreams": streams}
        if token:
            out["nextToken"] = token
        return out

    def get_log_events(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("logGroupName") or (params.get("logGroupIdentifier") or "").split(":log-group:")[-1]
        stream = params["logStreamName"]
        self._group(group)
        token = params.get("nextToken")
        limit = params.get("limit") or 10000
        start, end = params.get("startTime"), params.get("endTime")
        backwards = token.startswith("b/") if token else not params.get("startFromHead", False)
        pos = _token_id(token, "")
        events = self.d.logs.events(group, stream, after_id=None if backwards else pos,
                                    before_id=pos if backwards else None, start=start, end=end,
                                    limit=limit, newest_first=backwards)
        if backwards:
            events.reverse()
        out_events = [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time}
                      for e in events]
        if events:
            forward, backward = f"f/{events[-1].id}", f"b/{events[0].id}"
        else:
            forward = token if token and token.startswith("f/") else f"f/{pos if pos is not None else 0}"
            backward = token if token and token.startswith("b/") else f"b/{pos if pos is not None else 0}"
        return {"events": out_events, "nextForwardToken": forward, "nextBackwardToken": backward}

    def filter_log_events(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("logGroupName") or (params.get("logGroupIdentifier") or "").split(":log-group:")[-1]
        self._group(group)
        pattern = (params.get("filterPattern") or "").strip().strip('"') or None
        limit = params.get("limit") or 10000
        after = _token_id(params.get("nextToken"), "f")
        events = self.d.logs.events(group, None, after_id=after, before_id=None,
                                    start=params.get("startTime"), end=params.get("endTime"), limit=limit + 1,
                                    newest_first=False, stream_prefix=params.get("logStreamNamePrefix"),
                                    streams=params.get("logStreamNames"), contains=pattern)
        page = events[:limit]
        out: dict[str, Any] = {
            "events": [{"logStreamName": e.stream, "timestamp": e.timestamp, "message": e.message,
                        "ingestionTime": e.ingestion_time, "eventId": str(e.id)} for e in page],
            "searchedLogStreams": [],
        }
        if len(events) > limit:
            out["nextToken"] = f"f/{page[-1].id}"
        return out
