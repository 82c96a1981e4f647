"""botocore's service models are our schema. Patches for gaps in the spec live in spec_patches.json only."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from botocore.loaders import create_loader
from botocore.model import OperationModel, ServiceModel

PATCH_FILE = Path(__file__).with_name("spec_patches.json")


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


@cache
def service_model(name: str) -> ServiceModel:
    raw = create_loader().load_service_model(name, "service-2")
    patches = json.loads(PATCH_FILE.read_text()).get(name, {}) if PATCH_FILE.exists() else {}
    if patches:
        raw = copy.deepcopy(raw)
        _merge(raw, patches)
    return ServiceModel(raw, service_name=name)


def operation_model(service: str, operation: str) -> OperationModel | None:
    model = service_model(service)
    if operation not in model.operation_names:
        return None
    return model.operation_model(operation)
