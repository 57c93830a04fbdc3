"""Muon: equality with torch.optim.Muon (keller rule), the Newton-Schulz band, the spectral-norm
size of one update, conv weights, the AdamW groups, bad input and state_dict round trips."""
from __future__ import annotations

import io
import math

import pytest
import torch

from mutransfer.optim._muon import Muon, default_ns_dtype, newton_schulz

BF16, FP32 = torch.bfloat16, torch.float32


def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def _assert_same_trajectory(opt, ours, ref, theirs, steps: int = 3) -> None:
    """Step both optimizers on the same gradients; the parameters must stay bit-identical."""
    for step in range(steps):
        _set_grads(ours, step)
        _set_grads(theirs, step)
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _set_grads(params, step, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def _keller(shape):
    return math.sqrt(max(1.0, shape[0] / shape[1]))


# (200, 200) twice: same-shaped matrices above the CPU batching size go through the loop path;
# (32, 32) twice and (16, 48) twice go through the batched path.
SHAPES = [
    [(32, 32)],
    [(64, 16)],
    [(16, 64), (48, 24)],
    [(32, 32), (32, 32), (16, 48), (16, 48)],
    [(200, 200), (200, 200)],
]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("nesterov", [True, False])
def test_equals_torch_muon_for_the_keller_rule(shapes, weight_decay, nesterov):
    ours, theirs = _params(shapes), _params(shapes)
    groups = {}  # one group per alpha, as a Plan makes them, so same shapes share a batch
    for p in ours:
        groups.setdefault(_keller(p.shape), []).append(p)
    groups = [{"params": ps, "alpha": alpha} for alpha, ps in groups.items()]
    opt = Muon(groups, lr=0.02, weight_decay=weight_decay, nesterov=nesterov, ns_dtype=BF16)
    ref = torch.optim.Muon(theirs, lr=0.02, weight_decay=weight_decay, nesterov=nesterov,
                           adjust_lr_fn="original")
    # Bitwise: the same bf16 products, the same EMA momentum, the same update order. Our
    # X / (||X|| + 1e-7) equals torch's X / max(||X||, 1e-7) because 1e-7 vanishes in bf16.
    _assert_same_trajectory(opt, ours, ref, theirs)


def _normalized_svdvals(G):
    return torch.linalg.svdvals(G.double()) / torch.linalg.matrix_norm(G.double())


# Five quintic steps lift every singular value with sigma / ||G||_F >= 1.07e-3 into [0.5, 1.21]
# (the scalar map, iterated in float64); smaller ones, such as the near-zero tail of a square
# Gaussian matrix or the zeros of a rank-deficient one, stay below 0.5. The rectangular Gaussian
# shapes have no such tail, so there every singular value must land in the band.
LIFTED = 1.2e-3


@pytest.mark.parametrize("shape, full_band", [
    ((16, 64), True), ((64, 16), True), ((96, 48), True), ((24, 40), False),
    ((128, 128), False), ((64, 64), False), ("rank8", False),
])
def test_newton_schulz_singular_values_in_band(shape, full_band):
    if shape == "rank8":  # rank-deficient: 56 exactly-zero singular values to ignore
        G = torch.randn(64, 8) @ torch.randn(8, 32)
    else:
        G = torch.randn(shape)
    out = torch.linalg.svdvals(newton_schulz(G, dtype=FP32))
    lifted = int((_normalized_svdvals(G) >= LIFTED).sum())
    assert lifted == (min(G.shape) if full_band else lifted) and lifted >= 8
    assert out.max() <= 1.5
    assert out[:lifted].min() >= 0.5
    if shape == "rank8":
        assert out[8:].max() < 1e-3  # zero directions stay zero


@pytest.mark.parametrize("ns_dtype", [FP32, BF16])
@pytest.mark.parametrize("fan_in, fan_out", [(64, 64), (32, 128), (128, 32), (48, 96)])
def test_one_step_spectral_norm_is_lr_alpha(fan_in, fan_out, ns_dtype):
    (w,) = _params([(fan_out, fan_in)])
    before = w.detach().clone()
    lr, alpha = 0.01, math.sqrt(fan_out / fan_in)
    opt = Muon([w], lr=lr, alpha=alpha, ns_dtype=ns_dtype)
    _set_grads([w], 0)
    opt.step()
    ratio = torch.linalg.matrix_norm(w.detach() - before, ord=2) / (lr * alpha)
    # The top singular value of msign's output is the peak of the NS map (at most 1.20 in exact
    # arithmetic); measured 1.04-1.19 over 10 seeds of these shapes, in fp32 and bf16 alike.
    assert 1.0 <= ratio <= 1.25


@pytest.mark.parametrize("nesterov", [True, False])
def test_conv_weight_is_flattened_for_msign(nesterov):
    conv = torch.nn.Conv2d(4, 8, 3)
    w = conv.weight
    before = w.detach().clone()
    opt = Muon([w], lr=0.05, alpha=2.0, nesterov=nesterov, ns_dtype=FP32)
    _set_grads([w], 0)
    opt.step()
    expected = newton_schulz(w.grad.reshape(8, -1), dtype=FP32).reshape(w.shape)
    # msign must not write into the momentum buffer it reads (the update *is* it without Nesterov)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], 0.05 * w.grad, rtol=0, atol=0)
    assert newton_schulz(w.grad, dtype=FP32).shape == w.shape
    torch.testing.assert_close(w.detach(), before - 0.05 * 2.0 * expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("betas, eps", [((0.9, 0.95), 1e-8), ((0.8, 0.99), 1e-6)])
def test_adamw_groups_equal_torch_adamw(weight_decay, betas, eps):
    shapes = [(8,), (16, 8), (3, 4, 2)]
    ours, theirs = _params(shapes), _params(shapes)
    opt = Muon([{"params": ours, "use_muon": False, "lr": 3e-3, "betas": betas, "eps": eps,
                 "weight_decay": weight_decay}])
    ref = torch.optim.AdamW(theirs, lr=3e-3, betas=betas, eps=eps, weight_decay=weight_decay)
    _assert_same_trajectory(opt, ours, ref, theirs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"lr": -0.1}, ValueError, r"lr must be .* got -0\.1"),
    ({"lr": float("nan")}, ValueError, r"lr must be a finite number"),
    ({"momentum": 1.0}, ValueError, r"momentum must be .*\[0\.0, 1\.0\).* got 1\.0"),
    ({"momentum": -0.5}, ValueError, r"momentum .* got -0\.5"),
    ({"weight_decay": -1e-3}, ValueError, r"weight_decay .* got -0\.001"),
    ({"alpha": -1.0}, ValueError, r"alpha .* got -1\.0"),
    ({"ns_steps": 0}, ValueError, r"ns_steps must be an integer >= 1.* got 0"),
    ({"ns_steps": 2.5}, ValueError, r"ns_steps .* got 2\.5"),
    ({"ns_dtype": torch.int32}, TypeError, r"ns_dtype .* torch\.bfloat16.* got torch\.int32"),
])
def test_bad_hyperparameters_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        Muon(_params([(4, 4)]), **kwargs)


