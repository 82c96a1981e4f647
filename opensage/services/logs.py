"""CloudWatch Logs (read side): DescribeLogStreams, GetLogEvents, FilterLogEvents.

Tokens are sealed with the platform's key and bound to their operation and request (``PageTokens``), as
SageMaker's List* tokens are: a forged or reused token is InvalidParameterException, never a database error.
GetLogEvents tokens keep AWS's ``f/...`` / ``b/...`` look and are bound to the group and stream only; at the
end of a stream the forward token comes back unchanged with no events, which is how the SDK's log tailer
knows to stop paging.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import InvalidParameterException, ResourceNotFoundException
from opensage.services.base import Deps, open_next_token, seal_next_token
from opensage.store.resources import InvalidPageToken

_MAX_ID = (1 << 63) - 1


def _invalid_token(_message: str = "") -> InvalidParameterException:
    return InvalidParameterException("The specified nextToken is invalid.")


class LogsService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _seal_event_token(self, direction: str, event_id: int, scope: dict[str, str]) -> str:
        return f"{direction}/" + self.d.tokens.seal("GetLogEvents", scope, event_id)

    def _open_event_token(self, token: str, scope: dict[str, str]) -> int:
        direction, _, sealed = token.partition("/")
        try:
            position = self.d.tokens.open(sealed, "GetLogEvents", scope) if direction in ("f", "b") else None
        except InvalidPageToken:
            raise _invalid_token() from None
        if not isinstance(position, int) or not 0 <= position <= _MAX_ID:
            raise _invalid_token()
        return position

    def _group(self, group: str) -> None:
        if not self.d.logs.group_exists(group):
            raise ResourceNotFoundException("The specified log group does not exist.")

    def describe_log_streams(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("logGroupName") or (params.get("logGroupIdentifier") or "").split(":log-group:")[-1]
        self._group(group)
        order = params.get("orderBy") or "LogStreamName"
        if order == "LastEventTime" and params.get("logStreamNamePrefix"):
            raise InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
        offset = open_next_token(self.d, "DescribeLogStreams", params, _invalid_token)
        if offset is not None and (not isinstance(offset, int) or not 0 <= offset <= _MAX_ID):
            raise _invalid_token()
        rows, next_offset = self.d.logs.streams(group, params.get("logStreamNamePrefix"), order,
                                                bool(params.get("descending")),
                                                str(offset) if offset else None, params.get("limit") or 50)
        token = seal_next_token(self.d, "DescribeLogStreams", params, int(next_offset)) if next_offset else None
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
        scope = {"group": group, "stream": stream}
        pos = self._open_event_token(token, scope) if token else None
        backwards = token.startswith("b/") if token else not params.get("startFromHead", False)
        events = self.d.logs.events(group, stream, after_id=None if backwards else pos,
                                    before_id=pos if backwards else None, start=start, end=end,
                                    limit=limit, newest_first=backwards)
        if backwards:
            events.reverse()
        out_events = [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time}
                      for e in events]
        if events:
            forward = self._seal_event_token("f", events[-1].id, scope)
            backward = self._seal_event_token("b", events[0].id, scope)
        else:
            at = pos if pos is not None else 0
            forward = token if token and token.startswith("f/") else self._seal_event_token("f", at, scope)
            backward = token if token and token.startswith("b/") else self._seal_event_token("b", at, scope)
        return {"events": out_events, "nextForwardToken": forward, "nextBackwardToken": backward}

    def filter_log_events(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        group = params.get("logGroupName") or (params.get("logGroupIdentifier") or "").split(":log-group:")[-1]
        self._group(group)
        pattern = (params.get("filterPattern") or "").strip().strip('"') or None
        limit = params.get("limit") or 10000
        after = open_next_token(self.d, "FilterLogEvents", params, _invalid_token)
        if after is not None and (not isinstance(after, int) or not 0 <= after <= _MAX_ID):
            raise _invalid_token()
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
            out["nextToken"] = seal_next_token(self.d, "FilterLogEvents", params, page[-1].id)
        return out
