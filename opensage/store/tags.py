"""Tags for any ARN."""

from __future__ import annotations

from sqlalchemy import Engine, delete, select

from opensage.store.schema import tags


class TagRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, arn: str, items: list[dict[str, str]]) -> None:
        if not items:
            return
        with self.engine.begin() as conn:
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


