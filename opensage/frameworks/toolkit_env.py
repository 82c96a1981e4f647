"""The sagemaker-training toolkit's view of a job: hyperparameters, ``SM_*`` variables and CLI arguments.

Formatting follows the toolkit (``environment.py`` / ``mapping.py`` of sagemaker-training 5.x):

* hyperparameter values are ``json.loads``-ed when possible (``"\\"adam\\""`` -> ``adam``, ``"3"`` -> 3);
  ``sagemaker_*`` keys and ``_tuning_objective_metric`` are split off the user's hyperparameters;
* environment values: strings as is, ``None`` as ``""``, anything else compact JSON with sorted keys;
* CLI arguments: keys sorted, ``--key value`` (``-k`` for one-character keys), the value ``str()`` of the
  decoded value (``True``/``False``; a dict becomes ``k1=v1,k2=v2``).

The ml root is read as ``os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")`` (``ml_root()``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_ML_ROOT = "/opt/ml"
SAGEMAKER_PREFIX = "sagemaker_"
PROGRAM_PARAM = "sagemaker_program"
SUBMIT_DIR_PARAM = "sagemaker_submit_directory"
REGION_PARAM = "sagemaker_region"
LOG_LEVEL_PARAM = "sagemaker_container_log_level"
JOB_NAME_PARAM = "sagemaker_job_name"
S3_OUTPUT_PARAM = "sagemaker_s3_output"
TUNING_METRIC_PARAM = "_tuning_objective_metric"
# Keys that are consumed by the toolkit itself (everything else prefixed sagemaker_ is a framework param).
TOOLKIT_PARAMS = (PROGRAM_PARAM, SUBMIT_DIR_PARAM, "sagemaker_enable_cloudwatch_metrics", REGION_PARAM,
                  LOG_LEVEL_PARAM, JOB_NAME_PARAM, "default_user_module_name", TUNING_METRIC_PARAM,
                  S3_OUTPUT_PARAM)
DISTRIBUTION_FLAGS = ("sagemaker_mpi_enabled", "sagemaker_parameter_server_enabled",
                      "sagemaker_distributed_dataparallel_enabled", "sagemaker_pytorch_ddp_enabled",
                      "sagemaker_pytorch_xla_multi_worker_enabled",
                      "sagemaker_multi_worker_mirrored_strategy_enabled",
                      "sagemaker_torch_distributed_enabled")
DEFAULT_GROUP = "homogeneousCluster"


def ml_root() -> Path:
    """The job's /opt/ml (``SAGEMAKER_BASE_DIR`` relocates it, as in the toolkit)."""
    return Path(os.environ.get(BASE_DIR_ENV, DEFAULT_ML_ROOT))


def decode_value(value: Any) -> Any:
    """``json.loads`` a hyperparameter value when it is JSON, else keep it (the toolkit's rule)."""
    if not isinstance(value, str | bytes | bytearray):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def decode_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {key: decode_value(value) for key, value in raw.items()}


