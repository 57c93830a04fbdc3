"""The parametrization: the scaling rules (one table, :mod:`~mutransfer.core._scaling`), one
record per optimizer (:class:`OptimizerRule` in :data:`OPTIMIZER_RULES`: its exponents, defaults
and grouping), parameter roles from shapes and traced usage, muP's free constants, and
:func:`parametrize`, which turns a model into a :class:`Plan` (init rewritten, per-parameter
multipliers, and the param groups the plan builds for torch's optimizers and
:class:`~mutransfer.optim.Muon`).

May import :mod:`mutransfer.optim` only (the optimizers the plan builds groups for).

    >>> plan = mutransfer.core.parametrize(mutransfer.zoo.mlp, width=256, base_width=64)
    >>> opt = plan.optimizer(lr=1e-3)
"""
from mutransfer.core._checks import check_choice, require_columns
from mutransfer.core._constants import CONSTANT_NAMES, Constants
from mutransfer.core._depth import Depth, branch_ends, match_depth
from mutransfer.core._examples import default_example, example_input
from mutransfer.core._groups import build_optimizer, param_groups, plan_name
from mutransfer.core._optimizer_rules import OPTIMIZER_RULES, OptimizerRule, optimizer_rule
from mutransfer.core._parametrize import parametrize
from mutransfer.core._plan import ParamPlan, Plan, ReadoutScale
from mutransfer.core._roles import ParamInfo, Role, RoleWarning, infer_roles
from mutransfer.core._scaling import (DEFAULT_DEPTH_ALPHA, INIT_EXPONENT, LR_EXPONENT, MUON_SCALES, OPTIMIZERS, READOUTS, SCHEMES, WD_POLICIES,
                                      Multipliers, attention_scale, group_weight_decay,
                                      multipliers, muon_alpha, spectral_sigma,
                                      timescale_weight_decay)
from mutransfer.core._usage import TraceError, Use, call_with, trace_usage

__all__ = ["CONSTANT_NAMES", "Constants", "DEFAULT_DEPTH_ALPHA", "Depth", "INIT_EXPONENT", "LR_EXPONENT", "MUON_SCALES", "Multipliers", "OPTIMIZERS",
           "OPTIMIZER_RULES", "OptimizerRule", "ParamInfo",
           "ParamPlan", "Plan", "READOUTS", "ReadoutScale", "Role", "RoleWarning", "SCHEMES",
           "TraceError", "Use", "WD_POLICIES", "attention_scale", "branch_ends", "build_optimizer", "call_with",
           "check_choice", "match_depth", "plan_name", "require_columns",
           "default_example", "example_input", "group_weight_decay", "infer_roles",
           "multipliers", "muon_alpha", "optimizer_rule", "param_groups", "parametrize", "spectral_sigma",
           "timescale_weight_decay", "trace_usage"]
