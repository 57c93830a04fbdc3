"""One record per optimizer: the records hold scaling.md's numbers, every stage reads them, an
unknown name is an error naming the known ones, and a new record is accepted end to end."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mutransfer import parametrize, zoo
from mutransfer.core import (LR_EXPONENT, OPTIMIZER_RULES, OPTIMIZERS, OptimizerRule, Role,
                             multipliers, optimizer_rule)

ROLES = (Role.INPUT, Role.HIDDEN, Role.OUTPUT, Role.VECTOR, Role.FIXED)


def column(table) -> list:
    """A table's exponents in scaling.md's row order; None where the rule has no such role."""
    return None if table is None else [table.get(r) for r in ROLES]


# scaling.md section 3 (lr, eps: input, hidden, output, vector, fixed) and section 9 (depth),
# written out once more so that an edit of a record is noticed.
@pytest.mark.parametrize("name, lr, eps, depth_lr, depth_eps", [
    ("adamw", [0, -1, -1, 0, 0], [-1, -1, 0, -1, 0], (1, -1), True),
    ("adam", [0, -1, -1, 0, 0], [-1, -1, 0, -1, 0], (1, -1), True),
    ("sgd", [1, 0, -1, 1, 0], None, (2, -1), False),
    ("muon", [0, 0, None, None, None], None, (1, -1), False),  # its matrices; the rest is AdamW's
])
def test_each_records_exponents_are_scaling_md(name, lr, eps, depth_lr, depth_eps):
    rule = optimizer_rule(name)
    assert column(rule.lr_exponent) == lr
    assert column(rule.eps_exponent) == eps
    assert rule.depth_lr == depth_lr and rule.depth_eps is depth_eps
    # depth: lr ~ m_L^(alpha - 1) for sign-like and Muon updates, m_L^(2 alpha - 1) for SGD
    assert rule.depth_lr_exponent(0.5) == (0.0 if name == "sgd" else -0.5)
    assert rule.depth_lr_exponent(1.0) == (1.0 if name == "sgd" else 0.0)


def test_each_records_defaults_grouping_and_plot_names():
    got = {n: (r.beta1, r.beta1_setting, r.demo_lr, r.side, r.spectral_decay, r.label, r.plot_style)
           for n, r in OPTIMIZER_RULES.items()}
    assert got == {"adamw": (0.9, "betas", 3e-3, None, "hook", "AdamW", "o-"),
                   "adam": (0.9, "betas", 3e-3, None, None, "Adam", "o-"),
                   "sgd": (0.0, "momentum", 0.1, None, None, "SGD", "^-"),
                   "muon": (0.95, "momentum", 0.02, "adamw", "native", "Muon", "s--")}
    assert OPTIMIZERS == ("adamw", "adam", "sgd", "muon")
    assert set(LR_EXPONENT) == {"adamw", "adam", "sgd"}  # the rules that take every role themselves
    muon = optimizer_rule("muon")
    # Muon takes hidden and dense input matrices; embeddings, the readout and vectors go to AdamW
    assert muon.takes(Role.HIDDEN, 2, False) and muon.takes(Role.INPUT, 2, False)
    assert not muon.takes(Role.INPUT, 2, True) and not muon.takes(Role.OUTPUT, 2, False)
    assert not muon.takes(Role.VECTOR, 1, False) and not muon.takes(Role.HIDDEN, 1, False)
    assert all(optimizer_rule(n).takes(r, 2, True) for n in ("adamw", "adam", "sgd") for r in ROLES)


def test_the_stages_read_the_records():
    from mutransfer.cli.coord_check import DEFAULT_LR
    from mutransfer.tuning import DEFAULT_BETA1
    from mutransfer.validation.style import OPTIMIZER_LABELS, curve_label, optimizer_style

    assert DEFAULT_BETA1 == {"adamw": 0.9, "adam": 0.9, "sgd": 0.0, "muon": 0.95}
    assert DEFAULT_LR == {"adamw": 3e-3, "adam": 3e-3, "sgd": 0.1, "muon": 0.02}
    assert OPTIMIZER_LABELS == {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "muon": "Muon"}
    assert curve_label("mup", "muon") == "muP + Muon" and optimizer_style("sgd") == "^-"
    assert curve_label("mup", "other") == "muP + other" and optimizer_style("other") == "o-"


def test_the_report_cli_and_benchmarks_read_the_records():
    import argparse
    from types import SimpleNamespace

    import pandas as pd

    from mutransfer.bench._compile import compile_arguments
    from mutransfer.bench._qkclip import SPECTRAL_OPTIMIZERS, muonclip_step_times
    from mutransfer.bench._timing import step_lr
    from mutransfer.cli.validate import optimizer_list
    from mutransfer.validation import summary_rows

    # the target report shows adam_lr where the record puts groups on a side (Muon's AdamW)
    res = SimpleNamespace(diverged=False, final_loss=3.0, steps=10, tokens=640, device="cpu", seconds=1.0,
                          history=pd.DataFrame({"step": [10]}))
    for name, shown in (("muon", "0.008"), ("adamw", "-"), ("sgd", "-")):
        plan = SimpleNamespace(predicted_loss=None, loss_interval=None, target_depth=None, lr=0.02,
                               adam_lr=0.008, optimizer_name=name, batch_size=16, weight_decay=None)
        assert dict(summary_rows(plan, res, 256))["adam_lr"] == shown, name
    # validate's --optimizers: the same default, checked against the registry
    assert optimizer_list("adamw, muon") == ["adamw", "muon"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown 'lion'.*adamw, adam, sgd, muon"):
        optimizer_list("adamw,lion")
    # the benchmarks: the lrs they always ran at, choices and timed optimizers from the records
    assert (step_lr("muon"), step_lr("adamw")) == (0.02, 1e-3) and step_lr("sgd") == OPTIMIZER_RULES["sgd"].demo_lr
    assert SPECTRAL_OPTIMIZERS == ("adamw", "muon")
    with pytest.raises(ValueError, match=r"\['sgd'\] have no spectral decay"):
        muonclip_step_times(optimizers=("sgd",))
    parser = argparse.ArgumentParser()
    compile_arguments(parser)
    assert parser.parse_args(["--optimizer", "sgd"]).optimizer == "sgd"


def test_an_unknown_optimizer_names_itself_and_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lamb'; use one of adamw, adam, sgd, muon"):
        optimizer_rule("lamb")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        multipliers(Role.HIDDEN, 2.0, optimizer="lamb")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        parametrize(zoo.mlp, width=32, base_width=16, optimizer="lamb", device="meta")
    with pytest.raises(TypeError, match="optimizer must be a string"):
        optimizer_rule(None)


def test_records_are_read_only_and_checked():
    rule = optimizer_rule("adamw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.beta1 = 0.5
    with pytest.raises(TypeError):
        rule.lr_exponent[Role.HIDDEN] = 0.0
    with pytest.raises(ValueError, match="keys must be Roles"):
        dataclasses.replace(rule, lr_exponent={"hidden": -1.0})
    with pytest.raises(ValueError, match="side and own_key go together"):
        dataclasses.replace(rule, matrices_only=True)
    with pytest.raises(ValueError, match="unknown spectral_decay 'always'"):
        dataclasses.replace(rule, spectral_decay="always")


@pytest.fixture
def lion(monkeypatch):
    """A toy Lion: AdamW's record under another name (the recipe of OptimizerRule's docstring)."""
    built = []

    def build(groups, *, lr, betas, eps, momentum, nesterov, **kwargs):
        built.append(lr)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)

    rule = dataclasses.replace(optimizer_rule("adamw"), name="lion", label="Lion", build=build,
                               plot_style="D-")
    monkeypatch.setitem(OPTIMIZER_RULES, "lion", rule)
    return built


def test_a_new_record_is_accepted_by_multipliers_and_parametrize(lion):
    for role in ROLES:
        new, old = multipliers(role, 4.0, optimizer="lion"), multipliers(role, 4.0, optimizer="adamw")
        assert (new.init, new.lr, new.eps, new.optimizer) == (old.init, old.lr, old.eps, "lion")
    plan = parametrize(zoo.mlp, width=64, base_width=16, optimizer="lion")
    ref = parametrize(zoo.mlp, width=64, base_width=16, optimizer="adamw")
    assert plan.optimizer_name == "lion"
    assert {n: (p.lr_mult, p.eps_mult, p.optimizer) for n, p in plan.params.items()} == \
        {n: (p.lr_mult, p.eps_mult, "lion") for n, p in ref.params.items()}
    opt = plan.optimizer(1e-3, weight_decay=0.1, decay="spectral")  # spectral decay: AdamW's hook
    assert lion == [1e-3] and len(opt._optimizer_step_pre_hooks) == 1
    assert sorted(g["lr"] for g in opt.param_groups) == sorted(
        g["lr"] for g in ref.optimizer(1e-3).param_groups)


def test_table_exponent_follows_muons_record_under_moonlight():
    from mutransfer.validation._exponents import table_exponent

    # the moonlight rule's alpha grows like sqrt(max fan), so Muon's matrices take m^-1/2
    assert table_exponent("lr", "hidden", "muon", muon_scale="moonlight") == -0.5
    assert table_exponent("lr", "hidden", "muon", muon_scale="spectral") == 0.0
    assert table_exponent("lr", "input", "muon", muon_scale="moonlight", dense_input=True) == 0.0
    assert table_exponent("lr", "input", "muon", muon_scale="moonlight") == 0.0  # an embedding: AdamW
    assert table_exponent("lr", "output", "muon", muon_scale="moonlight") == -1.0
    # the same exponent multipliers() gives a hidden matrix whose larger side grows with width
    for m in (2.0, 8.0):
        lr = multipliers(Role.HIDDEN, m, optimizer="muon", fan_in=64, fan_out=64,
                         muon_scale="moonlight", m_max=m).lr
        assert math.log(lr) / math.log(m) == pytest.approx(-0.5)
