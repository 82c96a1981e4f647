"""Built-in algorithms by image repository name (whatever account, region or tag is in front/behind).

``BUILTIN_ALGORITHMS["sagemaker-xgboost"]`` says which module trains (run as ``python -m <module>``), which
module serves (``load(model_dir)`` / ``predict(model, payload, content_type, accept)``) and the
MetricDefinitions for the algorithm. The XGBoost regexes match the same lines as the container's own
(``.*\\[[0-9]+\\].*#011validation-rmse:(\\S+)``, which expect TABs rendered as ``#011``), but capture
``([^#\\s]+)`` instead of ``(\\S+)``: after ``#011`` rendering, ``\\S+`` would swallow every later
``#011<name>:<value>`` on the line, so only the last metric of a line would parse as a number.

Resolving an image URI to an entry here (and script mode for XGBoost images given ``sagemaker_program``)
is ``opensage.images``' job.

The first-party algorithms (``linear-learner``, ``kmeans``, ``pca``, ``knn``, ``factorization-machines``,
``randomcutforest``, ``lda``, ``ntm``, ``ipinsights``) print ``#quality_metric: host=algo-1, test <name>
<score|loss>=<value>`` lines as SageMaker's containers do; their MetricDefinitions are SageMaker's own regexes for those lines (as DescribeTrainingJob shows them for a 1P image), so the runner's matching and
the described definitions are the same list.
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
# Also what the container computes itself (aucpr, r2, precision, recall, balanced_accuracy): the common tuning
# objectives. 17 metrics x 2 channels = 34 definitions, under the API's 40.
_XGBOOST_METRICS = ("accuracy", "auc", "aucpr", "balanced_accuracy", "error", "f1", "logloss", "mae", "map",
                    "merror", "mlogloss", "mse", "ndcg", "precision", "r2", "recall", "rmse")
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

def _quality(name: str, channel: str, metric: str, kind: str = "score", epoch: bool = False) -> dict[str, str]:
    where = "epoch=\\S+, " if epoch else ""
    return {"Name": name, "Regex": f"#quality_metric: host=\\S+, {where}{channel} {metric} <{kind}>=(\\S+)"}


def _linear_learner_metrics() -> tuple[dict[str, str], ...]:
    """SageMaker's linear-learner MetricDefinitions (at most 40, the API's maximum)."""
    out = [{"Name": "train:progress", "Regex": "#progress_metric: host=\\S+, completed (\\S+) %"},
           _quality("train:objective_loss", "train", "\\S+_objective", "loss", epoch=True),
           _quality("validation:objective_loss", "validation", "\\S+_objective", "loss", epoch=True),
           _quality("train:objective_loss:final", "train", "\\S+_objective", "loss"),
           _quality("validation:objective_loss:final", "validation", "\\S+_objective", "loss"),
           _quality("test:objective_loss", "test", "\\S+_objective", "loss")]
    patterns = {"binary_classification_accuracy": "binary_classification_accuracy",
                "binary_f_beta": "binary_f_\\S+", "precision": "precision", "recall": "recall",
                "mse": "mse", "absolute_loss": "absolute_loss"}
    for metric, pattern in patterns.items():
        kind = "loss" if metric in ("mse", "absolute_loss") else "score"
        out += [_quality(f"{channel}:{metric}", channel, pattern, kind) for channel in ("train", "validation", "test")]
    multiclass = {"multiclass_accuracy": "multiclass_accuracy", "multiclass_top_k_accuracy":
                  "multiclass_top_k_accuracy_\\S+", "dcg": "dcg", "macro_precision": "macro_precision",
                  "macro_recall": "macro_recall", "macro_f_beta": "macro_f_\\S+", "roc_auc_score": "roc_auc_score"}
    for metric, pattern in multiclass.items():
        out += [_quality(f"{channel}:{metric}", channel, pattern) for channel in ("validation", "test")]
    out += [_quality(f"{channel}:rmse", channel, "rmse", "loss") for channel in ("validation", "test")]
    return tuple(out)


_LINEAR_LEARNER = BuiltinAlgorithm(
    name="linear-learner",
    train_module="opensage.algorithms.linear_learner.train",
    serve_module="opensage.algorithms.linear_learner.serve",
    metric_definitions=_linear_learner_metrics(),
    maximize_metrics=frozenset({"binary_classification_accuracy", "binary_f_beta", "precision", "recall",
                                "multiclass_accuracy", "multiclass_top_k_accuracy", "dcg", "macro_precision",
                                "macro_recall", "macro_f_beta", "roc_auc_score"}),
    default_training_content_type="application/x-recordio-protobuf",
)
_KMEANS = BuiltinAlgorithm(
    name="kmeans",
    train_module="opensage.algorithms.kmeans.train",
    serve_module="opensage.algorithms.kmeans.serve",
    metric_definitions=tuple(_quality(f"{channel}:{metric}", channel, metric, "loss")
                             for channel in ("test", "train") for metric in ("msd", "ssd")),
    default_training_content_type="application/x-recordio-protobuf",
)
_PCA = BuiltinAlgorithm(
    name="pca",
    train_module="opensage.algorithms.pca.train",
    serve_module="opensage.algorithms.pca.serve",
    metric_definitions=(),
    default_training_content_type="application/x-recordio-protobuf",
)
_KNN = BuiltinAlgorithm(
    name="knn",
    train_module="opensage.algorithms.knn.train",
    serve_module="opensage.algorithms.knn.serve",
    metric_definitions=(_quality("test:accuracy", "test", "accuracy"), _quality("test:mse", "test", "mse", "loss")),
    maximize_metrics=frozenset({"accuracy"}),
    default_training_content_type="application/x-recordio-protobuf",
)
_FM_METRICS = (("rmse", "loss"), ("binary_classification_accuracy", "score"),
               ("binary_classification_cross_entropy", "loss"), ("binary_f_beta", "score"))
_FACTORIZATION_MACHINES = BuiltinAlgorithm(
    name="factorization-machines",
    train_module="opensage.algorithms.factorization_machines.train",
    serve_module="opensage.algorithms.factorization_machines.serve",
    metric_definitions=tuple(_quality(f"{channel}:{metric}", channel, metric, kind)
                             for channel in ("test", "train") for metric, kind in _FM_METRICS),
    maximize_metrics=frozenset({"binary_classification_accuracy", "binary_f_beta"}),
    default_training_content_type="application/x-recordio-protobuf",
)
_RANDOM_CUT_FOREST = BuiltinAlgorithm(
    name="randomcutforest",
    train_module="opensage.algorithms.randomcutforest.train",
    serve_module="opensage.algorithms.randomcutforest.serve",
    metric_definitions=tuple(_quality(f"test:{metric}", "test", metric)
                             for metric in ("f1", "accuracy", "precision", "recall")),
    maximize_metrics=frozenset({"f1", "accuracy", "precision", "recall"}),
    default_training_content_type="application/x-recordio-protobuf",
)
_LDA = BuiltinAlgorithm(
    name="lda",
    train_module="opensage.algorithms.lda.train",
    serve_module="opensage.algorithms.lda.serve",
    metric_definitions=(_quality("test:pwll", "test", "pwll"), _quality("train:pwll", "train", "pwll")),
    maximize_metrics=frozenset({"pwll"}),
    default_training_content_type="application/x-recordio-protobuf",
)
_IP_INSIGHTS = BuiltinAlgorithm(
    name="ipinsights",
    train_module="opensage.algorithms.ipinsights.train",
    serve_module="opensage.algorithms.ipinsights.serve",
    metric_definitions=(_quality("validation:discriminator_auc", "validation", "discriminator_auc"),
                        _quality("train:binary_classification_cross_entropy", "train",
                                 "binary_classification_cross_entropy", "loss", epoch=True)),
    maximize_metrics=frozenset({"discriminator_auc"}),
    default_training_content_type="text/csv",
)
_NTM = BuiltinAlgorithm(
    name="ntm",
    train_module="opensage.algorithms.ntm.train",
    serve_module="opensage.algorithms.ntm.serve",
    metric_definitions=(_quality("validation:total_loss", "validation", "total_loss", "loss"),
                        _quality("test:total_loss", "test", "total_loss", "loss"),
                        _quality("train:total_loss", "train", "total_loss", "loss")),
    default_training_content_type="application/x-recordio-protobuf",
)

BUILTIN_ALGORITHMS: dict[str, BuiltinAlgorithm] = {
    "sagemaker-xgboost": _XGBOOST,
    "xgboost": _XGBOOST,  # legacy 1P image (xgboost:1 / xgboost:latest)
    "linear-learner": _LINEAR_LEARNER,
    "kmeans": _KMEANS,
    "pca": _PCA,
    "knn": _KNN,
    "factorization-machines": _FACTORIZATION_MACHINES,
    "randomcutforest": _RANDOM_CUT_FOREST,
    "lda": _LDA,
    "ipinsights": _IP_INSIGHTS,
    "ntm": _NTM,
}
FIRST_PARTY = (_LINEAR_LEARNER, _KMEANS, _PCA, _KNN, _FACTORIZATION_MACHINES, _RANDOM_CUT_FOREST, _LDA,
               _IP_INSIGHTS, _NTM)


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
    algorithm = BUILTIN_ALGORITHMS.get(repository)
    if algorithm in FIRST_PARTY:
        return [dict(d) for d in algorithm.metric_definitions] or None  # type: ignore[union-attr]
    if algorithm is not _XGBOOST:
        return None
    return versions.service_metric_definitions(versions.version_from_image(image_uri))
