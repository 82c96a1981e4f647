"""Built-in algorithms by image repository name (whatever account, region or tag is in front/behind).

``BUILTIN_ALGORITHMS["sagemaker-xgboost"]`` says which module trains (run as ``python -m <module>``), which
module serves (``load(model_dir)`` / ``predict(model, payload, content_type, accept)``) and the
MetricDefinitions for the algorithm. The XGBoost regexes match the same lines as the container's own
(``.*\\[[0-9]+\\].*#011validation-rmse:(\\S+)``, which expect TABs rendered as ``#011``), but capture
``([^#\\s]+)`` instead of ``(\\S+)``: after ``#011`` rendering, ``\\S+`` would swallow every later
``#011<name>:<value>`` on the line, so only the last metric of a line would parse as a number.

Resolving an image URI to an entry here (and script mode for XGBoost images given ``sagemaker_program``)
is ``opensage.images``' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BuiltinAlgorithm:
    """One built-in algorithm and how the platform runs it."""

    name: str
    train_module: str
    serve_module: str
    metric_definitions: tuple[dict[str, str], ...]
    maximize_metrics: frozenset[str] = field(default_factory=frozenset)
    supports_script_mode: bool = False
    default_training_content_type: str | None = None

    def train_command(self, python: str = "python") -> list[str]:
        """argv that starts training (cwd anywhere; SAGEMAKER_BASE_DIR points at the job's /opt/ml)."""
        return [python, "-m", self.train_module]

    def metric_direction(self, metric_name: str) -> str:
        """``Maximize`` or ``Minimize`` for a metric name such as ``validation:auc``."""
        return "Maximize" if metric_name.split(":", 1)[-1] in self.maximize_metrics else "Minimize"


# Contracts doc §8.2, xgboost row (the DG's xgboost-tuning metrics).
_XGBOOST_METRICS = ("accuracy", "auc", "error", "f1", "logloss", "mae", "map", "merror", "mlogloss", "mse",
                    "ndcg", "rmse")
_XGBOOST_MAXIMIZE = frozenset({"accuracy", "auc", "aucpr", "balanced_accuracy", "f1", "f1_binary", "f1_macro",
                               "map", "ndcg", "precision", "r2", "recall", "precision_macro", "precision_micro",
                               "recall_macro", "recall_micro"})


def xgboost_metric_definitions(metrics: tuple[str, ...] = _XGBOOST_METRICS) -> tuple[dict[str, str], ...]:
    """SageMaker's XGBoost MetricDefinitions for ``train:`` and ``validation:`` of each metric."""
    return tuple({"Name": f"{channel}:{metric}", "Regex": f".*\\[[0-9]+\\].*#011{channel}-{metric}:([^#\\s]+)"}
                 for channel in ("train", "validation") for metric in metrics)


_XGBOOST = BuiltinAlgorithm(
    name="xgboost",
    train_module="opensage.algorithms.xgboost.train",
    serve_module="opensage.algorithms.xgboost.serve",
    metric_definitions=xgboost_metric_definitions(),
    maximize_metrics=_XGBOOST_MAXIMIZE,
    supports_script_mode=True,
    default_training_content_type="text/libsvm",
)

BUILTIN_ALGORITHMS: dict[str, BuiltinAlgorithm] = {
    "sagemaker-xgboost": _XGBOOST,
    "xgboost": _XGBOOST,  # legacy 1P image (xgboost:1 / xgboost:latest)
}


def describe_metric_definitions(image_uri: str) -> list[dict[str, str]] | None:
    """``AlgorithmSpecification.MetricDefinitions`` as SageMaker fills them in DescribeTrainingJob for a
    built-in algorithm image run in algorithm mode, or None when the image is not one with a known list.

    These are the service's own definitions (``train:`` and ``validation:`` metrics, a float-number capture
    such as ``.*\\[[0-9]+\\].*#011train-rmse:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*``), per image version
    (``xgboost.versions.service_metric_definitions``); the runner's own matching uses
    ``BuiltinAlgorithm.metric_definitions``, which never appear in the API.
    """
    from opensage.algorithms.xgboost import versions

    name = image_uri.strip().split("@", 1)[0].rsplit("/", 1)[-1]
    repository = name.split(":", 1)[0].lower()
    if BUILTIN_ALGORITHMS.get(repository) is not _XGBOOST:
        return None
    return versions.service_metric_definitions(versions.version_from_image(image_uri))
