"""The batch side of the transfer plan (issue 13): the token budget ([train] tokens), the critical
batch in raw examples, and the timescale weight-decay policy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from test_transfer import has, synth

from mutransfer.runs import budget_steps, load_config
from mutransfer.runs import run_trial
from mutransfer.core._scaling import WD_POLICIES, group_weight_decay, timescale_weight_decay
from mutransfer.tuning._sweep import sweep
from mutransfer.projection._transfer import transfer
from mutransfer.tuning._trials import trials_frame

MLP = Path(__file__).resolve().parents[1] / "sweeps" / "mlp-synthetic.toml"
TINY = {"sweep.width": 16, "model.base_width": 8, "train.eval_batches": 1,
        "model.kwargs": {"depth": 2}, "sweep.space": {"lr": [1e-3, 1e-2]}}


def test_budget_steps_and_its_errors():
    assert budget_steps(65536, 16, 64) == 64
    assert budget_steps(1000, 3) == 333  # rounded to the nearest step
    with pytest.raises(ValueError, match="a budget of 100 tokens is less than one step of batch 32 x 64"):
        budget_steps(100, 32, 64)
    with pytest.raises(ValueError, match="tokens must be a positive int; got 0"):
        budget_steps(0, 32)


def test_config_steps_follow_the_budget_and_stay_put_without_one():
    cfg = load_config(MLP, TINY)
    assert cfg.train.tokens is None and cfg.steps_for(8) == cfg.steps_for(64) == cfg.train.steps
    budget = cfg.override({"train.tokens": 512})
    assert budget.tokens_per_example() == 1  # synthetic data: the budget counts examples
    assert [budget.steps_for(b) for b in (8, 16, 64)] == [64, 32, 8]
    assert budget.steps_for(8, tokens=1024) == 128  # a swept budget overrides the file's
    text = load_config(Path(MLP).parents[0] / "quickstart.toml", {"train.tokens": 64 * 64 * 10})
    assert text.tokens_per_example() == text.train.seq_len and text.steps_for(64) == 10
    with pytest.raises(ValueError, match=r"\[train\] tokens must be >= 1, got 0"):
        cfg.override({"train.tokens": 0})
    with pytest.raises(ValueError, match=r"\[train\] tokens must be an int, got 'lots'"):
        cfg.override({"train.tokens": "lots"})


def test_trials_spend_the_budget_and_record_it(tmp_path):
    cfg = load_config(MLP, {**TINY, "train.tokens": 256, "sweep.trials": 4, "sweep.sampler": "grid",
                            "sweep.space": {"lr": [1e-3, 1e-2], "batch_size": [8, 32]}})
    res = run_trial(cfg, {"lr": 1e-2, "batch_size": 32}, width=16, device="cpu", seed=0)
    assert res.steps == 8 and res.tokens == 256
    study = sweep(cfg, device="cpu", show_progress=False, reports_dir=tmp_path,
                  storage=f"sqlite:///{tmp_path / 'study.db'}")
    df = trials_frame(study)
    assert (df["budget"] == 256).all() and (df["tokens"] == 256).all()
    assert dict(zip(df["batch_size"], df["steps"])) == {8: 32, 32: 8}
    unset = run_trial(load_config(MLP, TINY), {"lr": 1e-2, "batch_size": 32}, width=16, device="cpu", seed=0)
    assert unset.steps == load_config(MLP, TINY).train.steps  # no budget: behaviour unchanged


def test_a_budget_with_too_few_batches_is_named():
    frame = synth("sign").assign(budget=lambda d: np.where(d.batch_size > 256, 2048, 1024))
    with pytest.raises(ValueError, match=r"budget 2048 of the ladder: the trials hold 1 batch size \(512\)"):
        transfer(frame, 1024)


def test_no_budget_means_no_compute_optimal_batch():
    plan = transfer(synth("sign"), 1024, target_batch=64)
    assert plan.budget is None and plan.compute_optimal_batch is None
    assert "needs a token budget" in plan.summary()


def test_a_compute_optimal_batch_at_either_end_of_the_swept_batches_is_flagged():
    larger_is_better = synth("sign").assign(budget=1 << 20)
    smaller_is_better = larger_is_better.assign(loss=lambda d: d.loss + 0.3 * np.log2(d.batch_size))
    up = transfer(larger_is_better, 1024, target_batch="auto")
    down = transfer(smaller_is_better, 1024, target_batch="auto")
    assert has(up, "largest swept batch", "may be larger") and not has(up, "may be smaller")
    assert has(down, "smallest swept batch", "may be smaller") and not has(down, "may be larger")
    assert down.compute_optimal_batch == min(smaller_is_better.batch_size)


# ----- the timescale weight-decay policy -----

def test_timescale_weight_decay_holds_tau():
    tau = lambda wd, lr, b, d: b / (lr * wd * d)  # noqa: E731  Power Lines' AdamW timescale
    wd = timescale_weight_decay(0.1, lr=1e-3, batch=32, tokens=1e6, new_lr=5e-4, new_batch=128, new_tokens=4e6)
    assert tau(wd, 5e-4, 128, 4e6) == pytest.approx(tau(0.1, 1e-3, 32, 1e6))
    assert wd == pytest.approx(0.1 * 4 * 2 / 4)
    # at fixed lr and budget the optimal decay scales linearly with the batch
    assert [timescale_weight_decay(0.1, lr=1e-3, batch=32, tokens=1e6, new_lr=1e-3, new_batch=b,
                                   new_tokens=1e6) for b in (16, 32, 64)] == pytest.approx([0.05, 0.1, 0.2])
    with pytest.raises(ValueError, match="new_batch must be a positive number; got 0"):
        timescale_weight_decay(0.1, lr=1e-3, batch=32, tokens=1e6, new_lr=1e-3, new_batch=0, new_tokens=1e6)


def test_timescale_policy_in_groups_config_and_transfer():
    assert "timescale" in WD_POLICIES
    assert group_weight_decay(0.1, 1e-3, 0.25, "timescale") == group_weight_decay(0.1, 1e-3, 0.25, "fixed_product")
    assert load_config(MLP, {**TINY, "train.wd_policy": "timescale"}).train.wd_policy == "timescale"
    frame = synth("sign").assign(weight_decay=0.1, steps=100, tokens=lambda d: 100 * d.batch_size)
    plain = transfer(frame, 1024, target_batch=64)
    held = transfer(frame, 1024, target_batch=64, wd_policy="timescale", tokens=100 * 256)
    best = frame.loc[frame[frame.width == 128].loss.idxmin()]
    expected = timescale_weight_decay(0.1, lr=best.lr, batch=best.batch_size, tokens=100 * best.batch_size,
                                      new_lr=held.lr, new_batch=64, new_tokens=100 * 256)
    assert held.wd_policy == "timescale" and held.weight_decay == pytest.approx(expected)
    assert plain.wd_policy is None and "(timescale)" in held.summary()
    with pytest.raises(ValueError, match="unknown wd_policy 'tau'"):
        transfer(frame, 1024, wd_policy="tau")


# ----- the critical batch: B_simple drives it; the law is compared in raw examples -----

C = (1 - 0.9) / (1 + 0.9)  # synth's beta1 = 0.9


def with_b_simple(frame, level):
    """Noise statistics with B_simple = ``level`` at every trial's loss (no loss dependence)."""
    return frame.assign(b_simple=level, noise_loss=frame["loss"])


