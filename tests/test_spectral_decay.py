"""Spectral weight decay: only sigma1 moves (by lr*wd*sigma1), in Muon, Muon's AdamW groups and
the plan's torch AdamW; state_dict round trips; every wd_policy; decoupled stays bit-identical;
bad input; the TOML keys and sweep-space knobs of QK-Clip and the decay kind."""
from __future__ import annotations

import functools

import pytest
import torch

import mutransfer
from mutransfer.runs import ExperimentConfig, load_config
from mutransfer.optim._muon import Muon
from mutransfer.core._scaling import WD_POLICIES, group_weight_decay
from mutransfer.optim import SpectralDecayHook
from tiny import tiny_mlp_toml

LR, WD = 0.1, 0.2
SIGMAS = torch.tensor([10.0, 5.0, 3.0, 2.0, 1.0], dtype=torch.float64)


def _known_svd(rows=7, cols=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    return (u @ torch.diag(SIGMAS) @ v.T).float().requires_grad_()


def _muon(w):
    return Muon([w], lr=LR, weight_decay=WD, decay="spectral", ns_dtype=torch.float32)


def _muon_adamw_group(w):
    return Muon([{"params": [w], "use_muon": False}], lr=LR, weight_decay=WD, decay="spectral")


def _torch_adamw(w):
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.0, "spectral_weight_decay": WD}],
                            lr=LR)
    opt.register_step_pre_hook(SpectralDecayHook())
    return opt


@pytest.mark.parametrize("make", [_muon, _muon_adamw_group, _torch_adamw],
                         ids=["muon", "muon-adamw-group", "torch-adamw-hook"])
def test_spectral_decay_lowers_only_sigma1(make):
    w = _known_svd()
    opt = make(w)
    w.grad = torch.zeros_like(w)  # no update: the step is the decay alone
    opt.step()
    after = torch.linalg.svdvals(w.detach().double())
    drop = SIGMAS[0] - after[0]
    assert abs(drop / (LR * WD * SIGMAS[0]) - 1) < 0.01
    torch.testing.assert_close(after[1:], SIGMAS[1:], rtol=1e-4, atol=0)


def test_vectors_keep_decoupled_decay_in_a_spectral_group():
    b = torch.full((5,), 2.0, requires_grad=True)
    opt = Muon([{"params": [b], "use_muon": False}], lr=LR, weight_decay=WD, decay="spectral")
    b.grad = torch.zeros_like(b)
    opt.step()
    torch.testing.assert_close(b.detach(), torch.full((5,), 2.0 * (1 - LR * WD)))


def _plan(optimizer, seed=0):
    make = functools.partial(mutransfer.zoo.gpt, depth=1, seq_len=8)
    return mutransfer.parametrize(make, width=32, base_width=16, optimizer=optimizer, seed=seed)


def _steps(model, opt, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, 256, (2, 8), generator=g)
        model(ids).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_power_iteration_state_survives_a_state_dict_round_trip(optimizer):
    kwargs = dict(weight_decay=0.5, decay="spectral")
    a, b = _plan(optimizer), _plan(optimizer)
    b.model.load_state_dict(a.model.state_dict())
    opt_a, opt_b = a.optimizer(0.02, **kwargs), b.optimizer(0.02, **kwargs)
    _steps(a.model, opt_a, 3)
    _steps(b.model, opt_b, 3)
    saved = opt_b.state_dict()
    assert any("spectral_v" in s for s in saved["state"].values())
    fresh = b.optimizer(0.02, **kwargs)
    fresh.load_state_dict(saved)
    _steps(a.model, opt_a, 2, seed=1)
    _steps(b.model, fresh, 2, seed=1)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("policy", WD_POLICIES)
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_spectral_decay_follows_every_wd_policy(policy, optimizer):
    plan = _plan(optimizer)
    opt = plan.optimizer(0.02, weight_decay=0.1, decay="spectral", wd_policy=policy)
    for group in opt.param_groups:
        want = group_weight_decay(0.1, group["lr"] / group["lr_mult"], group["lr_mult"], policy)
        matrices = all(p.ndim >= 2 for p in group["params"])
        if optimizer == "adamw" and matrices:  # the hook decays; torch's AdamW must not
            assert group["weight_decay"] == 0.0 and group["spectral_weight_decay"] == want
        else:
            assert group["weight_decay"] == want and "spectral_weight_decay" not in group
        assert group["decay"] == ("decoupled" if optimizer == "adamw" and not matrices else
                                  "spectral")


