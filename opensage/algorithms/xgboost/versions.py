"""Which sagemaker-xgboost container version a built-in XGBoost process imitates.

The environment layer sets ``OPENSAGE_IMAGE_VERSION`` to the image tag's version (``0.90-1`` ... ``3.0-5``) for
training (``python -m opensage.algorithms.xgboost.train``) and for the model server's built-in handler. Unset or
empty means the platform's own, newest behaviour (what this package did before versions existed).

What differs per version (../shared/reference/xgboost-container-versions.md X2-X5, read from
aws/sagemaker-xgboost-container's branches): the declared hyperparameters, how the model file is written and
read, the real-time CSV body, whether ``/ping`` loads the model, the eval-log number format and the metric
definitions the service fills in DescribeTrainingJob.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "OPENSAGE_IMAGE_VERSION"
KNOWN_VERSIONS = ("0.90-1", "0.90-2", "1.0-1", "1.2-1", "1.2-2", "1.3-1", "1.5-1", "1.7-1", "3.0-5")
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)-(\d+)")
_NEWEST = (10**6, 0, 0)


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.0-1-cpu-py3"`` -> ``(1, 0, 1)``; ValueError if the text does not start with ``<a>.<b>-<c>``."""
    match = _VERSION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an XGBoost container version such as '1.7-1'")
    major, minor, build = (int(g) for g in match.groups())
    return major, minor, build


