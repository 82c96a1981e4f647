"""Automatic model tuning: ParameterRanges -> search spaces (ranges.py), Optuna samplers and pruners
(strategies.py), and the reconciler that turns a tuning job into child training jobs (reconciler.py)."""
