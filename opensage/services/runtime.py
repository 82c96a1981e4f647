"""SageMaker Runtime: InvokeEndpoint, proxied in the server's event loop (no thread, no SQL per request)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from opensage.errors import ServiceError, ValidationError
from opensage.services.base import Deps
from opensage.serving.capture import DataCapture, sampled
from opensage.serving.metrics import EndpointMetrics
from opensage.serving.router import EndpointRoute, Router, VariantRoute
from opensage.serving.upstream import UpstreamConnectError, UpstreamResponse

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MODEL_TIMEOUT_SECONDS = 60.0  # SageMaker: a container must answer /invocations within 60 s
# Only these headers cross between client and container (SageMaker drops the rest).
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class ModelError(ServiceError):
    code = "ModelError"
    status = 424


class ServiceUnavailable(ServiceError):
    code = "ServiceUnavailable"
    status = 503
    sender_fault = False


class ModelNotReady(ServiceError):
    code = "ModelNotReadyException"
    status = 429


class Throttling(ServiceError):
    code = "ThrottlingException"
    status = 429


COLD_START_TIMEOUT_SECONDS = 55.0  # under boto3's default 60 s read timeout
# A model server marks its own 4xx as one of the platform's errors (e.g. a missing TargetModel object on a
# multi-model endpoint is the caller's ValidationError, not a ModelError).
ERROR_TYPE_HEADER = "x-opensage-error-type"


class RuntimeService:
    def __init__(self, deps: Deps, router: Router, metrics: EndpointMetrics | None = None,
                 capture: DataCapture | None = None) -> None:
        self.d = deps
        self.router = router
        self.metrics = metrics  # per-minute aggregates in memory; nothing is written per request
        self.capture = capture  # sampled request/response pairs, buffered; written to S3 in the background
        self._shadow_tasks: set[asyncio.Task] = set()

    async def invoke_endpoint(self, ctx, params: dict[str, Any], *, timeout: float = MODEL_TIMEOUT_SECONDS,
                              max_payload: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
        """``timeout`` and ``max_payload``: asynchronous inference calls this with its own limits."""
        started = time.perf_counter()
        name = params["EndpointName"]
        body: bytes = params.get("Body") or b""
        if len(body) > max_payload:
            raise ValidationError(f"Received payload of {len(body)} bytes exceeds the maximum of "
                                  f"{max_payload} bytes for InvokeEndpoint; use batch transform or "
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
        if variant.serverless is not None:
            variant = await self._serverless_capacity(name, variant)
        self.router.touch(name, variant.name)
        headers = {"Content-Type": params.get("ContentType") or "application/octet-stream"}
        if params.get("Accept"):
            headers["Accept"] = params["Accept"]
        if params.get("CustomAttributes"):
            headers[CUSTOM_ATTRIBUTES] = params["CustomAttributes"]
        if params.get("InferenceId"):
            headers["X-Amzn-SageMaker-Inference-Id"] = params["InferenceId"]
        if params.get("TargetModel"):
            headers["X-Amzn-SageMaker-Target-Model"] = params["TargetModel"]
        if params.get("TargetContainerHostname"):
            headers["X-Amzn-SageMaker-Target-Container-Hostname"] = params["TargetContainerHostname"]
        if route.shadows:
            self._mirror(name, route, body, headers, params.get("InferenceId"))
        sent = time.perf_counter()
        try:
            response = await self._send(variant, body, headers, name, params.get("TargetModel"), timeout)
        except ServiceError:
            self._record(name, variant, started, sent, None, None)
            raise
        answered = time.perf_counter()
        if response.status_code >= 400:
            self._record(name, variant, started, sent, answered, response.status_code)
            if response.headers.get(ERROR_TYPE_HEADER) == "ValidationError":
                raise ValidationError(response.text[:2048])
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

    async def _serverless_capacity(self, name: str, variant: VariantRoute) -> VariantRoute:
        """MaxConcurrency is enforced per variant; with no instance, the request waits for a cold start."""
        limit = int(variant.serverless.get("MaxConcurrency") or 0) if variant.serverless else 0
        if limit and variant.in_flight() >= limit:
            raise Throttling(f"The serverless endpoint {name} variant {variant.name} is at its MaxConcurrency "
                             f"of {limit} concurrent requests; retry (boto3 retries throttling) or raise "
                             "MaxConcurrency in the endpoint configuration.")
        if variant.replicas:
            return variant
        since = time.monotonic()
        deadline = since + COLD_START_TIMEOUT_SECONDS
        self.router.touch(name, variant.name)  # a request is waiting: not idle
        while time.monotonic() < deadline:
            failure = self.router.cold_start_failure(name, variant.name, since)
            if failure is not None:
                raise ModelError(failure[:4096], fields={"OriginalStatusCode": 500, "OriginalMessage": failure[:4096]})
            self.router.demand(name, variant.name)
            route = self.router.get(name)
            if route is None:
                break
            fresh = next((v for v in route.variants if v.name == variant.name), None)
            if fresh is None:
                break
            if fresh.replicas:
                return fresh
            await asyncio.sleep(0.02)
        raise ModelNotReady(f"The serverless endpoint {name} variant {variant.name} could not start an instance "
                            f"within {COLD_START_TIMEOUT_SECONDS:.0f} seconds; see the log group "
                            f"/aws/sagemaker/Endpoints/{name} and retry.")

    def _mirror(self, name: str, route: EndpointRoute, body: bytes, headers: dict[str, str],
                inference_id: str | None) -> None:
        """Shadow variants get a copy of the request; their answers are captured and counted, never returned."""
        for shadow in route.shadows:
            if shadow.replicas and (shadow.sample >= 1.0 or random.random() < shadow.sample):
                task = asyncio.get_running_loop().create_task(
                    self._shadow_call(name, route, shadow, body, dict(headers), inference_id))
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_call(self, name: str, route: EndpointRoute, shadow: VariantRoute, body: bytes,
                           headers: dict[str, str], inference_id: str | None) -> None:
        started = time.perf_counter()
        try:
            response = await self._send(shadow, body, headers, name, headers.get("X-Amzn-SageMaker-Target-Model"))
        except ServiceError:
            self._record(name, shadow, started, started, None, None)
            return
        except Exception:  # noqa: BLE001 - a shadow's failure never reaches the caller
            log.exception("endpoint %s: shadow variant %s request failed", name, shadow.name)
            return
        self._record(name, shadow, started, started, time.perf_counter(), response.status_code)
        if response.status_code < 400 and self.capture is not None and sampled(route.capture):
            self.capture.record(name, shadow.name, route.capture, body, headers["Content-Type"], response.content,
                                response.headers.get("content-type", "application/octet-stream"), inference_id)

    def _record(self, name: str, variant, started: float, sent: float, answered: float | None,
                status: int | None) -> None:
        """ModelLatency is the model server's round trip; OverheadLatency the rest of our handling."""
        if self.metrics is None:
            return
        end = time.perf_counter()
        model = answered - sent if answered is not None else None
        overhead = (end - started) - (model if model is not None else end - sent)
        self.metrics.record(name, variant.name, len(variant.replicas), model, overhead, status)

    async def _send(self, variant: VariantRoute, body: bytes, headers: dict[str, str], name: str,
                    affinity: str | None = None, timeout: float = MODEL_TIMEOUT_SECONDS) -> UpstreamResponse:
        client = self.router.client()
        tried: set[str] = set()
        while True:
            replica = variant.pick_replica(affinity) if len(tried) == 0 else next(
                (r for r in variant.replicas if r not in tried), None)
            if replica is None:
                raise ServiceUnavailable(f"No instance of endpoint {name} variant {variant.name} answered; "
                                         "it is being replaced. Retry the request.")
            tried.add(replica)
            variant.outstanding[replica] = variant.outstanding.get(replica, 0) + 1
            try:
                return await client.post(replica, "/invocations", body, headers, timeout=timeout)
            except UpstreamConnectError:
                continue  # the replica died between health checks: try another instance of the variant
            except TimeoutError:
                raise ModelError(f"Model server did not respond within {timeout:.0f} seconds.",
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
