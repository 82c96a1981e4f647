"""Run with SDK v3's python (``.venv-sdk3``): write the ``sm_drivers`` channel exactly as ModelTrainer does.

Usage: ``python sdk3_drivers.py <out_dir> <source_dir> <entry_script> [<requirements>]``. No network: it
calls the same ModelTrainer methods ``_create_training_job_args`` calls to fill the channel (copy of
``container_drivers``, ``install_requirements.py``, ``sm_train.sh``, ``sourcecode.json``,
``distributed.json``) and prints the ContainerEntrypoint/ContainerArguments and HyperParameters it sends.
"""

import json
import os
import shutil
import sys
from types import SimpleNamespace

import sagemaker.core.utils.install_requirements as install_requirements
from sagemaker.core.training.configs import SourceCode
from sagemaker.train.constants import (
    DEFAULT_CONTAINER_ARGUMENTS,
    DEFAULT_CONTAINER_ENTRYPOINT,
    SM_DRIVERS_LOCAL_PATH,
)
from sagemaker.train.model_trainer import ModelTrainer
from sagemaker.train.utils import safe_serialize


def main() -> None:
    out, source_dir, entry_script = sys.argv[1:4]
    requirements = sys.argv[4] if len(sys.argv) > 4 else None
    hyperparameters = {"epochs": 3, "opt": "adam", "layers": [1, 2]}
    source_code = SourceCode(source_dir=source_dir, entry_script=entry_script, requirements=requirements)
    # The attributes _prepare_train_script reads (a real ModelTrainer would reach AWS when built).
    trainer = SimpleNamespace(hyperparameters=hyperparameters, _jumpstart_config=None)
    tmp = SimpleNamespace(name=out)
    shutil.copytree(SM_DRIVERS_LOCAL_PATH, out, dirs_exist_ok=True)
    shutil.copy2(install_requirements.__file__, os.path.join(out, "scripts", "install_requirements.py"))
    ModelTrainer._prepare_train_script(trainer, tmp_dir=tmp, source_code=source_code, distributed=None)
    ModelTrainer._write_source_code_json(trainer, tmp_dir=tmp, source_code=source_code)
    ModelTrainer._write_distributed_json(trainer, tmp_dir=tmp, distributed=None)
    print(json.dumps({"ContainerEntrypoint": DEFAULT_CONTAINER_ENTRYPOINT,
                      "ContainerArguments": DEFAULT_CONTAINER_ARGUMENTS,
                      "HyperParameters": {k: safe_serialize(v) for k, v in hyperparameters.items()}}))


if __name__ == "__main__":
    main()
