"""The loss surface at one budget and the batch menu read off it (issue 28, items 2 and 4): on
synthetic landscapes with a known truth the surface recovers the eta*(B) slope and the best batch
with bootstrap intervals that cover, the menu's costs match the analytic ones,
recommended_batch takes the largest batch within eps and never an extrapolated one, and bad
input is refused with a message naming the fix."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import mutransfer.projection as projection
from mutransfer.projection import BestBatch, Estimate, LossSurface, batch_menu, fit_loss_surface, recommended_batch

# L = a(y) + c(y) (x - x*(y))^2: eta* rises half an octave per doubling of B, the best-lr loss is
# lowest at B = 2^(-q1 / (2 q2)) = 16, and the curvature grows with the batch (r1 > 0).
TRUTH = {"q0": 3.0, "q1": -0.08, "q2": 0.01, "p0": -9.0, "p1": 0.5, "r0": np.log(0.03), "r1": 0.1}
BEST = 16.0
BATCHES = (2, 4, 8, 16, 32, 64)


def a_true(batch, t=TRUTH):
    y = np.log2(np.asarray(batch, float))
    return t["q0"] + t["q1"] * y + t["q2"] * y ** 2


def landscape(seed: int = 0, *, sd: float = 0.01, batches=BATCHES, step: float = 0.5, seeds: int = 2,
              truth=TRUTH) -> pd.DataFrame:
    """A trials frame on the truth: an lr grid of ``step`` octaves around each batch's eta*
    (offset a quarter octave, so the grid never sits on it), ``seeds`` repeats, Gaussian noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in batches:
        y = np.log2(b)
        centre = truth["p0"] + truth["p1"] * y
        for x in centre + 0.25 + np.arange(-2.5, 2.5 + 1e-9, step):
            for s in range(seeds):
                c = np.exp(truth["r0"] + truth["r1"] * y)
                loss = a_true(b, truth) + c * (x - centre) ** 2 + rng.normal(0, sd)
                rows.append({"lr": 2.0 ** x, "batch_size": b, "loss": loss, "seed": s})
    return pd.DataFrame(rows)


def test_the_surface_is_public_and_fits_the_truth_without_noise():
    assert {"fit_loss_surface", "LossSurface", "batch_menu", "recommended_batch"} <= set(projection.__all__)
    s = fit_loss_surface(landscape(sd=0.0), n_boot=20)
    assert isinstance(s, LossSurface) and s.n_boot == 20 and s.params.shape == (21, 7)
    assert np.allclose(s.params[0], [TRUTH[k] for k in ("q0", "q1", "q2", "p0", "p1", "r0", "r1")], atol=1e-6)
    assert s.rms < 1e-8 and s.batches == BATCHES
    est = s.eta_star(32)
    assert isinstance(est, Estimate) and est.value == pytest.approx(-9.0 + 0.5 * 5, abs=1e-6)
    assert s.loss(8).value == pytest.approx(a_true(8), abs=1e-6)
    assert s.predict(2.0 ** -6, 16) == pytest.approx(a_true(16) + np.exp(TRUTH["r0"] + 4 * TRUTH["r1"]), abs=1e-6)
    best = s.best_batch()
    assert isinstance(best, BestBatch) and best.batch == pytest.approx(BEST, rel=1e-4) and not best.at_edge


def test_slope_eta_star_and_best_batch_intervals_cover_the_truth_over_20_seeds():
    slope = eta = batch = 0
    slopes, bests = [], []
    for k in range(20):
        s = fit_loss_surface(landscape(k), n_boot=200, seed=k)
        lo, hi = np.nanpercentile(s.params[1:, 4], [2.5, 97.5])
        slope += lo <= TRUTH["p1"] <= hi
        e = s.eta_star(8)
        eta += e.low <= TRUTH["p0"] + 3 * TRUTH["p1"] <= e.high
        b = s.best_batch()
        batch += b.low <= BEST <= b.high
        slopes.append(s.params[0, 4])
        bests.append(b.batch)
    assert slope >= 16 and eta >= 16 and batch >= 16, (slope, eta, batch)
    assert abs(np.median(slopes) - TRUTH["p1"]) < 0.03
    assert abs(np.log2(np.median(bests) / BEST)) < 0.15


def test_a_best_batch_at_the_edge_is_flagged():
    truth = dict(TRUTH, q1=0.02, q2=0.0)  # the loss rises with the batch: the smallest is best
    b = fit_loss_surface(landscape(sd=0.002, truth=truth), n_boot=50).best_batch()
    assert b.at_edge and b.batch == pytest.approx(2.0)


def test_two_batches_fit_two_parabolas():
    s = fit_loss_surface(landscape(sd=0.0, batches=(8, 32)), n_boot=10)
    assert s.params[0, 2] == 0.0  # q2: two batches fix only a line in y
    assert s.eta_star(8).value == pytest.approx(TRUTH["p0"] + 3 * TRUTH["p1"], abs=1e-6)
    assert s.loss(32).value == pytest.approx(a_true(32), abs=1e-6)


