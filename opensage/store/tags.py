"""Tags for any ARN, with AWS's per-resource rules enforced where every path (AddTags, Create*) meets."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, delete, select

from opensage.errors import ValidationException
from opensage.store.schema import tags

# AWS's tagging rules (SageMaker's "Tagging Amazon resources"): at most 50 user tags per resource; keys
# starting with "aws:" (any case) are reserved for AWS and refused from users, and do not count.
MAX_USER_TAGS = 50
RESERVED_PREFIX = "aws:"


def _reserved(key: str) -> bool:
    return key[: len(RESERVED_PREFIX)].lower() == RESERVED_PREFIX


def check_user_tags(items: Iterable[dict[str, str]]) -> None:
    """Refuse reserved keys in tags a user sends (callers may check before creating the resource)."""
    for item in items:
        if _reserved(item["Key"]):
            raise ValidationException(
                f"Invalid tag key '{item['Key']}': aws: prefixed tag key names are not allowed for external use.")


class TagRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, arn: str, items: list[dict[str, str]]) -> None:
        """Add or overwrite tags; ValidationException (nothing written) for a reserved key or when the
        resource would end up with more than MAX_USER_TAGS user tags (overwriting a key does not add one)."""
        if not items:
            return
        check_user_tags(items)
        with self.engine.begin() as conn:
            existing = set(conn.execute(select(tags.c.key).where(tags.c.arn == arn)).scalars())
            total = len({k for k in existing | {i["Key"] for i in items} if not _reserved(k)})
            if total > MAX_USER_TAGS:
                raise ValidationException(
                    f"Tag limit exceeded: resource {arn} would have {total} tags; a resource can have at most "
                    f"{MAX_USER_TAGS} user tags. Remove tags with DeleteTags first.")
            for item in items:
                conn.execute(delete(tags).where(tags.c.arn == arn, tags.c.key == item["Key"]))
                conn.execute(tags.insert().values(arn=arn, key=item["Key"], value=item.get("Value", "")))

    def remove(self, arn: str, keys: list[str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(tags).where(tags.c.arn == arn, tags.c.key.in_(keys)))

    def list(self, arn: str, after_key: str | None, limit: int) -> tuple[list[dict[str, str]], str | None]:
        q = select(tags.c.key, tags.c.value).where(tags.c.arn == arn)
        if after_key is not None:
            q = q.where(tags.c.key > after_key)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(tags.c.key).limit(limit + 1)).all()
        items = [{"Key": r.key, "Value": r.value} for r in rows[:limit]]
        return items, (items[-1]["Key"] if len(rows) > limit else None)

    def drop_all(self, arn: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(tags).where(tags.c.arn == arn))
