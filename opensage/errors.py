"""Typed service errors, formatted in one place (api.serializer)."""

from __future__ import annotations


class ServiceError(Exception):
    """An error the client sees: AWS error code, HTTP status, and whether the caller is at fault."""

    code = "InternalFailure"
    status = 400
    sender_fault = True

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 fields: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        # Extra modeled members of the error shape (e.g. ModelError's OriginalStatusCode).
        self.fields = fields or {}


class ValidationException(ServiceError):
    code = "ValidationException"


class ValidationError(ServiceError):
    """The runtime (rest-json) spelling of a validation error."""

    code = "ValidationError"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"


class ResourceInUse(ServiceError):
    code = "ResourceInUse"


class ResourceLimitExceeded(ServiceError):
    code = "ResourceLimitExceeded"


class ConflictException(ServiceError):
    code = "ConflictException"


class ResourceNotFoundException(ServiceError):
    """CloudWatch Logs' spelling."""

    code = "ResourceNotFoundException"


class InvalidParameterException(ServiceError):
    """CloudWatch Logs' validation error."""

    code = "InvalidParameterException"


class AccessDenied(ServiceError):
    status = 403

    def __init__(self, message: str, code: str = "InvalidSignatureException") -> None:
        super().__init__(message, code=code, status=403)


class UnknownOperation(ServiceError):
    code = "UnknownOperationException"
    status = 400


class InternalFailure(ServiceError):
    code = "InternalFailure"
    status = 500
    sender_fault = False
