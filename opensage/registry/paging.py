"""Keyset paging in Python for lists whose filters live in a row's JSON (ListModelPackages filters on approval
status and package type): filter everything first, sort by (sort key, name), resume strictly after the last
(sort key, name) seen. NextTokens are sealed to the operation and its filters (services.base)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opensage.services.base import Deps, open_next_token, seal_next_token
from opensage.store.resources import InvalidPageToken

T = TypeVar("T")


def page(deps: Deps, operation: str, params: dict[str, Any], items: Sequence[T],
         key: Callable[[T], tuple[Any, str]]) -> tuple[list[T], str | None]:
    """One page of ``items`` (already filtered) ordered by ``key(item)`` = (sort value, unique name)."""
    descending = (params.get("SortOrder") or "Ascending") == "Descending"
    ordered = sorted(items, key=key, reverse=descending)
    position = open_next_token(deps, operation, params)
    if position is not None:
        if not (isinstance(position, list) and len(position) == 2 and isinstance(position[1], str)):
            raise InvalidPageToken("the token cannot be read")
        after = (position[0], position[1])
        try:
            ordered = [i for i in ordered if (key(i) < after if descending else key(i) > after)]
        except TypeError:  # a position of another sort key type: not a token of this request
            raise InvalidPageToken("the token cannot be read") from None
    limit = params.get("MaxResults") or 10
    out = ordered[:limit]
    token = None
    if len(ordered) > limit:
        token = seal_next_token(deps, operation, params, list(key(out[-1])))
    return out, token
