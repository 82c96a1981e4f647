"""AddTags / ListTags / DeleteTags for any SageMaker resource ARN.

As SageMaker answers: a well-formed ARN of a resource that does not exist is a ValidationException (the
older APIs' "not found", not ResourceNotFound: boto3 users catch ClientError and match the code), and an ARN
written with the name's own case finds a resource whose ARN SageMaker lower-cased (endpoints).
"""

from __future__ import annotations

from typing import Any

from opensage.arns import parse_sagemaker_arn, with_lower_case_name
from opensage.errors import ValidationException
from opensage.services.base import Deps
from opensage.store.resources import InvalidPageToken


class TagService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _require(self, arn: str) -> str:
        """The stored ARN of the resource ``arn`` names (tags are kept under it)."""
        if parse_sagemaker_arn(arn) is None:
            raise ValidationException(f"Value '{arn}' at 'resourceArn' is not a valid SageMaker resource ARN.")
        res = self.d.resources.get_by_arn(arn)
        if res is None and (lowered := with_lower_case_name(arn)) != arn:
            res = self.d.resources.get_by_arn(lowered)
        if res is None:
            raise ValidationException(f"Resource {arn} does not exist.")
        return res.arn

    def add_tags(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        self.d.tags.put(self._require(params["ResourceArn"]), params["Tags"])
        return {"Tags": params["Tags"]}

    def list_tags(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        arn = self._require(params["ResourceArn"])
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
        self.d.tags.remove(self._require(params["ResourceArn"]), params["TagKeys"])
        return {}
