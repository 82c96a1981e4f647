"""SageMaker Experiments: experiments, trials (SDK v2's "run groups") and trial components (its "runs"), their
associations, and the metrics SDK v2's ``Run.log_metric`` sends to the ``sagemaker-metrics`` service.

Rows: ``experiment``; ``experiment-trial`` (``parent_arn`` = its experiment's ARN); ``experiment-trial-component``
with the names of the trials it is associated with (``state["_trials"]``, many to many as in SageMaker) and its
metric points (``state["_metrics"]``: name -> [[timestamp, step, value], ...]). ARNs lower-case the name, as
SageMaker writes them, so lookups go by ARN and names are unique regardless of case. SageMaker's wording: a
duplicate is a ValidationException "... already exists" (what the SDK's ``_load_or_create`` matches), a missing
one ResourceNotFound "... does not exist".

Describe answers a trial component's ``Metrics`` as SageMaker summarises them (Count, Min, Max, Last, Avg,
StdDev, TimeStamp of the last point); ``BatchGetMetrics`` answers the points themselves, by step or by period.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from opensage.arns import with_lower_case_name
from opensage.errors import ResourceNotFound, ValidationException
from opensage.registry.paging import page
from opensage.services.base import Deps, epoch
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, ListQuery, Resource

EXPERIMENT = "experiment"
TRIAL = "experiment-trial"
COMPONENT = "experiment-trial-component"
CREATED = "Created"  # rows have no status in the API: one value for the store
MAX_METRIC_POINTS = 100_000  # per metric of a trial component: older points are dropped beyond it
_PERIOD_SECONDS = {"OneMinute": 60, "FiveMinute": 300, "OneHour": 3600}
# Search's Resource -> the SearchRecord member its results are under
SEARCH_RESOURCES = {"Experiment": "Experiment", "ExperimentTrial": "Trial", "ExperimentTrialComponent": "TrialComponent"}


class ExperimentsService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    # -- helpers -------------------------------------------------------------------------------------
    def _arn(self, kind: str, name: str) -> str:
        return with_lower_case_name(self.d.arns.sagemaker(kind, name))

    def _get(self, kind: str, name: str, label: str) -> Resource:
        arn = name if name.startswith("arn:") else self._arn(kind, name)
        res = self.d.resources.get_by_arn(with_lower_case_name(arn))
        if res is None or res.kind != kind:
            raise ResourceNotFound(f"{label} '{arn}' does not exist.")
        return res

    def _create(self, kind: str, name: str, label: str, request: dict[str, Any], state: dict[str, Any],
                parent_arn: str | None = None) -> str:
        from opensage.store.tags import check_user_tags

        check_user_tags(request.get("Tags") or [])
        arn = self._arn(kind, name)
        if self.d.resources.get_by_arn(arn) is not None:
            raise ValidationException(f"{label} '{name}' already exists.")
        now = self.d.clock.time()
        body = {k: v for k, v in request.items() if k != "Tags"}
        try:
            self.d.resources.create(Resource(kind, name, arn, CREATED, now, now, body, state, parent_arn=parent_arn))
        except AlreadyExists:
            raise ValidationException(f"{label} '{name}' already exists.") from None
        self.d.tags.put(arn, request.get("Tags") or [])
        return arn

    def _update(self, res: Resource, change) -> Resource:  # noqa: ANN001 - change(res) edits it in place
        """Apply ``change`` and save, re-reading the row when another writer (the metrics thread) got there first."""
        for _ in range(20):
            change(res)
            try:
                return self.d.resources.save(res, self.d.clock.time())
            except ConcurrentUpdate:
                fresh = self.d.resources.get_by_arn(res.arn)
                if fresh is None:
                    raise ResourceNotFound(f"'{res.arn}' does not exist.") from None
                res = fresh
        raise ValidationException(f"'{res.arn}' is being changed by another request; try again.")

    def _user(self, ctx) -> dict[str, Any]:  # noqa: ANN001
        return user_context(self.d, ctx)

    def _listing(self, operation: str, params: dict[str, Any], rows: list[Resource], member: str,
                 summary: Callable[[Resource], dict[str, Any]]) -> dict[str, Any]:
        items, token = created_page(self.d, operation, params, rows)
        out: dict[str, Any] = {member: [summary(r) for r in items]}
        if token:
            out["NextToken"] = token
        return out

    def _delete(self, res: Resource) -> None:
        self.d.resources.delete(res.kind, res.name)
        self.d.tags.drop_all(res.arn)

    @staticmethod
    def _brief(res: Resource) -> dict[str, Any]:
        return {"DisplayName": res.request.get("DisplayName") or res.name, "CreationTime": res.creation_time,
                "LastModifiedTime": res.last_modified_time}

    def _record(self, res: Resource) -> dict[str, Any]:
        """What every Describe / summary of these rows has: names, times and who."""
        created_by = res.state.get("CreatedBy") or {}
        return {"DisplayName": res.request.get("DisplayName") or res.name, "CreationTime": res.creation_time,
                "CreatedBy": created_by, "LastModifiedTime": res.last_modified_time,
                "LastModifiedBy": res.state.get("LastModifiedBy") or created_by}

    def _update_members(self, ctx, res: Resource, members: tuple[str, ...], params: dict[str, Any]) -> Resource:  # noqa: ANN001
        def change(r: Resource) -> None:
            r.request.update({k: params[k] for k in members if k in params})
            r.state["LastModifiedBy"] = self._user(ctx)

        return self._update(res, change)

    def _all(self, kind: str) -> list[Resource]:
        return self.d.resources.in_status(kind, (CREATED,))

    # -- experiments -----------------------------------------------------------------------------------
    def create_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ExperimentName"]
        return {"ExperimentArn": self._create(EXPERIMENT, name, "Experiment", params,
                                              {"CreatedBy": self._user(ctx)})}

    def describe_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(EXPERIMENT, params["ExperimentName"], "Experiment")
        out = {"ExperimentName": res.name, "ExperimentArn": res.arn, **self._record(res)}
        if res.request.get("Description"):
            out["Description"] = res.request["Description"]
        return out

    def update_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(EXPERIMENT, params["ExperimentName"], "Experiment")
        return {"ExperimentArn": self._update_members(ctx, res, ("DisplayName", "Description"), params).arn}

    def delete_experiment(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(EXPERIMENT, params["ExperimentName"], "Experiment")
        trials, _ = self.d.resources.list(TRIAL, ListQuery(parent_arn=res.arn, limit=1))
        if trials:
            raise ValidationException(f"Experiment '{res.name}' has trials (e.g. '{trials[0].name}'): delete them "
                                      "before the experiment.")
        self._delete(res)
        return {"ExperimentArn": res.arn}

    def list_experiments(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return self._listing("ListExperiments", params, self._all(EXPERIMENT), "ExperimentSummaries",
                             lambda r: {"ExperimentArn": r.arn, "ExperimentName": r.name, **self._brief(r)})

    # -- trials ----------------------------------------------------------------------------------------
    def create_trial(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        experiment = self._get(EXPERIMENT, params["ExperimentName"], "Experiment")
        request = {**params, "ExperimentName": experiment.name}
        return {"TrialArn": self._create(TRIAL, params["TrialName"], "Trial", request,
                                         {"CreatedBy": self._user(ctx)}, parent_arn=experiment.arn)}

    def describe_trial(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(TRIAL, params["TrialName"], "Trial")
        out = {"TrialName": res.name, "TrialArn": res.arn, "ExperimentName": res.request["ExperimentName"],
               **self._record(res)}
        if res.request.get("MetadataProperties"):
            out["MetadataProperties"] = res.request["MetadataProperties"]
        return out

    def update_trial(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(TRIAL, params["TrialName"], "Trial")
        return {"TrialArn": self._update_members(ctx, res, ("DisplayName",), params).arn}

    def delete_trial(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(TRIAL, params["TrialName"], "Trial")
        components = self._components_of(res.name)
        if components:  # SageMaker: "All trial components that make up the trial must be deleted first."
            raise ValidationException(f"Trial '{res.name}' has trial components (e.g. '{components[0].name}'): "
                                      "disassociate or delete them before the trial.")
        self._delete(res)
        return {"TrialArn": res.arn}

    def list_trials(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        rows = self._all(TRIAL)
        if params.get("ExperimentName"):
            experiment = self._get(EXPERIMENT, params["ExperimentName"], "Experiment")
            rows = [r for r in rows if r.parent_arn == experiment.arn]
        if params.get("TrialComponentName"):
            component = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")
            names = {t.lower() for t in component.state.get("_trials", [])}
            rows = [r for r in rows if r.name.lower() in names]
        return self._listing("ListTrials", params, rows, "TrialSummaries",
                             lambda r: {"TrialArn": r.arn, "TrialName": r.name, **self._brief(r)})

    # -- trial components --------------------------------------------------------------------------------
    def create_trial_component(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        _check_parameters(params.get("Parameters") or {})
        state = {"CreatedBy": self._user(ctx), "_trials": [], "_metrics": {}}
        return {"TrialComponentArn": self._create(COMPONENT, params["TrialComponentName"], "TrialComponent",
                                                  params, state)}

    def describe_trial_component(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")
        req = res.request
        out: dict[str, Any] = {
            "TrialComponentName": res.name, "TrialComponentArn": res.arn, **self._record(res),
            "Parameters": req.get("Parameters") or {}, "InputArtifacts": req.get("InputArtifacts") or {},
            "OutputArtifacts": req.get("OutputArtifacts") or {},
            "Metrics": _summaries(res.state.get("_metrics") or {}, res.state.get("Source"))}
        for key in ("Status", "StartTime", "EndTime", "MetadataProperties"):
            if req.get(key) is not None:
                out[key] = req[key]
        if res.state.get("Source"):
            out["Source"] = res.state["Source"]
            out["Sources"] = [res.state["Source"]]
        return out

    def update_trial_component(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")
        _check_parameters(params.get("Parameters") or {})

        def change(r: Resource) -> None:
            req = r.request
            for key in ("DisplayName", "Status", "StartTime", "EndTime"):
                if key in params:
                    req[key] = params[key]
            for key in ("Parameters", "InputArtifacts", "OutputArtifacts"):
                merged = {**(req.get(key) or {}), **(params.get(key) or {})}
                for removed in params.get(f"{key}ToRemove") or []:
                    merged.pop(removed, None)
                req[key] = merged
            r.state["LastModifiedBy"] = self._user(ctx)

        return {"TrialComponentArn": self._update(res, change).arn}

    def delete_trial_component(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        res = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")
        if res.state.get("_trials"):
            raise ValidationException(f"TrialComponent '{res.name}' is associated with trial "
                                      f"'{res.state['_trials'][0]}': disassociate it from every trial first.")
        self._delete(res)
        return {"TrialComponentArn": res.arn}

    def list_trial_components(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("ExperimentName", "TrialName", "SourceArn") if params.get(k)]
        if len(given) > 1:
            raise ValidationException(f"Specify at most one of ExperimentName, TrialName and SourceArn (got "
                                      f"{' and '.join(given)}).")
        rows = self._all(COMPONENT)
        if params.get("TrialName"):
            rows = self._components_of(self._get(TRIAL, params["TrialName"], "Trial").name, rows)
        elif params.get("ExperimentName"):
            experiment = self._get(EXPERIMENT, params["ExperimentName"], "Experiment")
            trials = {t.name.lower() for t in self._all(TRIAL) if t.parent_arn == experiment.arn}
            rows = [r for r in rows if trials & {t.lower() for t in r.state.get("_trials", [])}]
        elif params.get("SourceArn"):
            wanted = params["SourceArn"].lower()
            rows = [r for r in rows if ((r.state.get("Source") or {}).get("SourceArn") or "").lower() == wanted]
        return self._listing("ListTrialComponents", params, rows, "TrialComponentSummaries", self._component_summary)

    def _component_summary(self, r: Resource) -> dict[str, Any]:
        out: dict[str, Any] = {"TrialComponentName": r.name, "TrialComponentArn": r.arn, **self._record(r)}
        for key in ("Status", "StartTime", "EndTime"):
            if r.request.get(key) is not None:
                out[key] = r.request[key]
        if r.state.get("Source"):
            out["TrialComponentSource"] = r.state["Source"]
        return out

    def _components_of(self, trial: str, rows: list[Resource] | None = None) -> list[Resource]:
        rows = self._all(COMPONENT) if rows is None else rows
        return [r for r in rows if trial.lower() in {t.lower() for t in r.state.get("_trials", [])}]

    def associate_trial_component(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        trial = self._get(TRIAL, params["TrialName"], "Trial")
        component = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")

        def change(c: Resource) -> None:
            names = c.state.setdefault("_trials", [])
            if trial.name.lower() not in {t.lower() for t in names}:
                names.append(trial.name)

        self._update(component, change)
        return {"TrialComponentArn": component.arn, "TrialArn": trial.arn}

    def disassociate_trial_component(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        trial = self._get(TRIAL, params["TrialName"], "Trial")
        component = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")
        if trial.name.lower() not in {t.lower() for t in component.state.get("_trials", [])}:
            raise ResourceNotFound(f"TrialComponent '{component.name}' is not associated with Trial '{trial.name}'.")
        self._update(component, lambda c: c.state.__setitem__(
            "_trials", [t for t in c.state.get("_trials", []) if t.lower() != trial.name.lower()]))
        return {"TrialComponentArn": component.arn, "TrialArn": trial.arn}

    # -- a training job's own trial component -------------------------------------------------------------
    def record_training_job(self, job: Resource) -> None:
        """Deps.on_job_end hook: a training job created with an ExperimentConfig gets the trial component
        SageMaker makes for it, ``<job>-aws-training-job`` (Source = the job), with its hyperparameters, inputs,
        model, status, times and final metrics, associated with the config's TrialName when that trial exists.
        ExperimentAnalytics shows it as a row beside the runs. Made when the job ends (SageMaker makes it at
        the start and keeps it in step)."""
        config = job.request.get("ExperimentConfig") or {}
        if not config:
            return
        from opensage.services.training import describe

        d = describe(job)
        spec, resources = d.get("AlgorithmSpecification") or {}, d.get("ResourceConfig") or {}
        parameters = {name: _parameter(value) for name, value in (d.get("HyperParameters") or {}).items()}
        parameters.update({k: v for k, v in (("SageMaker.ImageUri", {"StringValue": spec.get("TrainingImage")}),
                                             ("SageMaker.InstanceType", {"StringValue": resources.get("InstanceType")}),
                                             ("SageMaker.InstanceCount", {"NumberValue": resources.get("InstanceCount")}))
                           if next(iter(v.values())) is not None})
        inputs = {c["ChannelName"]: {"Value": c["DataSource"]["S3DataSource"]["S3Uri"]}
                  for c in d.get("InputDataConfig") or [] if (c.get("DataSource") or {}).get("S3DataSource")}
        outputs = {}
        if (d.get("ModelArtifacts") or {}).get("S3ModelArtifacts"):
            outputs["SageMaker.ModelArtifact"] = {"Value": d["ModelArtifacts"]["S3ModelArtifacts"]}
        status = {"PrimaryStatus": job.status, **({"Message": d["FailureReason"]} if d.get("FailureReason") else {})}
        name = f"{job.name}-aws-training-job"
        request = {"TrialComponentName": name, "DisplayName": name, "Status": status,
                   "StartTime": d.get("TrainingStartTime") or job.creation_time,
                   "EndTime": d.get("TrainingEndTime") or job.last_modified_time, "Parameters": parameters,
                   "InputArtifacts": inputs, "OutputArtifacts": outputs}
        metrics = {m["MetricName"]: [[epoch(m.get("Timestamp")) or job.last_modified_time, None, float(m["Value"])]]
                   for m in d.get("FinalMetricDataList") or []}
        state = {"CreatedBy": {}, "_trials": [], "_metrics": metrics,
                 "Source": {"SourceArn": job.arn, "SourceType": "SageMakerTrainingJob"}}
        try:
            self._create(COMPONENT, name, "TrialComponent", request, state)
        except ValidationException:  # made by an earlier end of this job (a restart): keep the first record
            return
        if config.get("TrialName"):
            try:
                self.associate_trial_component(None, {"TrialName": config["TrialName"], "TrialComponentName": name})
            except ResourceNotFound:
                pass  # the trial named in the config does not exist (SageMaker would have refused the job)

    # -- Search (services/registry.py's Search asks for these records) -------------------------------------
    def search_records(self, ctx, resource: str) -> list[dict[str, Any]]:  # noqa: ANN001
        """Search records of ``resource`` (one of ``SEARCH_RESOURCES``): Describe's output, Tags, and for a
        trial component its ``Parents`` (the trials it is associated with and their experiments), for a trial
        its ``TrialComponentSummaries`` (what SDK v2's ``Run`` searches by ``Parents.TrialName``)."""
        def tags(arn: str) -> list[dict[str, str]]:
            items, _ = self.d.tags.list(arn, None, 50)
            return items

        if resource == "Experiment":
            return [{**self.describe_experiment(ctx, {"ExperimentName": r.arn}), "Tags": tags(r.arn)}
                    for r in self._all(EXPERIMENT)]
        trials = {t.name.lower(): t for t in self._all(TRIAL)}
        components = self._all(COMPONENT)
        if resource == "ExperimentTrial":
            return [{**self.describe_trial(ctx, {"TrialName": t.arn}), "Tags": tags(t.arn),
                     "TrialComponentSummaries": [{
                         "TrialComponentName": c.name, "TrialComponentArn": c.arn, "CreationTime": c.creation_time,
                         "CreatedBy": c.state.get("CreatedBy") or {}} for c in self._components_of(t.name, components)]}
                    for t in trials.values()]
        out = []
        for c in components:
            parents = [{"TrialName": trials[n.lower()].name, "ExperimentName": trials[n.lower()].request["ExperimentName"]}
                       for n in c.state.get("_trials", []) if n.lower() in trials]
            out.append({**self.describe_trial_component(ctx, {"TrialComponentName": c.arn}), "Tags": tags(c.arn),
                        "Parents": parents})
        return out

    # -- sagemaker-metrics ---------------------------------------------------------------------------------
    def batch_put_metrics(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        """Every datum is kept; a datum that cannot be (a value that is not a finite number) is reported in
        ``Errors`` with its index, as the service does, and the others are stored."""
        component = self._get(COMPONENT, params["TrialComponentName"], "TrialComponent")
        errors: list[dict[str, Any]] = []
        accepted: list[tuple[str, float, int | None, float]] = []
        for index, datum in enumerate(params.get("MetricData") or []):
            value = datum.get("Value")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                errors.append({"Code": "VALIDATION_ERROR", "MetricIndex": index})
                continue
            accepted.append((datum["MetricName"], epoch(datum.get("Timestamp")) or self.d.clock.time(),
                             datum.get("Step"), float(value)))

        def change(c: Resource) -> None:
            metrics = c.state.setdefault("_metrics", {})
            for name, when, step, value in accepted:
                points = metrics.setdefault(name, [])
                points.append([when, step, value])
                if len(points) > MAX_METRIC_POINTS:
                    del points[:len(points) - MAX_METRIC_POINTS]

        if accepted:
            self._update(component, change)
        return {"Errors": errors} if errors else {}

    def batch_get_metrics(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        results = []
        for query in params.get("MetricQueries") or []:
            try:
                component = self._get(COMPONENT, query["ResourceArn"], "TrialComponent")
            except ResourceNotFound as exc:
                results.append({"Status": "ValidationError", "Message": str(exc), "XAxisValues": [],
                                "MetricValues": []})
                continue
            points = (component.state.get("_metrics") or {}).get(query["MetricName"]) or []
            start, end = query.get("Start"), query.get("End")
            points = [p for p in points if (start is None or p[0] >= start) and (end is None or p[0] <= end)]
            if not points:
                results.append({"Status": "MetricNotFound", "XAxisValues": [], "MetricValues": []})
                continue
            by_step = query.get("XAxisType") == "IterationNumber" or query.get("Period") == "IterationNumber"
            period = _PERIOD_SECONDS.get(query.get("Period") or "", 60)
            groups: dict[int, list[float]] = {}
            for when, step, value in points:
                key = int(step or 0) if by_step else int(when // period * period)
                groups.setdefault(key, []).append(value)
            xs = sorted(groups)
            results.append({"Status": "Complete", "XAxisValues": xs,
                            "MetricValues": [_stat(groups[x], query.get("MetricStat") or "Avg") for x in xs]})
        return {"MetricQueryResults": results}


def _parameter(value: str) -> dict[str, Any]:
    """A hyperparameter as a trial component parameter: a number where it reads as one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return {"StringValue": str(value)}
    return {"NumberValue": number} if math.isfinite(number) else {"StringValue": str(value)}


def _check_parameters(parameters: dict[str, Any]) -> None:
    for name, value in parameters.items():
        if not isinstance(value, dict) or len(set(value) & {"StringValue", "NumberValue"}) != 1:
            raise ValidationException(f"Parameters.{name}: give exactly one of StringValue and NumberValue.")


def user_context(deps: Deps, ctx) -> dict[str, Any]:  # noqa: ANN001
    """CreatedBy / LastModifiedBy of Experiments and lineage records: this platform's one user."""
    return {"UserProfileArn": f"arn:aws:iam::{deps.settings.account}:user/opensage",
            "UserProfileName": getattr(ctx, "access_key", None) or "opensage"}


def created_page(deps: Deps, operation: str, params: dict[str, Any], rows: list[Resource]
                 ) -> tuple[list[Resource], str | None]:
    """One page of ``rows`` filtered by CreatedAfter / CreatedBefore, sorted by SortBy Name or CreationTime
    (the default), SortOrder Descending by default: the List calls of Experiments and lineage."""
    after, before = epoch(params.get("CreatedAfter")), epoch(params.get("CreatedBefore"))
    rows = [r for r in rows if (after is None or r.creation_time > after)
            and (before is None or r.creation_time < before)]
    by_name = params.get("SortBy") == "Name"
    request = {**params, "SortOrder": params.get("SortOrder") or "Descending"}
    return page(deps, operation, request, rows,
                lambda r: ((r.name.lower(), r.name) if by_name else (r.creation_time, r.name)))


def _summaries(metrics: dict[str, list[list[Any]]], source: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for name in sorted(metrics):
        values = [p[2] for p in metrics[name]]
        if not values:
            continue
        last = max(metrics[name], key=lambda p: (p[0], -1 if p[1] is None else p[1]))
        summary = {"MetricName": name, "TimeStamp": last[0], "Max": max(values), "Min": min(values),
                   "Last": last[2], "Count": len(values), "Avg": statistics.fmean(values),
                   "StdDev": _stdev(values)}
        if source and source.get("SourceArn"):
            summary["SourceArn"] = source["SourceArn"]
        out.append(summary)
    return out


def _stdev(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _stat(values: list[float], stat: str) -> float:
    """``stat`` is one of botocore's MetricStat values (the request is validated against the model)."""
    return {"Min": min, "Max": max, "Count": len, "Last": lambda v: v[-1], "StdDev": _stdev,
            "Avg": statistics.fmean}[stat](values)