def test_decoupled_is_bit_identical_to_todays_optimizers():
    # Muon: decay="decoupled" against torch.optim.Muon (the keller rule, bf16 Newton-Schulz)
    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(shape, generator=g).requires_grad_() for shape in ((32, 32), (16, 48))]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    opt = Muon(ours, lr=0.02, weight_decay=0.1, decay="decoupled", ns_dtype=torch.bfloat16)
    ref = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, adjust_lr_fn="original")
    for step in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for p, q, gr in zip(ours, theirs, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q)
    # the plan's AdamW with decay="decoupled" against torch's AdamW on the same groups
    a, b = _plan("adamw"), _plan("adamw")
    b.model.load_state_dict(a.model.state_dict())
    opt_a = a.optimizer(1e-2, weight_decay=0.1, decay="decoupled")
    groups = [{k: v for k, v in grp.items() if k != "decay"}
              for grp in b.optimizer(1e-2, weight_decay=0.1).param_groups]
    opt_b = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    _steps(a.model, opt_a, 3)
    _steps(b.model, opt_b, 3)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_bad_decay_input_names_the_fix():
    with pytest.raises(ValueError, match="unknown decay 'l2'; use one of decoupled, spectral"):
        _plan("adamw").optimizer(1e-3, weight_decay=0.1, decay="l2")
    with pytest.raises(ValueError, match="optimizer 'adamw' or 'muon'"):
        _plan("sgd").optimizer(1e-3, weight_decay=0.1, decay="spectral")
    w = torch.randn(4, 4, requires_grad=True)
    with pytest.raises(ValueError, match="decay must be one of decoupled, spectral; got 'l2'"):
        Muon([w], decay="l2")


# ---------------------------------------------------------------------- config and sweep space
def _toml(tmp_path, train_extra="", space_extra=""):
    text = tiny_mlp_toml().replace("[train]\n", f"[train]\n{train_extra}\n")
    text = text.replace("[sweep.space]\n", f"[sweep.space]\n{space_extra}\n")
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_toml_keys_round_trip(tmp_path):
    path = _toml(tmp_path, 'qk_clip = 30\ndecay = "spectral"\nlog_max_logit = true',
                 'decay = ["decoupled", "spectral"]\nqk_clip = [10, 30.0]')
    cfg = load_config(path)
    assert (cfg.train.qk_clip, cfg.train.decay, cfg.train.log_max_logit) == (30.0, "spectral", True)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert load_config(_toml(tmp_path)).train.qk_clip is None  # off by default


@pytest.mark.parametrize("train_extra, space_extra, message", [
    ("qk_clip = 0", "", r"\[train\] qk_clip must be a logit bound tau > 0"),
    ('decay = "l2"', "", r"\[train\] decay must be one of decoupled, spectral, got 'l2'"),
    ("", 'decay = ["l2"]', r"\[sweep.space\] decay must be a non-empty list of 'decoupled', 'spectral'"),
    ("", "decay = { low = 0, high = 1 }", r"\[sweep.space\] decay must be a list of choices"),
    ("", "qk_clip = [0, 30]", r"\[sweep.space\] qk_clip: every tau must be > 0"),
])
def test_bad_toml_values_name_the_key(tmp_path, train_extra, space_extra, message):
    with pytest.raises(ValueError, match=message):
        load_config(_toml(tmp_path, train_extra, space_extra))


