"""The parametrization: the scaling rules, parameter roles, muP's free constants, and
:func:`parametrize`, which turns a model into a :class:`Plan` (init rewritten, per-parameter
multipliers, the plan's param groups for torch's optimizers and :class:`~mutransfer.optim.Muon`).

May import :mod:`mutransfer.optim` only (the optimizers the plan builds groups for).

    >>> plan = mutransfer.core.parametrize(mutransfer.zoo.mlp, width=256, base_width=64)
    >>> opt = plan.optimizer(lr=1e-3)
"""
from mutransfer.core._groups import (WD_POLICIES, SpectralDecayHook, build_optimizer,
                                     group_weight_decay, param_groups, timescale_weight_decay)
from mutransfer.core._parametrize import ParamPlan, Plan, ReadoutScale, default_example, parametrize
from mutransfer.core._roles import ParamInfo, Role, RoleWarning, infer_roles
from mutransfer.core._scaling import (CONSTANT_NAMES, MUON_SCALES, OPTIMIZERS, READOUTS, SCHEMES,
                                      Constants, Multipliers, attention_scale, multipliers,
                                      muon_alpha, spectral_sigma)
from mutransfer.core._usage import TraceError, Use, call_with, trace_usage

__all__ = ["CONSTANT_NAMES", "Constants", "MUON_SCALES", "Multipliers", "OPTIMIZERS", "ParamInfo",
           "ParamPlan", "Plan", "READOUTS", "ReadoutScale", "Role", "RoleWarning", "SCHEMES",
           "SpectralDecayHook", "TraceError", "Use", "WD_POLICIES", "attention_scale",
           "build_optimizer", "call_with", "default_example", "group_weight_decay", "infer_roles",
           "multipliers", "muon_alpha", "param_groups", "parametrize", "spectral_sigma",
           "timescale_weight_decay", "trace_usage"]
