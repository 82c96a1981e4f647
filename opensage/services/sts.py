"""STS GetCallerIdentity: the SDK asks who it is (telemetry, default-bucket naming).

The platform's own key is a session of the role ``PLATFORM_ROLE`` (as a notebook's identity is); a job's or
endpoint's temporary credentials answer as AWS answers inside a SageMaker job: the assumed role of the resource's RoleArn (ExecutionRoleArn for models),
session name ``SageMaker``, so a job's identity is visible to the code that asks.
"""

from __future__ import annotations

from typing import Any

from opensage.services.base import Deps

_SESSION = "SageMaker"
PLATFORM_ROLE = "SageMakerRole"  # the role the platform's own key stands for


class StsService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def get_caller_identity(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        account = self.d.settings.account
        owner = ctx.owner
        if owner:
            role = self._role_name(owner)
            return {"UserId": f"{ctx.access_key}:{_SESSION}", "Account": account,
                    "Arn": f"arn:aws:sts::{account}:assumed-role/{role}/{_SESSION}"}
        # The platform's own key answers as a notebook's execution role does on SageMaker (a session of
        # PLATFORM_ROLE): the SDK's get_execution_role() turns that into the role's ARN (IAM GetRole is served),
        # so notebooks that start with it run unchanged.
        return {"UserId": f"AROA{account}OPENSAGE:opensage", "Account": account,
                "Arn": f"arn:aws:sts::{account}:assumed-role/{PLATFORM_ROLE}/opensage"}

    def _role_name(self, owner: str) -> str:
        """The role the resource named by ``owner`` (``<kind>/<name>/<generation>``) runs as."""
        kind, _, rest = owner.partition("/")
        name = rest.rpartition("/")[0] or rest
        row = self.d.resources.get(kind, name)
        request = row.request if row is not None else {}
        role_arn = request.get("RoleArn") or request.get("ExecutionRoleArn") or ""
        return role_arn.rpartition("/")[2] or "SageMakerExecutionRole"
