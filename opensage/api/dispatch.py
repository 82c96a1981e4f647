"""Operation registry: (service, Operation) -> handler, found by name on the service objects."""

from __future__ import annotations

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

    def dispatch(self, ctx: RequestContext, req: ParsedRequest) -> dict[str, Any]:
        op = req.operation
        fn = self.handler(req.service, op.name)
        if fn is None:
            raise UnknownOperation(
                f"OpenSage does not implement {op.service_model.service_id} {op.name} yet. "
                "See the README for the operations that are supported.", status=400)
        exc = ValidationError if req.service == "sagemaker-runtime" else None
        validate(req.params, op.input_shape, **({"exc": exc} if exc else {}))
        try:
            return fn(ctx, req.params) or {}
        except ServiceError:
            raise
        except Exception:
            log.exception("InternalFailure in %s.%s (request %s)", req.service, op.name, ctx.request_id)
            raise InternalFailure(f"An internal error occurred (request id {ctx.request_id}).") from None
