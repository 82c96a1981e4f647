"""SageMaker Runtime InvokeEndpointAsync: validate, queue durably, answer 202 with where the result will be.

Object naming (SageMaker's): the response goes to ``<S3OutputPath>[/<S3OutputPathExtension>]/<name>``
where ``<name>`` is the request's Filename or ``<InferenceId>.out``; a failure to
``<S3FailurePath>/<InferenceId>-error.out``, or beside the output when the endpoint has no S3FailurePath
(FailureLocation is then not returned). The failure object holds the error message as text.
Like SageMaker, the input object is not read at request time: a missing input fails the request later.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from opensage.errors import ValidationError
from opensage.objects.base import split_s3_uri
from opensage.services.base import Deps
from opensage.serving.async_worker import DEFAULT_TIMEOUT_SECONDS, DEFAULT_TTL_SECONDS, AsyncInferenceWorker

# Endpoint statuses in which SageMaker serves invocations (an update keeps the old fleet serving).
SERVING = ("InService", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")


class AsyncInferenceService:
    def __init__(self, deps: Deps, worker: AsyncInferenceWorker) -> None:
        self.d = deps
        self.worker = worker

    def invoke_endpoint_async(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        endpoint = self.d.resources.get("endpoint", name)
        if endpoint is None or endpoint.status not in SERVING:
            raise ValidationError(f"Endpoint {name} of account {self.d.settings.account} not found.")
        config = endpoint.state.get("AsyncInferenceConfig")
        if not config:
            raise ValidationError(
                f"Endpoint {name} is not configured for asynchronous inference: its endpoint configuration "
                f"{endpoint.state.get('EndpointConfigName')} has no AsyncInferenceConfig. Use InvokeEndpoint, or "
                "update the endpoint to a configuration with AsyncInferenceConfig.OutputConfig.S3OutputPath.")
        inference_id = params.get("InferenceId") or str(uuid.uuid4())
        output, failure = _locations(name, config, inference_id, params)
        request = {
            "EndpointName": name, "InferenceId": inference_id, **_input(params),
            "OutputLocation": output, "FailureLocation": failure or _error_beside(output, inference_id),
            "RequestTTLSeconds": params.get("RequestTTLSeconds") or DEFAULT_TTL_SECONDS,
            "InvocationTimeoutSeconds": params.get("InvocationTimeoutSeconds") or DEFAULT_TIMEOUT_SECONDS,
            "MaxConcurrentInvocationsPerInstance": (config.get("ClientConfig") or {}).get(
                "MaxConcurrentInvocationsPerInstance"),
            "NotificationConfig": (config.get("OutputConfig") or {}).get("NotificationConfig"),  # not sent
        }
        for key in ("ContentType", "Accept", "CustomAttributes"):
            if params.get(key):
                request[key] = params[key]
        self.worker.enqueue(request, endpoint.arn)
        out = {"InferenceId": inference_id, "OutputLocation": output}
        if failure:
            out["FailureLocation"] = failure
        return out


def _input(params: dict[str, Any]) -> dict[str, Any]:
    body: bytes = params.get("Body") or b""
    location = params.get("InputLocation")
    if body and location:
        raise ValidationError("Body and InputLocation are mutually exclusive: provide exactly one of them.")
    if body:
        return {"InlineBody": base64.b64encode(body).decode()}
    if not location:
        raise ValidationError("InputLocation is required: upload the payload to S3 and pass its s3:// URI "
                              "(or pass a Body of at most 128,000 bytes).")
    try:
        bucket, key = split_s3_uri(location)
    except ValueError:
        raise ValidationError(f"Invalid InputLocation '{location}': expected s3://<bucket>/<key> "
                              "(https:// object URLs are not supported here).") from None
    if not key or key.endswith("/"):
        raise ValidationError(f"Invalid InputLocation '{location}': it must name an object, not a prefix.")
    return {"InputLocation": location}


def _locations(endpoint: str, config: dict[str, Any], inference_id: str,
               params: dict[str, Any]) -> tuple[str, str | None]:
    out_cfg = config.get("OutputConfig") or {}
    base = out_cfg.get("S3OutputPath")
    if not base:
        raise ValidationError(f"Endpoint {endpoint}'s AsyncInferenceConfig has no OutputConfig.S3OutputPath: "
                              "there is nowhere to write the response.")
    base = base.rstrip("/")
    if params.get("S3OutputPathExtension"):
        base = f"{base}/{params['S3OutputPathExtension'].strip('/')}"
    output = f"{base}/{params.get('Filename') or inference_id + '.out'}"
    failure_base = out_cfg.get("S3FailurePath")
    failure = f"{failure_base.rstrip('/')}/{inference_id}-error.out" if failure_base else None
    return output, failure


def _error_beside(output: str, inference_id: str) -> str:
    return f"{output.rsplit('/', 1)[0]}/{inference_id}-error.out"