def test_adamw_group_bad_betas_raise():
    with pytest.raises(ValueError, match=r"betas\[1\] .* got 1\.5"):
        Muon([{"params": _params([(4,)]), "use_muon": False, "betas": (0.9, 1.5)}])


@pytest.mark.parametrize("shape", [(7,), ()])
def test_non_matrix_in_a_muon_group_raises(shape):
    vec = torch.zeros(shape, requires_grad=True)
    match = rf"shape {re_shape(shape)}.*AdamW group.*use_muon.: False"
    with pytest.raises(ValueError, match=match):
        Muon(_params([(4, 4)]) + [vec])


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_bad_group_added_later_raises_and_is_not_kept():
    opt = Muon(_params([(4, 4)]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)]})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "use_muon": False})
    assert len(opt.param_groups) == 2


def test_newton_schulz_rejects_vectors_and_bad_steps():
    with pytest.raises(ValueError, match=r"needs a matrix .* got \(5,\).*AdamW"):
        newton_schulz(torch.randn(5))
    with pytest.raises(ValueError, match=r"ns_steps .* got 0"):
        newton_schulz(torch.randn(4, 4), steps=0)


def test_default_ns_dtype():
    assert default_ns_dtype("cuda") == BF16
    assert default_ns_dtype("cpu") in (BF16, FP32)
    assert newton_schulz(torch.randn(8, 4)).dtype == default_ns_dtype("cpu")
    assert newton_schulz(torch.randn(8, 4), dtype=torch.float64).dtype == torch.float64


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    mats = [p for p in model.parameters() if p.ndim == 2]
    vecs = [p for p in model.parameters() if p.ndim < 2]
    opt = Muon([{"params": mats, "alpha": 1.5},
                {"params": vecs, "use_muon": False, "lr": 1e-2}],
               lr=0.02, weight_decay=0.01, ns_dtype=FP32)
    return model, opt


def _train(model, opt, steps, start):
    for step in range(start, start + steps):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(32, 8, generator=g), torch.randn(32, 4, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def test_state_dict_round_trip_continues_identically():
    model, opt = _model_and_opt()
    _train(model, opt, 3, start=0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    expected = _train(model, opt, 3, start=3)

    buffer.seek(0)
    saved = torch.load(buffer)  # weights_only: the state holds only tensors, numbers and dtypes
    model2, opt2 = _model_and_opt()
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["alpha"] == 1.5 and opt2.param_groups[1]["use_muon"] is False
    for a, b in zip(_train(model2, opt2, 3, start=3), expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_closure_is_evaluated_and_returned():
    (w,) = _params([(4, 4)])
    opt = Muon([w])

    def closure():
        opt.zero_grad()
        loss = w.square().sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() > 0 and w.grad is not None


def test_bench_muon_rows():
    from mutransfer.bench import muon_step_times

    table = muon_step_times([(16, 16), (16, 16), (32, 16)], repeats=1)
    assert list(table["variant"])[0] == "torch.optim.Muon (bf16)"
    assert len(table) == 3 and (table["ms"] > 0).all() and table["ratio"].iloc[0] == 1.0


def test_cpu_batches_only_small_same_shaped_matrices():
    from mutransfer.optim._muon import _batches

    params = [torch.zeros(s) for s in [(32, 32), (200, 200), (32, 32), (200, 200), (8, 2, 3, 3)]]
    assert _batches(params) == [[0, 2], [1], [3], [4]]


@pytest.mark.parametrize("shapes", SHAPES[:3])
def test_equals_torch_muon_for_the_moonlight_rule(shapes):
    """muon_scale = "moonlight" at the base: alpha = 0.2 sqrt(max(A, B)), Moonlight's AdamW-matched
    rms, which torch.optim.Muon calls adjust_lr_fn="match_rms_adamw"."""
    from mutransfer.core import muon_alpha

    ours, theirs = _params(shapes), _params(shapes)
    groups = {}
    for p in ours:
        groups.setdefault(muon_alpha(p.shape[1], p.shape[0], "moonlight"), []).append(p)
    groups = [{"params": ps, "alpha": alpha} for alpha, ps in groups.items()]
    opt = Muon(groups, lr=0.02, weight_decay=0.1, ns_dtype=BF16)
    ref = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    _assert_same_trajectory(opt, ours, ref, theirs)
