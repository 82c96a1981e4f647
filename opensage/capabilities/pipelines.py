"""SageMaker Pipelines as a capability: the API (services/pipelines.py) and the execution engine
(pipelines/engine.py), a reconciler on the shared loop woken by ``deps.wake("pipeline-execution")``."""

from __future__ import annotations

from opensage.capabilities import CapabilityContext
from opensage.objects import open_store
from opensage.pipelines.engine import EXECUTION, PipelineEngine
from opensage.services.pipelines import PipelineService


def install(ctx: CapabilityContext) -> None:
    store = None

    def read_object(bucket: str, key: str) -> bytes:
        nonlocal store
        if store is None:  # opened on first use: no work at install time
            store = open_store(ctx.store_spec)
        return store.get_bytes(bucket, key)

    service = PipelineService(ctx.deps, read_object)
    ctx.dispatcher.register("sagemaker", service)
    ctx.services["pipelines"] = service
    engine = PipelineEngine(ctx.deps, ctx.services, read_object)
    ctx.services["pipeline-engine"] = engine
    ctx.wakers[EXECUTION] = engine.wake
    ctx.background.append(engine)
    # A step waiting on a training or tuning job goes on as soon as it ends (a wake is cheap when no
    # execution waits: the engine finds nothing to do).
    for kind in ("training-job", "hyper-parameter-tuning-job"):
        ctx.deps.on_job_end.setdefault(kind, []).append(lambda _job: engine.wake())
