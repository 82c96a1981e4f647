"""SageMaker Pipelines: the definition JSON the SDK emits (definition.py), its expressions and conditions
(expressions.py), the step kinds (steps.py) and the execution engine (engine.py), a reconciler on the shared
loop whose whole state lives in the execution's resources row."""
