"""Inference experiments (shadow tests): Create / Describe / List / Start / Stop / Update / Delete.

An experiment of Type ShadowMode runs on a real endpoint: starting it writes an endpoint configuration
with the source (production) variant and the shadow variant (shadow weight = SamplingPercentage / 100 of
the production weight, the share of requests the runtime copies to it) and updates the endpoint to it;
DataStorageConfig becomes that configuration's DataCaptureConfig (both variants' requests and answers,
the shadow's under its own variant name). Stopping applies ModelVariantActions — Promote (the shadow becomes
a production variant), Remove, Retain — through another UpdateEndpoint.

The comparison SageMaker's console draws (invocations, model latency, errors per variant) is CloudWatch's
AWS/SageMaker per-variant metrics, which the runtime already publishes for shadow variants; the API itself
returns no metrics.

There is no loop of its own: an experiment's status follows its endpoint's deployment and is brought up to
date whenever the experiment is read or changed (Starting/Updating -> Running once the endpoint is
InService on the experiment's configuration, Stopping -> Completed/Cancelled, a scheduled StartTime reached
-> Starting, the schedule's EndTime reached -> the endpoint back on its configuration from before the
experiment, as SageMaker does, then Completed).
"""

from __future__ import annotations

from typing import Any

from opensage.errors import ConflictException, ResourceInUse, ResourceNotFound, ValidationException
from opensage.services.base import Deps, epoch, list_query
from opensage.services.endpoints import EndpointService
from opensage.services.models import ModelService
from opensage.states import transition
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, Resource
from opensage.store.tags import check_user_tags

KIND = "inference-experiment"
DEFAULT_DURATION = 7 * 24 * 3600.0  # "concludes after 7 days" without a Schedule
MAX_DURATION = 30 * 24 * 3600.0  # "The maximum duration that you can set for an inference experiment is 30 days."
ACTIVE = ("Created", "Starting", "Running", "Updating", "Stopping")


