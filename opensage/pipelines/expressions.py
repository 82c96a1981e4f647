"""Pipeline expressions as the SDK writes them: ``{"Get": ...}``, ``Std:Join``, ``Std:JsonGet`` and conditions.

Property paths (``Steps.Train.ModelArtifacts.S3ModelArtifacts``, ``Outputs['train']``, ``Summaries[0]``) are
parsed once here; the same segments are checked against botocore's output shapes at Create time
(definition.py) and walked over Describe* answers at run time (engine.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_SEGMENT = re.compile(r"""\.?([A-Za-z0-9_\-:$]+)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]""")


class ExpressionError(Exception):
    """An expression that cannot be evaluated (the step using it fails with this message)."""


def parse_path(path: str) -> list[str | int]:
    """``a.b['k'][0]`` -> ``['a', 'b', 'k', 0]`` (a quoted key stays a str, an index becomes an int)."""
    out: list[str | int] = []
    pos = 0
    text = path[2:] if path.startswith("$.") else path
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"cannot parse the path '{path}' at character {pos + 1}")
        name, index, quoted, dquoted = m.groups()
        if index is not None:
            out.append(int(index))
        elif quoted is not None or dquoted is not None:
            out.append(_Key(quoted if quoted is not None else dquoted))
        else:
            out.append(name)
        pos = m.end()
    return out


class _Key(str):
    """A bracketed key (``['train']``): on a list it selects the item whose ``*Name`` member equals it."""


def is_key(segment: Any) -> bool:
    return isinstance(segment, _Key)


def walk(value: Any, segments: list[str | int], where: str) -> Any:
    """Follow ``segments`` through Describe* output / JSON; named lists are indexed by their items' names."""
    for seg in segments:
        if isinstance(seg, int):
            if not isinstance(value, list) or seg >= len(value):
                raise ExpressionError(f"{where}: index [{seg}] is out of range")
            value = value[seg]
        elif isinstance(value, dict):
            if seg not in value:
                raise ExpressionError(f"{where}: '{seg}' is not present")
            value = value[seg]
        elif isinstance(value, list) and is_key(seg):
            found = [item for item in value if isinstance(item, dict)
                     and any(k.endswith("Name") and v == seg for k, v in item.items())]
            if not found:
                raise ExpressionError(f"{where}: no item named '{seg}'")
            value = found[0]
        else:
            raise ExpressionError(f"{where}: cannot select '{seg}' from a {type(value).__name__}")
    return value


def to_text(value: Any) -> str:
    """How SageMaker prints a value into a string (Join, a string field): booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


@dataclass
class Scope:
    """What expressions read at run time; the engine supplies the callables."""

    parameters: dict[str, Any]
    execution: Callable[[str], Any]  # Execution.<var>, PipelineExperimentConfig.<x>
    step_property: Callable[[str, list], Any]  # (step name, segments) -> value
    property_file: Callable[[str, str], Any]  # (step name, property file name) -> parsed JSON document
    read_json: Callable[[str], Any]  # S3 URI -> parsed JSON document


def resolve(value: Any, scope: Scope) -> Any:
    """Every expression in ``value`` (arguments, a condition operand) replaced by its value."""
    if isinstance(value, dict):
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Get" and isinstance(arg, str):
                return get(arg, scope)
            if key == "Std:Join" and isinstance(arg, dict):
                on = to_text(resolve(arg.get("On", ""), scope))
                return on.join(to_text(resolve(v, scope)) for v in arg.get("Values") or [])
            if key == "Std:JsonGet" and isinstance(arg, dict):
                return json_get(arg, scope)
        return {k: resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    return value


def get(path: str, scope: Scope) -> Any:
    head, _, rest = path.partition(".")
    if head == "Parameters":
        if rest not in scope.parameters:
            raise ExpressionError(f"'{path}': no such parameter")
        return scope.parameters[rest]
    if head in ("Execution", "PipelineExperimentConfig"):
        return scope.execution(path)
    if head == "Steps":
        segments = parse_path(rest)
        if not segments or not isinstance(segments[0], str):
            raise ExpressionError(f"'{path}': expected Steps.<step name>.<property>")
        return scope.step_property(str(segments[0]), segments[1:])
    raise ExpressionError(f"'{path}' is not a reference SageMaker Pipelines knows "
                          "(Parameters.*, Execution.*, Steps.*, PipelineExperimentConfig.*)")


def json_get(arg: dict[str, Any], scope: Scope) -> Any:
    path = arg.get("Path")
    if not isinstance(path, str):
        raise ExpressionError("Std:JsonGet needs a Path string")
    if "PropertyFile" in arg:
        ref = arg["PropertyFile"]
        ref = ref.get("Get") if isinstance(ref, dict) else ref
        step, file_name = property_file_ref(ref)
        document = scope.property_file(step, file_name)
        where = f"JsonGet '{path}' in property file '{file_name}' of step '{step}'"
    elif "S3Uri" in arg:
        uri = to_text(resolve(arg["S3Uri"], scope))
        document = scope.read_json(uri)
        where = f"JsonGet '{path}' in {uri}"
    else:
        raise ExpressionError("Std:JsonGet needs PropertyFile or S3Uri")
    return walk(document, parse_path(path), where)


def property_file_ref(ref: Any) -> tuple[str, str]:
    """``Steps.<step>.PropertyFiles.<name>`` -> (step, name)."""
    parts = ref.split(".") if isinstance(ref, str) else []
    if len(parts) != 4 or parts[0] != "Steps" or parts[2] != "PropertyFiles":
        raise ExpressionError(f"'{ref}' is not a property file reference (Steps.<step>.PropertyFiles.<name>)")
    return parts[1], parts[3]


# -- conditions ----------------------------------------------------------------------------------------------
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanOrEqualTo": lambda a, b: a >= b,
    "LessThan": lambda a, b: a < b,
    "LessThanOrEqualTo": lambda a, b: a <= b,
}
CONDITION_TYPES = (*_COMPARE, "In", "Not", "Or")


def _number(value: Any) -> Any:
    """A numeric string compares as a number against a number (a JsonGet value vs a parameter string)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, bool) or isinstance(b, bool):
        norm = {"true": True, "false": False}
        return (norm.get(a.lower(), a) if isinstance(a, str) else a,
                norm.get(b.lower(), b) if isinstance(b, str) else b)
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        return _number(a), _number(b)
    return a, b


