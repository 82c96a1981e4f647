"""The model registry capability: model package groups and packages (opensage/services/registry.py).

Other capabilities call it as ``ctx.services["registry"]`` with API params (the pipeline engine's
RegisterModel step calls ``create_model_package(RequestContext(), params)``). CreateModel resolves
``ModelPackageName`` containers through ``resolve_containers``, handed to the model service here.
"""

from __future__ import annotations

from opensage.capabilities import CapabilityContext
from opensage.registry.validation import PACKAGE, ValidationReconciler
from opensage.services.registry import RegistryService


def install(ctx: CapabilityContext) -> None:
    service = RegistryService(ctx.deps, ctx.services)
    ctx.dispatcher.register("sagemaker", service)
    ctx.services["registry"] = service
    validator = ValidationReconciler(ctx.deps, ctx.services)  # ValidationSpecification transform jobs
    ctx.wakers[PACKAGE] = validator.wake
    ctx.background.append(validator)
    models = ctx.services.get("models")
    if models is not None:
        models.package_resolver = service.resolve_containers