def test_diverged_trials_are_dropped_and_the_fit_is_fast():
    frame = landscape(3)  # 6 batches x 11 lrs x 2 seeds; ~108 in the window
    frame.loc[frame.index[:3], "loss"] = [np.nan, np.inf, np.nan]
    start = time.perf_counter()
    s = fit_loss_surface(frame, n_boot=200)
    assert time.perf_counter() - start < 1.0
    assert 80 <= s.n_fit <= 130 and np.isfinite(s.params).all()


def test_menu_costs_match_the_analytic_surface():
    s = fit_loss_surface(landscape(1, sd=0.001), n_boot=100)
    menu = batch_menu(s)
    assert menu["batch"].tolist() == [2, 4, 8, 16, 32, 64, 128]  # smallest swept to 8x the best
    analytic = 100 * (a_true(menu["batch"]) - a_true(BEST)) / a_true(BEST)
    assert np.allclose(menu["cost_pct"], analytic, atol=0.03)
    assert (menu["cost_low"] <= menu["cost_pct"] + 1e-9).all() and (menu["cost_pct"] <= menu["cost_high"] + 1e-9).all()
    assert np.allclose(menu["log2_lr"], TRUTH["p0"] + TRUTH["p1"] * np.log2(menu["batch"]), atol=0.03)
    assert np.allclose(np.log2(menu["lr"]), menu["log2_lr"])
    assert (menu["lr_low"] <= menu["lr"]).all() and (menu["lr"] <= menu["lr_high"]).all()
    assert menu["extrapolated"].tolist() == [False] * 6 + [True]
    assert menu["within_eps"].tolist() == (analytic <= 0.5).tolist()
    custom = batch_menu(s, [1, 24, 16], eps=0.01)
    assert custom["batch"].tolist() == [1, 16, 24] and custom["extrapolated"].tolist() == [True, False, False]
    assert custom.attrs["eps"] == 0.01


def test_recommended_batch_is_the_largest_within_eps_and_never_extrapolated():
    menu = batch_menu(fit_loss_surface(landscape(1, sd=0.001), n_boot=50))
    costs = dict(zip(menu["batch"], menu["cost_pct"]))  # 8: 0.35, 16: 0, 32: 0.35, 64: 1.4 (%)
    assert recommended_batch(menu) == max(b for b, c in costs.items() if c <= 0.5) == 32
    assert recommended_batch(menu, eps=0.02) == 64  # 128 costs less than 5% but is extrapolated
    assert costs[128] < 5 and recommended_batch(menu, eps=0.05) == 64
    flat = batch_menu(fit_loss_surface(landscape(2, sd=0.001, truth=dict(TRUTH, q1=0.0, q2=0.0)), n_boot=50),
                      [16, 64, 256, 1024])
    assert flat.loc[flat["batch"] == 1024, "cost_pct"].item() < 0.5  # cheap, but beyond the sweep
    assert recommended_batch(flat) == 64
    hand = pd.DataFrame({"batch": [8, 16, 32], "cost_pct": [0.9, 0.7, 0.6], "extrapolated": [False, False, True]})
    assert recommended_batch(hand) == 16  # none within eps: the cheapest inside the sweep
    with pytest.raises(ValueError, match="outside the swept batches"):
        recommended_batch(hand[hand["extrapolated"]])
    with pytest.raises(ValueError, match=r"eps is a relative loss cost in \[0, 1\)"):
        recommended_batch(menu, eps=5)


def test_refusals_name_the_fix():
    frame = landscape(0)
    with pytest.raises(ValueError, match="each batch needs >= 3 lrs.*sweep more lrs there, or drop the batch"):
        fit_loss_surface(frame[~((frame.batch_size == 8) & (frame.lr < 2.0 ** -5.5))])
    with pytest.raises(ValueError, match="needs >= 2; sweep more batch sizes"):
        fit_loss_surface(frame[frame.batch_size == 8])
    with pytest.raises(ValueError, match="no finite loss.*lower the lr range"):
        fit_loss_surface(frame.assign(loss=np.nan))
    with pytest.raises(ValueError, match="lacks column.*batch_size.*trials_frame"):
        fit_loss_surface(frame.drop(columns="batch_size"))
    with pytest.raises(ValueError, match=r"several values of budget.*frame\[frame.budget == "):
        fit_loss_surface(frame.assign(budget=np.where(frame.seed == 0, 1e6, 2e6)))
    concave = frame.assign(loss=2 * a_true(frame.batch_size) - frame.loss)
    with pytest.raises(ValueError, match="not convex in the lr.*extend the lr range"):
        fit_loss_surface(concave)
    with pytest.raises(ValueError, match=r"eps is a relative loss cost"):
        batch_menu(fit_loss_surface(frame, n_boot=5), eps=-1)
    with pytest.raises(ValueError, match="batches must be positive"):
        batch_menu(fit_loss_surface(frame, n_boot=5), [0, 8])
    with pytest.raises(TypeError, match="LossSurface from fit_loss_surface"):
        batch_menu(frame)
