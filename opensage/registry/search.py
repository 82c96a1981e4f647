"""SageMaker ``Search``: a SearchExpression evaluated over resource records (their Describe output plus Tags).

Why here: SDK v2's ``estimator.register()`` searches TrainingJob by ``ModelArtifacts.S3ModelArtifacts`` to build
the package's model card, and ``model.register()`` searches ModelPackageGroup by name; notebooks search model
packages by metadata. Records are plain dicts, so the evaluator knows nothing about where they come from.

Semantics (SageMaker's Search docs): property names are dotted paths into the record (``Tags.<key>``,
``CustomerMetadataProperties.<key>``, ``ModelArtifacts.S3ModelArtifacts``); a path through a list matches if
any element matches. Filters, NestedFilters and SubExpressions of one expression are combined by its
``Operator`` (And by default). ``In`` takes comma-separated values. Comparisons are numeric when both sides
are numbers, by time when the record holds a timestamp, else by string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opensage.errors import ValidationException

_MISSING = object()


def _values(record: Any, path: list[str]) -> list[Any]:
    """Every value at ``path`` (lists are walked element by element; Tags are looked up by key)."""
    if not path:
        return [record] if not isinstance(record, list) else list(record)
    if isinstance(record, list):
        if record and all(isinstance(t, dict) and set(t) <= {"Key", "Value"} for t in record):
            record = {t["Key"]: t.get("Value", "") for t in record}  # Tags
        else:
            return [v for item in record for v in _values(item, path)]
    if isinstance(record, dict) and path[0] in record:
        return _values(record[path[0]], path[1:])
    return []


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return _number(value)


def _compare(actual: Any, operator: str, expected: str | None) -> bool:
    if operator == "Contains":
        return expected is not None and expected.lower() in str(actual).lower()
    if operator == "In":
        return str(actual) in [v.strip() for v in (expected or "").split(",")]
    if isinstance(actual, bool):
        actual = "true" if actual else "false"
    if operator in ("Equals", "NotEquals"):
        a, e = _number(actual), _number(expected)
        same = a == e if a is not None and e is not None else str(actual) == str(expected)
        return same if operator == "Equals" else not same
    a = _number(actual)
    e = (_as_time(expected or "") if isinstance(actual, float) and actual > 1e8 else _number(expected))
    if a is None or e is None:
        a_s, e_s = str(actual), str(expected)
        return {"GreaterThan": a_s > e_s, "GreaterThanOrEqualTo": a_s >= e_s, "LessThan": a_s < e_s,
                "LessThanOrEqualTo": a_s <= e_s}[operator]
    return {"GreaterThan": a > e, "GreaterThanOrEqualTo": a >= e, "LessThan": a < e,
            "LessThanOrEqualTo": a <= e}[operator]


def _filter(record: Any, f: dict[str, Any]) -> bool:
    operator = f.get("Operator") or "Equals"
    values = _values(record, f["Name"].split("."))
    if operator == "Exists":
        return bool(values)
    if operator == "NotExists":
        return not values
    if "Value" not in f:
        raise ValidationException(f"Filter on '{f['Name']}' with Operator {operator} needs a Value.")
    if operator == "NotEquals":
        return all(_compare(v, operator, f["Value"]) for v in values)
    return any(_compare(v, operator, f["Value"]) for v in values)


def _nested(record: Any, nested: dict[str, Any]) -> bool:
    """NestedFilters: all its Filters hold for one and the same element of the list property."""
    prefix = nested["NestedPropertyName"]
    elements = _values(record, prefix.split("."))
    relative = [{**f, "Name": f["Name"][len(prefix) + 1:] if f["Name"].startswith(prefix + ".") else f["Name"]}
                for f in nested.get("Filters") or []]
    return any(all(_filter(e, f) for f in relative) for e in elements)


def matches(record: dict[str, Any], expression: dict[str, Any] | None) -> bool:
    if not expression:
        return True
    results = [_filter(record, f) for f in expression.get("Filters") or []]
    results += [_nested(record, n) for n in expression.get("NestedFilters") or []]
    results += [matches(record, e) for e in expression.get("SubExpressions") or []]
    if (expression.get("Operator") or "And") == "Or":
        return any(results) if results else True
    return all(results)


def sort_key(record: dict[str, Any], sort_by: str | None, identity: str) -> tuple[Any, str]:
    """(value of ``sort_by``, identity) with a value that sorts and survives JSON (a page token)."""
    values = _values(record, (sort_by or "CreationTime").split("."))
    value = values[0] if values else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), identity
    return ("" if value is None else str(value)), identity
