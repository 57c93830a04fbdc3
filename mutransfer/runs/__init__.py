"""Runs: what every stage after training needs to describe and repeat one run. The experiment
config (a TOML file in ``sweeps/`` mapped onto frozen dataclasses: :func:`load_config`,
:class:`ExperimentConfig`) and the trial (:func:`run_trial`: build the config's model at a width,
parametrize it, train it; :func:`trial_value` scores it).

May import :mod:`mutransfer.optim`, :mod:`mutransfer.core`, :mod:`mutransfer.models` and
:mod:`mutransfer.training`; tuning, projection, validation and the cli read it by these names.

    >>> cfg = mutransfer.runs.load_config("sweeps/quickstart.toml", {"train.steps": 10})
    >>> res = mutransfer.runs.run_trial(cfg, {"lr": 3e-3}, width=64, device="cpu", seed=0)
"""
from mutransfer.runs._config import (CHOICE_SPACE_KEYS, DATA_SOURCES, DEPTH_AUTO, INT_SPACE_KEYS, PRUNERS, RECIPES,
                                     SAMPLERS, SECTIONS, SPACE_KEYS, DataConfig, ExperimentConfig,
                                     ModelConfig, ParamConfig, SweepConfig, TrainConfig, budget_steps,
                                     check_staged, config_constants, load_config, swept_constants)
from mutransfer.runs._flops import count_params, sweep_tokens, training_flops
from mutransfer.runs._toml import to_toml
from mutransfer.runs._trial import (DIVERGED_PENALTY, TrialRejected, config_factory, make_dataset, resolve_knobs,
                                    run_trial, trial_constants, trial_value)

__all__ = ["CHOICE_SPACE_KEYS", "DATA_SOURCES", "DEPTH_AUTO", "DIVERGED_PENALTY", "DataConfig", "ExperimentConfig",
           "INT_SPACE_KEYS", "ModelConfig", "PRUNERS", "ParamConfig", "RECIPES", "SAMPLERS", "SECTIONS",
           "SPACE_KEYS", "SweepConfig", "TrainConfig", "TrialRejected", "budget_steps", "check_staged", "config_constants", "count_params",
           "config_factory", "load_config", "make_dataset", "resolve_knobs", "run_trial",
           "sweep_tokens", "swept_constants", "to_toml", "training_flops", "trial_constants", "trial_value"]
