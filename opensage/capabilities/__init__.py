"""Capabilities beyond the core loop (tuning, pipelines, the model registry, ...), each installed the same way.

Every module of this package defines ``install(ctx: CapabilityContext) -> None``: it registers its services
with ``ctx.dispatcher``, puts the Python interface other capabilities may call in ``ctx.services`` (a
pipeline step calls the processing service's ``create_processing_job``, never HTTP to ourselves), its
reconciler's wake in ``ctx.wakers`` (``deps.wake(kind)`` reaches it) and anything with ``start()`` /
``shutdown(stop_jobs=...)`` in ``ctx.background``. ``create_app`` installs them in module-name order, after the
core services; a capability that needs another looks it up in ``ctx.services`` when it runs, not at install.
Adding a capability is adding a module here: no edit of ``app.py``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opensage.api.dispatch import Dispatcher
from opensage.credentials import CredentialAuthority
from opensage.executors.base import Executor
from opensage.runner.jobspec import ObjectStoreSpec
from opensage.services.base import Deps


@dataclass
class CapabilityContext:
    deps: Deps
    dispatcher: Dispatcher
    executor: Executor
    store_spec: ObjectStoreSpec  # the platform's own object-store access (jobs get temporary credentials)
    credentials: CredentialAuthority
    # "training", "processing", "transform", "models", "endpoints" (core), then what capabilities add.
    services: dict[str, Any] = field(default_factory=dict)
    wakers: dict[str, Callable[[], None]] = field(default_factory=dict)  # resource kind -> its reconciler's wake
    background: list[Any] = field(default_factory=list)  # start() / shutdown(stop_jobs=...) with the platform


def install_all(ctx: CapabilityContext) -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        installer = getattr(importlib.import_module(f"{__name__}.{module}"), "install", None)
        if installer is not None:
            installer(ctx)
