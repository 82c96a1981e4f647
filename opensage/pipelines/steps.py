"""Step kinds that run a child resource through another service's Python interface (contracts §11 table),
SageMaker's child naming, cache keys, retry policies and failure classes."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from opensage.errors import ServiceError


@dataclass(frozen=True)
class JobKind:
    service: str  # key in ctx.services
    name_key: str | None  # the Create* member that names the child (None: the service names it)
    create: str
    describe: str
    stop: str | None
    status_key: str | None  # None: final at create (CreateModel)
    metadata: str  # ListPipelineExecutionSteps Metadata key
    arn_key: str
    name_max: int = 63


JOB_KINDS: dict[str, JobKind] = {
    "Processing": JobKind("processing", "ProcessingJobName", "create_processing_job", "describe_processing_job",
                          "stop_processing_job", "ProcessingJobStatus", "ProcessingJob", "ProcessingJobArn"),
    "Training": JobKind("training", "TrainingJobName", "create_training_job", "describe_training_job",
                        "stop_training_job", "TrainingJobStatus", "TrainingJob", "TrainingJobArn"),
    "Transform": JobKind("transform", "TransformJobName", "create_transform_job", "describe_transform_job",
                         "stop_transform_job", "TransformJobStatus", "TransformJob", "TransformJobArn"),
    "Tuning": JobKind("tuning", "HyperParameterTuningJobName", "create_hyper_parameter_tuning_job",
                      "describe_hyper_parameter_tuning_job", "stop_hyper_parameter_tuning_job",
                      "HyperParameterTuningJobStatus", "TuningJob", "HyperParameterTuningJobArn", name_max=32),
    "Model": JobKind("models", "ModelName", "create_model", "describe_model", None, None, "Model", "ModelArn"),
    "RegisterModel": JobKind("registry", None, "create_model_package", "describe_model_package", None,
                             "ModelPackageStatus", "RegisterModel", "ModelPackageArn"),
}
# Child status -> StepStatus (Pending/InProgress/Starting are Executing).
STEP_STATUS = {"Completed": "Succeeded", "Failed": "Failed", "Stopped": "Stopped", "Stopping": "Stopping",
               "Deleting": "Failed", "DeleteFailed": "Failed"}

# DG pipelines-caching: the attributes that make a run of each step type "the same".
CACHE_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig", "DebugRuleConfigurations",
                 "Environment", "HyperParameters", "InputDataConfig"),
    "Tuning": ("HyperParameterTuningJobConfig", "TrainingJobDefinition", "TrainingJobDefinitions"),
    "Transform": ("DataProcessing", "Environment", "ModelName", "TransformInput"),
}
CACHEABLE = (*CACHE_ATTRIBUTES, "Callback", "Lambda", "EMR", "AutoML", "QualityCheck", "ClarifyCheck")

_ALNUM = string.ascii_lowercase + string.digits


def random_suffix(n: int = 10) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def child_name(kind: JobKind, execution_id: str, step_name: str, arguments: dict[str, Any]) -> str:
    """``pipelines-<execution id>-<step>-<10 random>`` (step lower-cased to [a-z0-9]), as SageMaker names a
    step's job; a base name the SDK kept (``use_custom_job_prefix``) is used instead of the prefix."""
    suffix = random_suffix()
    base = arguments.get(kind.name_key) if kind.name_key else None
    if isinstance(base, str) and base:
        return f"{base[:kind.name_max - 11].rstrip('-')}-{suffix}"
    step = re.sub(r"[^a-z0-9]", "", step_name.lower()) or "step"
    if kind.name_max < 63:  # tuning job names are at most 32 characters
        return f"{execution_id}-{step[:kind.name_max - len(execution_id) - 12]}-{suffix}".replace("--", "-")
    return f"pipelines-{execution_id}-{step[:kind.name_max - len(execution_id) - 22]}-{suffix}"


def cache_key(step_type: str, arguments: Any) -> str:
    """SageMaker's cache key: the step type and the resolved arguments it compares (S3 paths, not contents)."""
    attributes = CACHE_ATTRIBUTES.get(step_type)
    if attributes and isinstance(arguments, dict):
        subject: Any = {k: arguments.get(k) for k in attributes}
    else:
        subject = arguments
    raw = json.dumps([step_type, subject], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def expire_seconds(value: str | None) -> float | None:
    """ISO-8601 duration (``P30D``, ``PT1H``, the DG's ``30d`` / ``T16m``, the SDK's ``p30d``) -> seconds."""
    if not value:
        return None
    text = value.strip().upper()
    if not text.startswith("P"):
        text = "P" + text
    m = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?",
                     text)
    if m is None or text in ("P", "PT"):
        raise ValueError(f"ExpireAfter '{value}' is not an ISO-8601 duration (e.g. P30D, PT1H)")
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return ((((y * 365 + mo * 30 + w * 7 + d) * 24 + h) * 60 + mi) * 60) + s


# -- failures and retries ------------------------------------------------------------------------------------
def failure_class(reason: str | None = None, error: BaseException | None = None) -> str | None:
    """The RetryPolicies ExceptionType a failure is (None: not retryable, e.g. an algorithm error)."""
    if error is not None:
        if isinstance(error, ServiceError):
            if error.code in ("ThrottlingException", "Throttling"):
                return "Step.THROTTLING"
            if error.code == "ResourceLimitExceeded":
                return "SageMaker.RESOURCE_LIMIT"
            return "Step.SERVICE_FAULT" if error.status >= 500 else None
        return "Step.SERVICE_FAULT"
    text = reason or ""
    if "InternalServerError" in text:
        return "SageMaker.JOB_INTERNAL_ERROR"
    if "CapacityError" in text or "InsufficientCapacity" in text:
        return "SageMaker.CAPACITY_ERROR"
    if "ResourceLimitExceeded" in text:
        return "SageMaker.RESOURCE_LIMIT"
    return None


def retry_delay(policies: list[dict[str, Any]], failure: str | None, attempts: int,
                elapsed: float) -> float | None:
    """Seconds until the next attempt under the first policy matching ``failure``; None: no retry."""
    if failure is None:
        return None
    for policy in policies:
        if failure not in (policy.get("ExceptionType") or []):
            continue
        interval = float(policy.get("IntervalSeconds", 1))
        backoff = float(policy.get("BackoffRate", 2.0))
        max_attempts = policy.get("MaxAttempts")
        expire_min = policy.get("ExpireAfterMin")
        if max_attempts is not None and attempts >= int(max_attempts):
            return None
        delay = interval * backoff ** max(attempts - 1, 0)
        if expire_min is not None and elapsed + delay > float(expire_min) * 60:
            return None
        if max_attempts is None and expire_min is None and attempts >= 20:
            return None
        return delay
    return None