def test_critical_batch_is_b_simple_and_the_law_is_compared_in_raw_examples():
    raw = 2000.0 * C  # synth's law: B_noise 2000 effective examples, i.e. 105 raw
    agree = transfer(with_b_simple(synth("sgd"), raw), 1024, target_batch="auto")
    assert agree.critical_batch == pytest.approx(raw, rel=0.05) == agree.b_noise_target
    assert agree.batch_size == 104 and not any("differ" in w for w in agree.warnings)
    # a B_simple equal to the effective-unit B_noise is 19x the raw bend: flagged, and the batch follows it
    apart = transfer(with_b_simple(synth("sgd"), 2000.0), 1024, target_batch="auto")
    assert any("c B_noise = 0.0526 x" in w and "differ 19x (the law's is smaller)" in w for w in apart.warnings), apart.warnings
    assert apart.critical_batch == pytest.approx(2000.0, rel=0.05)


def test_without_noise_statistics_the_critical_batch_is_the_laws_raw_bend():
    plan = transfer(synth("sgd"), 1024, target_batch="auto")
    assert plan.b_noise == pytest.approx(2000.0, rel=0.25)  # effective examples B / c
    assert plan.critical_batch == pytest.approx(plan.b_noise * C, rel=1e-6)
    assert plan.batch_size == 8 * round(plan.critical_batch / 8)


