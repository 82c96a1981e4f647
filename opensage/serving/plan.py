"""What one model-server replica of a model runs: kind, model directory, environment, images.

The one place that turns a Model resource's containers into a model-server launch, shared by endpoints
(serving/deployments.py) and batch transform (runner/transform_worker.py):

* one container -> its model server kind (``images.resolve_inference_image``) over the staged
  ``ModelDataUrl``;
* ``Mode: MultiModel`` -> the same kind over an empty cache directory, with ``OPENSAGE_MULTI_MODEL_URL`` =
  the S3 prefix: the model server then loads ``<prefix><TargetModel>`` per request (serving/multimodel.py);
* an inference pipeline (``Containers`` of 2-15) -> kind ``pipeline`` over a directory holding
  ``pipeline.json`` (every container's kind, staged model directory, environment and hostname, plus
  ``InferenceExecutionConfig.Mode``): the model server runs one child server per container
  (serving/pipeline.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PIPELINE_KIND = "pipeline"
PIPELINE_FILE = "pipeline.json"
MULTI_MODEL_CACHES = "multi-model"  # under a plan's work_root
MULTI_MODEL_ENV = "OPENSAGE_MULTI_MODEL_URL"  # the S3 prefix a multi-model server loads TargetModels from
MAX_LOADED_ENV = "OPENSAGE_MULTI_MODEL_MAX_LOADED"
OBJECT_STORE_ENV = "OPENSAGE_OBJECT_STORE_URL"  # how a model server reaches the object store (file://, http://)
SERVING_IMAGE_ENV = "OPENSAGE_SERVING_IMAGE"  # the container's Image: which environment the replica runs in
SERVING_IMAGE_KIND_ENV = "OPENSAGE_SERVING_IMAGE_KIND"  # builtin | inference


@dataclass
class ServerPlan:
    kind: str  # model_server --kind
    model_dir: Path  # the replica's /opt/ml/model
    env: dict[str, str]
    images: list[str] = field(default_factory=list)  # every container's Image, in order (DeployedImages)


def model_containers(model_request: dict[str, Any]) -> list[dict[str, Any]]:
    return list(model_request.get("Containers") or [model_request["PrimaryContainer"]])


def container_hostnames(containers: list[dict[str, Any]]) -> list[str]:
    """Each container's ContainerHostname; unnamed ones get ``container-<position>`` (1-based).

    SageMaker assigns "a unique name based on the position" when none is given; the exact form is
    unconfirmed.
    """
    return [c.get("ContainerHostname") or f"container-{i}" for i, c in enumerate(containers, start=1)]


def execution_mode(model_request: dict[str, Any]) -> str:
    """``Serial`` (the default: an inference pipeline) or ``Direct`` (TargetContainerHostname picks one)."""
    return (model_request.get("InferenceExecutionConfig") or {}).get("Mode") or "Serial"


def multi_model_cache_dir(work_root: Path, prefix: str) -> Path:
    """Where the multi-model servers of ``prefix`` (the container's ModelDataUrl) stage their TargetModels:
    shared by every replica, worker and transform job serving that prefix."""
    return work_root / MULTI_MODEL_CACHES / hashlib.sha256(prefix.encode()).hexdigest()[:24]


def multi_model_url(prefix: str, target_model: str) -> str:
    """``<prefix><TargetModel>`` (a ``/`` is put between them when the prefix lacks one)."""
    return prefix + ("" if prefix.endswith("/") else "/") + target_model.lstrip("/")


def plan_model_server(model_request: dict[str, Any], stage: Callable[[str | None], Path],
                      work_root: Path, object_store_url: str | None = None) -> ServerPlan:
    """``stage(model_data_url)`` unpacks a model.tar.gz and returns its directory; ``work_root`` is where
    a plan may write files of its own (pipeline.json, multi-model caches). ``object_store_url`` is the
    platform's object-store endpoint (``file://...`` or ``http://...``): multi-model servers download
    through it (without it they use ``AWS_ENDPOINT_URL_S3`` from their environment)."""
    containers = model_containers(model_request)
    if len(containers) == 1:
        return _single(containers[0], stage, work_root, object_store_url)
    return _pipeline(model_request, containers, stage, work_root, object_store_url)


def _single(container: dict[str, Any], stage: Callable[[str | None], Path], work_root: Path,
            object_store_url: str | None) -> ServerPlan:
    from opensage import images

    env = dict(container.get("Environment") or {})
    resolved = images.resolve_inference_image(container["Image"], env)
    # The replica runs in the image's environment (serving/replicas.py reads and removes these), and a
    # built-in algorithm's server knows the image's version ("" = latest), as its training process does.
    env[SERVING_IMAGE_ENV] = container["Image"]
    env[SERVING_IMAGE_KIND_ENV] = "builtin" if resolved.algorithm else "inference"
    if resolved.algorithm:
        env.setdefault(images.IMAGE_VERSION_ENV, images.image_version(container["Image"]))
    if container.get("Mode") != "MultiModel":
        return ServerPlan(kind=resolved.kind, model_dir=stage(container.get("ModelDataUrl")), env=env,
                          images=[container["Image"]])
    prefix = container.get("ModelDataUrl")
    if not prefix:
        raise ValueError("A container with Mode MultiModel needs ModelDataUrl: the S3 prefix that holds the "
                         "model archives (e.g. s3://bucket/models/).")
    cache = multi_model_cache_dir(work_root, prefix)
    cache.mkdir(parents=True, exist_ok=True)
    env[MULTI_MODEL_ENV] = prefix
    if object_store_url:
        env[OBJECT_STORE_ENV] = object_store_url
    if ((container.get("MultiModelConfig") or {}).get("ModelCacheSetting")) == "Disabled":
        env.setdefault(MAX_LOADED_ENV, "0")  # load the model for every request, keep none
    return ServerPlan(kind=resolved.kind, model_dir=cache, env=env, images=[container["Image"]])


def _pipeline(model_request: dict[str, Any], containers: list[dict[str, Any]],
              stage: Callable[[str | None], Path], work_root: Path, object_store_url: str | None) -> ServerPlan:
    entries = []
    for container, hostname in zip(containers, container_hostnames(containers), strict=True):
        plan = _single(container, stage, work_root, object_store_url)
        entries.append({"hostname": hostname, "kind": plan.kind, "model_dir": str(plan.model_dir),
                        "env": plan.env, "image": container["Image"]})
    spec = {"mode": execution_mode(model_request), "containers": entries}
    text = json.dumps(spec, sort_keys=True, indent=1)
    directory = work_root / "pipelines" / hashlib.sha256(text.encode()).hexdigest()[:24]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PIPELINE_FILE
    if not path.is_file() or path.read_text() != text:
        tmp = directory / f".{PIPELINE_FILE}.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, path)
    return ServerPlan(kind=PIPELINE_KIND, model_dir=directory, env={}, images=[c["Image"] for c in containers])
