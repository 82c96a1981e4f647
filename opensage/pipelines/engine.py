"""The pipeline execution engine: a reconciler on the shared loop; the execution's row is its whole state.

Each pass, for every Executing / Stopping execution: poll the steps that run a child (Describe through the
child's service), then either wind down (a step failed or Stop was asked: stop what runs, then Failed /
Stopped) or start every step whose upstream steps succeeded, up to MaxParallelExecutionSteps.

Durability: a step's child name is saved in the row (StepStatus Starting) *before* the child is created, and
a Starting step is created only if Describe does not find it. A control plane restarted at any point
continues from the row without running a finished step again or creating a child twice. Every save is
compare-and-set: a pass that loses to an API write (Stop, a callback) is abandoned and redone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from opensage.api.dispatch import RequestContext
from opensage.errors import ServiceError, ValidationException
from opensage.pipelines import definition as pdef
from opensage.pipelines.definition import Definition, StepDef
from opensage.pipelines.expressions import ExpressionError, coerce, evaluate_all, resolve, to_text
from opensage.pipelines.scope import ExecutionScope, describe_child
from opensage.pipelines.steps import (
    CACHEABLE,
    JOB_KINDS,
    STEP_STATUS,
    cache_key,
    child_name,
    expire_seconds,
    failure_class,
    random_suffix,
    retry_delay,
)
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.states import transition
from opensage.store.resources import ConcurrentUpdate, ListQuery, Resource, dumps

log = logging.getLogger(__name__)

EXECUTION = "pipeline-execution"
PIPELINE = "pipeline"
ACTIVE = ("Starting", "Executing", "Stopping")
DONE = ("Succeeded", "Failed", "Stopped")
EXECUTION_FAILED = "Step failure: One or multiple steps failed."
DEFAULT_PARALLELISM = 50
# A child the platform's own shutdown failed (runner/agentjobs.py SHUTDOWN_REASON) is started again when the
# control plane is back, so a restart mid-execution continues it; at most this many times per step.
SHUTDOWN_MARK = "platform was shut down"
SHUTDOWN_RESTARTS = 3
REASON_MAX = 1024
BROKEN_PASSES = 20
UNSUPPORTED_REASON = {
    "Lambda": "Lambda steps call AWS Lambda, which OpenSage does not run",
    "EMR": "EMR steps need an Amazon EMR cluster, which OpenSage does not run",
    "EMRServerless": "EMR Serverless steps need Amazon EMR Serverless, which OpenSage does not run",
}


def reason(text: str) -> str:
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 3] + "..."


class PipelineEngine(ReconcileLoop):
    def __init__(self, deps: Deps, services: dict[str, Any], read_object, busy_interval: float = 0.05,
                 idle_interval: float = 5.0) -> None:
        self.d = deps
        self.services = services  # the capability context's dict: services installed later are seen here
        self.read_object = read_object  # (bucket, key) -> bytes
        self._definitions: dict[str, Definition] = {}
        self._errors: dict[str, int] = {}  # execution ARN -> unexpected errors in a row
        self._init_loop("pipeline-engine", busy_interval, idle_interval)

    def shutdown(self, stop_jobs: bool = True) -> None:
        # Child jobs belong to their own reconcilers (which stop them); executions resume on the next start.
        self._stop_loop()

    # -- the pass ----------------------------------------------------------------------------------------
    def run_once(self) -> bool:
        busy = False
        for res in self.d.resources.in_status(EXECUTION, ("Executing", "Stopping")):
            try:
                self.advance(res)
                busy = busy or res.status in ("Executing", "Stopping")
            except ConcurrentUpdate:
                busy = True  # an API call changed the row: redo with the new version
            except Exception as e:  # noqa: BLE001 - one broken execution must not stop the others
                self._broken(res, e)
                busy = True
        return busy

    def _broken(self, res: Resource, error: Exception) -> None:
        """An unexpected error advancing ``res``: logged; after BROKEN_PASSES in a row the execution fails
        (with the error as its reason) instead of spinning."""
        log.exception("pipeline execution %s: pass failed", res.arn)
        count = self._errors[res.arn] = self._errors.get(res.arn, 0) + 1
        if count < BROKEN_PASSES:
            return
        self._errors.pop(res.arn, None)
        try:
            fresh = self.d.resources.get_by_arn(res.arn)
            if fresh is not None and fresh.status in ("Executing", "Stopping"):
                transition(self.d.resources, fresh, "Failed", self.d.clock.time(), FailureReason=reason(
                    f"InternalServerError: the pipeline engine could not advance this execution: "
                    f"{type(error).__name__}: {error}"))
        except Exception:  # noqa: BLE001 - tried again on the next pass
            log.exception("pipeline execution %s: could not be failed", res.arn)

    def definition(self, res: Resource) -> Definition:
        defn = self._definitions.get(res.arn)
        if defn is None:
            defn = self._definitions[res.arn] = pdef.parse(res.request["PipelineDefinition"])
        return defn

    def advance(self, res: Resource) -> None:
        defn = self.definition(res)
        now = self.d.clock.time()
        view = ExecutionScope(res, defn, self.services, self.read_object, now)
        steps = view.steps
        before = dumps(res.state)
        for name, st in list(steps.items()):
            if st.get("StepStatus") in ACTIVE:
                self._poll(res, view, defn.steps[name], st, now)
        if res.status == "Stopping" or _unhandled_failures(defn, steps):
            self._wind_down(res, steps, now, "Stopped" if res.status == "Stopping" else "Failed", before)
            return
        started = self._schedule(res, view, defn, now)
        if not started and not any(st.get("StepStatus") in ACTIVE for st in steps.values()):
            if _unhandled_failures(defn, steps):
                self._wind_down(res, steps, now, "Failed", before)
                return
            # every step ran, was skipped, or waits on one that never will; a failure that a step ran on
            # (DependsOn Trigger Failed / Stopped / Any) ends the execution CompletedWithFailures, not Failed
            handled = any(st.get("StepStatus") in ("Failed", "Stopped") for st in steps.values())
            transition(self.d.resources, res, "CompletedWithFailures" if handled else "Succeeded", now,
                       PipelineExecutionEndTime=now)
            self._definitions.pop(res.arn, None)
            return
        self._save_if_changed(res, before, now)

    def _save_if_changed(self, res: Resource, before: str, now: float) -> None:
        """Passes run every 50 ms while children run: write the row only when the state moved."""
        if dumps(res.state) != before:
            self.d.resources.save(res, now)
        self._errors.pop(res.arn, None)

    def _wind_down(self, res: Resource, steps: dict[str, dict[str, Any]], now: float, final: str,
                   before: str) -> None:
        """Stop every step still running (one step's failure never leaves another running); once none is,
        the execution ends ``final``."""
        for st in steps.values():
            if st.get("StepStatus") not in ACTIVE:
                continue
            job = st.get("_job")
            kind = JOB_KINDS.get(st.get("_type", ""))
            if job and job.get("created") and kind and kind.stop and kind.status_key:
                if not st.get("_stop_sent"):
                    self._stop_child(kind, job)
                    st["_stop_sent"] = True
                    st["StepStatus"] = "Stopping"
                continue  # polled until the child reports Stopped / Completed / Failed
            if st.get("_type") == "Callback" and final == "Stopped" and self.services.get("sqs") is not None:
                # StopPipelineExecution: SageMaker tells the consumer ("Status": "Stopping") and waits for its
                # SendPipelineExecutionStepSuccess / Failure before the execution is Stopped.
                if not st.get("_stop_sent"):
                    st.update(StepStatus="Stopping", _stop_sent=True, _send="stop")
                    self._send_callback(res, self.definition(res).steps[st["StepName"]], st, now)
                continue
            st.update(StepStatus="Stopped", EndTime=now)  # retry waits, children not yet created, callbacks of a
            st.pop("_retry_at", None)  # failed execution (its failure does not wait on a consumer)
        if any(st.get("StepStatus") in ACTIVE for st in steps.values()):
            self._save_if_changed(res, before, now)
            return
        extra: dict[str, Any] = {"PipelineExecutionEndTime": now}
        if final == "Failed":
            extra["FailureReason"] = EXECUTION_FAILED
        transition(self.d.resources, res, final, now, **extra)
        self._definitions.pop(res.arn, None)

    def _stop_child(self, kind, job: dict[str, Any]) -> None:
        service = self.services.get(kind.service)
        if service is None:
            return
        try:
            getattr(service, kind.stop)(RequestContext(), {kind.name_key: job["name"]})
        except ServiceError:
            pass  # already finished: the next poll reads its final status

    # -- scheduling --------------------------------------------------------------------------------------
    def _schedule(self, res: Resource, view: ExecutionScope, defn: Definition, now: float) -> bool:
        steps = view.steps
        limit = int((res.request.get("ParallelismConfiguration") or {}).get("MaxParallelExecutionSteps")
                    or DEFAULT_PARALLELISM)
        running = sum(1 for st in steps.values() if st.get("StepStatus") in ACTIVE)
        changed = False
        for name in defn.order:
            if name in steps:
                continue
            decision = self._readiness(defn.steps[name], steps)
            if decision == "skip":
                steps[name] = {"_skipped": True}
                changed = True
            elif decision == "ready" and running < limit:
                self._start(res, view, defn.steps[name], now)
                changed = True
                if steps[name].get("StepStatus") in ACTIVE:
                    running += 1
                if steps[name].get("StepStatus") in ("Failed", "Stopped"):
                    break  # wind down next pass: start nothing more
        return changed

    @staticmethod
    def _readiness(step: StepDef, steps: dict[str, dict[str, Any]]) -> str:
        guards = dict(step.guards)
        for up in step.upstream:
            st = steps.get(up)
            if st is None:
                return "wait"
            if st.get("_skipped"):
                return "skip"
            status = st.get("StepStatus")
            if status in ACTIVE:
                return "wait"
            if status not in pdef.TRIGGERS[step.triggers.get(up, "Completed")]:
                return "skip"  # the upstream step ended otherwise than this step runs on
            if up in guards:
                outcome = (st.get("Metadata") or {}).get("Condition", {}).get("Outcome") == "True"
                if outcome != guards[up]:
                    return "skip"
        return "ready"

    def _start(self, res: Resource, view: ExecutionScope, step: StepDef, now: float) -> None:
        st: dict[str, Any] = {"StepName": step.name, "StepStatus": "Starting", "StartTime": now,
                              "AttemptCount": 1, "_type": step.type}
        if step.display_name:
            st["StepDisplayName"] = step.display_name
        if step.description:
            st["StepDescription"] = step.description
        view.steps[step.name] = st
        try:
            if step.type == "Condition":
                outcome = evaluate_all(step.arguments.get("Conditions") or [], view.scope())
                st.update(StepStatus="Succeeded", EndTime=now, Metadata={"Condition": {"Outcome": str(outcome)}})
            elif step.type == "Fail":
                message = to_text(resolve((step.arguments or {}).get("ErrorMessage", ""), view.scope()))
                st.update(StepStatus="Failed", EndTime=now, Metadata={"Fail": {"ErrorMessage": message}})
                if message:
                    st["FailureReason"] = reason(message)
            elif step.type == "Callback":
                self._start_callback(res, view, step, st, now)
            elif step.type in JOB_KINDS:
                self._start_job(res, view, step, st, now)
            else:
                why = UNSUPPORTED_REASON.get(step.type, f"{step.type} steps need AWS services OpenSage does not run")
                st.update(StepStatus="Failed", EndTime=now,
                          FailureReason=reason(f"{why}; step '{step.name}' cannot run here."))
        except ExpressionError as e:
            st.update(StepStatus="Failed", EndTime=now, FailureReason=reason(f"ClientError: {e}"))

    def _start_callback(self, res: Resource, view: ExecutionScope, step: StepDef, st: dict[str, Any],
                        now: float) -> None:
        """Saved with its token first, then the message sent: a restart in between sends it then (the same
        token), never a token the execution does not know."""
        inputs = resolve(step.arguments or {}, view.scope())
        if step.cache_config and self._cache_hit(view, step, st, inputs):
            return
        st["_cache_key"] = cache_key(step.type, inputs)
        st.update(StepStatus="Executing", _inputs=inputs, _send="start", Metadata={"Callback": {
            "CallbackToken": random_suffix(10), "SqsQueueUrl": step.raw.get("SqsQueueUrl", "")}})
        self.d.resources.save(res, now)
        self._send_callback(res, step, st, now)

    def _send_callback(self, res: Resource, step: StepDef, st: dict[str, Any], now: float) -> None:
        """The step's SQS message (DG "Callback step"): ``token``, ``pipelineExecutionArn`` and the resolved
        ``arguments``; on StopPipelineExecution the same with ``"Status": "Stopping"``."""
        which = st.get("_send")
        sqs = self.services.get("sqs")
        if which is None or sqs is None:
            st.pop("_send", None)
            return
        callback = st["Metadata"]["Callback"]
        body: dict[str, Any] = {"token": callback["CallbackToken"], "pipelineExecutionArn": res.arn,
                                "arguments": st.get("_inputs") or {}}
        if which == "stop":
            body["Status"] = "Stopping"
        try:
            sqs.send_message(RequestContext(), {"QueueUrl": callback["SqsQueueUrl"], "MessageBody": json.dumps(body)})
        except ServiceError as e:
            st.pop("_send", None)
            if which == "start":
                st.update(StepStatus="Failed", EndTime=now, FailureReason=reason(
                    f"ClientError: the callback message could not be sent to SqsQueueUrl "
                    f"{callback['SqsQueueUrl']}: {e.message}"))
            else:  # nobody can be told: the step stops here
                st.update(StepStatus="Stopped", EndTime=now)
            return
        st.pop("_send", None)

    def _start_job(self, res: Resource, view: ExecutionScope, step: StepDef, st: dict[str, Any],
                   now: float) -> None:
        kind = JOB_KINDS[step.type]
        raw_args = step.arguments if isinstance(step.arguments, dict) else {}
        name = child_name(kind, res.name, step.name, raw_args) if kind.name_key else None
        args = resolve(raw_args, view.scope(name, step.type))
        if step.cache_config and self._cache_hit(view, step, st, args):
            return
        st["_cache_key"] = cache_key(step.type, args)
        self._intend(res, step, st, args, name, now)

    def _intend(self, res: Resource, step: StepDef, st: dict[str, Any], args: dict[str, Any], name: str | None,
                now: float) -> None:
        """Save the child's name (Starting), then create it: a restart between the two creates it then."""
        kind = JOB_KINDS[step.type]
        if self.services.get(kind.service) is None:
            st.update(StepStatus="Failed", EndTime=now, FailureReason=reason(
                f"{step.type} steps need the '{kind.service}' capability, which is not installed on this platform."))
            return
        params = dict(args)
        if kind.name_key:
            params[kind.name_key] = name
        elif step.type == "RegisterModel" and not params.get("ClientToken"):
            # saved with the intent: a create repeated after a restart returns the same package version
            params["ClientToken"] = f"{res.name}-{random_suffix()}"
        params.pop("ExperimentConfig", None)
        st["_job"] = {"name": name, "params": params}
        self.d.resources.save(res, now)
        self._create(step, st, now)

    def _create(self, step: StepDef, st: dict[str, Any], now: float) -> None:
        from opensage.api.spec import operation_model
        from opensage.api.validate import validate

        kind = JOB_KINDS[step.type]
        job = st["_job"]
        service = self.services.get(kind.service)
        op = operation_model("sagemaker", pdef.CREATE_OPERATION[step.type])
        params = coerce(job["params"], op.input_shape if op else None)
        try:
            if service is None:
                raise ValidationException(f"the '{kind.service}' capability is not installed on this platform")
            validate(params, op.input_shape if op else None)
            out = getattr(service, kind.create)(RequestContext(), params)
        except ServiceError as e:
            if kind.name_key and e.code == "ResourceInUse":  # created before a restart: adopt it
                out = {kind.arn_key: self.d.arns.sagemaker(_ARN_TYPE[step.type], job["name"])}
            else:
                self._failed(step, st, f"ClientError: {e.message}", now, failure_class(error=e))
                return
        except Exception as e:  # noqa: BLE001 - another capability's bug fails the step, not the engine
            log.exception("pipeline step %s: create failed", step.name)
            self._failed(step, st, f"InternalServerError: {type(e).__name__}: {e}", now, "Step.SERVICE_FAULT")
            return
        job.update(created=True, arn=out.get(kind.arn_key))
        job.pop("params", None)  # the child's own row holds the request now
        st.update(StepStatus="Executing", Metadata={kind.metadata: {"Arn": job["arn"]}})
        if kind.status_key is None:  # CreateModel is final when it returns
            st.update(StepStatus="Succeeded", EndTime=now)

    # -- polling -----------------------------------------------------------------------------------------
    def _poll(self, res: Resource, view: ExecutionScope, step: StepDef, st: dict[str, Any], now: float) -> None:
        if step.type == "Callback":
            self._poll_callback(res, step, st, now)
            return
        if st.get("_retry_at") is not None:
            if res.status == "Executing" and now >= st["_retry_at"]:
                self._retry(res, view, step, st, now)
            return
        job = st.get("_job")
        kind = JOB_KINDS.get(step.type)
        if job is None or kind is None:
            return
        if not job.get("created"):
            self._adopt_or_create(step, st, now, create=res.status == "Executing")
            return
        try:
            desc = describe_child(self.services, step.type, job)
        except (ServiceError, ExpressionError) as e:
            text = e.message if isinstance(e, ServiceError) else str(e)
            self._failed(step, st, f"InternalServerError: the step's {kind.metadata} can no longer be read: {text}",
                         now, None)
            return
        if kind.status_key is None:  # CreateModel: final once it exists (adopted after a restart)
            st.update(StepStatus="Succeeded", EndTime=now)
            return
        status = STEP_STATUS.get(desc.get(kind.status_key), "Executing")
        if status == st.get("StepStatus") or status == "Executing" and st.get("StepStatus") == "Stopping":
            return
        if status == "Succeeded":
            st.update(StepStatus="Succeeded", EndTime=now)
        elif status == "Failed":
            why = desc.get("FailureReason") or _package_failure(desc)
            self._failed(step, st, f"ClientError: {why}".rstrip(": ") if why else "ClientError: the job failed",
                         now, failure_class(reason=why))
        elif status == "Stopped":
            st.update(StepStatus="Stopped", EndTime=now)
            if not st.get("_stop_sent"):
                st["FailureReason"] = reason(f"The step's {kind.metadata} was stopped outside the pipeline.")
        else:
            st["StepStatus"] = status

    def _adopt_or_create(self, step: StepDef, st: dict[str, Any], now: float, create: bool) -> None:
        """A Starting step whose creation a restart may have cut off: adopt the child if it exists."""
        job = st["_job"]
        kind = JOB_KINDS[step.type]
        if kind.name_key and job.get("name"):
            try:
                desc = describe_child(self.services, step.type, job)
                job.update(created=True, arn=desc.get(kind.arn_key))
                job.pop("params", None)
                st.update(StepStatus="Executing", Metadata={kind.metadata: {"Arn": job["arn"]}})
                return
            except (ServiceError, ExpressionError):
                pass
        if "params" in job and create:  # a stopping execution starts nothing: wind-down marks it Stopped
            self._create(step, st, now)

    def _failed(self, step: StepDef, st: dict[str, Any], text: str, now: float, failure: str | None) -> None:
        if SHUTDOWN_MARK in text and int(st.get("_restarts", 0)) < SHUTDOWN_RESTARTS:
            st["_restarts"] = int(st.get("_restarts", 0)) + 1
            st.setdefault("_first_start", st.get("StartTime", now))
            st.update(StepStatus="Starting", _retry_at=now, _last_failure=reason(text))
            return
        elapsed = now - float(st.get("_first_start", st.get("StartTime", now)))
        delay = retry_delay(step.retry_policies, failure, int(st.get("AttemptCount", 1)), elapsed)
        if delay is not None:
            st.setdefault("_first_start", st.get("StartTime", now))
            st.update(StepStatus="Starting", _retry_at=now + delay, _last_failure=reason(text))
            return
        st.update(StepStatus="Failed", EndTime=now, FailureReason=reason(text))

    def _retry(self, res: Resource, view: ExecutionScope, step: StepDef, st: dict[str, Any], now: float) -> None:
        kind = JOB_KINDS[step.type]
        st.pop("_retry_at", None)
        st["AttemptCount"] = int(st.get("AttemptCount", 1)) + 1
        st.pop("Metadata", None)
        raw_args = step.arguments if isinstance(step.arguments, dict) else {}
        name = child_name(kind, res.name, step.name, raw_args) if kind.name_key else None
        try:
            args = resolve(raw_args, view.scope(name, step.type))
        except ExpressionError as e:
            st.update(StepStatus="Failed", EndTime=now, FailureReason=reason(f"ClientError: {e}"))
            return
        self._intend(res, step, st, args, name, now)

    def _poll_callback(self, res: Resource, step: StepDef, st: dict[str, Any], now: float) -> None:
        if st.get("_send"):  # a send a restart cut off
            self._send_callback(res, step, st, now)
        answer = st.pop("_callback", None)
        if answer is None:
            return
        stopping = st.get("StepStatus") == "Stopping"
        if answer.get("Status") == "Success":
            outputs = answer.get("OutputParameters") or []
            st["_outputs"] = outputs
            st["Metadata"]["Callback"]["OutputParameters"] = outputs
            # answered after StopPipelineExecution: the execution stops, nothing downstream runs
            st.update(StepStatus="Stopped" if stopping else "Succeeded", EndTime=now)
        else:
            st.update(StepStatus="Failed", EndTime=now, FailureReason=reason(answer.get("FailureReason") or ""))

    # -- caching -----------------------------------------------------------------------------------------
    def _cache_hit(self, view: ExecutionScope, step: StepDef, st: dict[str, Any], args: Any) -> bool:
        """Reuse the newest successful run of this step, in an execution of the same pipeline, with the same
        key inside the ExpireAfter window. The step then points at that run's child."""
        if step.type not in CACHEABLE:
            return False
        try:
            window = expire_seconds((step.cache_config or {}).get("ExpireAfter"))
        except ValueError:
            window = None
        key = cache_key(step.type, args)
        res = view.res
        rows, _ = self.d.resources.list(EXECUTION, ListQuery(parent_arn=res.parent_arn, sort_by="CreationTime",
                                                             descending=True, limit=1000))
        for row in rows:
            if row.arn == res.arn:
                continue
            source = (row.state.get("Steps") or {}).get(step.name)
            if not source or source.get("StepStatus") != "Succeeded" or source.get("_cache_key") != key:
                continue
            if window is not None and view.now - float(source.get("EndTime") or 0) > window:
                continue
            if step.type in JOB_KINDS:
                job = source.get("_job") or {}
                try:
                    describe_child(self.services, step.type, job)  # the child still exists
                except (ServiceError, ExpressionError):
                    continue
            hit_from = (source.get("CacheHitResult") or {}).get("SourcePipelineExecutionArn") or row.arn
            st.update(StepStatus="Succeeded", EndTime=view.now, _cache_key=key,
                      CacheHitResult={"SourcePipelineExecutionArn": hit_from},
                      Metadata=source.get("Metadata") or {}, AttemptCount=0)
            for private in ("_job", "_outputs", "_inputs"):
                if private in source:
                    st[private] = source[private]
            return True
        return False


def _unhandled_failures(defn: Definition, steps: dict[str, dict[str, Any]]) -> list[str]:
    """Failed / Stopped steps that no step runs on (DependsOn Trigger): these end the execution Failed."""
    out = []
    for name, st in steps.items():
        status = st.get("StepStatus")
        if status not in ("Failed", "Stopped"):
            continue
        if not any(status in pdef.TRIGGERS[s.triggers[name]] for s in defn.steps.values() if name in s.triggers):
            out.append(name)
    return out


_ARN_TYPE = {"Processing": "processing-job", "Training": "training-job", "Transform": "transform-job",
             "Tuning": "hyper-parameter-tuning-job", "Model": "model", "RegisterModel": "model-package"}


def selective_steps(defn: Definition, source: Resource, selected: list[str]) -> dict[str, dict[str, Any]]:
    """SelectiveExecutionConfig: the unselected steps' entries, reused from ``source`` (its Succeeded steps,
    marked with SelectiveExecutionResult) or skipped; ValidationException when a selected step needs an
    unselected step that did not succeed there."""
    unknown = [s for s in selected if s not in defn.steps]
    if unknown:
        raise ValidationException(f"SelectiveExecutionConfig.SelectedSteps names steps that are not in the "
                                  f"pipeline: {', '.join(unknown)}")
    source_steps = source.state.get("Steps") or {}
    out: dict[str, dict[str, Any]] = {}
    for name in defn.steps:
        if name in selected:
            continue
        prior = source_steps.get(name)
        if prior and prior.get("StepStatus") == "Succeeded":
            entry = {k: v for k, v in prior.items() if k != "CacheHitResult"}
            entry["SelectiveExecutionResult"] = {"SourcePipelineExecutionArn": source.arn}
            out[name] = entry
        else:
            out[name] = {"_skipped": True, "_unselected": True}  # kept skipped by RetryPipelineExecution
    for name in selected:
        for up in defn.steps[name].upstream:
            if up not in selected and out.get(up, {}).get("_skipped"):
                raise ValidationException(
                    f"SelectiveExecutionConfig: selected step '{name}' depends on step '{up}', which is not "
                    f"selected and did not succeed in {source.arn}; select it too.")
    return out


def _package_failure(desc: dict[str, Any]) -> str:
    """A failed model package's reason: its validation statuses' FailureReasons (it has no FailureReason)."""
    details = desc.get("ModelPackageStatusDetails") or {}
    reasons = [item.get("FailureReason") for key in ("ValidationStatuses", "ImageScanStatuses")
               for item in details.get(key) or [] if item.get("FailureReason")]
    return "; ".join(reasons)
