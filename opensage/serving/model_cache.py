"""What of the staged-model cache (``<home>/models``, serving/staging.py) is in use, and removing the rest.

Every endpoint deploy, update and batch transform stages its model version into its own directory; without
this, each re-trained model stayed on disk for ever. In use is:

- every directory an endpoint's saved state names, whatever its status (its fleet, a pending, baking, rolling
  or retiring one: any string in the state that is a path under the cache), and the directories a named
  inference-pipeline plan (``<home>/plans/pipelines/<hash>/pipeline.json``) lists;
- the fleets the deployment reconciler still drains in memory (``extra``);
- every version of each S3 URL a running (InProgress / Stopping) transform job's model names: its worker
  stages in its own process, so which directory it got is not known here;
- anything handed out within ``idle_seconds`` (a fleet being started, not yet saved).

Multi-model caches (``<home>/plans/multi-model/<hash of the prefix>``, where a multi-model server stages its
TargetModels) are removed whole once no endpoint names one, no running transform serves its prefix, and none
of its models was handed out for ``idle_seconds``. Inside a cache still in use nothing is removed here: its
servers know which models they hold.

The deployment reconciler calls ``collect`` from its own thread (the one that stages endpoints' models), at
most every ``interval(idle_seconds)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from opensage.runner.transform_worker import TRANSFORM_FILE
from opensage.serving.plan import MULTI_MODEL_CACHES, PIPELINE_FILE, multi_model_cache_dir
from opensage.serving.staging import remove_idle_root, remove_unused
from opensage.states import TABLES
from opensage.store.resources import ResourceRepository

log = logging.getLogger(__name__)

ENDPOINT_KIND = "endpoint"
TRANSFORM_KIND = "transform-job"
_RUNNING_TRANSFORM = ("InProgress", "Stopping")


def interval(idle_seconds: float) -> float:
    """Seconds between passes: a tenth of the idle time, between 1 s and 10 minutes."""
    return min(600.0, max(1.0, idle_seconds / 10))


def collect(resources: ResourceRepository, home: Path, idle_seconds: float, extra: Iterable[Any] = ()) -> list[Path]:
    """Remove the staged model directories and multi-model caches nothing uses (module docstring); return them."""
    models_root, plans = home / "models", home / "plans"
    multi_model_root = plans / MULTI_MODEL_CACHES
    if not models_root.is_dir() and not multi_model_root.is_dir():
        return []
    in_use, urls = in_use_by(resources, home, extra)
    removed = remove_unused(models_root, in_use, urls, idle_seconds) if models_root.is_dir() else []
    if multi_model_root.is_dir():
        serving = in_use | {multi_model_cache_dir(plans, url) for url in urls}
        for cache in sorted(multi_model_root.iterdir()):
            if not cache.name.startswith(".") and cache not in serving and remove_idle_root(cache, idle_seconds):
                removed.append(cache)
    if removed:
        log.info("removed %d unused staged model director%s: %s", len(removed), "y" if len(removed) == 1 else "ies",
                 ", ".join(p.name for p in removed))
    return removed


def in_use_by(resources: ResourceRepository, home: Path, extra: Iterable[Any] = ()) -> tuple[set[Path], set[str]]:
    """(staged directories and multi-model caches named by endpoints and ``extra``, S3 URLs of running
    transform jobs' models)."""
    models_root, pipelines_root = home / "models", home / "plans" / "pipelines"
    multi_model_root = home / "plans" / MULTI_MODEL_CACHES
    endpoints = resources.in_status(ENDPOINT_KIND, tuple(TABLES[ENDPOINT_KIND][1]))
    in_use: set[Path] = set()
    for text in _strings([*(ep.state for ep in endpoints), *extra]):
        path = Path(text)
        if path.parent in (models_root, multi_model_root):
            in_use.add(path)
        elif path.parent == pipelines_root:
            in_use.update(_pipeline_model_dirs(path / PIPELINE_FILE, (models_root, multi_model_root)))
    urls: set[str] = set()
    for job in resources.in_status(TRANSFORM_KIND, _RUNNING_TRANSFORM):
        sources: list[Any] = []
        model = resources.get("model", str(job.request.get("ModelName") or ""))
        if model is not None:
            sources.append(model.request)
        for jobdir in job.state.get("_jobdirs") or []:  # the model as the job was started with it
            try:
                sources.append(json.loads((Path(jobdir) / TRANSFORM_FILE).read_text()).get("model"))
            except (OSError, ValueError, AttributeError):
                continue
        urls.update(text for text in _strings(sources) if text.startswith(("s3://", "https://")))
    return in_use, urls


def _pipeline_model_dirs(plan: Path, roots: tuple[Path, ...]) -> Iterator[Path]:
    try:
        spec = json.loads(plan.read_text())
    except (OSError, ValueError):
        return
    for text in _strings(spec):
        if Path(text).parent in roots:
            yield Path(text)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
