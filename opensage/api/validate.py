"""Validate a request against its input shape, worded like SageMaker's server.

botocore's own client-side validator checks only required members, types and minima; the server also
checks maxima, enums and patterns. We check all of them, generically, from the model: nothing here names a
specific operation or field.

Wording (copied from SageMaker responses):
``1 validation error detected: Value 'x' at 'trainingJobName' failed to satisfy constraint: Member must
satisfy regular expression pattern: ...`` and, for several, ``2 validation errors detected: ...; ...``.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from botocore.model import Shape

from opensage.errors import ValidationException


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:
        return None  # Java-only syntax (\p{...}); botocore clients never see it enforced either


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


# Smithy's integer / long are 32- / 64-bit: AWS's deserializer refuses anything wider, and SQLite cannot
# store it (OverflowError -> a 500), so a wider value is the caller's error, named like a range violation.
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
MAX_SHOWN = 256  # a hostile 1 MB value is not echoed back in full


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        return "'" + str(value)[:100] + "'"
    text = str(value)
    return f"'{text[:MAX_SHOWN]}...'" if len(text) > MAX_SHOWN else f"'{text}'"


def validate(params: dict[str, Any], shape: Shape | None, exc: type[Exception] = ValidationException) -> None:
    if shape is None:
        return
    problems: list[str] = []
    _check_structure(params, shape, "", problems)
    if problems:
        n = len(problems)
        head = f"{n} validation error{'s' if n > 1 else ''} detected: "
        raise exc(head + "; ".join(problems[:10]))


def _fail(problems: list[str], value: Any, path: str, constraint: str) -> None:
    problems.append(f"Value {_show(value)} at '{path}' failed to satisfy constraint: {constraint}")


def _check(value: Any, shape: Shape, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            _fail(problems, value, path, "Member must be a structure")
            return
        _check_structure(value, shape, path, problems)
    elif kind == "list":
        if not isinstance(value, list):
            _fail(problems, value, path, "Member must be a list")
            return
        _check_length(value, shape, path, problems)
        for i, item in enumerate(value, start=1):
            _check(item, shape.member, f"{path}.{i}.member", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            _fail(problems, value, path, "Member must be a map")
            return
        _check_length(value, shape, path, problems)
        for k, v in value.items():
            _check(k, shape.key, f"{path}.{k}.key", problems)
            _check(v, shape.value, f"{path}.{k}.value", problems)
    elif kind == "string":
        if not isinstance(value, str):
            _fail(problems, value, path, "Member must be a string")
            return
        if not _check_length(value, shape, path, problems):
            return  # a value already too long is not also run through the pattern (regex cost)
        enum = shape.enum
        if enum and value not in enum:
            _fail(problems, value, path, f"Member must satisfy enum value set: [{', '.join(enum)}]")
        pattern = shape.metadata.get("pattern")
        if pattern:
            rx = _compiled(pattern)
            if rx is not None and not rx.fullmatch(value):
                _fail(problems, value, path, f"Member must satisfy regular expression pattern: {pattern}")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(problems, value, path, f"Member must be an {kind}")
            return
        low, high = _INT_RANGE[kind]
        if not low <= value <= high:
            bound = f"less than or equal to {high}" if value > high else f"greater than or equal to {low}"
            _fail(problems, value, path, f"Member must have value {bound}")
            return
        _check_range(value, shape, path, problems)
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(problems, value, path, "Member must be a number")
            return
        if not _finite(value):  # NaN passes every comparison; inf / 10**400 break arithmetic later
            _fail(problems, value, path, "Member must be a finite number")
            return
        _check_range(value, shape, path, problems)
    elif kind == "boolean":
        if not isinstance(value, bool):
            _fail(problems, value, path, "Member must be a boolean")
    elif kind == "timestamp":
        if not isinstance(value, datetime):
            _fail(problems, value, path, "Member must be a timestamp")
    elif kind == "blob":
        if not isinstance(value, bytes | bytearray):
            _fail(problems, value, path, "Member must be binary data")


def _check_structure(value: dict[str, Any], shape: Shape, path: str, problems: list[str]) -> None:
    members = shape.members
    prefix = f"{path}." if path else ""
    for name in shape.required_members:
        if value.get(name) is None:
            _fail(problems, None, prefix + _lower_first(name), "Member must not be null")
    for name, item in value.items():
        member = members.get(name)
        if member is None:
            problems.append(f"Unknown parameter '{prefix}{name}': it is not a member of {shape.name}")
            continue
        if item is None:
            continue
        _check(item, member, prefix + _lower_first(name), problems)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int wider than a double
        return False


def _check_length(value: Any, shape: Shape, path: str, problems: list[str]) -> bool:
    """False (and a problem recorded) when the value is longer than the shape's maximum."""
    meta = shape.metadata
    if "min" in meta and len(value) < meta["min"]:
        _fail(problems, value, path, f"Member must have length greater than or equal to {meta['min']}")
    if "max" in meta and len(value) > meta["max"]:
        _fail(problems, value, path, f"Member must have length less than or equal to {meta['max']}")
        return False
    return True


def _check_range(value: float, shape: Shape, path: str, problems: list[str]) -> None:
    meta = shape.metadata
    if "min" in meta and value < meta["min"]:
        _fail(problems, value, path, f"Member must have value greater than or equal to {meta['min']}")
    if "max" in meta and value > meta["max"]:
        _fail(problems, value, path, f"Member must have value less than or equal to {meta['max']}")
