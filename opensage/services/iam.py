"""The sliver of IAM that SageMaker SDKs call before they submit work.

OpenSage enforces no IAM policies: every request is authenticated (SigV4) by the platform's key pair, and
any role ARN is accepted as an execution role. So a role of any name "exists", trusts SageMaker, and every
simulated action is allowed. SDK v3 checks these (GetRole, SimulatePrincipalPolicy) before creating a job.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from opensage.services.base import Deps

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


class IamService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def get_role(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["RoleName"]
        return {"Role": {
            "Path": "/", "RoleName": name, "RoleId": "AROA" + name.upper()[:16].ljust(16, "X"),
            "Arn": f"arn:aws:iam::{self.d.settings.account}:role/{name}",
            "CreateDate": self.d.clock.now(),
            # IAM returns policy documents URL-encoded; botocore decodes them.
            "AssumeRolePolicyDocument": quote(json.dumps(TRUST_POLICY)),
            "MaxSessionDuration": 3600,
        }}

    def simulate_principal_policy(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return {"EvaluationResults": [
            {"EvalActionName": action, "EvalResourceName": "*", "EvalDecision": "allowed"}
            for action in params.get("ActionNames") or []], "IsTruncated": False}