def split_hyperparameters(decoded: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user hyperparameters, sagemaker_* / _tuning_objective_metric parameters)."""
    platform = {k: v for k, v in decoded.items() if k in TOOLKIT_PARAMS or k.startswith(SAGEMAKER_PREFIX)}
    user = {k: v for k, v in decoded.items() if k not in platform}
    return user, platform


def format_env_value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin1")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_env_vars(mapping: Mapping[str, Any]) -> dict[str, str]:
    """``{"model_dir": "/opt/ml/model"}`` -> ``{"SM_MODEL_DIR": "/opt/ml/model"}``."""
    return {f"SM_{str(key).upper()}": format_env_value(value) for key, value in mapping.items() if key}


def _arg_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin1")
    return str(value)


def to_cmd_args(mapping: Mapping[str, Any]) -> list[str]:
    """Hyperparameters -> ``["--epochs", "3", "-k", "v", ...]`` sorted by key."""
    args: list[str] = []
    for key in sorted(mapping):
        name = _arg_text(key)
        value = mapping[key]
        if isinstance(value, Mapping):
            text = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        else:
            text = _arg_text(value)
        args += [f"--{name}" if len(name) > 1 else (f"-{name}" if name else ""), text]
    return args


def read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text() or "null") or default
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the job's input configuration is corrupt.") from exc


def count_gpus() -> int:
    """CUDA_VISIBLE_DEVICES when set (the platform's GPU assignment), else ``nvidia-smi --list-gpus``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


@dataclass
class ToolkitEnvironment:
    """A read-only snapshot of the job as the sagemaker-training toolkit's ``Environment`` presents it."""

    base_dir: str
    hyperparameters: dict[str, Any]
    platform_params: dict[str, Any]
    resource_config: dict[str, Any]
    input_data_config: dict[str, Any]
    num_cpus: int
    num_gpus: int
    program_env: str | None = None  # SAGEMAKER_PROGRAM
    framework_module: str | None = None  # SAGEMAKER_TRAINING_MODULE
    job_name: str | None = None  # TRAINING_JOB_NAME
    default_region: str | None = None
    mp_parameters: str | None = None  # SM_HP_MP_PARAMETERS
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- paths
    def path(self, *parts: str) -> str:
        return os.path.join(self.base_dir, *parts)

    @property
    def code_dir(self) -> str:
        return self.path("code")

    @property
    def model_dir(self) -> str:
        return self.path("model")

    @property
    def channel_input_dirs(self) -> dict[str, str]:
        return {name: self.path("input", "data", name) for name in self.input_data_config}

    # ---- program
    @property
    def user_entry_point(self) -> str | None:
        program = self.program_env or self.platform_params.get(PROGRAM_PARAM)
        return None if program is None else str(program)

    @property
    def module_name(self) -> str:
        name = self.program_env or str(self.platform_params.get(PROGRAM_PARAM, None))
        return name[:-3] if name.endswith(".py") else name

    @property
    def module_dir(self) -> str:
        return str(self.platform_params.get(SUBMIT_DIR_PARAM, self.code_dir))

    @property
    def additional_framework_parameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.platform_params.items() if k not in TOOLKIT_PARAMS}

    @property
    def log_level(self) -> Any:
        return self.platform_params.get(LOG_LEVEL_PARAM, logging.INFO)

    @property
    def region(self) -> str:
        return str(self.platform_params.get(REGION_PARAM) or self.default_region or "")

    # ---- cluster
    @property
    def current_host(self) -> str:
        return str(self.resource_config["current_host"])

    @property
    def hosts(self) -> list[str]:
        return list(self.resource_config["hosts"])

    @property
    def current_instance_type(self) -> str:
        return str(self.resource_config.get("current_instance_type", "local"))

    @property
    def current_instance_group(self) -> str:
        return str(self.resource_config.get("current_group_name", DEFAULT_GROUP))

    @property
    def instance_groups_dict(self) -> dict[str, Any]:
        return {g["instance_group_name"]: g for g in self.resource_config.get("instance_groups", [])}

    @property
    def current_instance_group_hosts(self) -> list[str]:
        group = self.instance_groups_dict.get(self.current_instance_group)
        return list(group["hosts"]) if group else []

    @property
    def distribution_instance_groups(self) -> list[str]:
        params = self.additional_framework_parameters
        if "sagemaker_distribution_instance_groups" in params:
            return list(params["sagemaker_distribution_instance_groups"])
        enabled = any(params.get(flag, False) for flag in DISTRIBUTION_FLAGS)
        return [self.current_instance_group] if enabled else []

    @property
    def distribution_hosts(self) -> list[str]:
        groups = self.resource_config.get("instance_groups", [])
        if not groups:
            return list(self.hosts)
        wanted = set(self.distribution_instance_groups)
        return [h for g in groups if g["instance_group_name"] in wanted for h in g["hosts"]]

    @property
    def master_hostname(self) -> str:
        return (self.distribution_hosts or self.hosts)[0]

    def training_env(self) -> dict[str, Any]:
        """The toolkit's ``dict(Environment())`` (every public property), i.e. ``SM_TRAINING_ENV``."""
        groups = [g["instance_group_name"] for g in self.resource_config.get("instance_groups", [])]
        return {
            "additional_framework_parameters": self.additional_framework_parameters,
            "channel_input_dirs": self.channel_input_dirs,
            "current_host": self.current_host,
            "current_instance_group": self.current_instance_group,
            "current_instance_group_hosts": self.current_instance_group_hosts,
            "current_instance_type": self.current_instance_type,
            "distribution_hosts": self.distribution_hosts,
            "distribution_instance_groups": self.distribution_instance_groups,
            "framework_module": self.framework_module,
            "hosts": self.hosts,
            "hyperparameters": self.hyperparameters,
            "input_config_dir": self.path("input", "config"),
            "input_data_config": self.input_data_config,
            "input_dir": self.path("input"),
            "instance_groups": groups,
            "instance_groups_dict": self.instance_groups_dict,
            "is_hetero": len(groups) > 1,
            "is_master": self.current_host == self.master_hostname,
            "is_modelparallel_enabled": bool(self.mp_parameters and self.mp_parameters != "{}") or None,
            "is_smddpmprun_installed": False,
            "is_smddprun_installed": False,
            "job_name": self.job_name,
            "log_level": self.log_level,
            "master_hostname": self.master_hostname,
            "model_dir": self.model_dir,
            "module_dir": self.module_dir,
            "module_name": self.module_name,
            "network_interface_name": self.resource_config.get("network_interface_name", "eth0"),
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "num_neurons": 0,
            "output_data_dir": self.path("output", "data"),
            "output_dir": self.path("output"),
            "output_intermediate_dir": self.path("output", "intermediate"),
            "resource_config": self.resource_config,
            "topology": self.resource_config.get("topology", []),
            "user_entry_point": self.user_entry_point,
        }

    def to_cmd_args(self) -> list[str]:
        return to_cmd_args(self.hyperparameters)

    def to_env_vars(self) -> dict[str, str]:
        """``Environment.to_env_vars()``: every ``SM_*`` variable."""
        groups = [g["instance_group_name"] for g in self.resource_config.get("instance_groups", [])]
        env: dict[str, Any] = {
            "hosts": self.hosts,
            "network_interface_name": self.resource_config.get("network_interface_name", "eth0"),
            "hps": self.hyperparameters,
            "user_entry_point": self.user_entry_point,
            "framework_params": self.additional_framework_parameters,
            "resource_config": self.resource_config,
            "input_data_config": self.input_data_config,
            "output_data_dir": self.path("output", "data"),
            "channels": sorted(self.channel_input_dirs),
            "current_host": self.current_host,
            "current_instance_type": self.current_instance_type,
            "current_instance_group": self.current_instance_group,
            "current_instance_group_hosts": self.current_instance_group_hosts,
            "instance_groups": groups,
            "instance_groups_dict": self.instance_groups_dict,
            "distribution_instance_groups": self.distribution_instance_groups,
            "is_hetero": len(groups) > 1,
            "module_name": self.module_name,
            "log_level": self.log_level,
            "framework_module": self.framework_module,
            "input_dir": self.path("input"),
            "input_config_dir": self.path("input", "config"),
            "output_dir": self.path("output"),
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "num_neurons": 0,
            "model_dir": self.model_dir,
            "module_dir": self.module_dir,
            "training_env": self.training_env(),
            "user_args": self.to_cmd_args(),
            "output_intermediate_dir": self.path("output", "intermediate"),
        }
        if self.resource_config.get("topology"):
            env["topology"] = self.resource_config["topology"]
        env.update({f"channel_{name}": path for name, path in self.channel_input_dirs.items()})
        env.update({f"hp_{key}": value for key, value in self.hyperparameters.items()})
        return to_env_vars(env)

    def process_env_vars(self) -> dict[str, str]:
        """What the toolkit also exports for the user process besides ``SM_*``."""
        return {
            "SAGEMAKER_JOB_NAME": str(self.platform_params.get(JOB_NAME_PARAM, "")),
            "CURRENT_HOST": self.current_host,
            "SAGEMAKER_REGION": self.region,
        }


