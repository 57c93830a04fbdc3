"""The teacher-student linear regression: its closed-form noise scales against sampled
gradients, train()'s noise meter and the eta*(B) law fit (issue 13, item 2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mutransfer.projection import _laws as laws
from mutransfer.training.teacher import LinearTeacher, simulate, train_students
from mutransfer.training._loop import train


def test_closed_form_noise_scales_match_sampled_gradients():
    t = LinearTeacher.make(dim=8, decay=1.0, noise=0.3, seed=1)
    w = np.full(8, 0.2)
    x, y = t.batch("train", 200_000, generator=torch.Generator().manual_seed(0))
    x, y = x.double().numpy(), y.double().numpy()[:, 0]
    g = x * (x @ w - y)[:, None]  # per-example gradients of (x^T w - y)^2 / 2
    G, S = g.mean(0), np.cov(g.T)
    h = t.spectrum
    assert np.trace(S) / (G @ G) == pytest.approx(t.b_simple(w), rel=0.05)
    assert np.trace(h[:, None] * S) / (G @ (h * G)) == pytest.approx(t.b_noise(w), rel=0.05)
    assert 0.5 * np.mean((x @ w - y) ** 2) == pytest.approx(t.population_loss(w), rel=0.02)


def test_b_simple_equals_b_noise_only_when_h_is_isotropic():
    iso, aniso = LinearTeacher.make(dim=16, decay=0.0), LinearTeacher.make(dim=16, decay=1.0)
    zero = np.zeros(16)
    assert iso.b_simple(zero) == pytest.approx(iso.b_noise(zero)) == pytest.approx(17.0)
    assert aniso.b_noise(zero) > 1.3 * aniso.b_simple(zero)


def test_train_noise_meter_recovers_the_exact_b_simple():
    """train()'s two-batch estimator (micro-batch 16 against batch 64) at a fixed point (lr ~ 0);
    unbiased but noisy: 2000 steps put it within ~5% here (seeds 0-5: 24.4 ... 27.1 of 25.7)."""
    t = LinearTeacher.make(dim=16, decay=1.0, noise=0.1, seed=0)
    model = nn.Linear(16, 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=1e-12)
    res = train(model, opt, t, steps=2000, batch_size=64, seq_len=None, grad_accum=4, clip=0.0,
                warmup=0, schedule="constant", measure_noise=True, noise_decay=0.999, device="cpu",
                eval_every=2000)
    assert res.noise["b_simple"] == pytest.approx(t.b_simple(np.zeros(16)), rel=0.10)
    assert res.noise["b_simple"] < 0.8 * t.b_noise(np.zeros(16))  # it is not B_noise when H != I


def test_law_fit_recovers_the_exact_b_noise_of_one_sgd_step():
    """eta*(B) of one SGD step is eta_max / (1 + B_noise / B) with B_noise = tr(H Sigma) / G^T H G:
    the quadratic optima and the law fit find it, and not B_simple."""
    t = LinearTeacher.make(dim=16, decay=1.0, noise=0.0, seed=0)
    zero = np.zeros(16)
    log2_lrs = np.log2(t.eta_max(zero)) + np.arange(-9, 2.01, 0.25)
    batches = 2 ** np.arange(0, 11)
    E = []
    for b in batches:
        loss = np.log(simulate(t, 2 ** log2_lrs, int(b), 1, repeats=128, seed=int(b)))
        E.append(laws.quadratic_optimum(np.repeat(log2_lrs, loss.shape[1]), loss.ravel(), window=1.5,
                                        rng=np.random.default_rng(0)).log2_lr)
    E = np.stack(E, 1)
    out = laws.fit_laws(np.log2(batches), E, 1 / np.maximum(E[1:].var(0), laws.VAR_FLOOR))
    assert out["law"] == "sgd"
    b_noise = 2 ** out["theta"][0, 1]
    assert b_noise == pytest.approx(t.b_noise(zero), rel=0.25), (b_noise, t.b_noise(zero), t.b_simple(zero))
    assert 2 ** out["theta"][0, 0] == pytest.approx(t.eta_max(zero), rel=0.25)


def test_simulate_and_students_check_their_arguments():
    t = LinearTeacher.make(dim=4)
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\), e.g. 0.9; got 1.0"):
        simulate(t, [0.1], 4, 10, momentum=1.0)
    with pytest.raises(ValueError, match="width must be a positive int; got 0"):
        train_students(t, 0, [0.1], 4, 10)
    with pytest.raises(ValueError, match="dim must be a positive int, e.g. 32; got 0"):
        LinearTeacher.make(dim=0)
