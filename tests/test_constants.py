"""muP's free constants (scaling.md section 8): in the plan, the config, the staged sweep, the
transfer plan and the target's training."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from mutransfer import Constants, parametrize, zoo
from mutransfer.runs import load_config
from mutransfer.runs import run_trial
from mutransfer.core._plan import Plan
from mutransfer.tuning._recipe import phase_totals
from mutransfer.core._roles import Role
from mutransfer.tuning._sweep import sweep
from mutransfer.projection._target import check_plan_matches, plan_params, train_target
from mutransfer.projection._transfer import transfer

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "sweeps" / "mlp-synthetic.toml"
GRID = [0.003, 0.01, 0.03, 0.1]
STAGED = {"sweep.width": 16, "model.base_width": 8, "train.steps": 12, "train.eval_every": 4,
          "train.eval_batches": 1, "model.kwargs": {"depth": 2}, "sweep.sampler": "tpe",
          "sweep.pruner": "none", "sweep.recipe": "staged", "sweep.trials": 12,
          "sweep.space": {"lr": GRID, "lr_output": {"low": 0.25, "high": 4.0, "log": True},
                          "init_output": {"low": 0.25, "high": 4.0, "log": True}}}


def gpt(width, **kw):
    return zoo.gpt(width, depth=1, seq_len=16, **kw)


def test_defaults_change_nothing_at_the_base_width():
    torch.manual_seed(0)
    model = gpt(32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan = parametrize(model, gpt(32), delta=gpt(64), scheme="mup", constants=Constants())
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert set(plan.table()["lr_mult"]) == {1.0} and set(plan.table()["init_mult"]) == {1.0}


def test_constants_multiply_init_and_lr_and_carry_unchanged_across_width():
    c = Constants(init_input=4.0, init_hidden=0.5, lr_hidden=0.25, lr_output=2.0)
    plain = {w: parametrize(gpt, width=w, base_width=32).table().set_index("name") for w in (32, 128)}
    tuned = {w: parametrize(gpt, width=w, base_width=32, constants=c).table().set_index("name") for w in (32, 128)}
    for w in (32, 128):
        ratio_lr = tuned[w]["lr_mult"] / plain[w]["lr_mult"]
        ratio_init = tuned[w]["init_std"] / plain[w]["init_std"]
        roles = plain[w]["role"]
        for role in (Role.INPUT, Role.HIDDEN, Role.OUTPUT, Role.VECTOR):
            rows = roles == role.value
            assert ratio_lr[rows].tolist() == pytest.approx([c.lr(role)] * int(rows.sum()))
            if role is not Role.VECTOR:  # biases start at 0: their std stays 0
                assert ratio_init[rows].tolist() == pytest.approx([c.init(role)] * int(rows.sum()), rel=1e-5)


@pytest.mark.parametrize("exponent", [-1.0, -0.5, 0.0])
def test_readout_exponent_sets_the_readout_init_slope(exponent):
    stds = [parametrize(gpt, width=w, base_width=32, scheme="mup", constants={"readout_exponent": exponent})
            .table().set_index("name").loc["readout.weight", "init_std"] for w in (32, 64, 128, 256)]
    slope = (math.log(stds[-1]) - math.log(stds[0])) / math.log(256 / 32)
    assert slope == pytest.approx(exponent, abs=1e-6)


@pytest.mark.parametrize("exponent", [-1.0, -0.5, 0.0])
def test_readout_exponent_sets_the_multiplier_form_scale_of_a_tied_readout(exponent):
    tied = lambda width: gpt(width, tied=True)  # noqa: E731
    plan = parametrize(tied, width=128, base_width=32, constants={"readout_exponent": exponent,
                                                                  "output_mult": 2.0})
    assert plan.readout_scales.get("readout", 1.0) == pytest.approx(2.0 * 4.0 ** exponent)  # 1: no hook


def test_attention_mult_reaches_the_zoo_gpt_and_is_refused_where_it_cannot():
    plan = parametrize(gpt, width=64, base_width=32, constants={"attention_mult": 2.0})
    plain = gpt(64)
    assert plan.model.blocks[0].attn.scale == pytest.approx(2.0 * plain.blocks[0].attn.scale)
    with pytest.raises(ValueError, match="attention_mult=2 needs a factory"):
        parametrize(gpt(64), gpt(32), constants={"attention_mult": 2.0})


def test_plan_json_and_table_record_the_constants(tmp_path):
    c = {"init_input": 8.0, "lr_vector": 0.5, "readout_exponent": -0.5}
    plan = parametrize(gpt, width=64, base_width=32, constants=c, output_mult=2.0)
    assert plan.table().attrs["constants"]["init_input"] == 8.0
    assert "init_input=8" in str(plan) and plan.output_mult == 2.0
    plan.save(tmp_path / "p.json")
    back = Plan.load(tmp_path / "p.json")
    assert back.constants == plan.constants and back.table().equals(plan.table())


@pytest.mark.parametrize("kwargs, error, message", [
    ({"constants": {"lr_hiden": 2.0}}, ValueError, "unknown constant 'lr_hiden'; the constants are"),
    ({"constants": {"lr_hidden": 0.0}}, ValueError, "lr_hidden must be > 0"),
    ({"constants": {"readout_exponent": 1.0}}, ValueError, "readout_exponent must lie in"),
    ({"constants": {"init_hidden": "big"}}, TypeError, "init_hidden must be a finite number"),
    ({"constants": [1.0]}, TypeError, "constants must be a dict"),
    ({"constants": {"output_mult": 2.0}, "output_mult": 3.0}, ValueError, "disagree"),
    ({"constants": {"init_hidden": 2.0}, "scheme": "sp"}, ValueError, "init constants .* need scheme"),
])
def test_bad_constants_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        parametrize(gpt, width=64, base_width=32, **kwargs)


def test_config_constants_reach_the_trial(monkeypatch):
    cfg = load_config(MLP, {**STAGED, "sweep.recipe": "single", "sweep.sampler": "grid", "sweep.trials": 4,
                            "sweep.space": {"lr": GRID}, "parametrization.constants": {"lr_output": 3.0}})
    module = importlib.import_module("mutransfer.runs._trial")
    real, plans = module.parametrize, []
    monkeypatch.setattr(module, "parametrize", lambda *a, **k: plans.append(real(*a, **k)) or plans[-1])
    res = run_trial(cfg, {"lr": 0.01, "init_output": 2.0}, width=16, device="cpu", seed=0)
    assert math.isfinite(res.final_loss)
    assert plans[0].constants == Constants(lr_output=3.0, init_output=2.0)
    with pytest.raises(ValueError, match=r"\[parametrization\] constants: unknown constant 'lr_out'"):
        load_config(MLP, {"parametrization.constants": {"lr_out": 3.0}})


@pytest.mark.parametrize("override, message", [
    ({"sweep.space": {"lr": GRID}}, "needs >= 1 constant"),
    ({"sweep.space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}, "lr_output": [1.0, 2.0]}}, "lr as a list"),
    ({"sweep.space": {"lr": GRID, "lr_output": {"low": 2.0, "high": 4.0, "log": True}}}, "must include the config's value 1"),
    ({"sweep.trials": 8}, "trials >= 2 x 4"),
    ({"sweep.sampler": "grid", "sweep.trials": 8, "sweep.space": {"lr": GRID, "lr_output": [1.0, 2.0]}}, "use sampler"),
])
def test_staged_recipe_checks_its_config(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(MLP, {**STAGED, **override})


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("staged")
    cfg = load_config(MLP, STAGED)
    study = sweep(cfg, storage=f"sqlite:///{tmp}/s.db", device="cpu", show_progress=False, reports_dir=tmp)
    return cfg, study, tmp


def test_staged_sweep_runs_three_phases_in_one_study(staged):
    cfg, study, _ = staged
    assert phase_totals(cfg) == [4, 8, 12]
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert [t.user_attrs["stage"] for t in trials] == ["lr"] * 4 + ["constants"] * 4 + ["lr-again"] * 4
    assert all(t.state.name == "COMPLETE" for t in trials)
    first = trials[:4]
    assert sorted(t.params["lr"] for t in first) == GRID
    assert all(t.params["lr_output"] == 1.0 and t.params["init_output"] == 1.0 for t in first)
    best_lr = min(first, key=lambda t: t.value).params["lr"]
    assert {t.params["lr"] for t in trials[4:8]} == {best_lr}
    best = min(trials[:8], key=lambda t: t.value)
    assert {(t.params["lr_output"], t.params["init_output"]) for t in trials[8:]} == {
        (best.params["lr_output"], best.params["init_output"])}


def test_staged_sweep_resumes_without_enqueuing_again(staged):
    cfg, study, tmp = staged
    again = sweep(cfg, storage=f"sqlite:///{tmp}/s.db", device="cpu", show_progress=False, reports_dir=tmp)
    assert len(again.get_trials(deepcopy=False)) == 12


def test_transfer_carries_the_constants_of_its_lr_grid_and_train_applies_them(staged):
    cfg, study, _ = staged
    plan = transfer(study, target_width=64)
    trials = study.get_trials(deepcopy=False)
    groups = {}
    for t in trials:
        key = (t.params["lr_output"], t.params["init_output"])
        groups.setdefault(key, []).append(t)
    with_grid = {k: g for k, g in groups.items() if len({t.params["lr"] for t in g}) >= 3}
    best = min(with_grid, key=lambda k: min(t.value for t in with_grid[k]))
    expected = {k: v for k, v in zip(("lr_output", "init_output"), best) if v != 1.0}
    assert plan.constants == expected
    assert json.loads(plan.to_json())["constants"] == expected
    params = plan_params(plan)
    assert all(params[k] == v for k, v in expected.items())
    check_plan_matches(cfg, plan)  # swept constants are free: no refusal


def test_a_plan_with_other_constants_is_refused(staged):
    cfg, study, _ = staged
    plan = transfer(study, target_width=64)
    fixed = cfg.override({"sweep.recipe": "single", "sweep.sampler": "grid", "sweep.space": {"lr": GRID}, "sweep.trials": 4,
                          "parametrization.constants": {"lr_output": 7.0}})
    with pytest.raises(ValueError, match="the plan was tuned with other constants than the config fixes"):
        check_plan_matches(fixed, plan)
    other = parametrize(zoo.mlp, width=64, base_width=8, scheme="mup", constants={"lr_output": 7.0})
    with pytest.raises(ValueError, match="the Plan was parametrized with constants"):
        plan.optimizer(other)


def test_adam_lr_ratio_sets_muons_adamw_groups_and_refuses_a_second_setting():
    plan = parametrize(zoo.gpt, width=64, base_width=32, optimizer="muon", constants={"adam_lr_ratio": 0.25})
    plain = parametrize(zoo.gpt, width=64, base_width=32, optimizer="muon")
    for name, p in plan.params.items():
        ratio = 0.25 if p.optimizer == "adamw" else 1.0
        assert p.lr_mult == pytest.approx(plain.params[name].lr_mult * ratio)
        assert p.wd_mult == pytest.approx(1 / p.lr_mult)  # lr x wd is kept
    lrs = {g["use_muon"]: g["lr"] / g["lr_mult"] for g in plan.optimizer(0.02).param_groups}
    assert lrs == {True: 0.02, False: pytest.approx(0.02)}  # the ratio sits in lr_mult
    with pytest.raises(ValueError, match="adam_lr=0.001 and the plan's constant adam_lr_ratio=0.25 both set"):
        plan.optimizer(0.02, adam_lr=1e-3)
    with pytest.raises(ValueError, match="constant adam_lr_ratio=2 sets Muon's AdamW groups' lr"):
        parametrize(zoo.gpt, width=64, base_width=32, constants={"adam_lr_ratio": 2.0})


def test_the_staged_recipe_tunes_adam_lr_ratio_and_the_transfer_carries_it_to_train(tmp_path):
    cfg = load_config(MLP, {**STAGED, "parametrization.optimizer": "muon", "sweep.trials": 10,
                            "sweep.space": {"lr": GRID, "adam_lr_ratio": {"low": 0.125, "high": 8.0, "log": True}}})
    study = sweep(cfg, storage=f"sqlite:///{tmp_path}/m.db", device="cpu", show_progress=False, reports_dir=tmp_path)
    ratios = {t.params["adam_lr_ratio"] for t in study.trials if t.user_attrs["stage"] == "constants"}
    assert len(ratios) > 1  # phase 2 samples it
    plan = transfer(study, target_width=64)
    assert plan.adam_lr is None  # no fixed adam_lr: the ratio travels as a constant
    best = plan.constants.get("adam_lr_ratio", 1.0)
    params = plan_params(plan)
    assert params.get("adam_lr_ratio", 1.0) == best
    res = train_target(cfg, plan, device="cpu", progress=False)
    assert math.isfinite(res.final_loss)
