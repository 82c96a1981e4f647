"""The pipeline definition JSON (contracts §11): parsed and checked at Create/Update so bad input is a
ValidationException that says where, never a failed execution later.

Checks: valid JSON; Parameters (types, defaults); Steps (names unique, types known); every ``Get`` of
``Parameters.X`` / ``Steps.X.<path>`` names a declared parameter, an existing step and a property its Describe*
answer has (botocore's output shape); DependsOn names steps; no dependency cycle. Edges come from DependsOn,
from every ``Steps.X`` reference (the SDK writes DependsOn only for explicit ``depends_on``) and from the
Condition step whose branch holds a step.
"""

from __future__ import annotations

import graphlib
import json
from dataclasses import dataclass, field
from typing import Any

from opensage.errors import ValidationException
from opensage.pipelines.expressions import ExpressionError, is_key, parse_path, property_file_ref, references

PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")
MAX_DEPTH = 100  # SDK definitions nest ~15 deep (condition branches add a few levels each)
# Step Type -> the Create* operation its Arguments are (the resource name left out), and the Describe*
# answers its properties resolve against.
CREATE_OPERATION = {"Processing": "CreateProcessingJob", "Training": "CreateTrainingJob",
                    "Transform": "CreateTransformJob", "Tuning": "CreateHyperParameterTuningJob",
                    "Model": "CreateModel", "RegisterModel": "CreateModelPackage"}
PROPERTY_SHAPES = {"Processing": ("DescribeProcessingJobResponse",),
                   "Training": ("DescribeTrainingJobResponse",),
                   "Transform": ("DescribeTransformJobResponse",),
                   "Tuning": ("DescribeHyperParameterTuningJobResponse",
                              "ListTrainingJobsForHyperParameterTuningJobResponse"),
                   "Model": ("DescribeModelOutput",),
                   "RegisterModel": ("DescribeModelPackageOutput",),
                   "AutoML": ("DescribeAutoMLJobResponse",),
                   "EndpointConfig": ("DescribeEndpointConfigOutput",),
                   "Endpoint": ("DescribeEndpointOutput",)}
RUNNABLE = (*CREATE_OPERATION, "Condition", "Fail", "Callback")
# DependsOn run conditions -> the upstream StepStatus values that let the dependent step run
TRIGGERS = {"Completed": ("Succeeded",), "Failed": ("Failed",), "Stopped": ("Stopped",),
            "Any": ("Succeeded", "Failed", "Stopped")}
# Accepted (SageMaker accepts them) but they need services this platform does not run: the step fails.
UNSUPPORTED = ("Lambda", "EMR", "EMRServerless", "AutoML", "QualityCheck", "ClarifyCheck", "EndpointConfig",
               "Endpoint", "Athena", "Glue", "Notebook", "BedrockCustomModel", "BedrockModelImport",
               "BedrockCustomModelDeployment", "BedrockProvisionedModelThroughput", "ForEach", "Cleanup")
EXECUTION_VARIABLES = ("StartDateTime", "CurrentDateTime", "PipelineName", "PipelineArn", "PipelineExecutionId",
                       "PipelineExecutionArn", "TrainingJobName", "ProcessingJobName")


