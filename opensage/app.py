"""create_app(settings): wires every component explicitly. Nothing happens at import time."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette

from opensage.api.dispatch import Dispatcher
from opensage.arns import ArnBuilder
from opensage.capabilities import CapabilityContext, install_all
from opensage.clock import Clock, SystemClock
from opensage.credentials import CredentialAuthority, resource_is_active
from opensage.executors.base import Executor
from opensage.objects import open_store
from opensage.runner.jobspec import ObjectStoreSpec
from opensage.runner.processing import ProcessingReconciler
from opensage.runner.training import TrainingReconciler
from opensage.runner.transform import TransformReconciler
from opensage.server.routes import build_routes
from opensage.services.alarms import AlarmService
from opensage.services.async_inference import AsyncInferenceService
from opensage.services.autoscaling import AutoscalingService
from opensage.services.base import Deps
from opensage.services.cloudwatch import CloudWatchService
from opensage.services.endpoints import EndpointService
from opensage.services.iam import IamService
from opensage.services.inference_experiments import InferenceExperimentService
from opensage.services.logs import LogsService
from opensage.services.models import ModelService
from opensage.services.processing import ProcessingService
from opensage.services.runtime import RuntimeService
from opensage.services.sts import StsService
from opensage.services.tags import TagService
from opensage.services.training import TrainingService
from opensage.services.transform import TransformService
from opensage.serving.alarms import AlarmEvaluator
from opensage.serving.async_worker import AsyncInferenceWorker, runtime_invoker
from opensage.serving.autoscaler import Autoscaler, internal_scale
from opensage.serving.capture import DataCapture
from opensage.serving.deployments import DeploymentReconciler
from opensage.serving.metrics import EndpointMetrics
from opensage.serving.replicas import ReplicaManager
from opensage.serving.router import Router
from opensage.settings import Settings
from opensage.states import TERMINAL
from opensage.store.db import make_engine, migrate
from opensage.store.logs import LogRepository
from opensage.store.metrics import MetricRepository
from opensage.store.resources import ResourceRepository
from opensage.store.tags import TagRepository


@dataclass
class Platform:
    settings: Settings
    deps: Deps
    dispatcher: Dispatcher
    training: TrainingReconciler
    transform: TransformReconciler
    deployments: DeploymentReconciler
    router: Router
    autoscaler: Autoscaler
    endpoint_metrics: EndpointMetrics
    capture: DataCapture
    asgi: Starlette
    credentials: CredentialAuthority
    alarms: AlarmEvaluator
    async_inference: AsyncInferenceWorker
    processing: ProcessingReconciler | None = None
    capabilities: CapabilityContext | None = None  # opensage/capabilities: tuning, pipelines, registry, ...

    def _capability_workers(self) -> list:
        return list(self.capabilities.background) if self.capabilities is not None else []

    def start_background(self) -> None:
        self.training.start()
        if self.processing is not None:
            self.processing.start()
        self.transform.start()
        self.deployments.start()
        self.endpoint_metrics.start()
        self.capture.start()
        self.autoscaler.start()
        self.alarms.start()
        self.async_inference.start()
        for worker in self._capability_workers():
            worker.start()

    def stop_background(self, stop_jobs: bool = True) -> None:
        for worker in reversed(self._capability_workers()):  # before the jobs they drive stop
            worker.shutdown(stop_jobs=stop_jobs)
        self.autoscaler.shutdown()
        self.alarms.shutdown()
        self.async_inference.shutdown()
        self.training.shutdown(stop_jobs=stop_jobs)
        if self.processing is not None:
            self.processing.shutdown(stop_jobs=stop_jobs)
        self.transform.shutdown(stop_jobs=stop_jobs)
        self.deployments.shutdown()
        self.endpoint_metrics.shutdown()
        self.capture.shutdown()
        close_executor = getattr(self.training.executor, "close", None)  # LocalExecutor's idle spare agent
        if close_executor is not None:
            close_executor()


def object_store_spec(settings: Settings) -> ObjectStoreSpec:
    return ObjectStoreSpec(endpoint_url=settings.s3_endpoint, access_key=settings.credentials.access_key,
                           secret_key=settings.credentials.secret_key, region=settings.region)


def _make_database_private(settings: Settings) -> None:
    """The SQLite file (and its WAL / shared-memory files) owner-only: it holds every request and state."""
    if settings.db_url is not None:  # a database the operator configured: theirs to protect
        return
    base = settings.home / "opensage.db"
    for path in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
        try:
            os.chmod(path, 0o600)
        except FileNotFoundError:
            continue


def create_app(settings: Settings, executor: Executor | None = None, clock: Clock | None = None,
               run_background: bool = True, credentials: CredentialAuthority | None = None,
               health: Callable[[], dict[str, str]] | None = None) -> Platform:
    """``credentials``: the authority the S3 proxy already verifies with (``opensage up`` builds it before
    the object store starts); a new one over ``settings.credentials`` if None. ``health``: the states of
    components started outside the app (the supervised object store), for GET /_opensage/health."""
    engine = make_engine(settings.database_url)
    migrate(engine)
    _make_database_private(settings)
    settings.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    deps = Deps(settings=settings, clock=clock or SystemClock(),
                arns=ArnBuilder(settings.region, settings.account), resources=ResourceRepository(engine),
                tags=TagRepository(engine), logs=LogRepository(engine), metrics=MetricRepository(engine))
    authority = credentials or CredentialAuthority(settings.credentials)
    # A job's / endpoint's temporary credentials work while its row exists and is not terminal.
    authority.is_active = lambda owner: resource_is_active(deps.resources.get, TERMINAL, owner)
    if executor is None:
        from opensage.executors.local import LocalExecutor

        executor = LocalExecutor()
    # Jobs and endpoints get temporary credentials of their own from the authority, never the key pair.
    training = TrainingReconciler(deps, executor, object_store_spec(settings), authority)
    router = Router()
    deployments = DeploymentReconciler(deps, ReplicaManager(), router, object_store_spec(settings),
                                       credentials=authority)
    router.on_demand = deployments.wake  # a request waits for a serverless cold start
    transform = TransformReconciler(deps, executor, object_store_spec(settings), authority)
    processing = ProcessingReconciler(deps, executor, object_store_spec(settings), authority)
    wakers = {"training-job": training.wake, "endpoint": deployments.wake, "transform-job": transform.wake,
              "processing-job": processing.wake}
    deps.wake = lambda kind: wakers.get(kind, lambda: None)()

    dispatcher = Dispatcher()
    training_service = TrainingService(deps)
    dispatcher.register("sagemaker", training_service)
    processing_service = ProcessingService(deps)
    dispatcher.register("sagemaker", processing_service)
    dispatcher.register("sagemaker", TagService(deps))
    models = ModelService(deps)
    dispatcher.register("sagemaker", models)
    transform_service = TransformService(deps, models)
    dispatcher.register("sagemaker", transform_service)
    endpoints = EndpointService(deps, models)
    dispatcher.register("sagemaker", endpoints)
    dispatcher.register("sagemaker", InferenceExperimentService(deps, models, endpoints))
    dispatcher.register("application-autoscaling", AutoscalingService(deps))
    endpoint_metrics = EndpointMetrics(deps)
    autoscaler = Autoscaler(deps, internal_scale(endpoints), before_read=endpoint_metrics.flush)
    # Captured records wait on disk while the object store is down, and survive a restart.
    capture = DataCapture(lambda: open_store(object_store_spec(settings)), spool_dir=settings.home / "capture-spool")
    runtime = RuntimeService(deps, router, endpoint_metrics, capture)
    dispatcher.register("sagemaker-runtime", runtime)
    async_inference = AsyncInferenceWorker(deps, runtime_invoker(runtime),
                                           lambda: open_store(object_store_spec(settings)), router)
    dispatcher.register("sagemaker-runtime", AsyncInferenceService(deps, async_inference))
    dispatcher.register("cloudwatch", CloudWatchService(deps, before_read=endpoint_metrics.flush))
    alarms = AlarmEvaluator(deps, before_read=endpoint_metrics.flush)
    deployments.alarms = alarms  # UpdateEndpoint's AutoRollbackConfiguration
    dispatcher.register("cloudwatch", AlarmService(deps, on_change=alarms.schedule))
    dispatcher.register("logs", LogsService(deps))
    dispatcher.register("sts", StsService(deps))
    dispatcher.register("iam", IamService(deps))
    capabilities = CapabilityContext(
        deps, dispatcher, executor, object_store_spec(settings), authority,
        services={"training": training_service, "processing": processing_service, "models": models,
                  "transform": transform_service, "endpoints": endpoints},
        wakers=wakers)
    install_all(capabilities)

    platform: Platform

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if run_background:
            platform.start_background()
        try:
            yield
        finally:
            await router.close()
            if run_background:
                platform.stop_background()

    asgi = Starlette(routes=build_routes(dispatcher, authority, health=health), lifespan=lifespan)
    platform = Platform(settings, deps, dispatcher, training=training, transform=transform,
                        deployments=deployments, router=router, autoscaler=autoscaler,
                        endpoint_metrics=endpoint_metrics, capture=capture, asgi=asgi, credentials=authority,
                        alarms=alarms,
                        async_inference=async_inference, processing=processing, capabilities=capabilities)
    return platform