class InferenceExperimentService:
    def __init__(self, deps: Deps, models: ModelService, endpoints: EndpointService) -> None:
        self.d = deps
        self.models = models
        self.endpoints = endpoints

    # -- operations ----------------------------------------------------------------------------------
    def create_inference_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["Name"]
        arn = self.d.arns.sagemaker(KIND, name)
        check_user_tags(params.get("Tags") or [])
        endpoint = self.endpoints._get(params["EndpointName"])
        self._check_variants(params, endpoint)
        if endpoint.status != "InService":
            raise ValidationException(f"Endpoint {endpoint.name} is {endpoint.status}: an inference experiment "
                                      "needs an InService endpoint.")
        now = self.d.clock.time()
        schedule = self._schedule(params.get("Schedule"), now)
        request = {k: v for k, v in params.items() if k != "Tags"}
        state = {"Schedule": schedule, "_source_config": endpoint.state.get("EndpointConfigName")}
        res = Resource(KIND, name, arn, "Created", now, now, request, state)
        try:
            self.d.resources.create(res)
        except AlreadyExists:
            raise ResourceInUse(f'Inference experiment "{arn}" already exists.') from None
        self.d.tags.put(arn, params.get("Tags") or [])
        if schedule["StartTime"] <= now:  # no Schedule (or a start in the past): it starts at once
            self._deploy(ctx, self.d.resources.get(KIND, name), "Starting")
        return {"InferenceExperimentArn": arn}

    def describe_inference_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._refresh(ctx, self._get(params["Name"]))
        req, st = res.request, res.state
        out: dict[str, Any] = {
            "Arn": res.arn, "Name": res.name, "Type": req["Type"], "Schedule": st["Schedule"],
            "Status": res.status, "CreationTime": res.creation_time, "LastModifiedTime": res.last_modified_time,
            "RoleArn": req["RoleArn"], "EndpointMetadata": self._endpoint_metadata(req["EndpointName"]),
            "ModelVariants": self._variant_summaries(res),
            "ShadowModeConfig": req["ShadowModeConfig"]}
        for key in ("Description", "DataStorageConfig", "KmsKey"):
            if req.get(key) is not None:
                out[key] = req[key]
        for key in ("StatusReason", "CompletionTime"):
            if st.get(key) is not None:
                out[key] = st[key]
        return out

    def list_inference_experiments(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        for res in self.d.resources.in_status(KIND, ACTIVE):  # statuses up to date before filtering on them
            self._refresh(ctx, res)
        items, token = self.d.resources.list(KIND, list_query(params))
        out: dict[str, Any] = {"InferenceExperiments": [{
            "Name": r.name, "Type": r.request["Type"], "Schedule": r.state["Schedule"], "Status": r.status,
            "CreationTime": r.creation_time, "LastModifiedTime": r.last_modified_time,
            "RoleArn": r.request["RoleArn"],
            **{k: v for k, v in (("Description", r.request.get("Description")),
                                 ("StatusReason", r.state.get("StatusReason")),
                                 ("CompletionTime", r.state.get("CompletionTime"))) if v is not None},
        } for r in items if params.get("Type") in (None, r.request["Type"])]}
        if token:
            out["NextToken"] = token
        return out

    def start_inference_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._refresh(ctx, self._get(params["Name"]))
        if res.status != "Created":
            raise ConflictException(f"Inference experiment {res.name} is {res.status}: only a Created experiment "
                                    "can be started.")
        res.state["Schedule"]["StartTime"] = self.d.clock.time()
        self._deploy(ctx, res, "Starting")
        return {"InferenceExperimentArn": res.arn}

    def stop_inference_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._refresh(ctx, self._get(params["Name"]))
        if res.status not in ("Running", "Starting", "Updating"):
            raise ConflictException(f"Inference experiment {res.name} is {res.status}: only a running experiment "
                                    "can be stopped.")
        config = self._final_config(res, params["ModelVariantActions"], params.get("DesiredModelVariants") or [])
        res.state["_desired_state"] = params.get("DesiredState") or "Completed"
        if params.get("Reason"):
            res.state["StatusReason"] = params["Reason"]
        if config is None:  # everything retained: the endpoint stays as it is
            self._finish(res)
            return {"InferenceExperimentArn": res.arn}
        self._update_endpoint(ctx, res, config)
        transition(self.d.resources, res, "Stopping", self.d.clock.time())
        return {"InferenceExperimentArn": res.arn}

    def update_inference_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._refresh(ctx, self._get(params["Name"]))
        if res.status not in ("Created", "Running"):
            raise ConflictException(f"Inference experiment {res.name} is {res.status}: only a Created or Running "
                                    "experiment can be updated.")
        changed = {k: v for k, v in params.items() if k != "Name" and v is not None}
        request = {**res.request, **changed}
        endpoint = self.endpoints._get(request["EndpointName"])
        self._check_variants(request, endpoint, source_on_endpoint=res.status == "Created")
        res.request = request
        if "Schedule" in changed:
            schedule = {**res.state["Schedule"], **{k: epoch(v) for k, v in changed["Schedule"].items()}}
            if res.status == "Running":  # a running experiment keeps its start; only its end moves
                schedule["StartTime"] = res.state["Schedule"]["StartTime"]
            res.state["Schedule"] = self._schedule(schedule, self.d.clock.time(), check_start=False)
        if res.status == "Running" and changed.keys() & {"ModelVariants", "ShadowModeConfig", "DataStorageConfig"}:
            self._deploy(ctx, res, "Updating")
        else:
            self.d.resources.save(res, self.d.clock.time())
        return {"InferenceExperimentArn": res.arn}

    def delete_inference_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._refresh(ctx, self._get(params["Name"]))
        if res.status not in ("Created", "Completed", "Cancelled"):
            raise ConflictException(f"Inference experiment {res.name} is {res.status}: stop it before deleting it.")
        # Only the experiment's own record goes; the endpoint and its variants stay as they are.
        self.d.resources.delete(KIND, res.name)
        self.d.tags.drop_all(res.arn)
        return {"InferenceExperimentArn": res.arn}

    # -- helpers -------------------------------------------------------------------------------------
    def _get(self, name: str) -> Resource:
        res = self.d.resources.get(KIND, name)
        if res is None:
            raise ResourceNotFound(f'Inference experiment "{self.d.arns.sagemaker(KIND, name)}" does not exist.')
        return res

    def _schedule(self, schedule: dict[str, Any] | None, now: float, check_start: bool = True) -> dict[str, float]:
        schedule = schedule or {}
        start = epoch(schedule.get("StartTime"))
        start = now if start is None else start
        end = epoch(schedule.get("EndTime"))
        end = start + DEFAULT_DURATION if end is None else end
        if end <= start:
            raise ValidationException("Schedule.EndTime must be after Schedule.StartTime.")
        if end - start > MAX_DURATION:
            raise ValidationException("The maximum duration of an inference experiment is 30 days "
                                      "(Schedule.EndTime - Schedule.StartTime).")
        if check_start and end <= now:
            raise ValidationException("Schedule.EndTime must be in the future.")
        return {"StartTime": start, "EndTime": end}

    def _check_variants(self, params: dict[str, Any], endpoint: Resource, source_on_endpoint: bool = True) -> None:
        variants = params["ModelVariants"]
        names = [v["VariantName"] for v in variants]
        if len(set(names)) != len(names):
            raise ValidationException("ModelVariants: every VariantName must be unique.")
        for v in variants:
            self.models.get_model(v["ModelName"])
            if int(v["InfrastructureConfig"]["RealTimeInferenceConfig"]["InstanceCount"]) < 1:
                raise ValidationException(f"ModelVariants: InstanceCount of variant {v['VariantName']} must be at "
                                          "least 1.")
        shadow_cfg = params["ShadowModeConfig"]
        source = shadow_cfg["SourceModelVariantName"]
        shadow = shadow_cfg["ShadowModelVariants"][0]["ShadowModelVariantName"]
        for field, value in (("SourceModelVariantName", source), ("ShadowModelVariantName", shadow)):
            if value not in names:
                raise ValidationException(f"ShadowModeConfig.{field} {value} is not one of ModelVariants "
                                          f"({', '.join(names)}).")
        if source == shadow:
            raise ValidationException("ShadowModeConfig: the shadow variant must differ from the source variant.")
        if len(variants) != 2:
            raise ValidationException("A ShadowMode experiment has two ModelVariants: the source (production) "
                                      "variant and the shadow variant.")
        self._check_exclusions(variants, endpoint)
        production = [v["VariantName"] for v in endpoint.state.get("ProductionVariants") or []]
        if source_on_endpoint and source not in production:
            raise ValidationException(f"ShadowModeConfig.SourceModelVariantName {source} is not a production "
                                      f"variant of endpoint {endpoint.name} ({', '.join(production)}).")

    def _check_exclusions(self, variants: list[dict[str, Any]], endpoint: Resource) -> None:
        """SageMaker's shadow-test exclusions: serverless, asynchronous, multi-container, multi-model."""
        config = endpoint.state.get("_target") or {}
        if any(v.get("ServerlessConfig") for v in config.get("ProductionVariants") or []):
            raise ValidationException(f"Endpoint {endpoint.name} is a serverless endpoint: shadow tests are not "
                                      "supported for serverless inference.")
        if config.get("AsyncInferenceConfig"):
            raise ValidationException(f"Endpoint {endpoint.name} is an asynchronous endpoint: shadow tests are not "
                                      "supported for asynchronous inference.")
        for v in variants:
            model = self.models.get_model(v["ModelName"]).request
            containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
            if len(containers) > 1:
                raise ValidationException(f"Model {v['ModelName']} has several containers: shadow tests are not "
                                          "supported for multiple-container endpoints.")
            if (containers[0] or {}).get("Mode") == "MultiModel":
                raise ValidationException(f"Model {v['ModelName']} is a multi-model container: shadow tests are not "
                                          "supported for multi-model endpoints.")

    def _variant(self, res: Resource, name: str, desired: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A ModelVariantConfig -> an endpoint configuration's ProductionVariant."""
        entry = next(v for v in res.request["ModelVariants"] if v["VariantName"] == name)
        entry = next((d for d in desired or [] if d["VariantName"] == name), entry)
        infra = entry["InfrastructureConfig"]["RealTimeInferenceConfig"]
        return {"VariantName": name, "ModelName": entry["ModelName"], "InstanceType": infra["InstanceType"],
                "InitialInstanceCount": int(infra["InstanceCount"]), "InitialVariantWeight": 1.0}

    def _names(self, res: Resource) -> tuple[str, str, int]:
        cfg = res.request["ShadowModeConfig"]
        shadow = cfg["ShadowModelVariants"][0]
        return cfg["SourceModelVariantName"], shadow["ShadowModelVariantName"], int(shadow["SamplingPercentage"])

    def _experiment_config(self, res: Resource) -> dict[str, Any]:
        source, shadow, percent = self._names(res)
        config: dict[str, Any] = {
            "ProductionVariants": [self._variant(res, source)],
            # The runtime copies (shadow weight / production weight) of the requests to the shadow.
            "ShadowProductionVariants": [{**self._variant(res, shadow), "InitialVariantWeight": percent / 100.0}]}
        storage = res.request.get("DataStorageConfig")
        if storage:
            capture: dict[str, Any] = {
                "EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": storage["Destination"],
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}
            if storage.get("KmsKey"):
                capture["KmsKeyId"] = storage["KmsKey"]
            if storage.get("ContentType"):
                capture["CaptureContentTypeHeader"] = storage["ContentType"]
            config["DataCaptureConfig"] = capture
        else:  # the endpoint's own data capture (a monitoring schedule's, say) keeps running
            original = self.d.resources.get("endpoint-config", res.state.get("_source_config") or "")
            if original is not None and original.request.get("DataCaptureConfig"):
                config["DataCaptureConfig"] = original.request["DataCaptureConfig"]
        return config

    def _final_config(self, res: Resource, actions: dict[str, str],
                      desired: list[dict[str, Any]]) -> dict[str, Any] | None:
        source, shadow, _ = self._names(res)
        unknown = sorted(set(actions) - {source, shadow})
        if unknown:
            raise ValidationException(f"ModelVariantActions names variants that are not in the experiment: "
                                      f"{', '.join(unknown)}.")
        src_action, shadow_action = actions.get(source, "Retain"), actions.get(shadow, "Remove")
        if src_action == "Promote":
            raise ValidationException(f"ModelVariantActions: {source} is already the production variant; only the "
                                      "shadow variant can be promoted.")
        if src_action == "Retain" and shadow_action == "Retain":
            return None
        production = [self._variant(res, source, desired)] if src_action == "Retain" else []
        if shadow_action == "Promote":
            production.append(self._variant(res, shadow, desired))
        if not production:
            raise ValidationException("ModelVariantActions would leave the endpoint without a production variant: "
                                      "retain the source variant or promote the shadow variant.")
        config: dict[str, Any] = {"ProductionVariants": production}
        if shadow_action == "Retain":
            config["ShadowProductionVariants"] = self._experiment_config(res)["ShadowProductionVariants"]
        original = self.d.resources.get("endpoint-config", res.state.get("_source_config") or "")
        if original is not None and original.request.get("DataCaptureConfig"):
            config["DataCaptureConfig"] = original.request["DataCaptureConfig"]  # the endpoint's own capture again
        return config

    def _deploy(self, ctx, res: Resource, status: str) -> None:
        """Put the experiment's variants on the endpoint (Starting, or Updating a running experiment)."""
        self._update_endpoint(ctx, res, self._experiment_config(res))
        res.state.pop("StatusReason", None)
        transition(self.d.resources, res, status, self.d.clock.time())

    def _update_endpoint(self, ctx, res: Resource, config: dict[str, Any]) -> None:
        now = self.d.clock.time()
        name = f"{res.name[:44]}-{int(now * 1000) % 10**12}"
        self.models.create_endpoint_config(ctx, {"EndpointConfigName": name, **config})
        try:
            self.endpoints.update_endpoint(ctx, {"EndpointName": res.request["EndpointName"],
                                                 "EndpointConfigName": name})
        except ValidationException:
            self.d.resources.delete("endpoint-config", name)
            raise
        res.state["_config"] = name

    def _revert(self, ctx, res: Resource) -> None:
        """The schedule's end: the endpoint goes back to its configuration from before the experiment."""
        original = self.d.resources.get("endpoint-config", res.state.get("_source_config") or "")
        if original is not None:
            self.endpoints.update_endpoint(ctx, {"EndpointName": res.request["EndpointName"],
                                                 "EndpointConfigName": original.name})
            res.state["_config"] = original.name
        else:  # its configuration was deleted since: the source variant alone
            source, shadow, _ = self._names(res)
            self._update_endpoint(ctx, res, self._final_config(res, {source: "Retain", shadow: "Remove"}, []))
        res.state["_desired_state"] = "Completed"
        transition(self.d.resources, res, "Stopping", self.d.clock.time())

    def _finish(self, res: Resource) -> Resource:
        """-> Completed (or the DesiredState StopInferenceExperiment asked for)."""
        res.state["CompletionTime"] = self.d.clock.time()
        target = res.state.pop("_desired_state", None) or "Completed"
        return transition(self.d.resources, res, target, self.d.clock.time())

    def _refresh(self, ctx, res: Resource) -> Resource:
        """Bring the experiment's status up to date with its endpoint and schedule."""
        for _ in range(3):
            try:
                return self._advance(ctx, res)
            except ConcurrentUpdate:
                res = self._get(res.name)
        return res

    def _advance(self, ctx, res: Resource) -> Resource:
        now = self.d.clock.time()
        endpoint = self.d.resources.get("endpoint", res.request["EndpointName"])
        if res.status in ("Starting", "Updating", "Running", "Stopping") and endpoint is None:
            res.state["StatusReason"] = f"Endpoint {res.request['EndpointName']} was deleted."
            res.state["_desired_state"] = "Cancelled"
            return self._finish(res)
        if res.status == "Created" and res.state["Schedule"]["StartTime"] <= now:
            if endpoint is not None and endpoint.status == "InService":
                self._deploy(ctx, res, "Starting")
            return res
        if res.status == "Running" and now >= res.state["Schedule"]["EndTime"] and endpoint.status == "InService":
            self._revert(ctx, res)  # "After the test is complete, the endpoint reverts to the state it was in"
            return res
        if res.status not in ("Starting", "Updating", "Stopping") or endpoint.status != "InService":
            return res
        if endpoint.state.get("EndpointConfigName") == res.state.get("_config"):
            if res.status == "Stopping":
                return self._finish(res)
            return transition(self.d.resources, res, "Running", now)
        # The endpoint is back InService on another configuration: its update failed (or was rolled back).
        reason = endpoint.state.get("FailureReason") or "the endpoint update did not complete"
        res.state["StatusReason"] = f"Deploying the experiment's variants failed: {reason}"[:1024]
        if res.status == "Starting":
            res.state["_desired_state"] = "Cancelled"
            return self._finish(res)
        return transition(self.d.resources, res, "Running" if res.status == "Updating" else "Completed", now)

    def _endpoint_metadata(self, endpoint_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"EndpointName": endpoint_name}
        ep = self.d.resources.get("endpoint", endpoint_name)
        if ep is not None:
            out["EndpointStatus"] = ep.status
            if ep.state.get("EndpointConfigName") or ep.state.get("_target_config"):
                out["EndpointConfigName"] = ep.state.get("EndpointConfigName") or ep.state.get("_target_config")
            if ep.state.get("FailureReason"):
                out["FailureReason"] = ep.state["FailureReason"]
        return out

    def _variant_summaries(self, res: Resource) -> list[dict[str, Any]]:
        source, shadow, _ = self._names(res)
        ep = self.d.resources.get("endpoint", res.request["EndpointName"])
        on_endpoint = set()
        if ep is not None:
            on_endpoint = {v["VariantName"] for key in ("ProductionVariants", "ShadowProductionVariants")
                           for v in ep.state.get(key) or []}
        out = []
        for v in res.request["ModelVariants"]:
            name = v["VariantName"]
            if res.status in ("Starting", "Updating"):
                status = "InService" if name == source and name in on_endpoint else (
                    "Creating" if res.status == "Starting" else "Updating")
            elif res.status == "Created":
                status = "InService" if name == source and name in on_endpoint else "Creating"
            elif res.status == "Stopping":
                status = "Updating"
            elif res.status in ("Completed", "Cancelled"):
                status = "InService" if name in on_endpoint else "Deleted"
            else:
                status = "InService"
            out.append({"ModelName": v["ModelName"], "VariantName": name,
                        "InfrastructureConfig": v["InfrastructureConfig"], "Status": status})
        return out
