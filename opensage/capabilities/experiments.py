"""SageMaker Experiments (opensage/services/experiments.py): experiments, trials, trial components and their
metrics, what SDK v2's ``sagemaker.experiments.Run`` / ``load_run`` / ``list_runs`` call."""

from __future__ import annotations

from opensage.capabilities import CapabilityContext
from opensage.services.experiments import ExperimentsService


def install(ctx: CapabilityContext) -> None:
    service = ExperimentsService(ctx.deps)
    ctx.dispatcher.register("sagemaker", service)
    ctx.dispatcher.register("sagemaker-metrics", service)
    ctx.services["experiments"] = service