def load_environment(root: Path | None = None, environ: Mapping[str, str] | None = None) -> ToolkitEnvironment:
    """Read ``<root>/input/config/*.json`` (written by the agent) into a ``ToolkitEnvironment``."""
    root = root if root is not None else ml_root()
    environ = os.environ if environ is None else environ
    config = root / "input" / "config"
    raw_hps = read_json(config / "hyperparameters.json", {})
    if not isinstance(raw_hps, dict):
        raise ValueError(f"{config / 'hyperparameters.json'} must hold a JSON object of hyperparameters.")
    user, platform = split_hyperparameters(decode_hyperparameters(raw_hps))
    resource = read_json(config / "resourceconfig.json", {})
    resource.setdefault("current_host", "algo-1")
    resource.setdefault("hosts", [resource["current_host"]])
    return ToolkitEnvironment(
        base_dir=str(root),
        hyperparameters=user,
        platform_params=platform,
        resource_config=resource,
        input_data_config=read_json(config / "inputdataconfig.json", {}),
        num_cpus=os.cpu_count() or 1,
        num_gpus=count_gpus(),
        program_env=environ.get("SAGEMAKER_PROGRAM") or None,
        framework_module=environ.get("SAGEMAKER_TRAINING_MODULE"),
        job_name=environ.get("TRAINING_JOB_NAME"),
        default_region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
        mp_parameters=environ.get("SM_HP_MP_PARAMETERS"),
    )


def toolkit_environment(ml_root_path: Path, environ: Mapping[str, str] | None = None,
                        paths_root: str | None = None) -> dict[str, str]:
    """Every variable the toolkit exports to the user process: ``SM_*`` plus SAGEMAKER_JOB_NAME,
    CURRENT_HOST and SAGEMAKER_REGION, from the config files under ``ml_root_path``. Paths in the values
    are under ``paths_root`` (default: ``ml_root_path``; pass ``"/opt/ml"`` when the job sees its root
    bind-mounted there)."""
    env = load_environment(ml_root_path, environ)
    if paths_root is not None:
        env.base_dir = paths_root
    return {**env.to_env_vars(), **env.process_env_vars()}
