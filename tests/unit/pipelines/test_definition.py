"""Definition parsing: parameters, branches, edges from references, and bad input said where."""

from __future__ import annotations

import json

import pytest

from opensage.errors import ValidationException
from opensage.pipelines.definition import convert, parse


def step(name: str, kind: str = "Processing", args: dict | None = None, **extra) -> dict:
    return {"Name": name, "Type": kind, "Arguments": args or {}, **extra}


def doc(*steps, parameters=None) -> str:
    return json.dumps({"Version": "2020-12-01", "Parameters": parameters or [], "Steps": list(steps)})


def ref(path: str) -> dict:
    return {"Get": path}


def test_edges_come_from_references_depends_on_and_condition_branches():
    cond = step("Check", "Condition", {"Conditions": [{"Type": "Equals", "LeftValue": ref("Steps.Train.TrainingJobName"),
                                                        "RightValue": "x"}],
                                        "IfSteps": [step("Model", "Model", {"PrimaryContainer": {
                                            "ModelDataUrl": ref("Steps.Train.ModelArtifacts.S3ModelArtifacts")}})],
                                        "ElseSteps": [step("Stop", "Fail", {"ErrorMessage": "no"})]})
    d = parse(doc(step("Train", "Training"), cond, step("Audit", DependsOn=["Train"])))
    assert d.steps["Check"].upstream == {"Train"}
    assert d.steps["Model"].upstream == {"Check", "Train"} and d.steps["Model"].guards == [("Check", True)]
    assert d.steps["Stop"].guards == [("Check", False)]
    assert d.steps["Audit"].upstream == {"Train"}
    assert d.order.index("Train") < d.order.index("Check") < d.order.index("Model")


@pytest.mark.parametrize("text, words", [
    ("{", "not valid JSON"),
    ('{"Steps": ' + "[" * 500 + "]" * 500 + "}", "nested deeper"),
    ("[]", "JSON object"),
    (doc(), "non-empty list"),
    (doc(step("A"), step("A")), "used more than once"),
    (doc(step("A", "Nonsense")), "unknown Type 'Nonsense'"),
    (doc(step("A", args={"X": ref("Parameters.Missing")})), "parameter 'Missing'"),
    (doc(step("A", args={"X": ref("Steps.Ghost.ProcessingJobName")})), "Steps[0].Arguments.X (step 'A')"),
    (doc(step("A", args={"X": ref("Steps.B.TrainingJobNam")}), step("B", "Training")), "no member 'TrainingJobNam'"),
    (doc(step("A", args={"L": [1, ref("Steps.B.Outcome")]}), step("B", "Training")), "Arguments.L[1]"),
    (doc(step("A", args={"X": ref("Steps.B.ProcessingJobName")}),
         step("B", args={"X": ref("Steps.A.ProcessingJobName")})), "dependency cycle"),
    (doc(step("A", args={"X": ref("Execution.Nope")})), "execution variables"),
    (doc(step("A", args={"X": {"Std:JsonGet": {"PropertyFile": ref("Steps.B.PropertyFiles.R"), "Path": "a"}}}),
         step("B")), "property file 'R'"),
    (doc(step("F", "Fail"), step("C", "Condition", {"Conditions": []}, DependsOn=["F"])), "can not depend on Fail"),
    (doc(step("A"), parameters=[{"Name": "P", "Type": "Decimal"}]), "Type 'Decimal'"),
    (doc(step("A"), parameters=[{"Name": "P", "Type": "Boolean", "DefaultValue": "maybe"}]), "Boolean"),
])
def test_bad_definition_raises_validation_exception_saying_where(text, words):
    with pytest.raises(ValidationException) as err:
        parse(text)
    assert words in err.value.message


@pytest.mark.parametrize("ptype, raw, value", [
    ("Integer", "7", 7), ("Float", "0.5", 0.5), ("Boolean", "True", True), ("Boolean", "false", False),
    ("String", "x", "x"),
])
def test_convert_start_override_strings_to_declared_type(ptype, raw, value):
    assert convert({"Name": "P", "Type": ptype}, raw) == value


def test_convert_string_outside_enum_values_is_refused():
    with pytest.raises(ValueError, match="one of"):
        convert({"Name": "P", "Type": "String", "EnumValues": ["a", "b"]}, "c")