def test_run_trial_applies_qk_clip_and_spectral_decay(tmp_path):
    from mutransfer.runs import run_trial

    text = tiny_mlp_toml().replace('factory = "mutransfer.zoo:mlp"', 'factory = "mutransfer.zoo:gpt"')
    text = text.replace("kwargs = { depth = 2 }", "kwargs = { depth = 1 }")
    text = text.replace('source = "synthetic"\nin_dim = 8\nout_dim = 4', 'source = "pycorpus"')
    text = text.replace("[train]\n", '[train]\nseq_len = 16\nqk_clip = 30\ndecay = "spectral"\n'
                                     'weight_decay = 0.1\n')
    path = tmp_path / "g.toml"
    path.write_text(text)
    cfg = load_config(path)
    res = run_trial(cfg, {"lr": 1e-3}, width=16, device="cpu", seed=0)
    assert res.history["max_logit"].notna().all()
    res = run_trial(cfg, {"lr": 1e-3, "qk_clip": 1e-3, "decay": "decoupled"}, width=16,
                    device="cpu", seed=0)
    assert res.history["max_logit"].iloc[1:].max() < 0.1  # clipped to tau = 1e-3 plus one step


def test_a_muon_state_dict_from_before_decay_loads_as_decoupled():
    w = torch.randn(8, 8, requires_grad=True)
    opt = Muon([w], weight_decay=0.1)
    w.grad = torch.randn(8, 8)
    opt.step()
    old = opt.state_dict()
    for group in old["param_groups"]:
        del group["decay"]
    fresh = Muon([w], weight_decay=0.1, decay="spectral")
    fresh.load_state_dict(old)
    assert fresh.param_groups[0]["decay"] == "decoupled"
    fresh.step()


def test_a_fused_expert_stack_is_decayed_per_expert_as_muon_orthogonalizes_it():
    """(E, out, in): each expert's own sigma1 falls by (1 - lr wd), the rest of its spectrum
    stays; read as one (E, out x in) matrix, only the largest direction of the stack moved."""
    from mutransfer.optim import SpectralDecayHook, expert_spectral_decay_, spectral_decay_

    torch.manual_seed(0)

    def matrix(top):  # a well-separated spectrum, so 10 cold power iterations converge
        u, _ = torch.linalg.qr(torch.randn(6, 4))
        v, _ = torch.linalg.qr(torch.randn(4, 4))
        return u @ torch.diag(torch.tensor([top, 1.0, 0.5, 0.2])) @ v.T

    stack = torch.stack([matrix(t) for t in (4.0, 9.0, 3.0)])
    before = torch.linalg.svdvals(stack)
    w = stack.clone()
    spectral_decay_([w], [{}], 0.1, expert_dims=1)
    after = torch.linalg.svdvals(w)
    assert torch.allclose(after[:, 0], 0.9 * before[:, 0], rtol=1e-4)
    assert torch.allclose(after[:, 1:], before[:, 1:], rtol=1e-4)
    flat = stack.clone()
    spectral_decay_([flat], [{}], 0.1)  # the old reading: one (E, out*in) matrix
    assert not torch.allclose(torch.linalg.svdvals(flat)[:, 0], 0.9 * before[:, 0], rtol=1e-3)
    # the hook reads expert_dims from the group, as build_optimizer writes it
    p = torch.nn.Parameter(stack.clone())
    opt = torch.optim.AdamW([{"params": [p], "lr": 0.1, "weight_decay": 0.0, "spectral_weight_decay": 1.0,
                              "expert_dims": 1}])
    opt.register_step_pre_hook(SpectralDecayHook())
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(torch.linalg.svdvals(p.detach())[:, 0], 0.9 * before[:, 0], rtol=1e-3)
    with pytest.raises(ValueError, match=r"expert_dims must be an int in \[1, ndim - 2\]"):
        expert_spectral_decay_(torch.zeros(4, 4), {}, 0.1, expert_dims=1)
