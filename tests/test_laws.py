"""The laws transfer fits, one record each: every registered eta*(B) law recovers known
parameters, an unknown name is an error, a new law is one record, and the B_opt(D) law recovers
a known exponent with an interval that covers it."""
from __future__ import annotations

import numpy as np
import pytest

from mutransfer.projection import (LAWS, BudgetLaw, Law, fit_budget_law, fit_law, fit_laws, law_log2_eta,
                                   momentum_c)

BATCHES = np.array([8, 16, 32, 64, 128, 256, 512], float)
LB = np.log2(BATCHES / momentum_c(0.9))  # effective batches B / c, as transfer fits them
TRUTH = {"constant": [np.log2(3e-3)], "sgd": [np.log2(3e-3), np.log2(2000.0)],
         "sign": [np.log2(3e-3), np.log2(2000.0)], "surge": [np.log2(3e-3), np.log2(2000.0)]}


def test_every_registered_law_has_a_truth_here():
    assert set(LAWS) == set(TRUTH), "a new law needs a synthetic truth in this test"
    for name, law in LAWS.items():
        assert isinstance(law, Law) and law.name == name and law.formula
        assert law.n_params == len(TRUTH[name])


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_each_law_recovers_its_parameters_on_a_synthetic_curve(name):
    truth = np.array([TRUTH[name]])
    y = law_log2_eta(name, LB, truth)
    theta, chi2 = fit_law(name, LB, y, np.ones(len(LB)))
    assert np.allclose(theta, truth, atol=1e-4) and chi2[0] < 1e-8
    noisy = y + np.random.default_rng(0).normal(0, 0.02, (40, len(LB)))
    out = fit_laws(LB, noisy, np.full(len(LB), 1 / 0.02 ** 2))
    assert out["law"] == name
    assert np.allclose(np.median(out["fits"][name], 0), truth[0], atol=0.15)


@pytest.mark.parametrize("name", [n for n in sorted(TRUTH) if LAWS[n].jacobian is not None])
def test_each_laws_jacobian_is_its_derivative(name):
    theta = np.array([TRUTH[name]]) + 0.3
    J = LAWS[name].jacobian(LB, theta)
    h = 1e-6
    for k in range(LAWS[name].n_params):
        step = np.zeros_like(theta)
        step[0, k] = h
        numeric = (law_log2_eta(name, LB, theta + step) - law_log2_eta(name, LB, theta - step)) / (2 * h)
        assert np.allclose(J[..., k], numeric, atol=1e-6)


@pytest.mark.parametrize("call", [lambda: law_log2_eta("sgdd", LB, np.zeros((1, 2))),
                                  lambda: fit_law("linear", LB, np.zeros((1, len(LB))), 1.0)])
def test_an_unknown_law_is_an_error_naming_it_and_the_known_ones(call):
    with pytest.raises(ValueError, match=r"unknown batch law '(sgdd|linear)'; the known laws are "
                                         r"constant, sgd, sign, surge"):
        call()


def test_a_new_law_is_one_record(monkeypatch):
    """eta* = eta_1 B^s (a power law in B): log2 eta = t0 + s log2 B, linear in theta."""
    def start(lb, Y, W):
        from mutransfer.projection._laws import wls
        return wls(np.c_[np.ones_like(lb), lb], Y, W)

    power = Law("power", "eta_1 * B^s", log2_eta=lambda lb, t: t[:, :1] + t[:, 1:2] * np.asarray(lb)[None],
                start=start, jacobian=None, n_params=2, batch_params=(),
                uncentre=lambda t, c: np.c_[t[:, 0] - t[:, 1] * c, t[:, 1]])  # eta_1 at B = 1, not at the centre
    monkeypatch.setitem(LAWS, "power", power)
    y = -9.0 + 0.3 * LB[None]
    out = fit_laws(LB, y, np.ones(len(LB)))
    assert out["law"] == "power" and np.allclose(out["theta"][0], [-9.0, 0.3])
    assert np.allclose(law_log2_eta("power", LB, out["theta"]), y)


def _b_opt_replicates(budgets, p, seed, sigma=0.1, n_boot=200):
    """log2 B_opt = 2 + p log2(D / 1024) observed with N(0, sigma^2) octaves of noise per budget,
    and bootstrap-like replicates scattered the same way around the observation."""
    rng = np.random.default_rng(seed)
    x = np.log2(np.asarray(budgets, float) / 1024)
    data = 2 + p * x + rng.normal(0, sigma, len(x))
    return np.vstack([data, data + rng.normal(0, sigma, (n_boot, len(x)))])


def test_the_budget_law_recovers_a_known_exponent_with_an_interval_that_covers_it():
    budgets = [1024, 4096, 16384, 65536]
    law = fit_budget_law(budgets, _b_opt_replicates(budgets, 0.5, seed=0))
    assert isinstance(law, BudgetLaw) and law.formula == "B_opt = b0 * D^p"
    assert law.exponent[0] == pytest.approx(0.5, abs=0.05)
    lo, hi = law.exponent_interval
    assert lo < 0.5 < hi and hi - lo < 0.2
    assert 2 ** law.project(2 ** 20)[0] == pytest.approx(4 * 1024 ** 0.5, rel=0.3)  # 4 (D / 1024)^0.5
    assert [r["budget"] for r in law.records()] == budgets
    assert any("B_opt ~ D^0.5" in n for n in law.notes(2 ** 20))
    assert not any("not resolved" in n for n in law.notes(2 ** 20))
    covered = 0
    for seed in range(20):
        lo, hi = fit_budget_law(budgets, _b_opt_replicates(budgets, 0.5, seed)).exponent_interval
        covered += lo <= 0.5 <= hi
    assert covered >= 16, covered


def test_the_budget_law_says_when_there_is_no_trend_an_edge_or_a_far_projection():
    budgets = [1024, 4096, 16384]
    law = fit_budget_law(budgets, _b_opt_replicates(budgets, 0.0, seed=1, sigma=0.3), at_edge=[False, True, False])
    notes = law.notes(2 ** 20)
    assert any("trend in D is not resolved" in n for n in notes)
    assert any("rests on budgets 4.1e+03 whose optimum sits at a swept batch's edge" in n for n in notes)
    assert any("more than 4x beyond the swept budgets" in n for n in notes)
    assert law.records()[1]["at_edge"] and not law.records()[0]["at_edge"]


@pytest.mark.parametrize("budgets, log2_b_opt, match", [
    ([1024], [[2.0]], "budgets must be >= 2 increasing"),
    ([4096, 1024], [[2.0, 3.0]], "budgets must be >= 2 increasing"),
    ([1024, 4096], [[2.0, 3.0, 4.0]], "one column per budget"),
    ([1024, 4096], [[2.0, np.nan]], "must be finite"),
])
def test_the_budget_law_refuses_bad_input(budgets, log2_b_opt, match):
    with pytest.raises(ValueError, match=match):
        fit_budget_law(budgets, log2_b_opt)
