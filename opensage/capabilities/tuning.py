"""Automatic model tuning (issue 10): the hyperparameter tuning job API and its reconciler.

``ctx.services["tuning"]`` is the TuningService: other capabilities (Pipelines' TuningStep) call its
``create_hyper_parameter_tuning_job`` / ``describe_hyper_parameter_tuning_job`` with the API's params.
"""

from __future__ import annotations

from typing import Any

from opensage.capabilities import CapabilityContext
from opensage.services.tuning import TuningService
from opensage.tuning.jobs import KIND, TRAINING_KIND
from opensage.tuning.reconciler import TuningReconciler


def install(ctx: CapabilityContext) -> None:
    service = TuningService(ctx.deps)
    ctx.dispatcher.register("sagemaker", service)
    ctx.services["tuning"] = service
    reconciler = TuningReconciler(ctx.deps, ctx.services)
    ctx.wakers[KIND] = reconciler.wake
    ctx.background.append(reconciler)
    parent_prefix = ctx.deps.arns.sagemaker(KIND, "")

    def child_ended(job: Any) -> None:
        # The next child starts (or the tuning job ends) now, not at the reconciler's next poll.
        if (job.parent_arn or "").startswith(parent_prefix):
            reconciler.wake()

    ctx.deps.on_job_end.setdefault(TRAINING_KIND, []).append(child_ended)
