"""The budget ladder (issue 28, items 1, 3, 4 and 6): on synthetic ladders with known laws in D the
fits recover eta* ~ D^x and B_eps ~ D^k with covering intervals; the plan reads the batch off the
menu at the target's budget, uses a rung there as it is, hands over a measured batch where the law is
unresolved, and round-trips through plan.json; the config key, the FLOPs and the refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mutransfer import TransferPlan
from mutransfer.projection import BudgetLadder, batch_menu, fit_ladder, recommended_batch, transfer
from mutransfer.runs import count_params, load_config, sweep_tokens, training_flops

ETA_D = -0.3  # log2 eta* falls 0.3 octave per doubling of the budget
BEST_D = 0.5  # the best batch grows like D^0.5
CURV_B = 0.02  # a(y) = A + CURV_B (y - y*(z))^2: B_eps = B* 2^sqrt(eps A / CURV_B), a power law in D
A, EPS = 2.0, 0.005
BUDGETS = (4096, 8192, 16384)


def truth(z: float, y) -> tuple[np.ndarray, np.ndarray]:
    """(best-lr loss a, log2 eta*) at z = log2 D, y = log2 B."""
    y_star = 2 + BEST_D * (z - 12)
    return A + CURV_B * (y - y_star) ** 2, -8 + 0.5 * (y - 2) + ETA_D * (z - 12)


def ladder_frame(seed: int = 0, sd: float = 0.002, budgets=BUDGETS, batches=(1, 2, 4, 8, 16, 32, 64)) -> pd.DataFrame:
    """Trials on the truth: a half-octave lr grid around each eta*, 2 seeds, Gaussian noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for D in budgets:
        z = np.log2(D)
        for B in batches:
            a, x0 = truth(z, np.log2(B))
            for x in x0 + 0.25 + np.arange(-2.0, 2.01, 0.5):
                for s in range(2):
                    loss = a + 0.05 * (x - x0) ** 2 + rng.normal(0, sd)
                    rows.append({"width": 32, "lr": 2.0 ** x, "batch_size": B, "loss": loss, "budget": D,
                                 "tokens": D, "steps": max(1, D // (B * 16)), "scheme": "spectral",
                                 "optimizer": "adamw", "seed": s})
    return pd.DataFrame(rows)


def eps_batch_true(z: float) -> float:
    """log2 B_eps: y* + sqrt(eps A / CURV_B)."""
    return 2 + BEST_D * (z - 12) + np.sqrt(EPS * A / CURV_B)


def test_the_laws_recover_their_exponents_with_intervals_that_cover():
    covered = {"eta": 0, "batch": 0}
    for seed in range(10):
        ladder = fit_ladder(ladder_frame(seed), n_boot=100, seed=seed)
        eta = ladder.eta_exponent(8)
        lo, hi = np.percentile(eta[1:], [2.5, 97.5])
        covered["eta"] += lo <= ETA_D <= hi
        blo, bhi = ladder.batch_law.exponent_interval
        covered["batch"] += blo - 0.02 <= BEST_D <= bhi + 0.02  # B_eps is scanned on a grid of 1/21 octave
        assert eta[0] == pytest.approx(ETA_D, abs=0.05) and ladder.batch_law.exponent[0] == pytest.approx(BEST_D, abs=0.06)
    assert covered["eta"] >= 8 and covered["batch"] >= 8, covered


def test_the_ladder_records_each_rung_and_projects_the_surface_between_and_beyond():
    ladder = fit_ladder(ladder_frame(), n_boot=50)
    assert isinstance(ladder, BudgetLadder) and ladder.budgets == BUDGETS and ladder.width == 32
    for r in ladder.records():
        z = np.log2(r["budget"])
        assert np.log2(r["best_batch"]) == pytest.approx(2 + BEST_D * (z - 12), abs=0.15)
        assert np.log2(r["eps_batch"]) == pytest.approx(eps_batch_true(z), abs=0.15)
        assert r["best_batch_low"] <= r["best_batch"] <= r["best_batch_high"] and not r["eps_at_edge"]
    assert ladder.surface_at(8192) is ladder.surfaces[1]  # a rung is used as it is
    z = np.log2(65536)
    assert ladder.log2_eta(4, 65536)[0] == pytest.approx(truth(z, 2)[1], abs=0.1)
    assert ladder.trial_tokens == pytest.approx(ladder_frame().tokens.sum())
    assert ladder.flops(1000) == pytest.approx(6 * 1000 * ladder.trial_tokens)


def test_transfer_reads_the_batch_off_the_menu_at_the_targets_budget():
    plan = transfer(ladder_frame(), 128, tokens=32768, proxy_params=1000, target_params=16000)
    z = np.log2(32768)  # best batch 2^3.5 = 11, B_eps 2^4.2 = 18: the largest power of 2 within eps is 16
    assert plan.batch_source == "law" and plan.batch_size == 16
    assert plan.batch_interval == plan.eps_batch_target_interval  # the B_eps law's at the target
    assert any(w.startswith("eta* at batch 16 ~ D^-0.29") or w.startswith("eta* at batch 16 ~ D^-0.30")
               for w in plan.warnings)
    assert np.log2(plan.lr) == pytest.approx(truth(z, 4)[1], abs=0.1)
    assert plan.lr_interval[0] <= plan.lr <= plan.lr_interval[1]
    menu = pd.DataFrame(list(plan.batch_menu))
    assert menu.batch.tolist()[:4] == [1, 2, 4, 8]
    a, _ = truth(z, np.log2(menu.batch.to_numpy(float)))
    inside = ~menu.extrapolated
    assert np.allclose(menu.cost_pct[inside], 100 * (a[inside] - A) / A, atol=0.15)
    assert plan.eps == EPS and plan.eps_batch_target == pytest.approx(2 ** eps_batch_true(z), rel=0.15)
    assert plan.compute["ladder_flops"] == pytest.approx(6 * 1000 * ladder_frame().tokens.sum())
    assert plan.compute["target_run_flops"] == pytest.approx(6 * 16000 * 32768)
    assert any("no rung at the target's budget 32768" in w and "FLOPs" in w for w in plan.warnings)
    text = plan.summary()
    assert "batch menu at 32768 tokens" in text and "B_eps ~ D^k" in text and "tuning compute" in text
    assert TransferPlan.from_json(plan.to_json()) == plan


def test_a_rung_at_the_targets_budget_is_used_as_it_is():
    frame = ladder_frame()
    plan = transfer(frame, 128, tokens=16384)
    own = batch_menu(fit_ladder(frame).surfaces[-1])
    assert plan.batch_source == "rung" and plan.batch_size == recommended_batch(own)
    assert not any("no rung" in w for w in plan.warnings)


def test_a_given_batch_keeps_the_ladders_lr_and_an_extrapolated_one_is_said():
    plan = transfer(ladder_frame(batches=(1, 2, 4, 8, 16)), 128, tokens=32768, target_batch=256)
    assert plan.batch_source == "given" and plan.batch_size == 256
    assert np.log2(plan.lr) == pytest.approx(truth(15, 8)[1], abs=0.3)
    assert any("batch 256 lies outside the swept batches" in w for w in plan.warnings)
    assert 256 in [r["batch"] for r in plan.batch_menu]


def test_the_ladder_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="needs trials at >= 2 token budgets"):
        fit_ladder(ladder_frame(budgets=(4096,)))
    with pytest.raises(ValueError, match="budget 8192 of the ladder: .* 1 batch size"):
        fit_ladder(ladder_frame().query("budget != 8192 or batch_size == 4"))
    with pytest.raises(ValueError, match="eps is a relative loss cost"):
        fit_ladder(ladder_frame(), eps=5)
    with pytest.raises(ValueError, match="eps is a relative loss cost"):
        transfer(ladder_frame(), 128, eps=-0.1)
    with pytest.raises(ValueError, match="record no token budget"):
        fit_ladder(ladder_frame().drop(columns="budget"))


