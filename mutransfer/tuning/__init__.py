"""Tuning the proxy: the Optuna study around the trial of :mod:`mutransfer.runs` (the objective,
its sampler and pruner), its storage, locks, workers and resume (:func:`sweep`), the staged recipe
for muP's constants, and the tidy frame of a study's trials (:func:`trials_frame`).

May import :mod:`mutransfer.optim`, :mod:`mutransfer.core`, :mod:`mutransfer.models`,
:mod:`mutransfer.training` and :mod:`mutransfer.runs`.

    >>> study = mutransfer.tuning.sweep("sweeps/quickstart.toml", trials=8)
"""
from mutransfer.tuning._depth_probe import (DEPTH_ALPHAS, PROBE_FACTOR, PROBE_OFFSETS, probe_cost, probe_depth, probe_points,
                                            probe_study_name, stored_probe)
from mutransfer.tuning._objective import TrialPoint, make_objective, sweep_point
from mutransfer.tuning._storage import (STORAGE_ENV, default_storage, fail_stale, open_storage, redact,
                                        worker_devices)
from mutransfer.tuning._sweep import (STUDY_NAME, bench_overhead, default_study_name, make_pruner,
                                      make_sampler, rerun, run_steps, study_location, sweep)
from mutransfer.tuning._trials import DEFAULT_BETA1, trials_frame

__all__ = ["worker_devices", "DEPTH_ALPHAS", "PROBE_FACTOR", "PROBE_OFFSETS", "probe_cost", "probe_depth", "probe_points", "probe_study_name", "stored_probe",
           "DEFAULT_BETA1", "STORAGE_ENV", "STUDY_NAME", "TrialPoint", "bench_overhead",
           "default_storage", "default_study_name", "fail_stale", "make_objective", "make_pruner",
           "make_sampler", "open_storage", "redact", "rerun", "run_steps", "study_location",
           "sweep", "sweep_point", "trials_frame"]
