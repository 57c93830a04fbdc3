"""Transfer: the fits recover known laws from synthetic sweeps, and each failure mode says so."""
from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from mutransfer.projection import _laws as laws
from mutransfer.projection._transfer import TransferPlan, transfer
from mutransfer.tuning._trials import trials_frame

optuna.logging.set_verbosity(optuna.logging.WARNING)

ETA_MAX, B_NOISE, BETA1 = 3e-3, 2000.0, 0.9
BATCHES = (8, 16, 32, 64, 128, 256, 512)


def true_eta(law: str, batch, width=64, drift=0.0, eta_max=ETA_MAX, b_noise=B_NOISE, beta1=BETA1):
    """scaling.md section 6 with B -> B / c, written out independently of mutransfer.laws."""
    c = (1 - beta1) / (1 + beta1)
    r = b_noise * c / np.asarray(batch, float)
    eta = {"sgd": eta_max / (1 + r), "sign": eta_max / np.sqrt(1 + r),
           "surge": 2 * eta_max / (np.sqrt(r) + np.sqrt(1 / r)), "constant": eta_max + 0 * r}[law]
    return eta * (width / 64) ** drift


def synth(law="sign", *, widths=(64, 128), batches=BATCHES, drift=0.0, seed=0, sigma=0.01,
          span=(-3.25, 3.25), noise=False):
    """Trials with loss = L0(width, B) + 0.08 (log2 lr - log2 eta*)^2 + N(0, sigma^2), lrs every
    half octave over ``span`` around eta* (randomly offset), and optionally B_simple = 500 (L/3)^-4."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in widths:
        for b in batches:
            x0 = np.log2(true_eta(law, b, w, drift))
            base = 3.0 * (w / 64) ** -0.1 + 0.1 * np.log2(512 / b)
            for x in np.arange(x0 + span[0], x0 + span[1], 0.5) + rng.uniform(-0.25, 0.25):
                loss = base + 0.08 * (x - x0) ** 2 + rng.normal(0, sigma)
                row = {"width": w, "lr": 2 ** x, "batch_size": b, "loss": loss, "scheme": "mup",
                       "optimizer": "adamw", "beta1": BETA1}
                if noise:
                    row.update(b_simple=500 * (loss / 3) ** -4 * math.exp(rng.normal(0, 0.05)),
                               noise_loss=loss)
                rows.append(row)
    return pd.DataFrame(rows)


def has(plan: TransferPlan, *words: str) -> bool:
    return any(all(w in note for w in words) for note in plan.warnings)


# ----- ground truth -----

@pytest.mark.parametrize("law", ["sgd", "sign", "surge"])
def test_recovers_each_law(law):
    plan = transfer(synth(law), 1024, target_batch=64)
    assert plan.law == law
    assert plan.eta_max == pytest.approx(ETA_MAX, rel=0.10)
    assert plan.b_noise == pytest.approx(B_NOISE, rel=0.25)
    assert plan.lr == pytest.approx(true_eta(law, 64), rel=0.10)
    assert abs(plan.drift_slope) < 0.05
    assert not has(plan, "drifts")


def test_constant_law_when_batch_does_not_matter():
    flat = synth("constant")
    plan = transfer(flat, 1024, target_batch=256)
    assert plan.law == "constant" and has(plan, "does not change with batch")
    assert plan.lr == pytest.approx(ETA_MAX, rel=0.10)


@pytest.mark.parametrize("law", ["sgd", "surge"])
def test_intervals_cover_truth_in_most_seeds(law):
    hits = {"eta_max": 0, "b_noise": 0, "lr": 0}
    for seed in range(20):
        p = transfer(synth(law, seed=seed, sigma=0.03), 1024, target_batch=64, seed=seed)
        hits["eta_max"] += p.eta_max_interval[0] <= ETA_MAX <= p.eta_max_interval[1]
        hits["b_noise"] += p.b_noise_interval[0] <= B_NOISE <= p.b_noise_interval[1]
        hits["lr"] += p.lr_interval[0] <= true_eta(law, 64) <= p.lr_interval[1]
    assert min(hits.values()) >= 15, hits


def test_drift_is_measured_warned_and_corrected_on_request():
    df = synth("sign", widths=(64, 128, 256), drift=0.3)
    plan = transfer(df, 1024, target_batch=64)
    assert plan.drift_slope == pytest.approx(0.3, abs=0.05)
    assert plan.drift_interval[0] < 0.3 < plan.drift_interval[1]
    assert has(plan, "drifts", "coord-check", "correct_drift=True")
    # without correction the lr stays at the proxies' level; with it, it follows the drift
    corrected = transfer(df, 1024, target_batch=64, correct_drift=True)
    assert corrected.lr == pytest.approx(true_eta("sign", 64, 1024, 0.3), rel=0.15)
    assert plan.lr < 0.6 * corrected.lr


def test_loss_power_law_and_auto_batch_from_noise_scale():
    plan = transfer(synth("sign", noise=True), 1024, target_batch="auto")
    loss_1024 = 3.0 * 16 ** -0.1  # L0 at the reference batch 512
    assert plan.predicted_loss == pytest.approx(loss_1024, rel=0.02)
    assert plan.loss_interval[0] < plan.predicted_loss < plan.loss_interval[1]
    assert plan.diagnostics["noise_exponent"] == pytest.approx(-4, abs=0.3)
    b_target = 500 * (loss_1024 / 3) ** -4
    assert plan.b_noise_target == pytest.approx(b_target, rel=0.15)
    assert plan.batch_size % 8 == 0 and abs(plan.batch_size - b_target) < 0.15 * b_target
    # the lr is the law's at that batch, with B_noise grown by the same factor as B_simple
    grown = B_NOISE * plan.b_noise_target / (500 * (np.mean(plan.eta_table["loss"]) / 3) ** -4)
    assert plan.lr == pytest.approx(true_eta("sign", plan.batch_size, b_noise=grown), rel=0.15)
    capped = transfer(synth("sign", noise=True), 1024, target_batch="auto", max_batch=256)
    assert capped.batch_size == 256 and has(capped, "capped by max_batch=256")


def test_fixed_batch_without_law_uses_the_swept_eta():
    plan = transfer(synth("sign", batches=(64,)), 1024)
    assert plan.batch_size == 64 and plan.law is None
    assert plan.lr == pytest.approx(true_eta("sign", 64), rel=0.10)
    moved = transfer(synth("sign", batches=(32, 64)), 1024, target_batch=128)
    assert has(moved, "too few to fit the eta*(B) law") and has(moved, "128 was not swept")
    with pytest.raises(ValueError, match="target_batch='auto' needs noise statistics"):
        transfer(synth("sign", batches=(64,)), 1024, target_batch="auto")


# ----- edge cases -----

def test_single_width_assumes_invariance_and_says_so():
    plan = transfer(synth("sign", widths=(64,)), 1024, target_batch=64)
    assert plan.drift_slope is None and plan.predicted_loss is None
    assert has(plan, "no drift fit", "assuming muP's width invariance")
    assert plan.lr == pytest.approx(true_eta("sign", 64), rel=0.10)
    with pytest.raises(ValueError, match="correct_drift=True needs eta\\* at >= 2 proxy widths"):
        transfer(synth("sign", widths=(64,)), 1024, correct_drift=True)


def test_too_few_trials_near_the_optimum():
    two = pd.DataFrame({"width": 64, "batch_size": 32, "lr": [1e-3, 2e-3, 1e-3], "loss": [2.0, 1.9, 2.05]})
    with pytest.raises(ValueError, match="too few trials near the optimum.*2 distinct lr"):
        transfer(two, 256)
    sparse = pd.DataFrame({"width": 64, "batch_size": 32, "lr": [1e-5, 1e-3, 1e-1], "loss": [2.5, 2.0, 2.4]})
    plan = transfer(sparse, 256)
    assert has(plan, "too few trials near the optimum", "sample more lrs")


@pytest.mark.parametrize("span, side", [((-3.25, -0.9), "higher"), ((1.1, 3.25), "lower")])
def test_optimum_at_range_edge_says_which_way_to_widen(span, side):
    plan = transfer(synth("sign", widths=(64,), batches=(64,), span=span), 256)
    assert has(plan, f"widen the lr range {side}")


def test_optimum_at_divergence_edge():
    df = synth("sign", widths=(64,), batches=(64,), span=(-3.25, 0.1)).assign(diverged=False)
    top = df["lr"].max() * 2
    df = pd.concat([df, pd.DataFrame([{**df.iloc[-1].to_dict(), "lr": top, "loss": 9.0, "diverged": True}])])
    plan = transfer(df, 256)
    assert has(plan, "largest that did not diverge", "stability edge")
    assert plan.diagnostics["dropped"] == {"diverged": 1} and plan.diagnostics["trials"] == len(df) - 1


def _study(name="proxy-w64", width=64, scheme="mup", optimizer="adamw", lrs=(1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
           states=None):
    study = optuna.create_study(study_name=name, direction="minimize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)}
    for i, lr in enumerate(lrs):
        state = (states or {}).get(i, optuna.trial.TrialState.COMPLETE)
        done = state == optuna.trial.TrialState.COMPLETE
        attrs = {"width": width, "batch_size": 32, "scheme": scheme, "optimizer": optimizer,
                 "diverged": False, "seed": i, "tokens": 32 * 100 * 16,
                 "config": {"train": {"steps": 100, "betas": [0.9, 0.95], "weight_decay": 0.1},
                            "model": {"base_width": 32}}}
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions=dist, user_attrs=attrs, state=state,
            value=2.0 + 0.1 * (math.log2(lr) - math.log2(4e-3)) ** 2 if done else None))
    return study


def test_study_from_another_scheme_or_optimizer_is_an_error():
    with pytest.raises(ValueError, match="study proxy-w64 swept scheme 'sp' but the target asks for 'mup'"
                                         ".*\\[parametrization\\] scheme"):
        transfer(_study(scheme="sp"), 256, scheme="mup")
    with pytest.raises(ValueError, match="swept optimizer 'sgd' but the target asks for 'adamw'"):
        transfer(_study(optimizer="sgd"), 256, optimizer="adamw")
    with pytest.raises(ValueError, match="the trials mix schemes"):
        transfer([_study(), _study("proxy-w128", 128, scheme="sp")], 256)


def test_empty_or_failed_study_is_an_error():
    with pytest.raises(ValueError, match="study 'empty' has no trials; run `mutransfer sweep"):
        transfer(optuna.create_study(study_name="empty"), 256)
    failed = _study(states={i: optuna.trial.TrialState.FAIL for i in range(4)} | {4: optuna.trial.TrialState.PRUNED})
    with pytest.raises(ValueError, match="no usable trials \\(dropped: 4 FAIL, 1 PRUNED\\)"):
        transfer(failed, 256)
    with pytest.raises(ValueError, match="lacks columns \\['loss'\\]"):
        transfer(pd.DataFrame({"width": [64], "lr": [1e-3], "batch_size": [8]}), 256)


def test_studies_read_as_trials_and_transfer():
    study = _study(states={5: optuna.trial.TrialState.PRUNED}, lrs=(1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3e-2))
    df = trials_frame([study, _study("proxy-w128", 128)])
    assert len(df) == 10 and df.attrs["dropped"]["PRUNED"] == 1
    assert set(df["width"]) == {64, 128} and (df["beta1"] == 0.9).all()
    plan = transfer([study, _study("proxy-w128", 128)], 256, tokens=32 * 100 * 16 * 4)
    assert plan.lr == pytest.approx(4e-3, rel=0.05)
    assert plan.scheme == "mup" and plan.optimizer_name == "adamw" and plan.base_width == 32
    assert plan.steps == 400 and plan.weight_decay == pytest.approx(0.1 / 4, rel=0.1)
    assert has(plan, "eta* usually falls for longer training")


@pytest.mark.parametrize("kwargs, match", [
    ({"target_width": 0}, "target_width must be a positive int; got 0"),
    ({"target_batch": "big"}, "target_batch must be a positive int, 'auto' or None; got 'big'"),
    ({"scheme": "mu-p"}, "unknown scheme 'mu-p'"),
])
def test_bad_arguments(kwargs, match):
    args = {"target_width": 256, **kwargs}
    with pytest.raises(ValueError, match=match):
        transfer(synth("sign", widths=(64,), batches=(64,)), **args)


# ----- the plan object -----

def test_plan_json_round_trip_and_summary():
    plan = transfer(synth("sign", noise=True), 1024, target_batch="auto")
    again = TransferPlan.from_json(plan.to_json())
    assert again == plan
    text = plan.summary()
    for word in ("lr", "batch_size", "sign", "eta* per proxy", "drift"):
        assert word in text


def _mlp(width):
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 4))


def test_group_lrs_and_optimizer_follow_the_parametrization():
    plan = transfer(synth("sign", widths=(64,), batches=(64,)), 256)
    model, base = _mlp(256), _mlp(64)
    before = [p.detach().clone() for p in model.parameters()]
    table = plan.group_lrs(model, base)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # untouched
    hidden = table[table["role"] == "hidden"]
    assert np.allclose(hidden["lr"], plan.lr * 64 / 256)
    assert np.allclose(plan.group_lrs(_mlp, base=64)["lr"], table["lr"])
    opt = plan.optimizer(model, base, weight_decay=0.01)
    assert isinstance(opt, torch.optim.AdamW)
    group_lrs = np.unique(np.round([g["lr"] for g in opt.param_groups], 12))
    assert np.allclose(group_lrs, np.unique(np.round(table["lr"], 12)))
    assert np.allclose([g["lr"] * g["weight_decay"] for g in opt.param_groups], plan.lr * 0.01)
    with pytest.raises(TypeError, match="pass base="):
        plan.optimizer(model)


# ----- the command -----

def test_command_writes_the_plan(tmp_path, capsys):
    from mutransfer.cli import transfer as command

    config = tmp_path / "proxy.toml"
    config.write_text('name = "proxy"\n[model]\nfactory = "mutransfer.zoo:mlp"\nwidth = 256\nbase_width = 32\n'
                      '[data]\nsource = "synthetic"\n[train]\n[parametrization]\nscheme = "mup"\n'
                      '[sweep]\n[sweep.space]\nlr = {low = 1e-4, high = 1e-1, log = true}\n')
    url = f"sqlite:///{tmp_path / 'study.db'}"
    for width in (64, 128):
        study = optuna.create_study(study_name=f"proxy-w{width}", storage=url)
        for t in _study(width=width).get_trials():
            study.add_trial(t)
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    out = tmp_path / "plan.json"
    args = parser.parse_args(["transfer", str(config), "--storage", url, "--out", str(out)])
    assert args.func(args) == 0
    plan = TransferPlan.from_json(out.read_text())
    assert plan.target_width == 256 and plan.lr == pytest.approx(4e-3, rel=0.05)
    assert "mutransfer transfer plan" in capsys.readouterr().out
    bad = parser.parse_args(["transfer", str(config), "--storage", url, "--studies", "nope"])
    with pytest.raises(ValueError, match="no study 'nope' in .*studies there: \\['proxy-w128', 'proxy-w64'\\]"):
        bad.func(bad)


def test_laws_round_trip_and_momentum():
    assert laws.momentum_c(0.9) == pytest.approx(0.1 / 1.9)
    with pytest.raises(ValueError, match="beta1 \\(momentum\\) must be a number in \\[0, 1\\)"):
        laws.momentum_c(1.0)
    lb = np.log2(np.array(BATCHES, float) / laws.momentum_c(BETA1))
    for law in ("sgd", "sign", "surge"):
        truth = np.log2([[ETA_MAX, B_NOISE]])
        y = laws.law_log2_eta(law, lb, truth)
        assert np.allclose(2 ** y[0], true_eta(law, BATCHES))
        theta, chi2 = laws.fit_law(law, lb, y, np.ones(len(lb)))
        assert np.allclose(theta, truth, atol=1e-4) and chi2[0] < 1e-8


def test_plot_transfer_draws_the_plan_and_refuses_an_empty_one(tmp_path):
    from mutransfer.validation import plot_transfer

    plan = transfer(synth("sign"), 1024)
    path = plot_transfer(plan, tmp_path / "plan.png")
    assert path.stat().st_size > 20_000
    with pytest.raises(ValueError, match="no eta\\* per proxy"):
        plot_transfer(TransferPlan(lr=1e-3, lr_interval=(1e-3, 1e-3), batch_size=8, target_width=64),
                      tmp_path / "empty.png")


def _with_settings(study_args=(), **param):
    """A proxy study whose trials ran with ``[parametrization]`` / ``[train]`` settings ``param``."""
    study = _study(*study_args)
    out = optuna.create_study(study_name=study.study_name, direction="minimize")
    for t in study.trials:
        cfg = {**t.user_attrs["config"], "parametrization": {k: v for k, v in param.items() if k != "wd_policy"}}
        if "wd_policy" in param:
            cfg["train"] = {**cfg["train"], "wd_policy": param["wd_policy"]}
        out.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value,
                                                user_attrs={**t.user_attrs, "config": cfg}))
    return out


def test_the_plan_records_every_setting_and_round_trips_them():
    plan = transfer(_with_settings(readout="zero", wd_policy="coupled"), 256)
    assert (plan.scheme, plan.optimizer_name, plan.readout, plan.wd_policy) == ("mup", "adamw", "zero", "coupled")
    again = TransferPlan.from_json(plan.to_json())
    assert again == plan and again.settings()["readout"] == "zero"


def test_an_old_plan_file_gets_the_settings_it_trained_with():
    import json

    data = json.loads(TransferPlan(lr=1e-3, lr_interval=(1e-3, 2e-3), batch_size=16, target_width=256,
                                   scheme="mup", optimizer_name="muon").to_json())
    for key in ("readout", "wd_policy", "muon_scale"):
        data.pop(key)
    old = TransferPlan.from_json(json.dumps(data))
    assert (old.readout, old.wd_policy, old.muon_scale) == ("init", "fixed_product", "spectral")


def test_mixed_settings_and_a_plan_without_a_scheme_are_refused():
    with pytest.raises(ValueError, match=r"the trials mix readout \['init', 'zero'\]; give transfer\(\) only"):
        transfer([_with_settings(readout="zero"), _with_settings(("proxy-w128", 128), readout="init")], 256)
    bare = TransferPlan(lr=1e-3, lr_interval=(1e-3, 2e-3), batch_size=16, target_width=256)
    with pytest.raises(ValueError, match=r"this plan records no scheme .*: pass scheme="):
        bare.settings()
    assert bare.settings(scheme="spectral")["scheme"] == "spectral"
    plan = dataclasses.replace(bare, scheme="mup", optimizer_name="adamw", wd_policy="fixed_product")
    with pytest.raises(ValueError, match=r"scheme='sp' but this plan's lr was transferred for scheme 'mup'"):
        plan.settings(scheme="sp")
    from mutransfer.models import zoo

    model, base = zoo.mlp(64), zoo.mlp(16)
    with pytest.raises(ValueError, match=r"wd_policy='independent' but this plan's weight decay was "
                                         r"transferred under wd_policy 'fixed_product'"):
        plan.optimizer(model, base, wd_policy="independent")


def test_a_ready_plan_of_another_readout_is_refused():
    from mutransfer import parametrize
    from mutransfer.models import zoo

    plan = TransferPlan(lr=1e-3, lr_interval=(1e-3, 2e-3), batch_size=16, target_width=64, scheme="mup",
                        optimizer_name="adamw", readout="zero")
    ready = parametrize(zoo.mlp(64), zoo.mlp(16), scheme="mup")  # readout "init"
    with pytest.raises(ValueError, match=r"the Plan was parametrized with readout 'init' but this lr was "
                                         r"transferred for readout 'zero'"):
        plan.optimizer(ready)
    built = plan._plan_for(zoo.mlp(64), zoo.mlp(16), None, None, copy_model=True)
    assert built.readout == "zero"


def test_independent_weight_decay_is_not_divided_by_the_lr_ratio():
    """Under wd_policy "independent" a group decays by wd x schedule per step, whatever its lr:
    moving the lr leaves the weight decay alone (only its share of training changes)."""
    kept = transfer(_with_settings(wd_policy="independent"), 256, tokens=32 * 100 * 16)
    fixed = transfer(_with_settings(wd_policy="fixed_product"), 256, tokens=32 * 100 * 16)
    ratio = fixed.lr / fixed.diagnostics["lr_proxy"]
    assert kept.weight_decay == pytest.approx(0.1)
    assert fixed.weight_decay == pytest.approx(0.1 / ratio)