def test_explicit_steps_override_a_budget(tmp_path):
    from mutransfer.projection._target import train_target
    from mutransfer.projection._transfer_plan import TransferPlan

    cfg = load_config(MLP, {**TINY, "train.tokens": 4096})
    plan = TransferPlan(lr=1e-2, lr_interval=(1e-2, 1e-2), batch_size=32, target_width=16,
                        scheme="mup", optimizer_name="adamw", base_width=8)
    assert train_target(cfg, plan, steps=3, device="cpu").steps == 3
    assert train_target(cfg, plan, device="cpu").steps == 4096 // 32  # the budget, at the plan's batch


def _budget_sweeps(budgets=(1024, 4096, 16384), seed=0, b_opts=None, noise=0.002):
    """Trials at three budgets whose compute-optimal batch is known: B_opt(D) = 4 (D / 1024)^0.5
    (4, 8, 16) unless ``b_opts`` gives them, a sharp minimum in log2 B, and eta*(B) = 2^-8 sqrt(B / 4)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, D in enumerate(budgets):
        b_opt = 4 * (D / 1024) ** 0.5 if b_opts is None else b_opts[i]
        for B in (2, 4, 8, 16, 32, 64):
            x0 = -8 + 0.5 * np.log2(B / 4)
            for x in np.arange(x0 - 2.5, x0 + 2.6, 0.5):
                loss = 2.0 - 0.05 * np.log2(D) + 0.1 * (np.log2(B) - np.log2(b_opt)) ** 2 + 0.06 * (x - x0) ** 2
                for s in range(2):
                    rows.append({"width": 32, "lr": 2 ** x, "batch_size": B, "loss": loss + rng.normal(0, noise),
                                 "budget": D, "tokens": D, "steps": D // B, "scheme": "mup", "optimizer": "adamw"})
    return pd.DataFrame(rows)


def test_across_budgets_the_ladder_sets_the_batch_and_the_grid_optima_law_stays_a_diagnostic():
    plan = transfer(_budget_sweeps(), 64, tokens=65536, target_batch="auto")
    # the B_opt(D) law on grid optima (reports/gpt-cpu-budgets) is still fitted, as a diagnostic
    assert plan.budget_exponent == pytest.approx(0.5, abs=0.1)
    assert [round(r["b_opt"]) for r in plan.budgets] == pytest.approx([4, 8, 16], rel=0.3)
    assert plan.compute_optimal_batch == pytest.approx(32, rel=0.5)  # 4 (64)^0.5 at 65536 tokens
    assert not any("B_opt ~ D^" in w for w in plan.warnings)  # its notes no longer speak for the plan
    # the ladder: best batch 4 (D / 1024)^0.5 per rung, B_eps ~ D^0.5, the batch read off the menu
    assert [r["budget"] for r in plan.ladder] == [1024, 4096, 16384]
    assert [r["best_batch"] for r in plan.ladder] == pytest.approx([4, 8, 16], rel=0.05)
    assert plan.eps_batch_exponent == pytest.approx(0.5, abs=0.02) and plan.batch_source == "law"
    assert plan.batch_size == 32 and plan.eta_budget_exponent == pytest.approx(0.0, abs=0.02)
    from mutransfer import TransferPlan
    assert TransferPlan.from_json(plan.to_json()) == plan


def test_a_budget_law_without_a_trend_hands_over_the_measured_batch():
    noisy = _budget_sweeps(b_opts=(4, 8, 4), noise=0.02)  # B_opt up, then down: no power law in D
    plan = transfer(noisy, 64, tokens=65536, target_batch="auto", proxy_params=1000, target_params=16000)
    assert plan.batch_source == "measured" and plan.batch_size == 4  # the best at the largest rung
    assert any("the batch law is unresolved at 6.554e+04 tokens" in w and "no power law in D fits the rungs" in w
               and "[sweep] budgets += 65536" in w and "FLOPs" in w for w in plan.warnings)
    trend = transfer(_budget_sweeps(), 64, tokens=65536, target_batch="auto")
    assert not any("unresolved" in w for w in trend.warnings)
