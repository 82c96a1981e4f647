"""Endpoints: Create/Describe/List/Delete/Update/UpdateEndpointWeightsAndCapacities.

Requests record the target (config name, desired weights/counts) and move the status; the deployment
reconciler (serving/deployments.py) starts, swaps and stops model-server fleets.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import ValidationException
from opensage.services.base import Deps, list_query
from opensage.services.models import ModelService
from opensage.serving.rolling import check_deployment_config
from opensage.states import transition
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, Resource
from opensage.store.tags import check_user_tags

KIND = "endpoint"


def endpoint_arn(deps: Deps, name: str) -> str:
    # Endpoint names are lower-cased inside ARNs in SageMaker's responses.
    return deps.arns.sagemaker(KIND, name.lower())


class EndpointService:
    def __init__(self, deps: Deps, models: ModelService) -> None:
        self.d = deps
        self.models = models

    def _get(self, name: str) -> Resource:
        res = self.d.resources.get(KIND, name)
        if res is None:
            raise ValidationException(f'Could not find endpoint "{endpoint_arn(self.d, name)}".')
        return res

    def create_endpoint(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        arn = endpoint_arn(self.d, name)
        config = self.models.get_endpoint_config(params["EndpointConfigName"])
        now = self.d.clock.time()
        state = {"_target_config": config.name, "_target": config.request}
        check_user_tags(params.get("Tags") or [])  # before the resource exists
        request = {k: v for k, v in params.items() if k != "Tags"}
        try:
            self.d.resources.create(Resource(KIND, name, arn, "Creating", now, now, request, state))
        except AlreadyExists:
            raise ValidationException(f'Cannot create already existing endpoint "{arn}".') from None
        self.d.tags.put(arn, params.get("Tags") or [])
        self.d.wake(KIND)
        return {"EndpointArn": arn}

    def describe_endpoint(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(params["EndpointName"])
        out: dict[str, Any] = {k: v for k, v in res.state.items() if not k.startswith("_")}
        out.update({"EndpointName": res.name, "EndpointArn": res.arn, "EndpointStatus": res.status,
                    "CreationTime": res.creation_time, "LastModifiedTime": res.last_modified_time})
        out.setdefault("EndpointConfigName", res.state.get("_target_config"))
        last = last_deployment_config(res)
        if last:
            out["LastDeploymentConfig"] = last
        pending = res.state.get("_pending_deployment")
        if res.status == "Updating" and pending:  # an UpdateEndpoint in progress (not a weights/capacity change)
            out["PendingDeploymentSummary"] = pending
        return out

    def list_endpoints(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        items, token = self.d.resources.list(KIND, list_query(params))
        out: dict[str, Any] = {"Endpoints": [{
            "EndpointName": r.name, "EndpointArn": r.arn, "CreationTime": r.creation_time,
            "LastModifiedTime": r.last_modified_time, "EndpointStatus": r.status} for r in items]}
        if token:
            out["NextToken"] = token
        return out

    def delete_endpoint(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._change(params["EndpointName"], "Deleting", {}, allowed=None)

    def update_endpoint(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(params["EndpointName"])
        config = self.models.get_endpoint_config(params["EndpointConfigName"])
        _check_updatable(res)
        deployment = params.get("DeploymentConfig")
        if not deployment and params.get("RetainDeploymentConfig"):
            # "Specifies whether to reuse the last deployment configuration": a retained canary stays a canary.
            deployment = last_deployment_config(res)
        if deployment:
            # What serves now (after a rolled-back update that is the previous configuration, not ``_target``).
            current = self.d.resources.get("endpoint-config", res.state.get("EndpointConfigName") or "")
            check_deployment_config(deployment, current.request if current is not None else
                                    res.state.get("_target") or {}, config.request)
        now = self.d.clock.time()
        changes: dict[str, Any] = {
            "_target_config": config.name, "_target": config.request, "_shift": None, "_rolling": None,
            "_deployment": deployment or None,
            # DescribeEndpoint's PendingDeploymentSummary; the reconciler adds the variants and their status.
            "_pending_deployment": {"EndpointConfigName": config.name, "StartTime": now}}
        if deployment:
            changes["_last_deployment"] = deployment
        return self._change(params["EndpointName"], "Updating", changes, allowed={"InService"})

    def update_endpoint_weights_and_capacities(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(params["EndpointName"])
        _check_updatable(res)
        names = [item["VariantName"] for item in params["DesiredWeightsAndCapacities"]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValidationException(
                f"The variant name(s) [{', '.join(duplicates)}] is/are specified more than once in "
                "DesiredWeightsAndCapacities.")
        variants = {v["VariantName"]: v for v in res.state.get("ProductionVariants", [])}
        for item in params["DesiredWeightsAndCapacities"]:
            if item["VariantName"] not in variants:
                raise ValidationException(
                    f"The variant name(s) [{item['VariantName']}] is/are not present in the endpoint.")
            if "CurrentServerlessConfig" in variants[item["VariantName"]] and "DesiredInstanceCount" in item:
                raise ValidationException(
                    f"Variant {item['VariantName']} is serverless: it has no instance count to set (its "
                    "instances follow the requests); change ServerlessConfig with UpdateEndpoint instead.")
            update = item.get("ServerlessUpdateConfig")
            if update is not None:
                serverless = variants[item["VariantName"]].get("CurrentServerlessConfig")
                if serverless is None:
                    raise ValidationException(
                        f"Variant {item['VariantName']} is not serverless: ServerlessUpdateConfig applies only to "
                        "a variant with a ServerlessConfig.")
                wanted = update.get("ProvisionedConcurrency")
                if wanted is not None and wanted > int(serverless.get("MaxConcurrency") or 0):
                    raise ValidationException(
                        f"ProvisionedConcurrency {wanted} of variant {item['VariantName']} is greater than its "
                        f"MaxConcurrency {serverless.get('MaxConcurrency')}.")
        return self._change(params["EndpointName"], "Updating",
                            {"_desired": params["DesiredWeightsAndCapacities"], "_pending_deployment": None},
                            allowed={"InService"})

    def _change(self, name: str, target: str, changes: dict[str, Any], allowed: set[str] | None) -> dict:
        for _ in range(5):
            res = self._get(name)
            if res.status == target == "Deleting":
                return {"EndpointArn": res.arn}
            if allowed is not None and res.status not in allowed:
                _check_updatable(res)
            if "_target_config" in changes and res.status == "InService":  # UpdateEndpoint: what to roll back to
                changes = {**changes, "_previous_config": res.state.get("EndpointConfigName"),
                           "_update_started": self.d.clock.time()}
            try:
                transition(self.d.resources, res, target, self.d.clock.time(), **changes)
            except ConcurrentUpdate:
                continue
            self.d.wake(KIND)
            return {"EndpointArn": res.arn}
        raise ValidationException(f"Endpoint {name} is changing; retry.")



# Statuses in which SageMaker answers a change with "Cannot update in-progress endpoint".
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")


def _check_updatable(res: Resource) -> None:
    """UpdateEndpoint / UpdateEndpointWeightsAndCapacities / a second change need an InService endpoint."""
    if res.status == "InService":
        return
    if res.status in IN_PROGRESS:
        raise ValidationException(f'Cannot update in-progress endpoint "{res.arn}".')
    raise ValidationException(
        f'Cannot update endpoint "{res.arn}" in status {res.status}: it must be InService. Delete it and create '
        "it again.")


def last_deployment_config(res: Resource) -> dict[str, Any] | None:
    """The DeploymentConfig of the endpoint's most recent deployment that had one (CreateEndpoint's at first)."""
    return res.state.get("_last_deployment") or res.request.get("DeploymentConfig") or None