def image_version(environ: Mapping[str, str] | None = None) -> str | None:
    """The container version this process imitates (``OPENSAGE_IMAGE_VERSION``), normalised to
    ``<a>.<b>-<c>``; None when unset/empty or not a version (the legacy ``xgboost:1`` tag is ``0.90-1``-like
    only in name, so it also means the newest behaviour)."""
    raw = (environ if environ is not None else os.environ).get(ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        major, minor, build = parse_version(raw)
    except ValueError:
        return None
    return f"{major}.{minor}-{build}"


def version_from_image(image_uri: str) -> str | None:
    """The version in an image URI's tag (``...sagemaker-xgboost:1.0-1-cpu-py3`` -> ``1.0-1``), else None."""
    name = image_uri.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    try:
        major, minor, build = parse_version(last.split(":", 1)[1])
    except ValueError:
        return None
    return f"{major}.{minor}-{build}"


@dataclass(frozen=True)
class ContainerVersion:
    """One container version's behaviour; ``tag`` None is the platform's newest behaviour."""

    tag: str | None = None

    @property
    def key(self) -> tuple[int, int, int]:
        return _NEWEST if self.tag is None else parse_version(self.tag)

    def before(self, tag: str) -> bool:
        """True when this is an explicit version older than ``tag`` (never for the unset version)."""
        return self.tag is not None and self.key < parse_version(tag)

    def at_least(self, tag: str) -> bool:
        return self.key >= parse_version(tag)

    @property
    def legacy_realtime_output(self) -> bool:
        """0.90-1 ... 1.2-1: Accept ignored; CSV values joined by ``,`` with no trailing newline."""
        return self.before("1.2-2")

    @property
    def lazy_model_load(self) -> bool:
        """0.90-1 ... 1.2-1: ``/ping`` answers 200 without the model, loaded on the first invocation (a broken
        model is a 500 per invocation); from 1.2-2 ``/ping`` loads it (a broken model fails the health check)."""
        return self.before("1.2-2")

    @property
    def model_writer(self) -> str:
        """How training writes ``xgboost-model``: ``pickle`` (0.90-x, 1.0-1), ``pickle4`` (1.2-x),
        ``save_model`` (1.3-1+, no extension: the installed xgboost's default format), ``platform`` (unset)."""
        if self.tag is None:
            return "platform"
        if self.before("1.2-1"):
            return "pickle"
        if self.before("1.3-1"):
            return "pickle4"
        return "save_model"

    @property
    def skips_dotfiles(self) -> bool:
        """1.2-1 and 1.3-1+ skip dotfiles in /opt/ml/model; 0.90-x, 1.0-1 and 1.2-2 do not."""
        return self.tag is None or self.tag == "1.2-1" or self.at_least("1.3-1")

    @property
    def eval_value_format(self) -> str:
        """0.90-x print metric values with ``%g`` (``train-auc:1``); later versions with 5 decimals."""
        return "g" if self.before("1.0-1") else ".5f"

    @property
    def has_aliases(self) -> bool:
        """``learning_rate``/``min_split_loss``/``reg_lambda``/``reg_alpha`` exist from 0.90-2."""
        return not self.before("0.90-2")


def current(environ: Mapping[str, str] | None = None) -> ContainerVersion:
    """The version of this process (from ``OPENSAGE_IMAGE_VERSION``)."""
    return ContainerVersion(image_version(environ))


# ------------------------------------------------------------------------------------------ hyperparameters
# X2: the names each container declares (its hyperparameter_validation.py); any other key fails with
# "Extraneous hyperparameter found: <name>".
_DECLARED_0_90_1 = frozenset((
    "_tuning_objective_metric alpha base_score booster colsample_bylevel colsample_bynode colsample_bytree "
    "csv_weights dsplit early_stopping_rounds eta eval_metric gamma grow_policy lambda lambda_bias max_bin "
    "max_delta_step max_depth max_leaves min_child_weight normalize_type nthread num_class num_round objective "
    "one_drop predictor process_type rate_drop refresh_leaf sample_type scale_pos_weight seed silent sketch_eps "
    "skip_drop subsample tree_method tweedie_variance_power updater verbosity").split())
# (version, added, removed), oldest first.
_HP_CHANGES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("0.90-2", ("num_parallel_tree",), ()),
    ("1.0-1", ("interaction_constraints", "monotone_constraints", "save_model_on_termination"), ()),
    ("1.2-1", ("_nfold", "aft_loss_distribution", "aft_loss_distribution_scale", "deterministic_histogram",
               "single_precision_histogram"), ("silent",)),
    ("1.2-2", ("_kfold", "_num_cv_round"), ("_nfold",)),
    ("1.3-1", ("prob_buffer_row", "sampling_method"), ()),
    ("1.5-1", ("use_dask_gpu_training",), ()),
    ("1.7-1", (), ("single_precision_histogram",)),
)
_OBJECTIVES_0_90_1 = ("binary:logistic", "binary:logitraw", "binary:hinge", "count:poisson", "multi:softmax",
                      "multi:softprob", "rank:pairwise", "rank:ndcg", "rank:map", "reg:linear", "reg:squarederror",
                      "reg:logistic", "reg:gamma", "reg:tweedie", "survival:cox")
_OBJECTIVE_CHANGES = (("1.0-1", ("reg:squaredlogerror",)), ("1.2-1", ("reg:pseudohubererror", "survival:aft")),
                      ("1.7-1", ("reg:absoluteerror",)))


def declared_hyperparameters(version: ContainerVersion) -> frozenset[str] | None:
    """The hyperparameter names ``version``'s container declares; None for the platform (unset) version."""
    if version.tag is None:
        return None
    names = set(_DECLARED_0_90_1)
    for tag, added, removed in _HP_CHANGES:
        if version.at_least(tag):
            names.update(added)
            names.difference_update(removed)
    return frozenset(names)


def objectives(version: ContainerVersion) -> tuple[str, ...] | None:
    """The objectives ``version``'s container accepts; None for the platform (unset) version."""
    if version.tag is None:
        return None
    found = list(_OBJECTIVES_0_90_1)
    for tag, added in _OBJECTIVE_CHANGES:
        if version.at_least(tag):
            found.extend(added)
    return tuple(found)


