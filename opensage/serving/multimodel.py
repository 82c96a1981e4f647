"""Multi-model endpoints: one model server hosts every model archive under an S3 prefix.

A container with ``Mode: MultiModel`` is served with ``OPENSAGE_MULTI_MODEL_URL`` = its ``ModelDataUrl``
(serving/plan.py). Each invocation names a model with ``X-Amzn-SageMaker-Target-Model`` (a key relative to
the prefix); the first request for it downloads ``<prefix><TargetModel>``, unpacks it (``serving/staging``,
cached on disk per URL, shared by the replicas of the host), builds the container kind's usual handler over
that directory (built-in algorithm or script mode) and loads it. Loaded models are kept in an LRU cache of
at most ``OPENSAGE_MULTI_MODEL_MAX_LOADED`` models (default 32); ``OPENSAGE_MULTI_MODEL_MAX_MEMORY_MB`` also
evicts the least recently used models while the process's resident memory is above it. 0 loaded models (as
``ModelCacheSetting: Disabled``) loads the model for each request from a directory of its own and deletes
it from disk after the invocation, as SageMaker does; cached models stay on disk until no endpoint serves
the prefix (serving/model_cache.py).

The server answers ``/ping`` at once (nothing is loaded up front), and loads happen on the prediction
thread, so ``/ping`` never waits for one. A missing TargetModel, or one with no object behind it, answers
400 with ``X-OpenSage-Error-Type: ValidationError`` (the runtime reports a ValidationError, as SageMaker does).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from opensage.objects.base import ObjectNotFound, ObjectStore, split_s3_uri
from opensage.serving.handlers import Handler, ModelLoadError, Request, Response, validation_error
from opensage.serving.plan import MAX_LOADED_ENV, MULTI_MODEL_ENV, OBJECT_STORE_ENV, multi_model_url

MAX_MEMORY_ENV = "OPENSAGE_MULTI_MODEL_MAX_MEMORY_MB"
DEFAULT_MAX_LOADED = 32


def log(message: str) -> None:
    print(f"[multi-model {os.getpid()}] {message}", file=sys.stderr, flush=True)


def store_from_environment() -> ObjectStore:
    """The object store a model server can reach: ``OPENSAGE_OBJECT_STORE_URL`` (any ``open_store`` URL),
    else S3 at ``AWS_ENDPOINT_URL_S3`` / ``S3_ENDPOINT_URL`` (AWS if neither) with the AWS_* credentials."""
    from opensage.objects import open_store
    from opensage.runner.jobspec import ObjectStoreSpec

    env = os.environ
    url = env.get(OBJECT_STORE_ENV) or env.get("AWS_ENDPOINT_URL_S3") or env.get("S3_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or env.get("SAGEMAKER_REGION") or "us-east-1"
    return open_store(ObjectStoreSpec(endpoint_url=url, access_key=env.get("AWS_ACCESS_KEY_ID"),
                                      secret_key=env.get("AWS_SECRET_ACCESS_KEY"), region=region,
                                      session_token=env.get("AWS_SESSION_TOKEN")))


def resident_memory_bytes() -> int:
    """This process's resident set size (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return max(0, int(float(raw)))
    except ValueError:
        log(f"{name}={raw!r} is not a number; using {default}")
        return default


