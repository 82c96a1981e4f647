"""Optuna studies for tuning jobs (ask/tell; Optuna imported lazily, here only).

A study lives in memory and is never the source of truth: ``build_study`` recreates it from the child
training jobs' rows (and the warm-start parents'), so a restarted control plane continues where the metadata
store says the job is. Strategies:

* Bayesian: ``GPSampler`` (Gaussian process + expected improvement, like SageMaker AMT), after a few random
  trials; Random: ``RandomSampler``; Grid: the i-th combination of the ranges is enqueued for the i-th trial
  (a fixed order, so a restart neither repeats nor skips one); Hyperband: random sampling with Optuna's
  ``HyperbandPruner`` over the intermediate objective values the children log (MinResource/MaxResource are
  those values' steps, e.g. boosting rounds or epochs).
* TrainingJobEarlyStoppingType Auto: ``MedianPruner`` (stop a job whose intermediate objective is worse than
  the median of earlier jobs at the same step), SageMaker's documented rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from opensage.tuning.jobs import Definition

log = logging.getLogger(__name__)

DEFINITION_PARAM = "_definition"  # the study's choice of training job definition (TrainingJobDefinitions)
MEDIAN_STARTUP_TRIALS = 3  # Auto early stopping compares with at least this many finished jobs
MEDIAN_WARMUP_STEPS = 2  # steps are 1-based: the first value (e.g. round 0) never stops a job


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def make_sampler(strategy: str, seed: int | None, max_jobs: int) -> Any:
    optuna = _optuna()
    if strategy == "Bayesian":
        # SageMaker starts Bayesian search with a few random trials too; fewer for small budgets.
        startup = min(10, max(3, max_jobs // 5))
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(config: dict[str, Any]) -> Any:
    optuna = _optuna()
    if config["Strategy"] == "Hyperband":
        hb = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
        return optuna.pruners.HyperbandPruner(min_resource=hb.get("MinResource") or 1,
                                              max_resource=hb.get("MaxResource") or "auto")
    if (config.get("TrainingJobEarlyStoppingType") or "Off") == "Auto":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=MEDIAN_WARMUP_STEPS)
    return optuna.pruners.NopPruner()


@dataclass
class Study:
    """A tuning job's study and which trial each child job is."""

    study: Any
    definitions: list[Definition]
    trials: dict[str, int] = field(default_factory=dict)  # child name -> trial number
    told: set[str] = field(default_factory=set)  # children whose outcome the study has
    reported: dict[str, int] = field(default_factory=dict)  # child name -> intermediate steps reported

    @property
    def prunes(self) -> bool:
        """Whether intermediate values matter (Hyperband, early stopping Auto)."""
        return not isinstance(self.study.pruner, _optuna().pruners.NopPruner)

    # -- search space -----------------------------------------------------------------------------
    def distributions(self, definition: Definition) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        dists = {definition.key(r.name): r.distribution() for r in definition.space.ranges}
        if len(self.definitions) > 1:
            dists[DEFINITION_PARAM] = CategoricalDistribution([d.name for d in self.definitions])
        return dists

    def params_of(self, definition: Definition, tuned: dict[str, str]) -> dict[str, Any] | None:
        values = definition.space.params_from_strings(tuned)
        if values is None:
            return None
        params = {definition.key(k): v for k, v in values.items()}
        if len(self.definitions) > 1:
            params[DEFINITION_PARAM] = definition.name
        return params

    def definition(self, name: str | None) -> Definition | None:
        return next((d for d in self.definitions if d.name == name), None)

    # -- ask / tell -------------------------------------------------------------------------------
    def ask(self, fixed: tuple[Definition, dict[str, str]] | None = None) -> tuple[int, Definition, dict[str, str]]:
        """A new trial: (trial number, its definition, hyperparameter strings). ``fixed`` enqueues given
        values (a Grid combination, a retry of a failed job)."""
        if fixed is not None:
            definition, tuned = fixed
            self.study.enqueue_trial(self.params_of(definition, tuned) or {}, skip_if_exists=False)
        trial = self.study.ask()
        if len(self.definitions) > 1:
            name = trial.suggest_categorical(DEFINITION_PARAM, [d.name for d in self.definitions])
            definition = self.definition(name) or self.definitions[0]
        else:
            definition = self.definitions[0]
        tuned = {}
        for r in definition.space.ranges:
            value = _suggest(trial, definition.key(r.name), r.distribution())
            tuned[r.name] = r.to_string(value)
        return trial.number, definition, tuned

    def tell(self, child: str, value: float | None, state: str) -> None:
        """``state``: complete | fail | pruned."""
        optuna = _optuna()
        number = self.trials.get(child)
        if number is None or child in self.told:
            return
        states = {"complete": optuna.trial.TrialState.COMPLETE, "fail": optuna.trial.TrialState.FAIL,
                  "pruned": optuna.trial.TrialState.PRUNED}
        try:
            if state == "complete" and value is not None:
                self.study.tell(number, value)
            else:
                self.study.tell(number, state=states["pruned" if state == "pruned" else "fail"])
        except (ValueError, RuntimeError) as exc:  # already finished in the study
            log.debug("tell %s: %s", child, exc)
        self.told.add(child)

    def report(self, child: str, values: list[float]) -> bool:
        """Report new intermediate objective values of a running child; True = the pruner stops it."""
        optuna = _optuna()
        number = self.trials.get(child)
        if number is None:
            return False
        done = self.reported.get(child, 0)
        if len(values) <= done:
            return False
        trial = optuna.trial.Trial(self.study, self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number))
        for step in range(done, len(values)):
            trial.report(values[step], step + 1)
        self.reported[child] = len(values)
        return trial.should_prune()

    def add_finished(self, definition: Definition, tuned: dict[str, str], state: str, value: float | None,
                     intermediate: list[float]) -> int | None:
        """A trial already run (a child found in the store, a warm-start parent's job); its number."""
        optuna = _optuna()
        params = self.params_of(definition, tuned)
        if params is None:
            return None
        states = {"complete": optuna.trial.TrialState.COMPLETE, "fail": optuna.trial.TrialState.FAIL,
                  "pruned": optuna.trial.TrialState.PRUNED, "running": optuna.trial.TrialState.RUNNING}
        if state == "complete" and value is None:
            state = "fail"
        trial = optuna.trial.create_trial(
            state=states[state], params=params, distributions=self.distributions(definition),
            value=value if state == "complete" else None,
            intermediate_values={i + 1: v for i, v in enumerate(intermediate)})
        self.study.add_trial(trial)
        return self.study.trials[-1].number


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log)


def new_study(name: str, config: dict[str, Any], definitions: list[Definition], direction: str,
              max_jobs: int, resumed_trials: int = 0) -> Study:
    """``resumed_trials``: how many of the job's trials already ran (a rebuilt study). A seeded sampler then
    starts from another (still deterministic) seed, or it would replay the values of the first trials."""
    optuna = _optuna()
    seed = config.get("RandomSeed")
    if seed is not None and resumed_trials:
        seed = (seed * 1_000_003 + resumed_trials) % 2**32
    # Named after the tuning job: Hyperband assigns brackets by hashing the study name and trial number,
    # so a rebuilt study keeps every trial in its bracket.
    study = optuna.create_study(
        study_name=name,
        direction="maximize" if direction == "Maximize" else "minimize",
        sampler=make_sampler(config["Strategy"], seed, max_jobs),
        pruner=make_pruner(config))
    return Study(study, definitions)