# ------------------------------------------------------------------------------------------ metrics
# X5: metrics the container knows (eval_metric / _tuning_objective_metric), (added to maximize, to minimize).
_METRICS_0_90 = (("accuracy", "auc", "aucpr", "cox-nloglik", "f1", "gamma-nloglik", "map", "ndcg",
                  "poisson-nloglik", "tweedie-nloglik"),
                 ("error", "gamma-deviance", "logloss", "mae", "merror", "mlogloss", "mse", "rmse"))
_METRIC_CHANGES = (
    ("1.0-1", (), ("rmsle",)),
    ("1.2-1", ("r2",), ("aft-nloglik", "interval-regression-accuracy", "mphe")),
    ("1.2-2", ("f1_binary", "f1_macro"), ()),
    ("1.3-1", ("balanced_accuracy", "precision", "precision_macro", "precision_micro", "recall", "recall_macro",
               "recall_micro"), ("mape",)),
)


def container_metrics(version: ContainerVersion) -> frozenset[str] | None:
    """Metric names ``version``'s container accepts in eval_metric; None for the platform (unset) version."""
    if version.tag is None:
        return None
    names = set(_METRICS_0_90[0]) | set(_METRICS_0_90[1])
    for tag, maximize, minimize in _METRIC_CHANGES:
        if version.at_least(tag):
            names.update(maximize)
            names.update(minimize)
    return frozenset(names)


# What SageMaker itself puts in DescribeTrainingJob's AlgorithmSpecification.MetricDefinitions for the
# sagemaker-xgboost images (service-side, not the container's list), in the order the service returns them.
# Captured from real responses: a 0.90-1 job (34 names, aws/amazon-sagemaker-examples hyperparameter tuning
# walkthrough, 2020) and a 1.5-1 job (27 names, `aws sagemaker describe-training-job`, 2025). Versions between
# and after are not captured: 0.90-x and 1.0-1 use the first list, later versions the second (unconfirmed).
SERVICE_METRIC_REGEX = ".*\\[[0-9]+\\].*#011{channel}-{metric}:([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"
_SERVICE_METRICS_0_90 = (
    "train:mae validation:aucpr train:merror train:gamma-nloglik validation:mae validation:logloss train:mlogloss "
    "validation:f1 train:accuracy train:mse validation:poisson-nloglik train:tweedie-nloglik train:error "
    "train:ndcg validation:map validation:auc validation:gamma-deviance train:auc validation:error "
    "validation:merror train:poisson-nloglik train:rmse train:logloss validation:accuracy train:aucpr "
    "validation:tweedie-nloglik validation:rmse train:gamma-deviance validation:mse validation:ndcg train:f1 "
    "validation:mlogloss train:map validation:gamma-nloglik").split()
_SERVICE_METRICS_1_5 = (
    "train:mae train:gamma-nloglik validation:mae validation:logloss train:cox-nloglik validation:f1 "
    "validation:cox-nloglik train:accuracy train:mse validation:poisson-nloglik train:error train:ndcg "
    "validation:map validation:gamma-deviance validation:error train:poisson-nloglik train:rmse train:logloss "
    "validation:accuracy validation:rmse train:gamma-deviance validation:mse validation:ndcg train:f1 "
    "validation:r2 train:map validation:gamma-nloglik").split()


def service_metric_definitions(version: str | None) -> list[dict[str, str]]:
    """DescribeTrainingJob's ``AlgorithmSpecification.MetricDefinitions`` for a sagemaker-xgboost image of
    ``version`` (``"1.7-1"``, ``"0.90-1-cpu-py3"``; None or unparsable = the newest list), as SageMaker fills
    them for built-in XGBoost."""
    try:
        old = version is not None and parse_version(version) < (1, 2, 0)
    except ValueError:
        old = False
    names = _SERVICE_METRICS_0_90 if old else _SERVICE_METRICS_1_5
    definitions = []
    for name in names:
        channel, metric = name.split(":", 1)
        definitions.append({"Name": name, "Regex": SERVICE_METRIC_REGEX.format(channel=channel, metric=metric)})
    return definitions


