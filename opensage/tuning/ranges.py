"""ParameterRanges (strings on the wire) -> a typed search space, and back to hyperparameter strings.

No Optuna import here: ``SearchSpace.distributions()`` imports it lazily, so the service can validate a
request without loading the sampler stack.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from opensage.errors import ValidationException

MAX_TUNED = 30  # SageMaker: at most 30 hyperparameters searched in one tuning job
MAX_CATEGORICAL_VALUES = 30
REVERSE_LOG_MAX = 1.0


def _error(message: str) -> ValidationException:
    return ValidationException(message)


@dataclass(frozen=True)
class Range:
    """One tunable hyperparameter. ``kind``: Integer | Continuous | Categorical."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Auto"
    values: tuple[str, ...] = ()

    # -- sampling space -------------------------------------------------------------------------
    def distribution(self) -> Any:
        """The Optuna distribution sampled for this range (ReverseLogarithmic samples 1 - x on a log scale)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "Categorical":
            return CategoricalDistribution(list(self.values))
        log = self.scaling == "Logarithmic"
        if self.kind == "Integer":
            return IntDistribution(int(self.low), int(self.high), log=log)
        if self.scaling == "ReverseLogarithmic":
            return FloatDistribution(1.0 - self.high, 1.0 - self.low, log=True)
        return FloatDistribution(self.low, self.high, log=log)

    def to_string(self, sampled: Any) -> str:
        """The hyperparameter value a child job gets for ``sampled`` (the distribution's value)."""
        if self.kind == "Categorical":
            return str(sampled)
        if self.kind == "Integer":
            return str(int(sampled))
        value = 1.0 - float(sampled) if self.scaling == "ReverseLogarithmic" else float(sampled)
        return repr(min(max(value, self.low), self.high))

    def from_string(self, text: str) -> Any | None:
        """The distribution's value for a hyperparameter string (rebuilding a study from child jobs), or None
        when the value lies outside this range (a warm-start parent searched elsewhere)."""
        try:
            if self.kind == "Categorical":
                return text if text in self.values else None
            if self.kind == "Integer":
                value = int(float(text))
                return value if self.low <= value <= self.high else None
            value = float(text)
        except ValueError:
            return None
        if not self.low <= value <= self.high:
            return None
        if self.scaling == "ReverseLogarithmic":
            return 1.0 - value if value < 1.0 else None
        return value

    def grid_values(self) -> list[str]:
        if self.kind == "Categorical":
            return list(self.values)
        if self.kind == "Integer":
            return [str(v) for v in range(int(self.low), int(self.high) + 1)]
        raise _error(f"Grid search cannot enumerate the continuous hyperparameter '{self.name}': the Grid "
                     "strategy takes CategoricalParameterRanges (and IntegerParameterRanges) only.")


@dataclass(frozen=True)
class SearchSpace:
    ranges: tuple[Range, ...]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.ranges]

    def by_name(self, name: str) -> Range | None:
        return next((r for r in self.ranges if r.name == name), None)

    def distributions(self) -> dict[str, Any]:
        return {r.name: r.distribution() for r in self.ranges}

    def grid(self) -> list[dict[str, str]]:
        """Every combination, in a fixed order (the i-th child of a Grid job gets the i-th)."""
        axes = [r.grid_values() for r in self.ranges]
        return [dict(zip(self.names, combo, strict=True)) for combo in itertools.product(*axes)]

    def grid_size(self) -> int:
        return math.prod(len(r.grid_values()) for r in self.ranges)

    def params_from_strings(self, tuned: dict[str, str]) -> dict[str, Any] | None:
        """Distribution values for a child's TunedHyperParameters; None if any is missing or out of range."""
        out = {}
        for r in self.ranges:
            if r.name not in tuned:
                return None
            value = r.from_string(tuned[r.name])
            if value is None:
                return None
            out[r.name] = value
        return out


def _number(text: Any, kind: str, name: str, member: str) -> float:
    try:
        value = int(text) if kind == "Integer" else float(text)
    except (TypeError, ValueError):
        raise _error(f"The {member} '{text}' of the {kind.lower()} hyperparameter '{name}' is not a valid "
                     f"{'integer' if kind == 'Integer' else 'number'}.") from None
    if not math.isfinite(value):
        raise _error(f"The {member} '{text}' of the hyperparameter '{name}' must be a finite number.")
    return float(value)


def parse_ranges(ranges: dict[str, Any] | None, where: str = "ParameterRanges") -> SearchSpace:
    """Validate ParameterRanges as SageMaker does and return the search space (names unique across kinds)."""
    ranges = ranges or {}  # AutoParameters: resolved into these ranges at Create (tuning/autotune.py)
    out: list[Range] = []
    seen: set[str] = set()

    def add(r: Range) -> None:
        if r.name in seen:
            raise _error(f"The hyperparameter '{r.name}' appears in more than one parameter range of {where}; "
                         "each hyperparameter can be tuned by one range only.")
        seen.add(r.name)
        out.append(r)

    for kind in ("Integer", "Continuous"):
        for item in ranges.get(f"{kind}ParameterRanges") or []:
            name = item["Name"]
            low = _number(item["MinValue"], kind, name, "MinValue")
            high = _number(item["MaxValue"], kind, name, "MaxValue")
            scaling = item.get("ScalingType") or "Auto"
            if low > high or (kind == "Continuous" and low == high):
                raise _error(f"The MinValue ({item['MinValue']}) of the hyperparameter '{name}' must be less "
                             f"than its MaxValue ({item['MaxValue']}).")
            if scaling == "Logarithmic" and low <= 0:
                raise _error(f"Logarithmic scaling of the hyperparameter '{name}' needs a range of values "
                             f"greater than 0; MinValue is {item['MinValue']}.")
            if scaling == "ReverseLogarithmic":
                if kind == "Integer":
                    raise _error(f"ReverseLogarithmic scaling is supported for continuous hyperparameters "
                                 f"only; '{name}' is an integer range.")
                if low < 0 or high >= REVERSE_LOG_MAX:
                    raise _error(f"ReverseLogarithmic scaling of the hyperparameter '{name}' needs a range "
                                 f"within 0 <= value < 1; the range is [{item['MinValue']}, {item['MaxValue']}].")
            add(Range(name, kind, low, high, scaling))
    for item in ranges.get("CategoricalParameterRanges") or []:
        name, values = item["Name"], tuple(item.get("Values") or ())
        if not values:
            raise _error(f"The categorical hyperparameter '{name}' needs at least one value.")
        if len(set(values)) != len(values):
            raise _error(f"The categorical hyperparameter '{name}' lists a value more than once: {list(values)}.")
        if len(values) > MAX_CATEGORICAL_VALUES:
            raise _error(f"The categorical hyperparameter '{name}' has {len(values)} values; at most "
                         f"{MAX_CATEGORICAL_VALUES} are allowed.")
        add(Range(name, "Categorical", values=values))
    if not out:
        raise _error(f"{where} must define at least one Integer, Continuous or Categorical parameter range.")
    if len(out) > MAX_TUNED:
        raise _error(f"{where} defines {len(out)} hyperparameters to tune; at most {MAX_TUNED} are allowed.")
    return SearchSpace(tuple(out))
