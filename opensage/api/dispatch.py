"""Operation registry: (service, Operation) -> handler, found by name on the service objects."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore import xform_name

from opensage.api.parser import ParsedRequest
from opensage.api.validate import validate
from opensage.errors import InternalFailure, ServiceError, UnknownOperation, ValidationError

log = logging.getLogger(__name__)


@dataclass
class RequestContext:
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    access_key: str | None = None
    region: str = "us-east-1"


Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any] | None]


class Dispatcher:
    def __init__(self) -> None:
        self._services: dict[str, list[object]] = {}

    def register(self, service: str, impl: object) -> None:
        """``impl`` answers every operation of ``service`` for which it has a method xform_name(Op)."""
        self._services.setdefault(service, []).append(impl)

    def handler(self, service: str, operation: str) -> Handler | None:
        method = xform_name(operation)
        for impl in self._services.get(service, []):
            fn = getattr(impl, method, None)
            if fn is not None:
                return fn
        return None

    def _resolve(self, req: ParsedRequest) -> Handler:
        op = req.operation
        fn = self.handler(req.service, op.name)
        if fn is None:
            raise UnknownOperation(
                f"OpenSage does not implement {op.service_model.service_id} {op.name} yet. "
                "See the README for the operations that are supported.", status=400)
        exc = ValidationError if req.service == "sagemaker-runtime" else None
        validate(req.params, op.input_shape, **({"exc": exc} if exc else {}))
        return fn

    def dispatch(self, ctx: RequestContext, req: ParsedRequest) -> dict[str, Any]:
        return self._call(self._resolve(req), ctx, req)

    def _call(self, fn: Handler, ctx: RequestContext, req: ParsedRequest) -> dict[str, Any]:
        try:
            return fn(ctx, req.params) or {}
        except ServiceError:
            raise
        except Exception:
            raise self._internal(ctx, req) from None

    async def dispatch_async(self, ctx: RequestContext, req: ParsedRequest) -> dict[str, Any]:
        """Coroutine handlers (the runtime's proxying) run in the event loop; others in the threadpool."""
        from starlette.concurrency import run_in_threadpool

        fn = self._resolve(req)
        if not inspect.iscoroutinefunction(fn):
            return await run_in_threadpool(self._call, fn, ctx, req)
        try:
            return await fn(ctx, req.params) or {}
        except ServiceError:
            raise
        except Exception:
            raise self._internal(ctx, req) from None

    @staticmethod
    def _internal(ctx: RequestContext, req: ParsedRequest) -> InternalFailure:
        log.exception("InternalFailure in %s.%s (request %s)", req.service, req.operation.name, ctx.request_id)
        return InternalFailure(f"An internal error occurred (request id {ctx.request_id}).")
