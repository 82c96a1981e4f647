"""AddTags / ListTags / DeleteTags for any SageMaker resource ARN."""

from __future__ import annotations

from typing import Any

from opensage.arns import parse_sagemaker_arn
from opensage.errors import ResourceNotFound, ValidationException
from opensage.services.base import Deps
from opensage.store.resources import InvalidPageToken


class TagService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _require(self, arn: str) -> None:
        if parse_sagemaker_arn(arn) is None:
            raise ValidationException(f"Value '{arn}' at 'resourceArn' is not a valid SageMaker resource ARN.")
        if self.d.resources.get_by_arn(arn) is None:
            raise ResourceNotFound(f"Resource {arn} does not exist.")

    def add_tags(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params["ResourceArn"])
        self.d.tags.put(params["ResourceArn"], params["Tags"])
        return {"Tags": params["Tags"]}

    def list_tags(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["ResourceArn"]
        self._require(arn)
        # The token carries the last key seen, sealed to this resource (another ARN's token is refused).
        scope = f"ListTags:{arn}"
        after = self.d.tokens.open(params["NextToken"], scope, None) if params.get("NextToken") else None
        if after is not None and not isinstance(after, str):
            raise InvalidPageToken("the token cannot be read")
        items, last = self.d.tags.list(arn, after, params.get("MaxResults") or 50)
        out: dict[str, Any] = {"Tags": items}
        if last is not None:
            out["NextToken"] = self.d.tokens.seal(scope, None, last)
        return out

    def delete_tags(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params["ResourceArn"])
        self.d.tags.remove(params["ResourceArn"], params["TagKeys"])
        return {}
