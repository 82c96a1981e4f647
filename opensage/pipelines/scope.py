"""What a running execution's expressions read: parameters, execution variables, and the properties of the
steps it already ran (the child resource's Describe* answer, read through its service)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opensage.api.dispatch import RequestContext
from opensage.errors import ServiceError
from opensage.objects.base import split_s3_uri
from opensage.pipelines.definition import Definition, StepDef
from opensage.pipelines.expressions import ExpressionError, Scope, parse_path, resolve, walk
from opensage.pipelines.steps import JOB_KINDS
from opensage.store.resources import Resource


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def describe_child(services: dict[str, Any], step_type: str, job: dict[str, Any]) -> dict[str, Any]:
    """The Describe* answer of a step's child (a Tuning step adds its training jobs, best first)."""
    kind = JOB_KINDS[step_type]
    service = services.get(kind.service)
    if service is None:
        raise ExpressionError(f"the {kind.service} capability is not installed")
    key = kind.name_key or "ModelPackageName"
    name = job["arn"] if step_type == "RegisterModel" else job["name"]
    out = dict(getattr(service, kind.describe)(RequestContext(), {key: name}))
    if step_type == "Tuning":
        lister = getattr(service, "list_training_jobs_for_hyper_parameter_tuning_job", None)
        if lister is not None:
            try:
                page = lister(RequestContext(), {"HyperParameterTuningJobName": name, "MaxResults": 100,
                                                 "SortBy": "FinalObjectiveMetricValue"})
                out["TrainingJobSummaries"] = page.get("TrainingJobSummaries") or []
            except ServiceError:
                out.setdefault("TrainingJobSummaries", [])
    return out


class ExecutionScope:
    """One pass's view of an execution (Describe answers and S3 documents are read once per pass)."""

    def __init__(self, res: Resource, defn: Definition, services: dict[str, Any],
                 read_object: Callable[[str, str], bytes], now: float) -> None:
        self.res = res
        self.defn = defn
        self.services = services
        self.read_object = read_object
        self.now = now
        self._props: dict[str, Any] = {}
        self._docs: dict[str, Any] = {}
        self._experiment_depth = 0

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.res.state.setdefault("Steps", {})

    def scope(self, job_name: str | None = None, step_type: str | None = None) -> Scope:
        return Scope(parameters=self.res.request.get("Parameters") or {},
                     execution=lambda path: self._execution(path, job_name, step_type),
                     step_property=self._step_property, property_file=self._property_file,
                     read_json=self._read_json)

    # -- execution variables -----------------------------------------------------------------------------
    def _execution(self, path: str, job_name: str | None, step_type: str | None) -> Any:
        head, _, var = path.partition(".")
        req = self.res.request
        if head == "PipelineExperimentConfig":
            return self._experiment(var)
        values = {"StartDateTime": iso(self.res.creation_time), "CurrentDateTime": iso(self.now),
                  "PipelineName": req["PipelineName"], "PipelineArn": req["PipelineArn"],
                  "PipelineExecutionId": self.res.name, "PipelineExecutionArn": self.res.arn}
        if var in values:
            return values[var]
        if var in ("TrainingJobName", "ProcessingJobName"):
            wanted = "Training" if var == "TrainingJobName" else "Processing"
            if job_name is None or step_type != wanted:
                raise ExpressionError(f"'{path}' is only defined inside a {wanted} step")
            return job_name
        raise ExpressionError(f"'{path}' is not an execution variable")

    def _experiment(self, var: str) -> Any:
        config = self.defn.raw.get("PipelineExperimentConfig")
        defaults = {"ExperimentName": self.res.request["PipelineName"], "TrialName": self.res.name}
        if var not in defaults:
            raise ExpressionError(f"'PipelineExperimentConfig.{var}' is not defined")
        if not isinstance(config, dict) or var not in config or self._experiment_depth:
            return defaults[var]
        self._experiment_depth += 1
        try:
            return resolve(config[var], self.scope())
        finally:
            self._experiment_depth -= 1

    # -- step properties ---------------------------------------------------------------------------------
    def _step_property(self, name: str, segments: list) -> Any:
        return walk(self.properties(name), segments, f"Steps.{name}")

    def properties(self, name: str) -> Any:
        if name in self._props:
            return self._props[name]
        step: StepDef | None = self.defn.steps.get(name)
        st = self.steps.get(name)
        if step is None or st is None or st.get("_skipped"):
            raise ExpressionError(f"step '{name}' did not run in this execution")
        if st.get("StepStatus") != "Succeeded":
            raise ExpressionError(f"step '{name}' has not succeeded (it is {st.get('StepStatus')})")
        if step.type == "Condition":
            value: Any = {"Outcome": (st.get("Metadata") or {}).get("Condition", {}).get("Outcome") == "True"}
        elif step.type in ("Callback", "Lambda"):
            value = {"OutputParameters": {p["Name"]: p["Value"] for p in st.get("_outputs") or []}}
        elif step.type in JOB_KINDS:
            try:
                value = describe_child(self.services, step.type, st.get("_job") or {})
            except ServiceError as e:
                raise ExpressionError(f"cannot read the properties of step '{name}': {e.message}") from None
        else:
            raise ExpressionError(f"step '{name}' ({step.type}) has no properties")
        self._props[name] = value
        return value

    def _property_file(self, step_name: str, file_name: str) -> Any:
        step = self.defn.steps.get(step_name)
        spec = step.property_files.get(file_name) if step else None
        if spec is None:
            raise ExpressionError(f"step '{step_name}' has no property file '{file_name}'")
        props = self.properties(step_name)
        uri = walk(props, ["ProcessingOutputConfig", "Outputs", *parse_path(f"['{spec.get('OutputName')}']"),
                           "S3Output", "S3Uri"], f"property file '{file_name}' of step '{step_name}'")
        path = str(spec.get("FilePath") or "").lstrip("/")
        return self._read_json(f"{str(uri).rstrip('/')}/{path}")

    def _read_json(self, uri: str) -> Any:
        if uri in self._docs:
            return self._docs[uri]
        try:
            bucket, key = split_s3_uri(uri)
            data = self.read_object(bucket, key)
        except Exception as e:  # noqa: BLE001 - any store failure is the step's failure, worded
            raise ExpressionError(f"cannot read {uri}: {type(e).__name__}: {e}") from None
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ExpressionError(f"{uri} is not a JSON document: {e}") from None
        self._docs[uri] = doc
        return doc
