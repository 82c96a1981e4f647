"""SageMaker Pipelines API: pipelines (definition + versions) and their executions. Requests record intent;
the engine (opensage/pipelines/engine.py) runs executions.

Wording clients depend on: the SDK's ``Pipeline.upsert`` updates when CreatePipeline fails with a
ValidationException containing "already exists"; a missing pipeline is ResourceNotFound.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from typing import Any

from opensage.errors import ResourceNotFound, ValidationException
from opensage.pipelines import definition as pdef
from opensage.pipelines.engine import EXECUTION, PIPELINE, selective_steps
from opensage.services.base import Deps, epoch, open_next_token, seal_next_token
from opensage.states import transition
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, ListQuery, Resource
from opensage.store.tags import check_user_tags

_ID_CHARS = string.ascii_lowercase + string.digits
UNCHANGED = object()  # _update_execution: answer without writing


def _page(deps: Deps, operation: str, params: dict[str, Any], items: list, key: str,
          default_limit: int | None) -> dict[str, Any]:
    """Offset paging in Python for lists built from one row (steps, parameters, filtered pipelines)."""
    start = open_next_token(deps, operation, params) or 0
    if not isinstance(start, int) or start < 0:
        raise ValidationException('Invalid pagination token because "the token cannot be read".')
    limit = params.get("MaxResults") or default_limit or len(items) or 1
    out: dict[str, Any] = {key: items[start:start + limit]}
    if start + limit < len(items):
        out["NextToken"] = seal_next_token(deps, operation, params, start + limit)
    return out


class PipelineService:
    def __init__(self, deps: Deps, read_object: Callable[[str, str], bytes]) -> None:
        self.d = deps
        self.read_object = read_object

    # -- lookups -----------------------------------------------------------------------------------------
    def _pipeline_arn(self, name: str) -> str:
        return self.d.arns.sagemaker(PIPELINE, name.lower())  # SageMaker lower-cases pipeline ARNs

    def _pipeline(self, name_or_arn: str) -> Resource:
        if name_or_arn.startswith("arn:"):
            res = self.d.resources.get_by_arn(name_or_arn.lower())
        else:
            res = self.d.resources.get(PIPELINE, name_or_arn)
            if res is None:
                res = self.d.resources.get_by_arn(self._pipeline_arn(name_or_arn))
        if res is None or res.kind != PIPELINE:
            arn = name_or_arn if name_or_arn.startswith("arn:") else self._pipeline_arn(name_or_arn)
            raise ResourceNotFound(f"Pipeline '{arn}' does not exist.")
        return res

    def _execution(self, arn: str) -> Resource:
        res = self.d.resources.get_by_arn(arn)
        if res is None or res.kind != EXECUTION:
            raise ResourceNotFound(f"Pipeline execution '{arn}' does not exist.")
        return res

    def _definition_text(self, params: dict[str, Any]) -> str:
        if params.get("PipelineDefinition"):
            return params["PipelineDefinition"]
        loc = params.get("PipelineDefinitionS3Location")
        if not loc:
            raise ValidationException("Either PipelineDefinition or PipelineDefinitionS3Location must be provided.")
        uri = f"s3://{loc['Bucket']}/{loc['ObjectKey']}"
        try:
            data = self.read_object(loc["Bucket"], loc["ObjectKey"])
        except Exception as e:  # noqa: BLE001 - any store failure is the caller's missing object, worded
            raise ValidationException(f"Could not read the pipeline definition at "
                                      f"PipelineDefinitionS3Location {uri}: {type(e).__name__}: {e}") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationException(f"The pipeline definition at {uri} is not UTF-8 text.") from None

    # -- pipelines ---------------------------------------------------------------------------------------
    def create_pipeline(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["PipelineName"]
        arn = self._pipeline_arn(name)
        existing = self.d.resources.get(PIPELINE, name) or self.d.resources.get_by_arn(arn)
        if existing is not None:
            if existing.request.get("ClientRequestToken") == params.get("ClientRequestToken"):
                return {"PipelineArn": existing.arn}  # the same request again (idempotent)
            raise ValidationException(f"Pipeline names must be unique within an AWS account and region. Pipeline "
                                      f"with name ({name}) already exists.")
        text = self._definition_text(params)
        pdef.parse(text)
        check_user_tags(params.get("Tags") or [])
        now = self.d.clock.time()
        request = {"PipelineName": name, "PipelineDisplayName": params.get("PipelineDisplayName") or name,
                   "PipelineDefinition": text, "RoleArn": params["RoleArn"],
                   "ClientRequestToken": params.get("ClientRequestToken")}
        for key in ("PipelineDescription", "ParallelismConfiguration"):
            if params.get(key) is not None:
                request[key] = params[key]
        try:
            self.d.resources.create(Resource(PIPELINE, name, arn, "Active", now, now, request,
                                             {"PipelineVersionId": 1, "_versions": {"1": text},
                                              "_version_times": {"1": now}}))
        except AlreadyExists:
            raise ValidationException(f"Pipeline names must be unique within an AWS account and region. Pipeline "
                                      f"with name ({name}) already exists.") from None
        self.d.tags.put(arn, params.get("Tags") or [])
        return {"PipelineArn": arn}

    def update_pipeline(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        for _ in range(5):
            res = self._pipeline(params["PipelineName"])
            if params.get("PipelineDefinition") or params.get("PipelineDefinitionS3Location"):
                text = self._definition_text(params)
                pdef.parse(text)
                version = int(res.state.get("PipelineVersionId", 1)) + 1
                res.request["PipelineDefinition"] = text
                res.state["PipelineVersionId"] = version
                res.state.setdefault("_versions", {})[str(version)] = text
                res.state.setdefault("_version_times", {})[str(version)] = self.d.clock.time()
            for key in ("PipelineDisplayName", "PipelineDescription", "RoleArn", "ParallelismConfiguration"):
                if params.get(key) is not None:
                    res.request[key] = params[key]
            try:
                self.d.resources.save(res, self.d.clock.time())
            except ConcurrentUpdate:
                continue
            return {"PipelineArn": res.arn, "PipelineVersionId": res.state["PipelineVersionId"]}
        raise ValidationException("The pipeline is being updated; retry UpdatePipeline.")

    def describe_pipeline(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._pipeline(params["PipelineName"])
        out: dict[str, Any] = {k: v for k, v in res.request.items() if k != "ClientRequestToken"}
        version = params.get("PipelineVersionId")
        if version is not None:
            text = (res.state.get("_versions") or {}).get(str(version))
            if text is None:
                raise ResourceNotFound(f"Pipeline version {version} of '{res.arn}' does not exist.")
            out["PipelineDefinition"] = text
        last = self._last_execution(res)
        out.update(PipelineArn=res.arn, PipelineStatus=res.status, CreationTime=res.creation_time,
                   LastModifiedTime=res.last_modified_time)
        if last is not None:
            out["LastRunTime"] = last.creation_time
        return out

    def _last_execution(self, res: Resource) -> Resource | None:
        rows, _ = self.d.resources.list(EXECUTION, ListQuery(parent_arn=res.arn, descending=True, limit=1))
        return rows[0] if rows else None

    def delete_pipeline(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._pipeline(params["PipelineName"])
        for execution in self.d.resources.in_status(EXECUTION, ("Executing",)):
            if execution.parent_arn == res.arn:
                try:
                    transition(self.d.resources, execution, "Stopping", self.d.clock.time())
                except ConcurrentUpdate:
                    pass  # the engine moved it on; it ends by itself
        self.d.resources.delete(PIPELINE, res.name)
        self.d.wake(EXECUTION)
        return {"PipelineArn": res.arn}

    def list_pipelines(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        prefix = (params.get("PipelineNamePrefix") or "").lower()
        rows, _ = self.d.resources.list(PIPELINE, ListQuery(name_contains=prefix or None, limit=100000,
                                                            sort_by=params.get("SortBy") or "CreationTime",
                                                            descending=params.get("SortOrder") == "Descending"))
        after, before = epoch(params.get("CreatedAfter")), epoch(params.get("CreatedBefore"))
        items = []
        for res in rows:
            if prefix and not res.name.lower().startswith(prefix):
                continue
            if (after is not None and res.creation_time <= after) or (before is not None and
                                                                       res.creation_time >= before):
                continue
            last = self._last_execution(res)
            item = {"PipelineArn": res.arn, "PipelineName": res.name, "CreationTime": res.creation_time,
                    "LastModifiedTime": res.last_modified_time,
                    "PipelineDisplayName": res.request.get("PipelineDisplayName"), "RoleArn": res.request["RoleArn"]}
            if res.request.get("PipelineDescription"):
                item["PipelineDescription"] = res.request["PipelineDescription"]
            if last is not None:
                item["LastExecutionTime"] = last.creation_time
            items.append(item)
        return _page(self.d, "ListPipelines", params, items, "PipelineSummaries", 10)

    def list_pipeline_versions(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._pipeline(params["PipelineName"])
        times = res.state.get("_version_times") or {}
        after, before = epoch(params.get("CreatedAfter")), epoch(params.get("CreatedBefore"))
        rows, _ = self.d.resources.list(EXECUTION, ListQuery(parent_arn=res.arn, descending=True, limit=100000))
        items = []
        for version in sorted((int(v) for v in res.state.get("_versions") or {}),
                              reverse=(params.get("SortOrder") or "Descending") == "Descending"):
            created = times.get(str(version), res.creation_time)
            if (after is not None and created <= after) or (before is not None and created >= before):
                continue
            item: dict[str, Any] = {"PipelineArn": res.arn, "PipelineVersionId": version, "CreationTime": created}
            last = next((r for r in rows if r.request.get("PipelineVersionId") == version), None)
            if last is not None:
                item["LastExecutionPipelineExecutionArn"] = last.arn
            items.append(item)
        return _page(self.d, "ListPipelineVersions", params, items, "PipelineVersionSummaries", 10)

    # -- executions --------------------------------------------------------------------------------------
    def start_pipeline_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        pipeline = self._pipeline(params["PipelineName"])
        token = params.get("ClientRequestToken")
        if token:
            rows, _ = self.d.resources.list(EXECUTION, ListQuery(parent_arn=pipeline.arn, limit=100000))
            for row in rows:
                if row.request.get("ClientRequestToken") == token:
                    return {"PipelineExecutionArn": row.arn}
        text = pipeline.request["PipelineDefinition"]
        version = params.get("PipelineVersionId")
        if version is not None:
            text = (pipeline.state.get("_versions") or {}).get(str(version))
            if text is None:
                raise ResourceNotFound(f"Pipeline version {version} of '{pipeline.arn}' does not exist.")
        defn = pdef.parse(text)
        values, listed = self._parameters(defn, params.get("PipelineParameters") or [])
        execution_id = "".join(secrets.choice(_ID_CHARS) for _ in range(12))
        arn = f"{pipeline.arn}/execution/{execution_id}"
        steps: dict[str, Any] = {}
        selective = params.get("SelectiveExecutionConfig")
        if selective:
            source_arn = selective.get("SourcePipelineExecutionArn")
            if not source_arn:
                source = self._last_execution(pipeline)
                if source is None:
                    raise ValidationException("SelectiveExecutionConfig needs SourcePipelineExecutionArn: this "
                                              "pipeline has no earlier execution.")
            else:
                source = self._execution(source_arn)
            if source.parent_arn != pipeline.arn:
                raise ValidationException(f"SelectiveExecutionConfig.SourcePipelineExecutionArn {source.arn} is an "
                                          f"execution of another pipeline.")
            if source.status in ("Executing", "Stopping"):
                raise ValidationException(f"SelectiveExecutionConfig.SourcePipelineExecutionArn {source.arn} is "
                                          f"still {source.status}; wait until it ends.")
            steps = selective_steps(defn, source, [s["StepName"] for s in selective["SelectedSteps"]])
            selective = {"SourcePipelineExecutionArn": source.arn, "SelectedSteps": selective["SelectedSteps"]}
        now = self.d.clock.time()
        request: dict[str, Any] = {
            "PipelineName": pipeline.name, "PipelineArn": pipeline.arn, "PipelineDefinition": text,
            "Parameters": values, "PipelineParameters": listed, "ClientRequestToken": token,
            "PipelineVersionId": version or pipeline.state.get("PipelineVersionId", 1),
            "PipelineExecutionDisplayName": params.get("PipelineExecutionDisplayName") or f"execution-{int(now * 1000)}",
            "RoleArn": params.get("RoleArn") or pipeline.request["RoleArn"],
            "_ExperimentConfig": isinstance(defn.raw.get("PipelineExperimentConfig"), dict)}
        parallelism = params.get("ParallelismConfiguration") or pipeline.request.get("ParallelismConfiguration")
        if parallelism:
            request["ParallelismConfiguration"] = parallelism
        if params.get("PipelineExecutionDescription"):
            request["PipelineExecutionDescription"] = params["PipelineExecutionDescription"]
        if selective:
            request["SelectiveExecutionConfig"] = selective
        try:
            self.d.resources.create(Resource(EXECUTION, execution_id, arn, "Executing", now, now, request,
                                             {"Steps": steps}, parent_arn=pipeline.arn))
        except AlreadyExists:  # 36^12 ids: a collision is a retry, not an error the caller should see
            return self.start_pipeline_execution(ctx, params)
        self.d.wake(EXECUTION)
        return {"PipelineExecutionArn": arn}

    @staticmethod
    def _parameters(defn: pdef.Definition, given: list[dict[str, Any]]) -> tuple[dict[str, Any], list]:
        """Typed values for every declared parameter: start overrides (strings) checked against their type."""
        overrides: dict[str, Any] = {}
        for i, p in enumerate(given, start=1):
            if p["Name"] not in defn.parameters:
                declared = ", ".join(defn.parameters) or "none"
                raise ValidationException(f"PipelineParameters.{i}: parameter '{p['Name']}' is not declared in the "
                                          f"pipeline definition (declared: {declared}).")
            overrides[p["Name"]] = p["Value"]
        values: dict[str, Any] = {}
        for name, spec in defn.parameters.items():
            raw = overrides.get(name, spec.get("DefaultValue"))
            if raw is None:
                raise ValidationException(f"PipelineParameters: parameter '{name}' has no default value; give a "
                                          f"value at start.")
            try:
                values[name] = pdef.convert(spec, raw)
            except ValueError as e:
                where = "PipelineParameters" if name in overrides else "DefaultValue"
                raise ValidationException(f"{where}: {e}.") from None
        from opensage.pipelines.expressions import to_text

        listed = [{"Name": n, "Value": to_text(v)} for n, v in values.items()]
        return values, listed

    def describe_pipeline_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._execution(params["PipelineExecutionArn"])
        req = res.request
        out: dict[str, Any] = {
            "PipelineArn": req["PipelineArn"], "PipelineExecutionArn": res.arn,
            "PipelineExecutionDisplayName": req.get("PipelineExecutionDisplayName"),
            "PipelineExecutionStatus": res.status, "CreationTime": res.creation_time,
            "LastModifiedTime": res.last_modified_time, "PipelineVersionId": req.get("PipelineVersionId"),
            "RoleArn": req.get("RoleArn")}
        if req.get("_ExperimentConfig"):  # the SDK writes null outside its experiment regions
            out["PipelineExperimentConfig"] = {"ExperimentName": req["PipelineName"], "TrialName": res.name}
        for key in ("PipelineExecutionDescription", "ParallelismConfiguration", "SelectiveExecutionConfig"):
            if req.get(key):
                out[key] = req[key]
        if res.state.get("FailureReason"):
            out["FailureReason"] = res.state["FailureReason"]
        return out

    def describe_pipeline_definition_for_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._execution(params["PipelineExecutionArn"])
        return {"PipelineDefinition": res.request["PipelineDefinition"], "CreationTime": res.creation_time}

    def list_pipeline_executions(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        pipeline = self._pipeline(params["PipelineName"])
        sort = {"PipelineExecutionArn": "Name"}.get(params.get("SortBy") or "", "CreationTime")
        query = ListQuery(parent_arn=pipeline.arn, created_after=epoch(params.get("CreatedAfter")),
                          created_before=epoch(params.get("CreatedBefore")), sort_by=sort,
                          descending=(params.get("SortOrder") or "Descending") == "Descending",
                          limit=params.get("MaxResults") or 50, next_token=params.get("NextToken"))
        rows, token = self.d.resources.list(EXECUTION, query)
        summaries = []
        for res in rows:
            item = {"PipelineExecutionArn": res.arn, "StartTime": res.creation_time,
                    "PipelineExecutionStatus": res.status,
                    "PipelineExecutionDisplayName": res.request.get("PipelineExecutionDisplayName")}
            if res.request.get("PipelineExecutionDescription"):
                item["PipelineExecutionDescription"] = res.request["PipelineExecutionDescription"]
            if res.state.get("FailureReason"):
                item["PipelineExecutionFailureReason"] = res.state["FailureReason"]
            summaries.append(item)
        out: dict[str, Any] = {"PipelineExecutionSummaries": summaries}
        if token:
            out["NextToken"] = token
        return out

    def list_pipeline_execution_steps(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("PipelineExecutionArn"):  # optional in the spec; SageMaker needs it
            raise ValidationException("1 validation error detected: Value null at 'pipelineExecutionArn' failed to "
                                      "satisfy constraint: Member must not be null")
        res = self._execution(params["PipelineExecutionArn"])
        items = [step_entry(name, st) for name, st in (res.state.get("Steps") or {}).items()
                 if not st.get("_skipped")]
        descending = (params.get("SortOrder") or "Descending") == "Descending"
        items.sort(key=lambda s: (s.get("StartTime") or 0, s["StepName"]), reverse=descending)
        # The SDK's list_steps() makes one call and ignores NextToken: every step on the first page.
        return _page(self.d, "ListPipelineExecutionSteps", params, items, "PipelineExecutionSteps", None)

    def list_pipeline_parameters_for_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._execution(params["PipelineExecutionArn"])
        return _page(self.d, "ListPipelineParametersForExecution", params,
                     list(res.request.get("PipelineParameters") or []), "PipelineParameters", 50)

    def _update_execution(self, arn: str, operation: str,
                          mutate: Callable[[Resource], str | None | object]) -> dict[str, Any]:
        """Read the execution, ``mutate`` it, save compare-and-set, wake the engine; redone on a concurrent
        write. ``mutate`` returns the status to move to, None to save as it is, or UNCHANGED to answer without
        writing (the same request again)."""
        for _ in range(10):
            res = self._execution(arn)
            outcome = mutate(res)
            if outcome is UNCHANGED:
                return {"PipelineExecutionArn": res.arn}
            try:
                if outcome is None:
                    self.d.resources.save(res, self.d.clock.time())
                else:
                    transition(self.d.resources, res, outcome, self.d.clock.time())
            except ConcurrentUpdate:
                continue
            self.d.wake(EXECUTION)
            return {"PipelineExecutionArn": res.arn}
        raise ValidationException(f"The pipeline execution is being updated; retry {operation}.")

    def stop_pipeline_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("ClientRequestToken")

        def stop(res: Resource) -> str | object:
            if res.status == "Stopping" or (token and res.request.get("_StopToken") == token):
                return UNCHANGED  # already stopping, or this request again
            if res.status != "Executing":
                raise ValidationException(f"Pipeline execution '{res.arn}' is {res.status}: only an Executing "
                                          f"execution can be stopped.")
            res.request["_StopToken"] = token
            return "Stopping"

        return self._update_execution(params["PipelineExecutionArn"], "StopPipelineExecution", stop)

    def retry_pipeline_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("ClientRequestToken")

        def retry(res: Resource) -> str | object:
            if res.request.get("_RetryToken") == token and res.status == "Executing":
                return UNCHANGED
            if res.status not in ("Failed", "Stopped"):
                raise ValidationException(f"Pipeline execution '{res.arn}' is {res.status}: only a Failed or "
                                          f"Stopped execution can be retried.")
            steps = res.state.get("Steps") or {}
            # failed / stopped steps run again, and so do the steps skipped because of them (decided again)
            for name in [n for n, st in steps.items() if st.get("StepStatus") in ("Failed", "Stopped")
                         or st.get("_skipped") and not st.get("_unselected")]:
                del steps[name]
            res.state.pop("FailureReason", None)
            res.state.pop("PipelineExecutionEndTime", None)
            res.request["_RetryToken"] = token
            if params.get("ParallelismConfiguration"):
                res.request["ParallelismConfiguration"] = params["ParallelismConfiguration"]
            return "Executing"

        return self._update_execution(params["PipelineExecutionArn"], "RetryPipelineExecution", retry)

    def update_pipeline_execution(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        def update(res: Resource) -> None:
            for key in ("PipelineExecutionDescription", "PipelineExecutionDisplayName", "ParallelismConfiguration"):
                if params.get(key) is not None:
                    res.request[key] = params[key]

        return self._update_execution(params["PipelineExecutionArn"], "UpdatePipelineExecution", update)

    # -- callback steps ----------------------------------------------------------------------------------
    def send_pipeline_execution_step_success(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._callback(params, {"Status": "Success", "OutputParameters": params.get("OutputParameters") or []})

    def send_pipeline_execution_step_failure(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._callback(params, {"Status": "Failure", "FailureReason": params.get("FailureReason") or ""})

    def _callback(self, params: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        token = params["CallbackToken"]
        request_token = params.get("ClientRequestToken")
        for _ in range(10):
            found = self._find_callback(token)
            if found is None:
                raise ResourceNotFound(f"Callback token '{token}' does not belong to a step of a running "
                                       f"pipeline execution.")
            res, st = found
            # Stopping: StopPipelineExecution waits for this answer (the consumer got "Status": "Stopping")
            if st.get("_callback") is not None or st.get("StepStatus") not in ("Executing", "Stopping"):
                if request_token and st.get("_callback_request") == request_token:
                    return {"PipelineExecutionArn": res.arn}  # the same request again
                raise ValidationException(f"The step of callback token '{token}' has already been completed.")
            st["_callback"] = answer
            st["_callback_request"] = request_token
            try:
                self.d.resources.save(res, self.d.clock.time())
            except ConcurrentUpdate:
                continue
            self.d.wake(EXECUTION)
            return {"PipelineExecutionArn": res.arn}
        raise ValidationException("The pipeline execution is being updated; retry the callback.")

    def _find_callback(self, token: str) -> tuple[Resource, dict[str, Any]] | None:
        for res in self.d.resources.in_status(EXECUTION, ("Executing", "Stopping", "Succeeded", "Failed",
                                                          "Stopped")):
            for st in (res.state.get("Steps") or {}).values():
                if (st.get("Metadata") or {}).get("Callback", {}).get("CallbackToken") == token:
                    return res, st
        return None


def step_entry(name: str, st: dict[str, Any]) -> dict[str, Any]:
    """A ListPipelineExecutionSteps entry: the step's public fields (internal ones start with '_')."""
    out = {k: v for k, v in st.items() if not k.startswith("_")}
    out["StepName"] = name
    if out.get("StepStatus") == "Starting" and st.get("_retry_at") is not None:
        out["StepStatus"] = "Executing"  # waiting out a retry interval between attempts
    return out
