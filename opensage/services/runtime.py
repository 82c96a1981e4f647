"""SageMaker Runtime: InvokeEndpoint, proxied in the server's event loop (no thread, no SQL per request)."""

from __future__ import annotations

import time
from typing import Any

from opensage.errors import ServiceError, ValidationError
from opensage.services.base import Deps
from opensage.serving.capture import DataCapture, sampled
from opensage.serving.metrics import EndpointMetrics
from opensage.serving.router import Router
from opensage.serving.upstream import UpstreamConnectError, UpstreamResponse

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# Only these headers cross between client and container (SageMaker drops the rest).
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class ModelError(ServiceError):
    code = "ModelError"
    status = 424


class ServiceUnavailable(ServiceError):
    code = "ServiceUnavailable"
    status = 503
    sender_fault = False


class RuntimeService:
    def __init__(self, deps: Deps, router: Router, metrics: EndpointMetrics | None = None,
                 capture: DataCapture | None = None) -> None:
        self.d = deps
        self.router = router
        self.metrics = metrics  # per-minute aggregates in memory; nothing is written per request
        self.capture = capture  # sampled request/response pairs, buffered; written to S3 in the background

    async def invoke_endpoint(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        name = params["EndpointName"]
        body: bytes = params.get("Body") or b""
        if len(body) > MAX_PAYLOAD_BYTES:
            raise ValidationError(f"Received payload of {len(body)} bytes exceeds the maximum of "
                                  f"{MAX_PAYLOAD_BYTES} bytes for InvokeEndpoint; use batch transform or "
                                  "InvokeEndpointAsync for larger inputs.", status=413)
        route = self.router.get(name)
        if route is None:
            raise ValidationError(f"Endpoint {name} of account {self.d.settings.account} not found.")
        target = params.get("TargetVariant")
        variant = route.pick(target)
        if variant is None:
            if target is not None:
                raise ValidationError(f"Target variant {target} does not exist on endpoint {name}, or it has no "
                                      "healthy instances.")
            raise ValidationError(f"Endpoint {name} has no variant with healthy instances and traffic weight.")
        headers = {"Content-Type": params.get("ContentType") or "application/octet-stream"}
        if params.get("Accept"):
            headers["Accept"] = params["Accept"]
        if params.get("CustomAttributes"):
            headers[CUSTOM_ATTRIBUTES] = params["CustomAttributes"]
        if params.get("InferenceId"):
            headers["X-Amzn-SageMaker-Inference-Id"] = params["InferenceId"]
        if params.get("TargetModel"):
            headers["X-Amzn-SageMaker-Target-Model"] = params["TargetModel"]
        sent = time.perf_counter()
        try:
            response = await self._send(variant, body, headers, name)
        except ServiceError:
            self._record(name, variant, started, sent, None, None)
            raise
        answered = time.perf_counter()
        if response.status_code >= 400:
            self._record(name, variant, started, sent, answered, response.status_code)
            raise self._model_error(name, variant.name, response)
        out: dict[str, Any] = {"Body": response.content, "InvokedProductionVariant": variant.name,
                               "ContentType": response.headers.get("content-type", "application/octet-stream")}
        if response.headers.get(CUSTOM_ATTRIBUTES.lower()):
            out["CustomAttributes"] = response.headers[CUSTOM_ATTRIBUTES.lower()]
        self._record(name, variant, started, sent, answered, response.status_code)
        if self.capture is not None and sampled(route.capture):
            self.capture.record(name, variant.name, route.capture, body, headers["Content-Type"], response.content,
                                out["ContentType"], params.get("InferenceId"))
        return out

    def _record(self, name: str, variant, started: float, sent: float, answered: float | None,
                status: int | None) -> None:
        """ModelLatency is the model server's round trip; OverheadLatency the rest of our handling."""
        if self.metrics is None:
            return
        end = time.perf_counter()
        model = answered - sent if answered is not None else None
        overhead = (end - started) - (model if model is not None else end - sent)
        self.metrics.record(name, variant.name, len(variant.replicas), model, overhead, status)

    async def _send(self, variant, body: bytes, headers: dict[str, str], name: str) -> UpstreamResponse:
        client = self.router.client()
        tried: set[str] = set()
        while True:
            replica = variant.pick_replica() if len(tried) == 0 else next(
                (r for r in variant.replicas if r not in tried), None)
            if replica is None:
                raise ServiceUnavailable(f"No instance of endpoint {name} variant {variant.name} answered; "
                                         "it is being replaced. Retry the request.")
            tried.add(replica)
            variant.outstanding[replica] = variant.outstanding.get(replica, 0) + 1
            try:
                return await client.post(replica, "/invocations", body, headers, timeout=60.0)
            except UpstreamConnectError:
                continue  # the replica died between health checks: try another instance of the variant
            except TimeoutError:
                raise ModelError("Model server did not respond within 60 seconds.",
                                 fields={"OriginalStatusCode": 504, "OriginalMessage": "timeout"}) from None
            finally:
                variant.outstanding[replica] -= 1

    def _model_error(self, name: str, variant: str, response: UpstreamResponse) -> ModelError:
        s = self.d.settings
        kind = "client" if response.status_code < 500 else "server"
        original = response.text[:4096]
        group = f"/aws/sagemaker/Endpoints/{name}"
        message = (f"Received {kind} error ({response.status_code}) from primary with message \"{original}\". "
                   f"See https://{s.region}.console.aws.amazon.com/cloudwatch/home?region={s.region}"
                   f"#logEventViewer:group={group} in account {s.account} for more information.")
        return ModelError(message, fields={
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if kind == "client" else "SERVER_ERROR_FROM_MODEL",
            "OriginalStatusCode": response.status_code, "OriginalMessage": original,
            "LogStreamArn": self.d.arns.log_group(group)})
