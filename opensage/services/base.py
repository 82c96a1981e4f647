"""What every service module gets: repositories, clock, ARN builder, settings, and a way to wake runners."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opensage.arns import ArnBuilder
from opensage.clock import Clock
from opensage.errors import ServiceError, ValidationException
from opensage.settings import Settings
from opensage.store.logs import LogRepository
from opensage.store.metrics import MetricRepository
from opensage.store.resources import InvalidPageToken, ListQuery, PageTokens, ResourceRepository
from opensage.store.tags import TagRepository


@dataclass
class Deps:
    settings: Settings
    clock: Clock
    arns: ArnBuilder
    resources: ResourceRepository
    tags: TagRepository
    logs: LogRepository
    metrics: MetricRepository
    wake: Callable[[str], None] = field(default=lambda kind: None)  # nudge the reconciler of a kind
    # kind -> callbacks run with a job's row once it ended (Completed / Failed / Stopped): a capability that
    # waits on such jobs (tuning on its training jobs) registers its wake instead of polling faster.
    on_job_end: dict[str, list[Callable[[Any], None]]] = field(default_factory=dict)
    # NextTokens of every list (resources, tags, and services with their own paging) are sealed with one key
    # derived from the platform's secret: unforgeable, and still valid after a restart.
    tokens: PageTokens = field(init=False)
    _platform_store: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        secret = self.settings.credentials.secret_key.encode()
        self.tokens = PageTokens(hmac.digest(secret, b"opensage/next-token/v1", hashlib.sha256))
        self.resources.tokens = self.tokens

    def platform_store(self) -> Any:
        """The object store with the platform's own credentials, for the API's checks (inputs listed at
        Create), opened once: a new S3 client per request cost ~0.15-0.25 s of every CreateTrainingJob."""
        if self._platform_store is None:
            from opensage.objects import open_store
            from opensage.runner.jobspec import ObjectStoreSpec

            s = self.settings
            self._platform_store = open_store(ObjectStoreSpec(
                endpoint_url=s.s3_endpoint, access_key=s.credentials.access_key,
                secret_key=s.credentials.secret_key, region=s.region))
        return self._platform_store


def epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


# Request members that only size or continue a page: a NextToken stays valid when they change.
PAGING_MEMBERS = frozenset({"NextToken", "nextToken", "MaxResults", "maxResults", "MaxRecords", "limit"})


def request_filters(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in PAGING_MEMBERS}


def seal_next_token(deps: Deps, operation: str, params: dict[str, Any], position: Any) -> str:
    """A NextToken for a service that pages in Python (offsets, last names): bound to ``operation`` and the
    request's filters, authenticated with the platform's key (see ``PageTokens``)."""
    return deps.tokens.seal(operation, request_filters(params), position)


def open_next_token(deps: Deps, operation: str, params: dict[str, Any],
                    invalid: Callable[[str], ServiceError] | None = None) -> Any:
    """The position in the request's NextToken (None without one). A token of another operation or filters,
    or not sealed here, raises ``invalid(message)`` (the service's own error), else ValidationException."""
    token = params.get("NextToken") or params.get("nextToken")
    if not token:
        return None
    try:
        return deps.tokens.open(token, operation, request_filters(params))
    except InvalidPageToken as e:
        if invalid is None:
            raise
        raise invalid(e.message) from None


def list_query(params: dict[str, Any], default_sort: str = "CreationTime") -> ListQuery:
    """The common List* request members -> ListQuery (same names on every SageMaker List* call)."""
    return ListQuery(
        name_contains=params.get("NameContains"),
        status=params.get("StatusEquals"),
        created_after=epoch(params.get("CreationTimeAfter")),
        created_before=epoch(params.get("CreationTimeBefore")),
        modified_after=epoch(params.get("LastModifiedTimeAfter")),
        modified_before=epoch(params.get("LastModifiedTimeBefore")),
        sort_by=params.get("SortBy") or default_sort,
        descending=(params.get("SortOrder") or "Ascending") == "Descending",
        limit=params.get("MaxResults") or 10,
        next_token=params.get("NextToken"),
    )


def check_s3_uri(value: str, field_path: str) -> None:
    """SageMaker refuses malformed S3 URIs at Create time; say which field and what shape is expected."""
    from opensage.objects.base import split_s3_uri

    try:
        bucket, _ = split_s3_uri(value)  # also https:// S3 object URLs, which SageMaker accepts
    except ValueError:
        raise ValidationException(
            f"Invalid S3 URI '{value}' at '{field_path}': expected s3://<bucket>/<key prefix> or an https:// S3 "
            "URL (https://<bucket>.s3.<region>.amazonaws.com/<key> or https://s3.<region>.amazonaws.com/"
            "<bucket>/<key>).") from None
    if len(bucket) < 3 or len(bucket) > 63:
        raise ValidationException(
            f"Invalid S3 URI '{value}' at '{field_path}': bucket names are 3 to 63 characters long.")


def list_jobs(deps: Deps, kind: str, params: dict[str, Any], key: str,
              summary: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """A List<Kind>s answer: the filtered, sorted page of rows as ``key`` summaries, and NextToken."""
    items, token = deps.resources.list(kind, list_query(params))
    out: dict[str, Any] = {key: [summary(r) for r in items]}
    if token:
        out["NextToken"] = token
    return out


def stop_job(deps: Deps, kind: str, get: Callable[[], Any], noun: str, operation: str,
             state: Callable[[Any, float], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Stop<Kind>: InProgress -> Stopping (compare-and-set, retried), the runner woken; Stopping again is a
    no-op; a finished job is SageMaker's ValidationException. ``state(row, now)`` adds state to the move."""
    from opensage.states import TERMINAL, transition
    from opensage.store.resources import ConcurrentUpdate

    for _ in range(5):
        res = get()
        if res.status == "Stopping":
            return {}
        if res.status in TERMINAL[kind]:
            raise ValidationException(f"The request was rejected because the {noun} is in status {res.status}.")
        now = deps.clock.time()
        try:
            transition(deps.resources, res, "Stopping", now, **(state(res, now) if state else {}))
        except ConcurrentUpdate:
            continue
        deps.wake(kind)
        return {}
    raise ValidationException(f"The {noun} is being updated; retry {operation}.")
