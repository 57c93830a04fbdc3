"""depth_alpha = "auto" (issue 32, item 2): the sweep's depth probe trains the proxy at 4x its depth
under alpha 0, 1/2 and 1 around the handed-over lr; transfer keeps alpha 1/2 unless another rule wins
there by more than 1%, moves the lr by the depth exponent the probe's optimum measures, records the
evidence and the probe's compute in the plan, warns when the rule pays more than 1% or its optimum is
the probe grid's edge, and the target trains with the chosen rule."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mutransfer import TransferPlan, load_config
from mutransfer.projection import choose_depth_rule, run_depth_probe, train_target, transfer
from mutransfer.projection._depth_rule import edge_points, tuned_points
from mutransfer.runs import run_trial
from mutransfer.tuning import probe_points, probe_study_name, sweep
from tiny import tiny_depth_gpt


def probe(losses: dict[float, list[float]], lr: float = 2 ** -6) -> pd.DataFrame:
    """A probe frame: per alpha the losses at lr x 2^k, k = -2..2."""
    return pd.DataFrame([{"depth_alpha": a, "lr": lr * 2.0 ** k, "loss": v, "handed_lr": lr, "depth": 8}
                         for a, vs in losses.items() for k, v in zip(range(-2, 3), vs)])


def with_tuned(frame: pd.DataFrame, losses: dict[float, float]) -> pd.DataFrame:
    """The frame plus each alpha's run at its grid's fitted optimum (:func:`tuned_points`), at ``losses``."""
    at = {p["depth_alpha"]: p["lr"] for p in tuned_points(frame)}
    tuned = pd.DataFrame([{"depth_alpha": a, "lr": at[a], "loss": v, "handed_lr": 2 ** -6, "depth": 8, "kind": "tuned"}
                          for a, v in losses.items()])
    return pd.concat([frame.assign(kind="grid"), tuned], ignore_index=True)


def test_the_prior_alpha_is_kept_unless_another_wins_by_more_than_the_margin():
    frame = probe({0.0: [2.30, 2.20, 2.15, 2.12, 2.40],  # best at +1 octave: its handed-over loss is 2.15
                   0.5: [2.25, 2.16, 2.11, 2.14, 2.50],  # best at the handed-over lr: 2.11
                   1.0: [2.35, 2.22, 2.13, 2.10, 2.20]})  # reaches 2.10 tuned, 0.5% below alpha 1/2's 2.11
    rule = choose_depth_rule(frame, base_depth=2)  # no tuned runs: each rule at the handed-over lr
    assert rule.alpha == 0.5 and rule.probe_depth == 8 and rule.lr == 2 ** -6 and rule.lr_depth_exponent == 0.0
    regrets = {r["depth_alpha"]: r["regret_pct"] for r in rule.records}
    assert regrets[0.5] == pytest.approx(100 * (2.11 - 2.10) / 2.10)
    assert regrets[0.0] == pytest.approx(100 * (2.15 - 2.10) / 2.10)
    assert {r["depth_alpha"]: r["best_log2_lr"] for r in rule.records}[1.0] == pytest.approx(-5)
    assert "chose alpha 0.5 at the handed-over lr" in rule.notes()[0] and len(rule.notes()) == 1
    assert "alpha 0.5 unless another wins there by > 1%" in rule.notes()[0]
    assert rule.as_dict()["chosen"] == 0.5 and len(rule.as_dict()["candidates"]) == 3
    beaten = probe({0.0: [2.30, 2.20, 2.15, 2.12, 2.40], 0.5: [2.25, 2.16, 2.11, 2.14, 2.50],
                    1.0: [2.35, 2.22, 2.08, 2.10, 2.20]})  # alpha 1 at 2.08: 1.4% below 2.11
    assert choose_depth_rule(beaten, base_depth=2).alpha == 1.0
    without_prior = probe({0.0: [2.30, 2.20, 2.15, 2.12, 2.40], 1.0: [2.35, 2.22, 2.13, 2.10, 2.20]})
    assert choose_depth_rule(without_prior, base_depth=2).alpha == 1.0  # the lowest when 1/2 was not probed


def test_each_rule_moves_its_lr_by_the_exponent_its_probe_optimum_measures():
    frame = probe({0.0: [2.30, 2.20, 2.15, 2.12, 2.40], 0.5: [2.40, 2.30, 2.15, 2.08, 2.12],
                   1.0: [2.35, 2.22, 2.13, 2.10, 2.20]})
    at = {p["depth_alpha"]: p for p in tuned_points(frame)}
    assert at[0.5]["kind"] == "tuned" and -5 < np.log2(at[0.5]["lr"]) < -4  # between grid lrs, above the handed-over
    assert not any(p["at_edge"] for p in at.values())
    # the tuned run of alpha 1/2 loses to its plain grid run within noise: its fitted optimum still decides the lr
    rule = choose_depth_rule(with_tuned(frame, {0.0: 2.12, 0.5: 2.0801, 1.0: 2.10}), base_depth=2)
    s = (np.log2(at[0.5]["lr"]) + 6) / 2  # octaves over 2 doublings of depth
    assert rule.alpha == 0.5 and rule.lr_depth_exponent == pytest.approx(s)
    assert rule.lr_factor(16) == pytest.approx(8 ** s) and rule.regret_pct == pytest.approx(100 * 0.0001 / 2.08)
    assert f"alpha 0.5, lr x m_L^{s:+.2f}" in [r["rule"] for r in rule.records] and len(rule.records) == 6
    assert f"chose alpha 0.5 with the lr x (L / 2)^{s:+.2f}" in rule.notes()[0]
    worse = choose_depth_rule(with_tuned(frame, {0.0: 2.12, 0.5: 2.20, 1.0: 2.10}), base_depth=2)
    assert worse.alpha == 1.0 and worse.lr_depth_exponent != 0.0  # 2.10 beats alpha 1/2's 2.20 by > 1%


def test_warnings_when_no_rule_keeps_the_regret_under_one_percent_or_the_optimum_is_the_grid_edge():
    # every grid optimum lies between grid lrs, where the probe has no run: only the plain candidates
    frame = probe({0.0: [2.5, 2.4, 2.30, 2.22, 2.28], 0.5: [2.5, 2.4, 2.35, 2.10, 2.3], 1.0: [2.6, 2.5, 2.4, 2.35, 2.38]})
    rule = choose_depth_rule(frame, base_depth=2)
    assert rule.alpha == 0.0 and rule.regret_pct == pytest.approx(100 * 0.2 / 2.1)
    assert any("no depth rule keeps the regret at 8 blocks under 1%" in n and "[sweep] depth" in n
               for n in rule.notes())
    edge = probe({0.0: [2.5, 2.4, 2.3, 2.2, 2.1], 0.5: [2.5, 2.4, 2.3, 2.2, 2.05], 1.0: [2.6, 2.5, 2.4, 2.35, 2.3]})
    at = {p["depth_alpha"]: p for p in tuned_points(edge)}
    assert at[0.5]["at_edge"] and np.log2(at[0.5]["lr"]) == pytest.approx(-4)
    rule = choose_depth_rule(edge.assign(kind="grid"), base_depth=2)  # the edge run is a grid run
    assert rule.alpha == 0.5 and rule.lr_depth_exponent == pytest.approx(1.0)
    assert any("best lr at 8 blocks is the probe grid's edge" in n and "a bound, not a fit" in n for n in rule.notes())


def test_the_probe_refuses_what_it_cannot_judge():
    frame = probe({0.5: [2.2, 2.1, 2.0, 2.1, 2.2]})
    with pytest.raises(ValueError, match="no run of alpha 0.5 at the lr 0.1 "):
        choose_depth_rule(frame, base_depth=2, lr=0.1)
    with pytest.raises(ValueError, match="holds no finished runs"):
        choose_depth_rule(frame.iloc[:0], base_depth=2)
    with pytest.raises(ValueError, match="every depth-probe run diverged"):
        choose_depth_rule(frame.assign(loss=math.inf), base_depth=2)
    with pytest.raises(ValueError, match="handed-over lr must be a positive number"):
        probe_points(0.0)
    assert len(probe_points(0.01)) == 15


def test_config_takes_auto_and_refuses_other_words():
    assert load_config("sweeps/gpt-cpu.toml", {"parametrization.depth_alpha": "auto"}).parametrization.depth_alpha == "auto"
    with pytest.raises(ValueError, match="must be a number in \\[0, 1\\] or \"auto\""):
        load_config("sweeps/gpt-cpu.toml", {"parametrization.depth_alpha": "deep"})
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        load_config("sweeps/gpt-cpu.toml", {"parametrization.depth_alpha": 2.0})


def test_auto_sweeps_probes_transfers_and_trains_the_target_with_the_chosen_rule(tmp_path):
    cfg = tiny_depth_gpt("tiny-auto", **{"model.depth": 4, "model.base_depth": 1, "model.width": 32,
                                         "sweep.storage": f"sqlite:///{tmp_path}/s.db",
                                         "parametrization.depth_alpha": "auto"})
    study = sweep(cfg, device="cpu", show_progress=False, reports_dir=tmp_path)
    with pytest.raises(ValueError, match="no depth probe was given: `mutransfer sweep CONFIG` runs it"):
        transfer(study, 32, target_depth=4)
    probe_study = run_depth_probe(cfg, study, show_progress=False)
    assert probe_study.study_name == probe_study_name(cfg) == "tiny-auto-w16-depth-probe"
    trials = probe_study.get_trials(deepcopy=False)
    tuned = [t for t in trials if t.user_attrs["kind"] == "tuned"]  # one per alpha, unless its optimum is a grid lr
    beyond = [t for t in trials if abs(t.user_attrs["offset"]) > 2 and t.user_attrs["kind"] == "grid"]
    assert len(trials) == 15 + len(beyond) + len(tuned) and {t.user_attrs["depth"] for t in trials} == {4}
    assert len(beyond) <= 6  # an optimum at the grid's edge: an octave more, at most twice per alpha
    assert {t.user_attrs["depth_alpha"] for t in trials} == {0.0, 0.5, 1.0}
    assert len(run_depth_probe(cfg, study, show_progress=False).get_trials()) == len(trials)  # resumed: nothing re-run
    plan = transfer(study, 32, target_depth=4, depth_probe=probe_study)
    rule = plan.depth_rule
    assert plan.depth_alpha == rule["chosen"] in (0.0, 0.5, 1.0) and rule["probe_depth"] == 4
    assert rule["probe_flops"] > 0 and len(rule["candidates"]) == 6  # 3 alphas, each also with its lr moved
    assert plan.lr == pytest.approx(rule["lr"] * 4 ** rule["lr_depth_exponent"])  # (L / L0)^s, L / L0 = 4
    assert any("depth_alpha auto: the probe at 4 blocks" in w for w in plan.warnings)
    assert TransferPlan.from_json(plan.to_json()) == plan
    res = train_target(cfg, plan, device="cpu", progress=False)  # "auto" in the config: the plan's rule
    assert math.isfinite(res.final_loss)
    with pytest.raises(ValueError, match="depth_alpha = \"auto\" is chosen by the depth probe, not at 4 blocks"):
        run_trial(cfg, {"lr": 1e-3}, width=16, device="cpu", seed=0, depth=4)
    assert "depth rule" in plan.summary() and "chosen by the probe at 4 blocks" in plan.summary()


@pytest.mark.parametrize("alpha", ["auto", None])  # None: the default, which probes too
def test_the_sweep_command_runs_the_probe_and_transfer_reads_it(tmp_path, capsys, alpha):
    from mutransfer.cli import sweep as sweep_cmd
    from mutransfer.cli import transfer as transfer_cmd
    from mutransfer.runs import to_toml
    from tiny import run_command

    cfg = tiny_depth_gpt("cli-auto", **{"model.depth": 2, "model.base_depth": 1, "train.steps": 3,
                                        "train.eval_every": 3, "parametrization.depth_alpha": alpha})
    assert cfg.probes_depth() and not cfg.override({"parametrization.depth_alpha": 0.5}).probes_depth()
    assert not cfg.override({"model.depth": 1}).probes_depth()
    path = tmp_path / "cli-auto.toml"
    path.write_text(to_toml(cfg.to_dict()))
    reports = tmp_path / "reports"
    assert run_command(sweep_cmd, "sweep", str(path), "--reports", str(reports)) == 0
    out = capsys.readouterr().out
    assert "depth_alpha auto: the probe at 4 blocks" in out
    assert "depth probe: the proxy (width 16) at 4 blocks, 18 runs" in out and "x this sweep's" in out
    out = tmp_path / "plan.json"
    assert run_command(transfer_cmd, "transfer", str(path), "--reports", str(reports), "--out", str(out)) == 0
    plan = TransferPlan.from_json(out.read_text())
    assert plan.depth_rule["probe_depth"] == 4 and plan.target_depth == 2 and plan.depth_alpha == plan.depth_rule["chosen"]


def test_the_validation_experiment_trains_auto_and_the_default_and_writes_the_report(tmp_path, monkeypatch):
    import mutransfer.experiments.depth_auto as depth_auto
    from mutransfer.runs import to_toml
    from mutransfer.validation import validate

    cfg = tiny_depth_gpt("fam", **{"model.depth": 4, "model.base_depth": 1, "train.steps": 3,
                                   "train.eval_every": 3})
    config = tmp_path / "fam.toml"
    config.write_text(to_toml(cfg.to_dict()))
    reports = tmp_path / "reports"
    validate(cfg, widths=[16], schemes=["spectral"], optimizers=["adamw"], log2_lrs=[-10, -8, -6], seeds=2,
             depths=[1, 4], depth_alphas=[0, 0.5, 1], reports_dir=reports, device="cpu", show_progress=False)
    out = tmp_path / "auto"
    assert depth_auto.main(["run", "--config", str(config), "--out", str(out)]) == 0
    targets = pd.read_csv(out / "fam" / "targets.csv")
    assert sorted(targets.arm.unique()) == ["auto", "default"] and set(targets.seed) == {0, 1}
    assert (targets[targets.arm == "default"].depth_alpha == 0.5).all() and (targets.depth == 4).all()
    assert depth_auto.main(["write", "--configs", str(config), "--out", str(out), "--reports", str(reports)]) == 0
    text = (out / "index.md").read_text()
    assert "auto's regret" in text and "fixed alpha 1/2 regret" in text and "## The probe's candidates" in text
    assert depth_auto.main(["run", "--config", str(config), "--out", str(out)]) == 0  # resumes
    assert len(pd.read_csv(out / "fam" / "targets.csv")) == 4


def test_the_validation_retrains_an_arm_whose_plan_changed_and_keeps_its_earlier_rows(tmp_path):
    from mutransfer.experiments.depth_auto import _set_aside_earlier

    path = tmp_path / "targets.csv"
    pd.DataFrame([{"key": i, "arm": arm, "seed": s, "depth": 16, "depth_alpha": a, "log2_lr": x, "loss": 2.0}
                  for i, (arm, a, x, s) in enumerate([("auto", 0.0, -7.4, 0), ("auto", 0.0, -7.4, 1),
                                                      ("default", 0.5, -6.7, 0), ("default", 0.5, -6.7, 1)])]
                 ).to_csv(path, index=False)
    _set_aside_earlier(path, {(0, 0.5, -5.8), (1, 0.5, -6.7)}, ["auto", "default"])  # auto's plan moved
    kept, earlier = pd.read_csv(path), pd.read_csv(tmp_path / "targets-earlier.csv")
    assert list(kept.arm) == ["default", "default"] and list(kept.arm_id) == [1, 1] and "key" not in kept
    assert list(earlier.arm) == ["auto", "auto"] and list(earlier.log2_lr) == [-7.4, -7.4]
    _set_aside_earlier(path, {(1, 0.5, -6.7)}, ["auto", "default"])  # nothing stale: nothing moves
    assert len(pd.read_csv(path)) == 2 and len(pd.read_csv(tmp_path / "targets-earlier.csv")) == 2


def test_the_default_without_a_probe_gives_alpha_one_half_with_a_note_and_trains_the_probes_rule(tmp_path):
    cfg = tiny_depth_gpt("tiny-default", **{"model.depth": 4, "model.base_depth": 1, "train.steps": 3,
                                            "train.eval_every": 3, "sweep.storage": f"sqlite:///{tmp_path}/s.db"})
    assert cfg.parametrization.depth_alpha is None
    study = sweep(cfg, device="cpu", show_progress=False, reports_dir=tmp_path)
    plan = transfer(study, 16, target_depth=4)  # no probe: alpha 1/2 at the handed-over lr, said
    assert plan.depth_alpha is None and not plan.depth_rule
    assert any("no depth probe: the target (4 blocks against the proxy's 1) gets alpha 1/2" in w for w in plan.warnings)
    assert math.isfinite(run_trial(cfg, {"lr": 1e-3}, width=16, device="cpu", seed=0, depth=4).final_loss)
    frame = probe({0.0: [2.30, 2.20, 2.00, 2.12, 2.40], 0.5: [2.25, 2.16, 2.11, 2.14, 2.50],
                   1.0: [2.35, 2.22, 2.13, 2.10, 2.20]}, lr=plan.lr).assign(depth=4)
    ruled = transfer(study, 16, target_depth=4, depth_probe=frame)  # alpha 0 wins by 5%: trained with it
    assert ruled.depth_alpha == 0.0 and ruled.depth_rule["chosen"] == 0.0
    assert math.isfinite(train_target(cfg, ruled, device="cpu", progress=False).final_loss)
    with pytest.raises(ValueError, match="the plan's depth_alpha is 0.0 but the config trains depth_alpha 0.5"):
        train_target(cfg.override({"parametrization.depth_alpha": 0.5}), ruled, device="cpu", progress=False)


def test_an_optimum_at_the_probe_grids_edge_asks_for_one_octave_more():
    frame = probe({0.0: [2.5, 2.4, 2.3, 2.2, 2.1], 0.5: [2.25, 2.16, 2.11, 2.14, 2.50], 1.0: [2.0, 2.1, 2.2, 2.3, 2.4]})
    more = {p["depth_alpha"]: p for p in edge_points(frame)}
    assert sorted(more) == [0.0, 1.0]  # alpha 1/2's best is inside its grid
    assert (more[0.0]["offset"], more[1.0]["offset"]) == (3.0, -3.0) and more[0.0]["lr"] == pytest.approx(2 ** -3)
    assert more[1.0]["kind"] == "grid"
    extended = pd.concat([frame, pd.DataFrame([{"depth_alpha": 0.0, "lr": 2 ** -3, "loss": 2.3, "handed_lr": 2 ** -6,
                                                "depth": 8}])])
    assert 0.0 not in {p["depth_alpha"] for p in edge_points(extended)}  # bracketed now
