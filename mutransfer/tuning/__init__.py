"""Tuning the proxy: experiment configs (TOML -> frozen dataclasses), the trial that trains the
config's model (:func:`run_trial`), the Optuna study with its storage, locks, workers and resume
(:func:`sweep`), the staged recipe for muP's constants, and trial tables.

May import :mod:`mutransfer.optim`, :mod:`mutransfer.core`, :mod:`mutransfer.models` and
:mod:`mutransfer.training`.

    >>> study = mutransfer.tuning.sweep("sweeps/quickstart.toml", trials=8)
"""
from mutransfer.tuning._config import ExperimentConfig, budget_steps, load_config
from mutransfer.tuning._objective import make_objective, run_trial, trial_value
from mutransfer.tuning._storage import default_storage, open_storage
from mutransfer.tuning._sweep import default_study_name, rerun, sweep
from mutransfer.tuning._trials import trials_frame

__all__ = ["ExperimentConfig", "budget_steps", "default_storage", "default_study_name",
           "load_config", "make_objective", "open_storage", "rerun", "run_trial", "sweep",
           "trial_value", "trials_frame"]
