"""Endpoints: Create/Describe/List/Delete/Update/UpdateEndpointWeightsAndCapacities.

Requests record the target (config name, desired weights/counts) and move the status; the deployment
reconciler (serving/deployments.py) starts, swaps and stops model-server fleets.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import ValidationException
from opensage.services.base import Deps, list_query
from opensage.services.models import ModelService
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
        if res.request.get("DeploymentConfig"):
            out["LastDeploymentConfig"] = res.request["DeploymentConfig"]
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
        config = self.models.get_endpoint_config(params["EndpointConfigName"])
        changes = {"_target_config": config.name, "_target": config.request, "_shift": None,
                   "_deployment": params.get("DeploymentConfig")}
        return self._change(params["EndpointName"], "Updating", changes, allowed={"InService"})

    def update_endpoint_weights_and_capacities(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(params["EndpointName"])
        variants = {v["VariantName"]: v for v in res.state.get("ProductionVariants", [])}
        for item in params["DesiredWeightsAndCapacities"]:
            if item["VariantName"] not in variants:
                raise ValidationException(
                    f"The variant name(s) [{item['VariantName']}] is/are not present in the endpoint.")
            if "CurrentServerlessConfig" in variants[item["VariantName"]] and "DesiredInstanceCount" in item:
                raise ValidationException(
                    f"Variant {item['VariantName']} is serverless: it has no instance count to set (its "
                    "instances follow the requests); change ServerlessConfig with UpdateEndpoint instead.")
        return self._change(params["EndpointName"], "Updating",
                            {"_desired": params["DesiredWeightsAndCapacities"]}, allowed={"InService"})

    def _change(self, name: str, target: str, changes: dict[str, Any], allowed: set[str] | None) -> dict:
        for _ in range(5):
            res = self._get(name)
            if res.status == target == "Deleting":
                return {"EndpointArn": res.arn}
            if allowed is not None and res.status not in allowed:
                raise ValidationException(
                    f'Cannot update in-progress endpoint "{res.arn}".' if res.status in ("Creating", "Updating")
                    else f"Endpoint {name} is in status {res.status}; it must be InService.")
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