@dataclass
class StepDef:
    name: str
    type: str
    arguments: Any
    where: str  # "Steps[2]" or "Steps[3].Arguments.IfSteps[0]": how errors point at it
    raw: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)
    guards: list[tuple[str, bool]] = field(default_factory=list)  # (condition step, branch) that hold it
    upstream: set[str] = field(default_factory=set)
    # DependsOn run conditions (SDK v3 StepDependency): upstream step -> Failed / Stopped / Any. A plain entry
    # (Completed) is not listed: the step runs only once that upstream step succeeded.
    triggers: dict[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str | None:
        return self.raw.get("DisplayName")

    @property
    def description(self) -> str | None:
        return self.raw.get("Description")

    @property
    def cache_config(self) -> dict[str, Any] | None:
        config = self.raw.get("CacheConfig")
        return config if isinstance(config, dict) and config.get("Enabled") else None

    @property
    def retry_policies(self) -> list[dict[str, Any]]:
        return list(self.raw.get("RetryPolicies") or [])

    @property
    def property_files(self) -> dict[str, dict[str, Any]]:
        return {p.get("PropertyFileName"): p for p in self.raw.get("PropertyFiles") or [] if isinstance(p, dict)}

    def own_arguments(self) -> Any:
        """Arguments without a Condition step's branches (those are steps of their own)."""
        if self.type == "Condition" and isinstance(self.arguments, dict):
            return {k: v for k, v in self.arguments.items() if k not in ("IfSteps", "ElseSteps")}
        return self.arguments


@dataclass
class Definition:
    raw: dict[str, Any]
    parameters: dict[str, dict[str, Any]]
    steps: dict[str, StepDef]
    order: list[str]  # a topological order

    def downstream(self, name: str) -> list[str]:
        return [s.name for s in self.steps.values() if name in s.upstream]


def _invalid(message: str) -> ValidationException:
    return ValidationException(f"Invalid PipelineDefinition: {message}")


def load(text: str) -> dict[str, Any]:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not valid JSON")

    try:
        raw = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise _invalid("the JSON is nested too deeply") from None
    except ValueError as e:
        raise _invalid(f"not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise _invalid("the document must be a JSON object with Version, Parameters and Steps")
    stack: list[tuple[Any, int]] = [(raw, 0)]  # iterative: the checks below recurse, bounded by this
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _invalid(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return raw


def parse(text: str) -> Definition:
    raw = load(text)
    parameters = _parameters(raw.get("Parameters"))
    steps_raw = raw.get("Steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise _invalid("'Steps' must be a non-empty list of steps")
    steps: dict[str, StepDef] = {}
    for i, item in enumerate(steps_raw):
        _collect(item, f"Steps[{i}]", steps, [])
    for step in steps.values():
        _check_step(step, steps, parameters)
    order = _order(steps)
    return Definition(raw, parameters, steps, order)


def _parameters(items: Any) -> dict[str, dict[str, Any]]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise _invalid("'Parameters' must be a list")
    out: dict[str, dict[str, Any]] = {}
    for i, p in enumerate(items):
        where = f"Parameters[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("Name"), str) or not p["Name"]:
            raise _invalid(f"{where} needs a Name")
        if p.get("Type") not in PARAMETER_TYPES:
            raise _invalid(f"{where} ('{p['Name']}') has Type {p.get('Type')!r}; expected one of "
                           f"{', '.join(PARAMETER_TYPES)}")
        if p["Name"] in out:
            raise _invalid(f"{where}: parameter '{p['Name']}' is declared twice")
        if p.get("DefaultValue") is not None:
            try:
                convert(p, p["DefaultValue"])
            except ValueError as e:
                raise _invalid(f"{where} DefaultValue: {e}") from None
        out[p["Name"]] = p
    return out


def convert(param: dict[str, Any], value: Any) -> Any:
    """A parameter value (a start override arrives as a string) as its declared type; ValueError if not."""
    name, kind = param["Name"], param["Type"]
    if kind == "String":
        if isinstance(value, (dict, list)):
            raise ValueError(f"parameter '{name}' is a String; got {json.dumps(value)}")
        text = value if isinstance(value, str) else str(value)
        enum = param.get("EnumValues")
        if enum and text not in enum:
            raise ValueError(f"parameter '{name}' must be one of {enum}; got '{text}'")
        return text
    if kind == "Integer":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and
                                                                      value.strip().lstrip("-").isdigit())):
            raise ValueError(f"parameter '{name}' is an Integer; got '{value}'")
        return int(value)
    if kind == "Float":
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter '{name}' is a Float; got '{value}'") from None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"parameter '{name}' is a Boolean (true or false); got '{value}'")


def _collect(item: Any, where: str, steps: dict[str, StepDef], guards: list[tuple[str, bool]]) -> None:
    if not isinstance(item, dict):
        raise _invalid(f"{where} must be a step object")
    name, kind = item.get("Name"), item.get("Type")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where} needs a Name")
    if kind not in RUNNABLE and kind not in UNSUPPORTED:
        raise _invalid(f"{where} (step '{name}') has unknown Type {kind!r}")
    if name in steps:
        raise _invalid(f"{where}: step name '{name}' is used more than once (first at {steps[name].where})")
    depends, triggers = _depends_on(item.get("DependsOn"), where, name)
    step = StepDef(name, kind, item.get("Arguments"), where, item, depends, list(guards), triggers=triggers)
    steps[name] = step
    if kind == "Condition":
        args = item.get("Arguments")
        if not isinstance(args, dict) or not isinstance(args.get("Conditions"), list):
            raise _invalid(f"{where}.Arguments (step '{name}') needs a Conditions list")
        for branch, outcome in (("IfSteps", True), ("ElseSteps", False)):
            for j, sub in enumerate(args.get(branch) or []):
                _collect(sub, f"{where}.Arguments.{branch}[{j}]", steps, [*guards, (name, outcome)])


def _depends_on(raw: Any, where: str, name: str) -> tuple[list[str], dict[str, str]]:
    """DependsOn entries: a step name, or ``{"Step": name, "Trigger": Completed|Failed|Stopped|Any}``."""
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        raise _invalid(f"{where}.DependsOn (step '{name}') must be a list of step names")
    names: list[str] = []
    triggers: dict[str, str] = {}
    for j, entry in enumerate(raw):
        if isinstance(entry, str):
            names.append(entry)
            continue
        trigger = entry.get("Trigger", "Completed") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("Step"), str) or trigger not in TRIGGERS:
            raise _invalid(f"{where}.DependsOn[{j}] (step '{name}') must be a step name or "
                           f"{{\"Step\": <name>, \"Trigger\": {' | '.join(TRIGGERS)}}}")
        names.append(entry["Step"])
        if trigger != "Completed":
            triggers[entry["Step"]] = trigger
    return names, triggers


