"""The risk-aware lr: on a lopsided landscape with an uncertain eta*, the lr of lowest expected
target loss, checked against answers computed independently."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mutransfer import TransferPlan, transfer
from mutransfer.projection._risk import Curve, expectile, fit_asymmetric, risk_aware

A_LEFT, A_RIGHT, X0 = 0.02, 0.2, -7.0  # a cliff: the loss rises 10x faster above eta*


def lopsided(x, x0=X0):
    d = np.asarray(x, float) - x0
    return 2.0 + np.where(d < 0, A_LEFT, A_RIGHT) * d ** 2


def test_the_fit_recovers_a_known_asymmetric_curve_and_its_vertex():
    rng = np.random.default_rng(0)
    x = np.repeat(np.arange(-10.0, -3.0, 0.5), 2)
    y = lopsided(x) + rng.normal(0, 0.003, len(x))
    curve = fit_asymmetric([x], [y], centers=[-7.3])  # a symmetric fit's eta* sits low: offset +0.3
    assert curve.a_left == pytest.approx(A_LEFT, rel=0.15) and curve.a_right == pytest.approx(A_RIGHT, rel=0.15)
    assert -7.3 + curve.offset == pytest.approx(X0, abs=0.06)


def test_a_symmetric_curve_is_read_as_symmetric():
    rng = np.random.default_rng(1)
    x = np.arange(-10.0, -3.9, 0.5)
    y = 2.0 + 0.08 * (x - X0) ** 2 + rng.normal(0, 0.01, len(x))
    curve = fit_asymmetric([x], [y], centers=[X0])
    assert curve.asymmetry == 1.0 and curve.offset == 0.0


def _gaussian_expectile(mu, sd, level):
    """The expectile of N(mu, sd) by quadrature on a fine grid (independent of the sample code)."""
    z = np.linspace(mu - 8 * sd, mu + 8 * sd, 200001)
    w = np.exp(-0.5 * ((z - mu) / sd) ** 2)
    lo, hi = mu - 3 * sd, mu + 3 * sd
    for _ in range(80):
        e = (lo + hi) / 2
        g = level * np.sum(w * np.clip(z - e, 0, None)) - (1 - level) * np.sum(w * np.clip(e - z, 0, None))
        lo, hi = (e, hi) if g > 0 else (lo, e)
    return (lo + hi) / 2


def test_the_risk_aware_lr_is_the_expectile_of_the_optimum_a_known_answer():
    rng = np.random.default_rng(2)
    reps = np.concatenate([[X0], rng.normal(X0, 0.3, 20000)])
    x, info = risk_aware(reps, Curve(A_LEFT, A_RIGHT, 0.0, 3, 3))
    truth = _gaussian_expectile(X0, 0.3, A_LEFT / (A_LEFT + A_RIGHT))
    assert x == pytest.approx(truth, abs=0.01) and x < X0 - 0.2
    assert expectile(reps[1:], 0.5) == pytest.approx(reps[1:].mean(), abs=1e-6)
    assert info["safe_excess"] < 0.6 * info["eta_excess"]


def sweeps(widths=(32, 64), seed=0):
    """Trials on the lopsided landscape at two widths (muP: eta* does not move), 2 seeds a point."""
    rng = np.random.default_rng(seed)
    rows = [{"width": w, "lr": 2 ** x, "batch_size": 16, "loss": float(lopsided(x)) - 0.05 * np.log2(w / 32)
             + rng.normal(0, 0.01), "scheme": "mup", "optimizer": "adamw"}
            for w in widths for x in np.arange(-10.0, -4.4, 0.5) for _ in range(2)]
    return pd.DataFrame(rows)


def test_transfer_recommends_the_risk_aware_lr_and_reports_both(tmp_path):
    plan = transfer(sweeps(), 256)
    # the symmetric fit's eta* sits on the gentle side of the true optimum X0; the recommended
    # lr corrects that, stays at or below X0 (the cliff is above) and trains a better target
    assert np.log2(plan.eta_star) < X0 - 0.3
    assert X0 - 0.3 < np.log2(plan.lr) <= X0 + 0.02
    assert lopsided(np.log2(plan.lr)) < lopsided(np.log2(plan.eta_star))
    risk = plan.diagnostics["risk"]
    assert risk["a_right"] / risk["a_left"] > 3 and risk["safe_excess"] < risk["eta_excess"]
    assert any("risk-aware lr" in w for w in plan.warnings)
    text = plan.summary()
    assert "lr (risk-aware)" in text and "eta* (projected)" in text
    back = TransferPlan.from_json(plan.to_json())
    assert (back.lr, back.eta_star) == (plan.lr, plan.eta_star)
    from mutransfer.validation import plot_transfer
    assert plot_transfer(plan, tmp_path / "plan.png").stat().st_size > 10000


def test_with_no_lopsidedness_the_lr_is_eta_star():
    rows = sweeps()
    rows["loss"] = 2.0 + 0.08 * (np.log2(rows["lr"]) - X0) ** 2 + np.random.default_rng(3).normal(0, 0.005, len(rows))
    plan = transfer(rows, 256)
    assert plan.lr == plan.eta_star