# ------------------------------------------------------------------------------------------ model file formats
# X3: what each container writes, and what today's xgboost (>= 3.1) can no longer read: pickles of xgboost
# 0.90 (its raw model inside) and 1.0 ... ~1.5 (a "CONFIG-offset:" snapshot), and the legacy binary format
# (``binf`` + model, written by save_model without an extension in 1.3-1 ... 1.7-1; headerless in 0.90).
PICKLE_090, PICKLE_SNAPSHOT, PICKLE_MODERN = "pickle-0.90", "pickle-snapshot", "pickle"
BINARY, JSONLIKE = "binary", "json"  # JSONLIKE: JSON or UBJSON (both start with "{")
LEGACY_FORMATS = frozenset({PICKLE_SNAPSHOT, BINARY})  # readable by the image's own xgboost (1.0 ... 3.0)
_LEARNER_PARAM_BYTES = 136  # xgboost's LearnerModelParam before the objective's name in the binary format
_OBJECTIVE_NAME = re.compile(rb"^[a-z_]+:[a-z_]+$")


class _BoosterState:
    """Stands in for ``xgboost.core.Booster`` while a pickle is only inspected."""

    state: dict[str, Any]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class _InspectingUnpickler(pickle.Unpickler):
    """Builds nothing but a Booster's state (bytes, lists, strings): safe to run on any file."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "xgboost" and name == "Booster":
            return _BoosterState
        if (module, name) in (("builtins", "bytearray"), ("builtins", "bytes")):
            return bytearray
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a pickled Booster")


def pickled_handle(path: Path) -> bytes | None:
    """The serialised model inside a pickled Booster, None when ``path`` is not one (never runs the pickle)."""
    with open(path, "rb") as stream:
        if stream.read(1) != b"\x80":  # every pickle protocol >= 2 starts with PROTO
            return None
        stream.seek(0)
        try:
            obj = _InspectingUnpickler(stream).load()
        except Exception:  # noqa: BLE001 - anything else is "not a pickled Booster"
            return None
    if not isinstance(obj, _BoosterState) or not isinstance(getattr(obj, "state", None), dict):
        return None
    return bytes(obj.state.get("handle") or b"")


def _is_binary_model(head: bytes) -> bool:
    """xgboost's legacy binary model: [``binf``] LearnerModelParam, then the objective's name (u64 length)."""
    body = head[4:] if head.startswith(b"binf") else head
    if len(body) < _LEARNER_PARAM_BYTES + 8:
        return False
    (length,) = struct.unpack_from("<Q", body, _LEARNER_PARAM_BYTES)
    name = body[_LEARNER_PARAM_BYTES + 8:_LEARNER_PARAM_BYTES + 8 + length]
    return 0 < length <= 64 and len(name) == length and bool(_OBJECTIVE_NAME.match(name))


def model_file_format(path: Path) -> str | None:
    """What kind of XGBoost model file ``path`` is (the constants above), None when it is none of them."""
    with open(path, "rb") as stream:
        head = stream.read(_LEARNER_PARAM_BYTES + 80)
    if head[:1] == b"\x80":
        handle = pickled_handle(path)
        if handle is None:
            return None
        if handle.startswith(b"CONFIG-offset:"):
            return PICKLE_SNAPSHOT
        return PICKLE_MODERN if handle.startswith(b"{") else PICKLE_090
    if head[:1] == b"{":
        return JSONLIKE
    return BINARY if _is_binary_model(head) else None


def legacy_model_files(model_dir: Path) -> list[str]:
    """The files of ``model_dir`` (top level, not dotfiles) that only an older xgboost reads: a 1.x pickle or a
    binary model. The platform's xgboost (>= 3.1) reads neither; the image's own version does."""
    try:
        files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return []
    found = []
    for path in files:
        try:
            if model_file_format(path) in LEGACY_FORMATS:
                found.append(path.name)
        except OSError:
            continue
    return found