def _check_step(step: StepDef, steps: dict[str, StepDef], parameters: dict[str, dict[str, Any]]) -> None:
    for dep in step.depends_on:
        if dep not in steps:
            raise _invalid(f"{step.where}.DependsOn (step '{step.name}') names step '{dep}', which does not exist")
        step.upstream.add(dep)
        if step.type == "Condition" and steps[dep].type == "Fail":
            raise _invalid(f"{step.where}.DependsOn: Condition step '{step.name}' can not depend on Fail step "
                           f"'{dep}'")
    step.upstream.update(cond for cond, _ in step.guards)
    found = references(step.own_arguments(), "Arguments")  # a Condition's Conditions included
    for path, field_path in found:
        here = f"{step.where}.{field_path} (step '{step.name}')"
        head, _, rest = path.partition(".")
        if head == "Parameters":
            if rest not in parameters:
                raise _invalid(f"{here} references parameter '{rest}', which is not declared in Parameters")
        elif head == "Execution":
            if rest not in EXECUTION_VARIABLES:
                raise _invalid(f"{here} references '{path}'; execution variables are "
                               f"{', '.join(EXECUTION_VARIABLES)}")
        elif head == "Steps":
            target = _check_step_reference(path, here, steps)
            if target == step.name:
                raise _invalid(f"{here} references its own step ('{path}')")
            step.upstream.add(target)
        elif head != "PipelineExperimentConfig":
            raise _invalid(f"{here}: '{path}' is not a reference SageMaker Pipelines knows (Parameters.*, "
                           f"Execution.*, Steps.*, PipelineExperimentConfig.*)")


def _check_step_reference(path: str, here: str, steps: dict[str, StepDef]) -> str:
    try:
        segments = parse_path(path.partition(".")[2])
    except ExpressionError as e:
        raise _invalid(f"{here}: {e}") from None
    if not segments or not isinstance(segments[0], str) or is_key(segments[0]):
        raise _invalid(f"{here}: '{path}' should be Steps.<step name>.<property>")
    name, rest = str(segments[0]), segments[1:]
    if name not in steps:
        raise _invalid(f"{here} references step '{name}' ('{path}'), which does not exist")
    target = steps[name]
    if rest[:1] == ["PropertyFiles"]:
        _, file_name = property_file_ref(path)
        if target.type != "Processing" or file_name not in target.property_files:
            raise _invalid(f"{here} references property file '{file_name}' of step '{name}', which declares no "
                           f"such PropertyFiles entry")
        return name
    problem = property_problem(target, rest)
    if problem:
        raise _invalid(f"{here} references '{path}': {problem}")
    return name


def property_problem(target: StepDef, segments: list) -> str | None:
    """Why ``segments`` is not a property of ``target``'s Describe* answer (None when it is)."""
    kind = target.type
    if not segments:
        return "a property path is missing after the step name"
    if kind == "Condition":
        return None if segments == ["Outcome"] else "a Condition step has only the property Outcome"
    if kind == "Fail":
        return "a Fail step has no properties"
    if kind in ("Callback", "Lambda"):
        declared = [o.get("OutputName") for o in target.raw.get("OutputParameters") or [] if isinstance(o, dict)]
        if len(segments) == 2 and segments[0] == "OutputParameters" and segments[1] in declared:
            return None
        return f"a {kind} step's properties are OutputParameters['<name>'] for its declared outputs {declared}"
    shapes = PROPERTY_SHAPES.get(kind)
    if not shapes:
        return None  # EMR and friends: not checked (their shapes are other services')
    from opensage.api.spec import service_model

    model = service_model("sagemaker")
    problems = [_shape_problem(model.shape_for(s), segments) for s in shapes]
    if any(p is None for p in problems):
        return None
    return f"{shapes[0]} {problems[0]}"


def _shape_problem(shape: Any, segments: list) -> str | None:
    walked = ""
    for seg in segments:
        kind = shape.type_name
        if isinstance(seg, int):
            if kind != "list":
                return f"has no list at '{walked}' to index with [{seg}]"
            shape = shape.member
            walked += f"[{seg}]"
        elif is_key(seg):
            if kind == "list":
                shape = shape.member
            elif kind == "map":
                shape = shape.value
            else:
                return f"has no list or map at '{walked}' to index with ['{seg}']"
            walked += f"['{seg}']"
        else:
            if kind != "structure" or seg not in shape.members:
                at = f" at '{walked}'" if walked else ""
                return f"has no member '{seg}'{at}"
            shape = shape.members[seg]
            walked += f".{seg}" if walked else seg
    return None


def _order(steps: dict[str, StepDef]) -> list[str]:
    sorter = graphlib.TopologicalSorter({name: step.upstream for name, step in steps.items()})
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as e:
        cycle = e.args[1] if len(e.args) > 1 else []
        raise _invalid(f"the steps have a dependency cycle: {' -> '.join(reversed(cycle))}") from None
