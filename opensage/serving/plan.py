"""What one model-server replica of a model runs: kind, model directory, environment, images.

The one place that turns a Model resource's containers into a model-server launch, shared by endpoints
(serving/deployments.py) and batch transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ServerPlan:
    kind: str  # model_server --kind
    model_dir: Path  # the replica's /opt/ml/model
    env: dict[str, str]
    images: list[str] = field(default_factory=list)  # every container's Image, in order (DeployedImages)


def model_containers(model_request: dict[str, Any]) -> list[dict[str, Any]]:
    return list(model_request.get("Containers") or [model_request["PrimaryContainer"]])


def plan_model_server(model_request: dict[str, Any], stage: Callable[[str | None], Path],
                      work_root: Path) -> ServerPlan:
    """``stage(model_data_url)`` unpacks a model.tar.gz and returns its directory; ``work_root`` is where
    a plan may write files of its own."""
    from opensage import images

    container = model_containers(model_request)[0]
    env = dict(container.get("Environment") or {})
    resolved = images.resolve_inference_image(container["Image"], env)
    return ServerPlan(kind=resolved.kind, model_dir=stage(container.get("ModelDataUrl")), env=env,
                      images=[container["Image"]])
