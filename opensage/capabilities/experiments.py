"""SageMaker Experiments (opensage/services/experiments.py): experiments, trials, trial components and their
metrics, what SDK v2's ``sagemaker.experiments.Run`` / ``load_run`` / ``list_runs`` call; and the lineage
artifacts and associations a run's logged graphs and artifacts become (opensage/services/lineage.py)."""

from __future__ import annotations

from opensage.capabilities import CapabilityContext
from opensage.services.experiments import ExperimentsService
from opensage.services.lineage import LineageService


def install(ctx: CapabilityContext) -> None:
    service = ExperimentsService(ctx.deps)
    ctx.dispatcher.register("sagemaker", service)
    ctx.dispatcher.register("sagemaker-metrics", service)
    ctx.services["experiments"] = service
    ctx.deps.on_job_end.setdefault("training-job", []).append(service.record_training_job)
    ctx.dispatcher.register("sagemaker", LineageService(ctx.deps))
