"""Repository of SageMaker resources (one table, all families): create, get, compare-and-set, keyset lists."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from opensage.errors import ValidationException
from opensage.store.schema import resources


class AlreadyExists(Exception):
    pass


class ConcurrentUpdate(Exception):
    """The row changed since it was read (compare-and-set lost)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot store {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


@dataclass
class Resource:
    kind: str
    name: str
    arn: str
    status: str
    creation_time: float
    last_modified_time: float
    request: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    parent_arn: str | None = None
    version: int = 1


@dataclass
class ListQuery:
    name_contains: str | None = None
    status: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    parent_arn: str | None = None
    sort_by: str = "CreationTime"  # Name | CreationTime | Status
    descending: bool = False
    limit: int = 10
    next_token: str | None = None


class InvalidPageToken(ValidationException):
    """A NextToken this platform did not issue, altered, or issued for another list (SageMaker's answer is a
    ValidationException "Invalid pagination token because ...")."""

    def __init__(self, reason: str) -> None:
        super().__init__(f'Invalid pagination token because "{reason}".')


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(value: Any) -> str:
    """A short stable hash of JSON-able filters (what a token is bound to besides its scope)."""
    raw = json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()
    return _b64(hashlib.sha256(raw).digest()[:12])


class PageTokens:
    """NextTokens bound to what made them, and authenticated so they cannot be forged or edited.

    A token is ``<payload>.<mac>``: payload = base64url JSON ``{"s": scope, "f": filters digest, "p":
    position}``; mac = HMAC-SHA256(key, payload), 16 bytes. ``scope`` names the list (a resource kind, a tag
    ARN, an operation) and ``filters`` everything that shaped the result except the page size, so a token of
    ListTrainingJobs is refused by ListModels and a token made with NameContains=a is refused with
    NameContains=b (the keyset position would silently skip or repeat rows otherwise).
    """

    def __init__(self, key: bytes | None = None) -> None:
        # A random key works within one process; Deps gives the platform's (derived from its secret) so
        # tokens survive a restart.
        self.key = key or secrets.token_bytes(32)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.digest(self.key, payload.encode(), "sha256")[:16])

    def seal(self, scope: str, filters: Any, position: Any) -> str:
        payload = _b64(json.dumps({"s": scope, "f": digest(filters), "p": position},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def open(self, token: str, scope: str, filters: Any) -> Any:
        """The position sealed in ``token``; InvalidPageToken unless it was sealed here for this list."""
        payload, dot, mac = token.partition(".")
        # bytes, not str: compare_digest raises TypeError for non-ASCII str (a hostile token must be a 400)
        if not dot or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise InvalidPageToken("the token was not returned by a previous call or was changed")
        try:
            body = json.loads(_unb64(payload))
        except ValueError:  # cannot happen for a token we sealed; kept so a bug here is not a 500
            raise InvalidPageToken("the token cannot be read") from None
        if body.get("s") != scope:
            raise InvalidPageToken("the token was returned by a different list operation")
        if body.get("f") != digest(filters):
            raise InvalidPageToken("the token was returned for different filters or sort order; "
                                   "repeat the request that returned it, changing only MaxResults")
        return body.get("p")


_SORT_COLUMNS = {"Name": resources.c.name, "CreationTime": resources.c.creation_time, "Status": resources.c.status}


def _row(r: Any) -> Resource:
    return Resource(kind=r.kind, name=r.name, arn=r.arn, status=r.status, creation_time=r.creation_time,
                    last_modified_time=r.last_modified_time, request=json.loads(r.request),
                    state=json.loads(r.state), parent_arn=r.parent_arn, version=r.version)


def _filters(q: ListQuery) -> dict[str, Any]:
    """What a NextToken is bound to: every query field but the page size and the token itself."""
    bound = asdict(q)
    del bound["limit"], bound["next_token"]
    return bound


class ResourceRepository:
    def __init__(self, engine: Engine, tokens: PageTokens | None = None) -> None:
        self.engine = engine
        self.tokens = tokens or PageTokens()

    def create(self, res: Resource) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(resources).values(
                    kind=res.kind, name=res.name, arn=res.arn, status=res.status,
                    creation_time=res.creation_time, last_modified_time=res.last_modified_time,
                    parent_arn=res.parent_arn, request=dumps(res.request), state=dumps(res.state),
                    version=1))
        except IntegrityError:
            raise AlreadyExists(res.name) from None

    def get(self, kind: str, name: str) -> Resource | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(resources).where(resources.c.kind == kind, resources.c.name == name)).first()
        return _row(r) if r else None

    def get_by_arn(self, arn: str) -> Resource | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(resources).where(resources.c.arn == arn)).first()
        return _row(r) if r else None

    def save(self, res: Resource, now: float, conn=None) -> Resource:
        """Write status/state if nobody else changed the row since ``res`` was read. Pass ``conn`` to make
        it part of a caller's transaction (log ingestion commits events and offsets together)."""
        if conn is None:
            with self.engine.begin() as c:
                return self.save(res, now, conn=c)
        result = conn.execute(
            update(resources)
            .where(resources.c.kind == res.kind, resources.c.name == res.name,
                   resources.c.version == res.version)
            .values(status=res.status, state=dumps(res.state), request=dumps(res.request),
                    last_modified_time=now, version=res.version + 1))
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"{res.kind} {res.name} changed concurrently")
        res.version += 1
        res.last_modified_time = now
        return res

    def delete(self, kind: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(resources).where(resources.c.kind == kind, resources.c.name == name))

    def in_status(self, kind: str, statuses: tuple[str, ...]) -> list[Resource]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(resources).where(resources.c.kind == kind,
                                                        resources.c.status.in_(statuses))
                                .order_by(resources.c.creation_time)).all()
        return [_row(r) for r in rows]

    def list(self, kind: str, q: ListQuery) -> tuple[list[Resource], str | None]:
        """Filter first, then page by (sort column, name) so pages never skip or repeat rows."""
        col = _SORT_COLUMNS.get(q.sort_by, resources.c.creation_time)
        c = resources.c
        conds = [c.kind == kind]
        if q.name_contains:
            conds.append(func.lower(c.name).contains(q.name_contains.lower(), autoescape=True))
        if q.status:
            conds.append(c.status == q.status)
        if q.created_after is not None:
            conds.append(c.creation_time > q.created_after)
        if q.created_before is not None:
            conds.append(c.creation_time < q.created_before)
        if q.modified_after is not None:
            conds.append(c.last_modified_time > q.modified_after)
        if q.modified_before is not None:
            conds.append(c.last_modified_time < q.modified_before)
        if q.parent_arn is not None:
            conds.append(c.parent_arn == q.parent_arn)
        if q.next_token:
            last_sort, last_name = self._position(kind, q)
            if col is c.name:
                conds.append(c.name < last_name if q.descending else c.name > last_name)
            elif q.descending:
                conds.append(or_(col < last_sort, and_(col == last_sort, c.name < last_name)))
            else:
                conds.append(or_(col > last_sort, and_(col == last_sort, c.name > last_name)))
        order = [col.desc(), c.name.desc()] if q.descending else [col.asc(), c.name.asc()]
        if col is c.name:
            order = order[:1]
        with self.engine.connect() as conn:
            rows = conn.execute(select(resources).where(*conds).order_by(*order).limit(q.limit + 1)).all()
        items = [_row(r) for r in rows[: q.limit]]
        token = None
        if len(rows) > q.limit:
            last = items[-1]
            sort_value = {"Name": last.name, "Status": last.status}.get(q.sort_by, last.creation_time)
            token = self.tokens.seal(kind, _filters(q), [sort_value, last.name])
        return items, token

    def _position(self, kind: str, q: ListQuery) -> tuple[Any, str]:
        position = self.tokens.open(q.next_token or "", kind, _filters(q))
        if not (isinstance(position, list) and len(position) == 2 and isinstance(position[1], str)):
            raise InvalidPageToken("the token cannot be read")
        return position[0], position[1]
