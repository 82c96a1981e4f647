"""STS GetCallerIdentity: the SDK asks who it is (telemetry, default-bucket naming)."""

from __future__ import annotations

from typing import Any

from opensage.services.base import Deps


class StsService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def get_caller_identity(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        account = self.d.settings.account
        return {"UserId": ctx.access_key or "opensage", "Account": account,
                "Arn": f"arn:aws:iam::{account}:user/opensage"}