def _toml(budgets: str, extra: str = "") -> str:
    return "\n".join(['name = "lad"', "[model]", 'factory = "mutransfer.zoo:mlp"', "width = 32", "base_width = 8",
                      "[data]", 'source = "synthetic"', "[train]", "tokens = 4096",
                      "[sweep]", 'sampler = "grid"', "trials = 12", f"budgets = {budgets}", "[sweep.space]",
                      "lr = [0.01, 0.02]", "batch_size = [4, 8]", extra, ""])


def test_sweep_budgets_is_the_ladder_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "lad.toml"
    path.write_text(_toml("[256, 512, 1024]"))
    cfg = load_config(path)
    assert cfg.sweep.space["tokens"] == [256, 512, 1024]
    assert sweep_tokens(cfg) == 4 * (256 + 512 + 1024)  # 2 lrs x 2 batches at each rung
    for bad, match in (("[256, 512]", "needs >= 3 budgets spanning >= 4x"),
                       ("[256, 384, 512]", "needs >= 3 budgets spanning >= 4x"),
                       ("[512, 256, 1024]", "must be increasing positive token counts"),
                       ("[256, 0, 1024]", "must be increasing positive token counts")):
        path.write_text(_toml(bad))
        with pytest.raises(ValueError, match=match):
            load_config(path)
    path.write_text(_toml("[256, 512, 1024]", "tokens = [256, 1024]"))
    with pytest.raises(ValueError, match="both set the budgets; keep one"):
        load_config(path)


def test_flops_count_the_models_parameters():
    import mutransfer.zoo as zoo

    cfg = load_config("sweeps/gpt-cpu-ladder.toml")
    n = count_params(cfg, 32)
    assert n == sum(p.numel() for p in zoo.gpt(width=32, depth=2, seq_len=64).parameters())
    assert count_params(cfg, 128) > 8 * n  # hidden matrices grow like width^2
    assert training_flops(n, 1000) == 6 * n * 1000
    assert sweep_tokens(cfg) == 7 * 5 * (49152 + 98304 + 196608)
    with pytest.raises(ValueError, match="width must be a positive int"):
        count_params(cfg, 0)


def test_a_rung_whose_best_batch_is_the_smallest_swept_leaves_the_batch_law_unresolved():
    frame = ladder_frame(batches=(8, 16, 32, 64, 128))  # at 4096 tokens the best batch, 4, lies below the grid
    plan = transfer(frame, 128, tokens=65536)
    assert plan.batch_source == "measured" and plan.batch_size == plan.ladder[-1]["best_batch"] // 1
    assert plan.menu_tokens == 16384 and "batch menu at 16384 (the largest rung" in plan.summary()
    assert any("at budget(s) 4096, 8192, 16384 the best batch is the smallest swept" in w and "bounded optimum" in w
               for w in plan.warnings)
