"""Operation registry: (service, Operation) -> handler, found by name on the service objects."""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore import xform_name

from opensage.api.parser import ParsedRequest
from opensage.api.validate import validate
from opensage.errors import InternalFailure, ServiceError, UnknownOperation, ValidationError

if TYPE_CHECKING:
    from opensage.credentials import Principal

log = logging.getLogger(__name__)


def new_request_id() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` writes it.

    Request ids need to be unique, not secret: Python's PRNG (reseeded after fork) is ~4x cheaper per
    request than ``uuid4``'s ``os.urandom`` and ``UUID`` object.
    """
    n = random.getrandbits(128)
    n = (n & ~(0xF000 << 64)) | (4 << 76)  # version 4
    n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    access_key: str | None = None
    region: str = "us-east-1"
    # Who signed the request (set by the routes once the signature checks out): the platform's key pair,
    # or a job's / endpoint's temporary credentials. None for calls made inside the platform.
    principal: Principal | None = None

    @property
    def owner(self) -> str | None:
        """The resource behind temporary credentials ("training-job/<name>/<generation>"), else None."""
        return self.principal.owner if self.principal is not None else None

    @property
    def caller(self) -> str:
        """How logs name whoever made the request."""
        return self.principal.name if self.principal is not None else "platform"


Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any] | None]

# Runtime requests repeat the same few scalar members (endpoint name, content types) with a new body: a
# request whose members were already found valid is not walked again. Only flat scalar params are
# remembered, keyed by (name, type, value); a blob's bytes are never looked at by validate() (only their
# type), so a body is keyed by its type alone.
_SCALARS = (str, int, float, bool, datetime)
_BLOBS = (bytes, bytearray)
VALID_CACHE_SIZE = 4096


class Dispatcher:
    def __init__(self) -> None:
        self._services: dict[str, list[object]] = {}
        # (service, Operation) -> (handler, is it a coroutine function); found once, not per request
        self._resolved: dict[tuple[str, str], tuple[Handler, bool]] = {}
        self._valid: set[tuple] = set()  # runtime requests already validated (see _SCALARS)

    def register(self, service: str, impl: object) -> None:
        """``impl`` answers every operation of ``service`` for which it has a method xform_name(Op)."""
        self._services.setdefault(service, []).append(impl)
        self._resolved.clear()

    def handler(self, service: str, operation: str) -> Handler | None:
        method = xform_name(operation)
        for impl in self._services.get(service, []):
            fn = getattr(impl, method, None)
            if fn is not None:
                return fn
        return None

    def _resolve(self, req: ParsedRequest) -> tuple[Handler, bool]:
        op = req.operation
        key = (req.service, op.name)
        found = self._resolved.get(key)
        if found is None:
            fn = self.handler(req.service, op.name)
            if fn is None:
                raise UnknownOperation(
                    f"OpenSage does not implement {op.service_model.service_id} {op.name} yet. "
                    "See the README for the operations that are supported.", status=400)
            found = self._resolved[key] = (fn, inspect.iscoroutinefunction(fn))
        if req.service == "sagemaker-runtime":
            self._validate_runtime(req)
        else:
            validate(req.params, op.input_shape)
        return found

    def _validate_runtime(self, req: ParsedRequest) -> None:
        key = _flat_key(req.operation.name, req.params)
        if key is not None and key in self._valid:
            return
        validate(req.params, req.operation.input_shape, exc=ValidationError)
        if key is not None:
            if len(self._valid) >= VALID_CACHE_SIZE:
                self._valid.clear()
            self._valid.add(key)

    def dispatch(self, ctx: RequestContext, req: ParsedRequest) -> dict[str, Any]:
        return self._call(self._resolve(req)[0], ctx, req)

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

        fn, is_coroutine = self._resolve(req)
        if not is_coroutine:
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


def _flat_key(operation: str, params: dict[str, Any]) -> tuple | None:
    """What validate() can see of flat params: (name, type, value), a blob's type only; None if nested."""
    items: list[tuple] = [(operation,)]
    for name, value in params.items():
        kind = type(value)
        if kind in _BLOBS:
            items.append((name, kind))
        elif value is None or kind in _SCALARS:
            items.append((name, kind, value))
        else:
            return None
    return tuple(items)