def evaluate(condition: dict[str, Any], scope: Scope) -> bool:
    kind = condition.get("Type")
    if kind in _COMPARE:
        left, right = _comparable(resolve(condition.get("LeftValue"), scope),
                                  resolve(condition.get("RightValue"), scope))
        try:
            return _COMPARE[kind](left, right)
        except TypeError:
            raise ExpressionError(f"{kind} cannot compare {to_text(left)!r} ({type(left).__name__}) with "
                                  f"{to_text(right)!r} ({type(right).__name__})") from None
    if kind == "In":
        query = resolve(condition.get("QueryValue"), scope)
        for candidate in condition.get("Values") or []:
            a, b = _comparable(query, resolve(candidate, scope))
            if a == b:
                return True
        return False
    if kind == "Not":
        return not evaluate(condition.get("Condition") or {}, scope)
    if kind == "Or":
        return any(evaluate(c, scope) for c in condition.get("Conditions") or [])
    raise ExpressionError(f"unknown condition type {kind!r}")


def evaluate_all(conditions: list[dict[str, Any]], scope: Scope) -> bool:
    """A Condition step's list is a conjunction."""
    return all(evaluate(c, scope) for c in conditions)


# -- references (static) -------------------------------------------------------------------------------------
def references(value: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``Get`` path in ``value`` with where it sits: [(path, 'Arguments.X[0]'), ...]."""
    out: list[tuple[str, str]] = []
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("Get"), str):
            return [(value["Get"], where)]
        if len(value) == 1 and isinstance(value.get("Std:JsonGet"), dict):
            arg = value["Std:JsonGet"]
            ref = arg.get("PropertyFile")
            if isinstance(ref, str):
                out.append((ref, f"{where}.PropertyFile"))
        for key, item in value.items():
            out.extend(references(item, f"{where}.{key}" if where else key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(references(item, f"{where}[{i}]"))
    return out


# -- coercion to the request shape ---------------------------------------------------------------------------
def coerce(value: Any, shape: Any) -> Any:
    """Resolved values put where botocore's input shape expects them: a number into a string member is
    printed (``"5"``), a numeric string into an integer member parsed, so ``InstanceCount: {Get: Parameters.N}``
    and ``HyperParameters: {k: ParameterInteger}`` both work."""
    if shape is None:
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: coerce(v, shape.members.get(k)) for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [coerce(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: coerce(v, shape.value) for k, v in value.items()}
    if kind == "string" and isinstance(value, (bool, int, float)):
        return to_text(value)
    if kind in ("integer", "long") and not isinstance(value, bool):
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind in ("float", "double") and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean" and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