class MultiModelHandler:
    """Serve ``<prefix><TargetModel>`` per request with an LRU cache of loaded inner handlers."""

    multi_model = True  # the model server lets X-Amzn-SageMaker-Target-Model through

    def __init__(self, prefix: str, cache_root: Path, factory: Callable[[Path], Handler],
                 store_factory: Callable[[], ObjectStore] = store_from_environment,
                 max_loaded: int | None = None, max_memory_mb: int | None = None) -> None:
        self.prefix = prefix
        self.cache_root = cache_root
        self.factory = factory
        self.store_factory = store_factory
        self.max_loaded = _env_int(MAX_LOADED_ENV, DEFAULT_MAX_LOADED) if max_loaded is None else max_loaded
        self.max_memory = (_env_int(MAX_MEMORY_ENV, None) if max_memory_mb is None else max_memory_mb) or 0
        self.store: ObjectStore | None = None
        self.loaded: OrderedDict[str, Handler] = OrderedDict()
        self.loads = 0  # models loaded so far (evicted ones reloaded count again)
        self._uncached: dict[str, Path] = {}  # target -> its own directory, while loaded (max_loaded 0)
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, cache_root: Path, factory: Callable[[Path], Handler]) -> MultiModelHandler:
        return cls(os.environ[MULTI_MODEL_ENV], cache_root, factory)

    def load(self) -> None:
        try:
            split_s3_uri(self.prefix)
        except ValueError as exc:
            raise ModelLoadError(f"{MULTI_MODEL_ENV} (the ModelDataUrl of a MultiModel container) is not an "
                                 f"s3:// prefix: {exc}") from exc
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.store = self.store_factory()
        log(f"serving the models under {self.prefix} (at most {self.max_loaded} loaded"
            + (f", {self.max_memory} MB" if self.max_memory else "") + ")")

    def invoke(self, request: Request) -> Response:
        target = request.target_model
        if not target:
            return validation_error(
                f"This is a multi-model endpoint: set TargetModel to the model archive to use, relative to the "
                f"model's ModelDataUrl {self.prefix} (e.g. TargetModel='model.tar.gz').")
        problem = _check_target(target)
        if problem:
            return validation_error(problem)
        with self._lock:
            try:
                handler = self._handler(target)
            except ObjectNotFound:
                bucket, key = split_s3_uri(multi_model_url(self.prefix, target))
                return validation_error(
                    f"Failed to download model data(bucket: {bucket}, key: {key}). Please ensure that there is "
                    f"an object located at the URL and that the role passed to CreateModel has permissions to "
                    f"download the model.")
            except Exception as exc:  # noqa: BLE001 - a bad archive, an unreachable store: the model's error
                log(f"could not load {target}: {type(exc).__name__}: {exc}")
                return Response(500, f"Could not load model {target} ({multi_model_url(self.prefix, target)}): "
                                     f"{type(exc).__name__}: {exc}".encode(), "text/plain")
            try:
                return handler.invoke(request)
            finally:
                if self.max_loaded == 0:
                    self._evict(target)

    # -- the cache
    def _handler(self, target: str) -> Handler:
        handler = self.loaded.get(target)
        if handler is not None:
            self.loaded.move_to_end(target)
            return handler
        from opensage.serving.staging import remove_uncached, stage_model, unpack_uncached

        assert self.store is not None, "load() first"
        started = time.monotonic()
        url = multi_model_url(self.prefix, target)
        if self.max_loaded == 0:
            model_dir = unpack_uncached(self.store, self.cache_root, url)
            self._uncached[target] = model_dir
        else:
            model_dir = stage_model(self.store, self.cache_root, url)
        try:
            handler = self.factory(model_dir)
            handler.load()
        except BaseException:
            if self._uncached.get(target) == model_dir:
                remove_uncached(self._uncached.pop(target))
            raise
        self.loads += 1
        self.loaded[target] = handler
        log(f"loaded {target} in {time.monotonic() - started:.2f} s ({len(self.loaded)} model(s) loaded)")
        while len(self.loaded) > max(1, self.max_loaded):
            self._evict(next(iter(self.loaded)))
        self._fit_memory()
        return handler

    def _fit_memory(self) -> None:
        if not self.max_memory:
            return
        budget = self.max_memory * 1024 * 1024
        while len(self.loaded) > 1 and resident_memory_bytes() > budget:
            self._evict(next(iter(self.loaded)))

    def _evict(self, target: str) -> None:
        if self.loaded.pop(target, None) is not None:
            gc.collect()
            log(f"unloaded {target} ({len(self.loaded)} model(s) loaded)")
        if target in self._uncached:
            from opensage.serving.staging import remove_uncached

            remove_uncached(self._uncached.pop(target))


def _check_target(target: str) -> str | None:
    path = PurePosixPath(target)
    if ".." in path.parts:
        return f"TargetModel '{target}' must be a key under the model's ModelDataUrl prefix; '..' is not allowed."
    return None
